//! One loaded plugin: its compiled component ready to instantiate, its `info()`, its
//! limits; and one render with it: a fresh store and instance in the sandbox, under those
//! limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::{Digest, Event, Rendered};
use wasmtime::Store;

use crate::bindings::{v0_1, v0_2};
use crate::convert;
use crate::error::PluginError;
use crate::interface::Interface;
use crate::limits::{Limits, MAX_REASON_BYTES, cut};
use crate::output::{LogLevel, PluginInfo, PluginOutput, Render};
use crate::sandbox::{RenderState, Sandbox, run};

/// A loaded, validated plugin. Renders may run concurrently from any thread; each gets
/// its own instance.
pub struct Plugin {
    sandbox: Arc<Sandbox>,
    name: String,
    path: PathBuf,
    wasm_sha256: String,
    info: PluginInfo,
    limits: Limits,
    pre: Pre,
}

/// The component, type-checked against the world it targets and ready to instantiate.
pub(crate) enum Pre {
    V0_1(v0_1::PluginPre<RenderState>),
    V0_2(v0_2::PluginPre<RenderState>),
}

impl Pre {
    pub(crate) fn interface(&self) -> Interface {
        match self {
            Pre::V0_1(_) => Interface::V0_1,
            Pre::V0_2(_) => Interface::V0_2,
        }
    }

    /// `info()` in a fresh instance in `store`.
    fn info(&self, store: &mut Store<RenderState>) -> wasmtime::Result<PluginInfo> {
        Ok(match self {
            Pre::V0_1(pre) => {
                let info = pre
                    .instantiate(&mut *store)?
                    .herald_formatter_formatter()
                    .call_info(store)?;
                PluginInfo {
                    name: info.name,
                    version: info.version,
                    channel_kinds: info.channel_kinds,
                }
            }
            Pre::V0_2(pre) => {
                let info = pre
                    .instantiate(&mut *store)?
                    .herald_formatter_formatter()
                    .call_info(store)?;
                PluginInfo {
                    name: info.name,
                    version: info.version,
                    channel_kinds: info.channel_kinds,
                }
            }
        })
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("interface", &self.interface())
            .field("info", &self.info)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Sends a render's log lines to `tracing` (target `herald_plugins::guest`), with the
/// plugin's name and the given fields naming what was rendered.
macro_rules! forward_logs {
    ($logs:expr, $plugin:expr, $($fields:tt)+) => {
        for line in $logs {
            let (plugin, message) = ($plugin, line.message.as_str());
            match line.level {
                LogLevel::Debug => {
                    tracing::debug!(target: "herald_plugins::guest", plugin, $($fields)+, "{message}")
                }
                LogLevel::Info => {
                    tracing::info!(target: "herald_plugins::guest", plugin, $($fields)+, "{message}")
                }
                LogLevel::Warn => {
                    tracing::warn!(target: "herald_plugins::guest", plugin, $($fields)+, "{message}")
                }
                LogLevel::Error => {
                    tracing::error!(target: "herald_plugins::guest", plugin, $($fields)+, "{message}")
                }
            }
        }
    };
}

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

    /// The `herald:formatter` version the plugin targets, read from its exports.
    pub fn interface(&self) -> Interface {
        self.pre.interface()
    }

    /// Whether the plugin exports `format-digest` (it targets 0.2.0). It may still
    /// decline any digest.
    pub fn renders_digests(&self) -> bool {
        self.interface().renders_digests()
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
        forward_logs!(&render.logs, self.name.as_str(), event = %event.id);
        render.result
    }

    /// Like [`format`](Self::format), returning the log lines and the time taken too.
    pub fn render(&self, event: &Event, channel_kind: &str, settings: &crate::Settings) -> Render {
        if let Err(e) = self.check_channel(channel_kind) {
            return Render::failed(e);
        }
        let settings = settings_list(settings);
        let started = Instant::now();
        let (result, state) = run(&self.sandbox, self.limits, |store| {
            Ok(match &self.pre {
                Pre::V0_1(pre) => pre
                    .instantiate(&mut *store)?
                    .herald_formatter_formatter()
                    .call_format(store, &convert::v0_1::event(event), channel_kind, &settings)?
                    .map(convert::v0_1::output),
                Pre::V0_2(pre) => pre
                    .instantiate(&mut *store)?
                    .herald_formatter_formatter()
                    .call_format(store, &convert::v0_2::event(event), channel_kind, &settings)?
                    .map(convert::v0_2::output),
            })
        });
        let elapsed = started.elapsed();
        let result = result.and_then(|answer| match answer {
            Ok(output) => output,
            Err(text) => Err(returned(&text)),
        });
        Render {
            result,
            elapsed,
            logs: state.logs,
            dropped_logs: state.dropped_logs,
        }
    }

    /// Renders `digest` for a channel of kind `channel_kind` in a fresh instance, under
    /// the same limits as [`format`](Self::format). `Ok(None)` when the plugin targets
    /// `herald:formatter@0.1.0` (it is not run) or declines: herald's built-in digest is
    /// to render it. A trap, timeout or bad output is an error, as for one event.
    ///
    /// Synchronous and CPU-bound, like [`format`](Self::format); the log lines go to
    /// `tracing`.
    pub fn format_digest(
        &self,
        digest: &Digest,
        channel_kind: &str,
        settings: &crate::Settings,
    ) -> Result<Option<Rendered>, PluginError> {
        let render = self.render_digest(digest, channel_kind, settings);
        forward_logs!(&render.logs, self.name.as_str(), digest = %digest.id);
        render.result
    }

    /// Like [`format_digest`](Self::format_digest), returning the log lines and the time
    /// taken too.
    pub fn render_digest(
        &self,
        digest: &Digest,
        channel_kind: &str,
        settings: &crate::Settings,
    ) -> Render<Option<Rendered>> {
        let Pre::V0_2(pre) = &self.pre else {
            return Render {
                result: Ok(None),
                elapsed: Duration::ZERO,
                logs: Vec::new(),
                dropped_logs: 0,
            };
        };
        if let Err(e) = self.check_channel(channel_kind) {
            return Render::failed(e);
        }
        let digest = convert::digest(digest);
        let settings = settings_list(settings);
        let started = Instant::now();
        let (result, state) = run(&self.sandbox, self.limits, |store| {
            pre.instantiate(&mut *store)?
                .herald_formatter_formatter()
                .call_format_digest(store, &digest, channel_kind, &settings)
        });
        let elapsed = started.elapsed();
        let result = result.and_then(|answer| match answer {
            Ok(None) => Ok(None),
            Ok(Some(message)) => convert::check(
                convert::v0_2::message(message),
                "return none to let herald render the digest",
            )
            .map(Some),
            Err(text) => Err(returned(&text)),
        });
        Render {
            result,
            elapsed,
            logs: state.logs,
            dropped_logs: state.dropped_logs,
        }
    }

    fn check_channel(&self, channel_kind: &str) -> Result<(), PluginError> {
        if self.info.supports(channel_kind) {
            Ok(())
        } else {
            Err(PluginError::UnsupportedChannel {
                kind: channel_kind.to_string(),
                supported: self.info.channel_kinds.join(", "),
            })
        }
    }
}

fn settings_list(settings: &crate::Settings) -> Vec<(String, String)> {
    settings
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The plugin's own `err(…)`.
fn returned(text: &str) -> PluginError {
    PluginError::Returned(cut(text, MAX_REASON_BYTES).to_string())
}

impl<T> Render<T> {
    fn failed(error: PluginError) -> Render<T> {
        Render {
            result: Err(error),
            elapsed: Duration::ZERO,
            logs: Vec::new(),
            dropped_logs: 0,
        }
    }
}

/// Calls `info()` and renders the sample event (and, for a 0.2.0 plugin, the sample
/// digest) for every channel kind it supports, under production limits.
pub(crate) fn validate(
    sandbox: Arc<Sandbox>,
    name: &str,
    path: &Path,
    wasm_sha256: String,
    pre: Pre,
    limits: Limits,
) -> Result<Plugin, PluginError> {
    let (info, _) = run(&sandbox, limits, |store| pre.info(store));
    let info = check_info(info?)?;
    let plugin = Plugin {
        sandbox,
        name: name.to_string(),
        path: path.to_path_buf(),
        wasm_sha256,
        info,
        limits,
        pre,
    };
    let sample = convert::sample_event();
    let digest = convert::sample_digest();
    let kinds: Vec<String> = if plugin.info.channel_kinds.is_empty() {
        vec!["webhook".to_string()]
    } else {
        plugin.info.channel_kinds.clone()
    };
    let settings = crate::Settings::new();
    for kind in kinds {
        // The plugin's own `err(…)` passes: it may need settings the samples lack.
        match plugin.render(&sample, &kind, &settings).result {
            Ok(_) | Err(PluginError::Returned(_)) => {}
            Err(e) => return Err(PluginError::Validation(Box::new(e))),
        }
        match plugin.render_digest(&digest, &kind, &settings).result {
            Ok(_) | Err(PluginError::Returned(_)) => {}
            Err(e) => return Err(PluginError::DigestValidation(Box::new(e))),
        }
    }
    Ok(plugin)
}

const CHANNEL_KINDS: &[&str] = &["webhook", "telegram", "email", "file"];

fn check_info(info: PluginInfo) -> Result<PluginInfo, PluginError> {
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
    Ok(info)
}
