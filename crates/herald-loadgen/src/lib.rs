//! herald-loadgen: what `herald-receiver` and `herald-load` share — the webhook receiver,
//! the benchmark events, pacing, latency summaries and delivery bookkeeping.

pub mod ledger;
pub mod loopback;
pub mod memory;
pub mod pacer;
pub mod payload;
pub mod receiver;
pub mod stats;
