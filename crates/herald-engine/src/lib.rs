//! herald-engine: the delivery pipeline.
//!
//! accept (validate, match, write the event and its fan-out rows in one commit) → the
//! new deliveries go straight to the dispatcher's in-memory lanes → send through the
//! channel within its adaptive concurrency limit → record the attempt in a batch → done,
//! retry at a time (read back from the store when due), or dead. The engine knows the
//! store and the channels only through their traits.
//!
//! Modules: `state` is the shared state; `engine` (the API), `ingest`, `dispatch`,
//! `attempt` and `finisher` use it and never each other in a loop (engine → dispatch →
//! attempt / finisher; engine → ingest). `scheduler` and `concurrency` are pure.

mod alerts;
mod attempt;
mod bot_state;
mod channels;
mod cluster_bus;
mod components;
mod concurrency;
mod dispatch;
mod engine;
mod finisher;
mod ingest;
mod live;
mod retention;
mod retry;
mod scheduler;
mod state;

pub use channels::build_channels;
pub use cluster_bus::{MAX_BACKOFF, next_backoff};
pub use components::{ComponentStatus, Components};
pub use concurrency::INITIAL_LIMIT;
pub use engine::{ChannelStatus, Engine, PluginState};
pub use ingest::{IngestError, IngestReply, MAX_BATCH};
pub use live::{BUS_CAPACITY, BusMessage, LiveBus, LiveMessage};
pub use retention::run_retention;
pub use retry::RetryPolicy;
pub use scheduler::LaneStatus;
pub use state::{Caller, EngineOptions, Snapshot};

use herald_core::Timestamp;

/// The wall clock, as herald-core's timestamp.
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Timestamp::from_unix_nanos(nanos)
}

/// This process's name for others: `<hostname>-<pid>` (a Redis consumer's default name,
/// the start of a cluster node id).
pub fn process_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herald".to_string());
    format!("{host}-{}", std::process::id())
}

/// A timestamp `d` after `t`.
pub fn after(t: Timestamp, d: std::time::Duration) -> Timestamp {
    Timestamp::from_unix_nanos(t.unix_nanos() + d.as_nanos() as i128)
}
