//! What a render produces: the plugin's output, its log lines, its self-description.
//!
//! Its own module because both the conversion from the WIT world (`convert.rs`) and the
//! render itself (`plugin.rs`, `sandbox.rs`) produce these; neither side owns them.

use std::time::Duration;

use herald_core::Rendered;

use crate::error::PluginError;
#[cfg(doc)]
use crate::limits::MAX_LOG_LINES;

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
/// `T` is what a render makes: a [`PluginOutput`] for one event, an
/// `Option<Rendered>` for a digest (`None`: the plugin declines).
#[derive(Debug, Clone)]
pub struct Render<T = PluginOutput> {
    pub result: Result<T, PluginError>,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
    pub logs: Vec<LogLine>,
    /// Log lines beyond [`MAX_LOG_LINES`], dropped.
    pub dropped_logs: usize,
}
