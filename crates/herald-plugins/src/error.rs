//! What can go wrong loading or running a plugin, said precisely.

use std::path::PathBuf;
use std::time::Duration;

use crate::limits::{fmt_bytes, fmt_duration};

/// Why a plugin could not be loaded, or why one render did not produce a message.
///
/// The `Display` text is what herald records with a delivery attempt and what
/// `herald check` and `herald plugin test` print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    // Loading.
    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error("cannot compile the component: {0}")]
    Compile(String),
    #[error(
        "built against herald:formatter@{found}, but this herald implements herald:formatter {expected}: rebuild it with a matching herald-plugin-sdk / wit/formatter-0.2.0.wit"
    )]
    WrongVersion { found: String, expected: String },
    #[error(
        "imports {}, which herald's sandbox does not provide (plugins get no clock, network, filesystem or environment; the only import is herald:formatter/log)",
        imports.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImport { imports: Vec<String> },
    #[error(
        "does not export herald:formatter/formatter of version {expected} (exports: {exports}); build it with herald-plugin-sdk's register!"
    )]
    MissingExport { expected: String, exports: String },
    #[error("info() returned {0}")]
    InvalidInfo(String),
    #[error("the sample render failed: {0}")]
    Validation(Box<PluginError>),
    /// A 0.2.0 plugin's `format-digest` failed on the sample digest.
    #[error("the sample digest render failed: {0}")]
    DigestValidation(Box<PluginError>),
    #[error("invalid limits: {0}")]
    Limits(String),

    // Rendering.
    #[error("timed out after {}", fmt_duration(*timeout))]
    Timeout { timeout: Duration },
    #[error("memory limit of {} exceeded", fmt_bytes(*limit))]
    MemoryLimit { limit: u64 },
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin's own `err(…)` result.
    #[error("plugin error: {0}")]
    Returned(String),
    #[error("output {field} is {size} bytes; the limit is {limit}")]
    OutputTooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("json body does not parse: {0}")]
    InvalidJson(String),
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    #[error("does not render for `{kind}` channels (it supports: {supported})")]
    UnsupportedChannel { kind: String, supported: String },
    /// A subscription of the configuration uses the plugin for a channel kind it does
    /// not render (found by `herald check`).
    #[error(
        "subscription {subscription} uses it for channel `{channel}`, a {kind} channel, but it renders only for: {supported}"
    )]
    Misused {
        subscription: String,
        channel: String,
        kind: String,
        supported: String,
    },
    #[error(
        "quarantined after {failures} consecutive failures (last: {last}); herald formats with its built-in formatter until the plugin is reloaded"
    )]
    Quarantined { failures: u32, last: String },
    #[error("no plugin named `{0}` is loaded")]
    Unknown(String),
    /// A failure of the host itself (not the plugin's fault).
    #[error("plugin host error: {0}")]
    Host(String),
}

impl PluginError {
    /// Whether this failure is the plugin's doing, and so counts towards quarantine.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap(_)
                | PluginError::Returned(_)
                | PluginError::OutputTooLarge { .. }
                | PluginError::InvalidJson(_)
                | PluginError::InvalidOutput(_)
        )
    }

    /// A short, stable name for metrics and logs: `timeout`, `memory`, `trap`, …
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Read { .. } => "read",
            PluginError::NotAComponent(_) => "not_a_component",
            PluginError::Compile(_) => "compile",
            PluginError::WrongVersion { .. } => "wrong_version",
            PluginError::ForbiddenImport { .. } => "forbidden_import",
            PluginError::MissingExport { .. } => "missing_export",
            PluginError::InvalidInfo(_) => "invalid_info",
            PluginError::Validation(_) | PluginError::DigestValidation(_) => "validation",
            PluginError::Limits(_) => "limits",
            PluginError::Timeout { .. } => "timeout",
            PluginError::MemoryLimit { .. } => "memory",
            PluginError::Trap(_) => "trap",
            PluginError::Returned(_) => "error",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::InvalidJson(_) => "invalid_json",
            PluginError::InvalidOutput(_) => "invalid_output",
            PluginError::UnsupportedChannel { .. } => "unsupported_channel",
            PluginError::Misused { .. } => "misused",
            PluginError::Quarantined { .. } => "quarantined",
            PluginError::Unknown(_) => "unknown",
            PluginError::Host(_) => "host",
        }
    }
}
