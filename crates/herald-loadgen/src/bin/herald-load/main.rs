//! `herald-load`: load for a running herald — `ingest` measures accepted events/s,
//! `e2e` measures delivery from publish to webhook receipt, `side-by-side` starts herald and
//! Alertmanager and compares them, `cluster` and `redis-stream` start herald nodes on
//! SQLite or PostgreSQL (issue 10). Only ever targets loopback.

mod cluster;
mod drive;
mod e2e;
mod groups;
mod ingest;
mod publish;
mod side_by_side;

use clap::{Parser, Subcommand};

/// Load generator for herald (see crates/herald-loadgen/README.md for the benchmarks).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N clients POST single events back to back for a fixed time: events/s and latency.
    Ingest(ingest::Args),
    /// Publish M events at R/s to herald and receive its webhooks in-process: deliveries/s,
    /// publish → received latency, missing and duplicate deliveries, server memory.
    E2e(e2e::Args),
    /// herald on its defaults and Alertmanager, started here and driven by the same
    /// publishers into the same receivers: the delivery benchmark of issue 9.
    SideBySide(side_by_side::Args),
    /// N herald nodes started here on one store (SQLite, or a fresh PostgreSQL schema):
    /// durable ingest spread over the nodes, then a burst to one receiver.
    Cluster(cluster::ClusterArgs),
    /// One herald node started here reading a Redis stream: XADD N entries as fast as one
    /// producer can; committed events/s and the consumer group's lag over time.
    RedisStream(cluster::RedisStreamArgs),
    /// herald started here twice at R events/s: unmatched, then grouped into G open
    /// groups; CPU and memory per open group, then every event checked in its digest.
    Groups(groups::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(args) => ingest::run(args).await,
        Command::E2e(args) => e2e::run(args).await,
        Command::SideBySide(args) => side_by_side::run(args).await,
        Command::Cluster(args) => cluster::cluster(args).await,
        Command::RedisStream(args) => cluster::redis_stream(args).await,
        Command::Groups(args) => groups::run(args).await,
    }
}
