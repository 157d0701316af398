//! herald-loadgen: what `herald-receiver` and `herald-load` share — the webhook receiver,
//! the benchmark events, pacing, latency summaries, delivery bookkeeping and the fsync probe.

pub mod fsync;
pub mod ledger;
pub mod loopback;
pub mod memory;
pub mod pacer;
pub mod payload;
pub mod receiver;
pub mod stats;
