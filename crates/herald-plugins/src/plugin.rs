//! One loaded plugin: its compiled component ready to instantiate, its `info()`, its
//! limits; and one render with it: a fresh store and instance in the sandbox, under those
//! limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::Event;

use crate::bindings::{self, herald::formatter::types as wit};
use crate::convert;
use crate::error::PluginError;
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
        let (result, state) = run(&self.sandbox, &self.pre, self.limits, |store, plugin| {
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

/// Calls `info()` and renders the sample event, under production limits.
pub(crate) fn validate(
    sandbox: Arc<Sandbox>,
    name: &str,
    path: &Path,
    wasm_sha256: String,
    pre: bindings::PluginPre<RenderState>,
    limits: Limits,
) -> Result<Plugin, PluginError> {
    let (info, _) = run(&sandbox, &pre, limits, |store, plugin| {
        plugin.herald_formatter_formatter().call_info(store)
    });
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
