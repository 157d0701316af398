//! herald-plugins: the host for sandboxed WASM formatter plugins.
//!
//! A formatter plugin is a WebAssembly component of the `herald:formatter@0.1.0` world
//! (`wit/formatter.wit`) or of `herald:formatter@0.2.0` (`wit/formatter-0.2.0.wit`): it
//! exports `info()` and `format(event, channel-kind, settings)` — a 0.2.0 one also
//! `format-digest(digest, channel-kind, settings)`, which may decline — and imports
//! nothing but a bounded `log`. Which version a component targets is read from its
//! exports ([`Interface`]). This crate runs such plugins on wasmtime:
//!
//! - one [`PluginHost`] per process: one `Engine` with the pooling allocator, an epoch
//!   ticker thread, and an on-disk cache of compiled artifacts keyed by the wasm's
//!   SHA-256 and the engine's compatibility hash;
//! - per plugin a precompiled component and an `InstancePre` ([`Plugin`]); loading
//!   checks the import allowlist and the WIT version, calls `info()` and renders a
//!   sample event (and a 0.2.0 plugin a sample digest) under the production [`Limits`];
//! - per render (of one event or one digest) a fresh `Store` and instance, an epoch
//!   deadline (`timeout`), a memory cap (`memory_limit`) and output caps
//!   ([`MAX_BODY_BYTES`], [`MAX_SUBJECT_BYTES`], JSON bodies must parse);
//! - a [`PluginSet`] that swaps new versions in atomically (renders in flight finish on
//!   the version they started with), rejects broken ones, quarantines a plugin after N
//!   consecutive failures until it is reloaded, and watches plugin files.
//!
//! Renders are synchronous CPU work bounded by the plugin's `timeout`: from async code
//! call them inside `tokio::task::spawn_blocking` (every type here is `Send + Sync`).
//!
//! Architecture invariant: a plugin gets no clock, network, filesystem or environment;
//! everything it needs arrives as arguments, and nothing survives from one render to the
//! next.

mod bindings;
/// Test support: builds `plugins/` for herald's own tests and benchmarks.
#[doc(hidden)]
pub mod build;
mod cache;
mod config;
mod convert;
mod error;
mod host;
mod interface;
mod limits;
mod output;
mod plugin;
mod sandbox;
mod set;

pub use config::{PluginCheck, check_config, host_options_for, specs_from_config};
pub use convert::{sample_digest, sample_event};
pub use error::PluginError;
pub use host::{HostOptions, PluginHost};
pub use interface::{Interface, WIT_PACKAGE};
pub use limits::{
    Limits, MAX_BODY_BYTES, MAX_LOG_LINE_BYTES, MAX_LOG_LINES, MAX_SUBJECT_BYTES,
    MAX_TEXT_ALTERNATIVE_BYTES,
};
pub use output::{LogLevel, LogLine, PluginInfo, PluginOutput, Render};
pub use plugin::Plugin;
pub use set::{DEFAULT_QUARANTINE_AFTER, PluginSet, PluginSpec, PluginStatus, Reload, Watcher};

/// Settings handed to a plugin: `[plugins.NAME] settings` overlaid with the
/// subscription's `formatter_settings`.
pub type Settings = std::collections::BTreeMap<String, String>;
