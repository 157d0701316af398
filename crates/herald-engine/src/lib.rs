//! herald-engine: the delivery pipeline.
//!
//! accept (validate, match, write the event and its fan-out rows in one commit) → claim
//! due deliveries under a lease → send through the channel → record the attempt → done,
//! retry at a time, or dead. The engine knows the store and the channels only through
//! their traits.

mod channels;
mod dispatch;
mod engine;
mod ingest;
mod live;
mod retry;

pub use channels::build_channels;
pub use engine::{Caller, ChannelStatus, Engine, EngineOptions, PluginState, Snapshot};
pub use ingest::{IngestError, IngestReply, MAX_BATCH};
pub use live::{BUS_CAPACITY, BusMessage, LiveBus, LiveMessage};
pub use retry::RetryPolicy;

use herald_core::Timestamp;

/// The wall clock, as herald-core's timestamp.
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Timestamp::from_unix_nanos(nanos)
}

/// A timestamp `d` after `t`.
pub fn after(t: Timestamp, d: std::time::Duration) -> Timestamp {
    Timestamp::from_unix_nanos(t.unix_nanos() + d.as_nanos() as i128)
}
