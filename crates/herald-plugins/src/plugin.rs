//! One loaded plugin: its compiled component ready to instantiate, its `info()`, its
//! limits; and one render: a fresh store and instance under those limits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use herald_core::{Event, Rendered};
use wasmtime::{ResourceLimiter, Store, Trap};

use crate::bindings::{self, herald::formatter::log, herald::formatter::types as wit};
use crate::cache::chain;
use crate::convert;
use crate::error::PluginError;
use crate::host::{EPOCH_TICK, PluginHost};
use crate::limits::{Limits, MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_REASON_BYTES, cut};

/// What a plugin made of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOutput {
    /// Send this message.
    Rendered(Rendered),
    /// Deliberately send nothing; the plugin's reason.
    Skip(String),
}

/// What a plugin says about itself (`info()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    /// The channel kinds it renders for; empty means every kind.
    pub channel_kinds: Vec<String>,
}

impl PluginInfo {
    pub fn supports(&self, channel_kind: &str) -> bool {
        self.channel_kinds.is_empty() || self.channel_kinds.iter().any(|k| k == channel_kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// One line a plugin logged during a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

/// Everything about one render: its result, how long it took, what the plugin logged.
#[derive(Debug, Clone)]
pub struct Render {
    pub result: Result<PluginOutput, PluginError>,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
    pub logs: Vec<LogLine>,
    /// Log lines beyond [`MAX_LOG_LINES`], dropped.
    pub dropped_logs: usize,
}

/// A loaded, validated plugin. Renders may run concurrently from any thread; each gets
/// its own instance.
pub struct Plugin {
    host: PluginHost,
    name: String,
    path: PathBuf,
    wasm_sha256: String,
    info: PluginInfo,
    limits: Limits,
    pre: bindings::PluginPre<RenderState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("info", &self.info)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The data of one render's store.
pub(crate) struct RenderState {
    memory_limit: usize,
    memory_exceeded: bool,
    logs: Vec<LogLine>,
    dropped_logs: usize,
}

impl ResourceLimiter for RenderState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // An error (not `Ok(false)`) traps at once, instead of letting the guest's
            // allocator turn the failure into an abort with a vaguer message.
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 20_000)
    }
}

impl log::Host for RenderState {
    fn log(&mut self, level: log::Level, message: String) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.dropped_logs += 1;
            return;
        }
        let level = match level {
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.logs.push(LogLine {
            level,
            message: cut(&message, MAX_LOG_LINE_BYTES).to_string(),
        });
    }
}

impl wit::Host for RenderState {}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex SHA-256 of the wasm file this plugin was loaded from.
    pub fn wasm_sha256(&self) -> &str {
        &self.wasm_sha256
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Renders `event` for a channel of kind `channel_kind` in a fresh instance.
    ///
    /// Synchronous and CPU-bound for up to the plugin's `timeout` (plus instantiation):
    /// call it from `spawn_blocking` in async code. The plugin's log lines go to
    /// `tracing` (target `herald_plugins::guest`); use [`render`](Self::render) to get
    /// them instead.
    pub fn format(
        &self,
        event: &Event,
        channel_kind: &str,
        settings: &crate::Settings,
    ) -> Result<PluginOutput, PluginError> {
        let render = self.render(event, channel_kind, settings);
        for line in &render.logs {
            let (plugin, message) = (self.name.as_str(), line.message.as_str());
            match line.level {
                LogLevel::Debug => {
                    tracing::debug!(target: "herald_plugins::guest", plugin, event = %event.id, "{message}")
                }
                LogLevel::Info => {
                    tracing::info!(target: "herald_plugins::guest", plugin, event = %event.id, "{message}")
                }
                LogLevel::Warn => {
                    tracing::warn!(target: "herald_plugins::guest", plugin, event = %event.id, "{message}")
                }
                LogLevel::Error => {
                    tracing::error!(target: "herald_plugins::guest", plugin, event = %event.id, "{message}")
                }
            }
        }
        render.result
    }

    /// Like [`format`](Self::format), returning the log lines and the time taken too.
    pub fn render(&self, event: &Event, channel_kind: &str, settings: &crate::Settings) -> Render {
        if !self.info.supports(channel_kind) {
            return Render {
                result: Err(PluginError::UnsupportedChannel {
                    kind: channel_kind.to_string(),
                    supported: self.info.channel_kinds.join(", "),
                }),
                elapsed: Duration::ZERO,
                logs: Vec::new(),
                dropped_logs: 0,
            };
        }
        let event = convert::event(event);
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let started = Instant::now();
        let (result, state) = run(&self.host, &self.pre, self.limits, |store, plugin| {
            plugin
                .herald_formatter_formatter()
                .call_format(store, &event, channel_kind, &settings)
        });
        let elapsed = started.elapsed();
        let result = result.and_then(|answer| match answer {
            Ok(rendered) => convert::output(rendered),
            Err(text) => Err(PluginError::Returned(
                cut(&text, MAX_REASON_BYTES).to_string(),
            )),
        });
        Render {
            result,
            elapsed,
            logs: state.logs,
            dropped_logs: state.dropped_logs,
        }
    }
}

/// Instantiates `pre` in a fresh store under `limits` and runs `call` on it.
fn run<R>(
    host: &PluginHost,
    pre: &bindings::PluginPre<RenderState>,
    limits: Limits,
    call: impl FnOnce(&mut Store<RenderState>, &bindings::Plugin) -> wasmtime::Result<R>,
) -> (Result<R, PluginError>, RenderState) {
    let _slot = host.inner.slots.acquire();
    let state = RenderState {
        memory_limit: usize::try_from(limits.memory).unwrap_or(usize::MAX),
        memory_exceeded: false,
        logs: Vec::new(),
        dropped_logs: 0,
    };
    let mut store = Store::new(&host.inner.engine, state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    // Set before instantiating: the deadline counts from the current epoch, and
    // instantiation itself runs guest code (constructors).
    store.set_epoch_deadline(deadline_ticks(limits.timeout));
    let result = pre
        .instantiate(&mut store)
        .and_then(|plugin| call(&mut store, &plugin));
    let result = result.map_err(|e| classify(&e, &limits, store.data()));
    (result, store.into_data())
}

/// Epoch ticks for `timeout`: rounded up, plus one because the current tick may be
/// nearly over.
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    let ticks = timeout.as_nanos().div_ceil(tick) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Names what stopped a render.
fn classify(e: &wasmtime::Error, limits: &Limits, state: &RenderState) -> PluginError {
    if state.memory_exceeded {
        return PluginError::MemoryLimit {
            limit: limits.memory,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout {
            timeout: limits.timeout,
        },
        Some(trap) => {
            // A Rust panic aborts with `unreachable`; the SDK logged the message first.
            let panic = state
                .logs
                .iter()
                .rev()
                .find(|l| l.level == LogLevel::Error && l.message.starts_with("panicked"));
            let trap = trap.to_string();
            let trap = trap.strip_prefix("wasm trap: ").unwrap_or(&trap);
            match panic {
                Some(line) => PluginError::Trap(format!("{trap} ({})", line.message)),
                None => PluginError::Trap(trap.to_string()),
            }
        }
        None => {
            let text = chain(e);
            match text.find("unknown import: `") {
                // A tolerated WASI function (stdio, exit) was called: explain.
                Some(i) => {
                    let name = text[i + 17..].split('`').next().unwrap_or_default();
                    PluginError::Trap(format!(
                        "called `{name}`, which herald's sandbox does not provide (write diagnostics with the log import instead)"
                    ))
                }
                None => PluginError::Trap(text),
            }
        }
    }
}

/// Calls `info()` and renders the sample event, under production limits.
pub(crate) fn validate(
    host: PluginHost,
    name: &str,
    path: &Path,
    wasm_sha256: String,
    pre: bindings::PluginPre<RenderState>,
    limits: Limits,
) -> Result<Plugin, PluginError> {
    let (info, _) = run(&host, &pre, limits, |store, plugin| {
        plugin.herald_formatter_formatter().call_info(store)
    });
    let info = check_info(info?)?;
    let plugin = Plugin {
        host,
        name: name.to_string(),
        path: path.to_path_buf(),
        wasm_sha256,
        info,
        limits,
        pre,
    };
    let sample = convert::sample_event();
    let kinds: Vec<String> = if plugin.info.channel_kinds.is_empty() {
        vec!["webhook".to_string()]
    } else {
        plugin.info.channel_kinds.clone()
    };
    for kind in kinds {
        match plugin
            .render(&sample, &kind, &crate::Settings::new())
            .result
        {
            Ok(_) | Err(PluginError::Returned(_)) => {}
            Err(e) => return Err(PluginError::Validation(Box::new(e))),
        }
    }
    Ok(plugin)
}

const CHANNEL_KINDS: &[&str] = &["webhook", "telegram", "email", "file"];

fn check_info(info: wit::PluginInfo) -> Result<PluginInfo, PluginError> {
    let bad = |m: String| Err(PluginError::InvalidInfo(m));
    if info.name.is_empty() || info.name.len() > 64 {
        return bad(format!(
            "a name of {} bytes; it must be 1 to 64",
            info.name.len()
        ));
    }
    if info.version.is_empty() || info.version.len() > 64 {
        return bad(format!(
            "a version of {} bytes; it must be 1 to 64",
            info.version.len()
        ));
    }
    if let Some(kind) = info
        .channel_kinds
        .iter()
        .find(|k| !CHANNEL_KINDS.contains(&k.as_str()))
    {
        return bad(format!(
            "an unknown channel kind `{}`; expected {}",
            cut(kind, 64),
            CHANNEL_KINDS.join(", ")
        ));
    }
    Ok(PluginInfo {
        name: info.name,
        version: info.version,
        channel_kinds: info.channel_kinds,
    })
}
