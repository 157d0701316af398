//! `herald-ssebench`: starts herald (a release build, on 127.0.0.1), connects many SSE
//! clients to `/v1/stream`, publishes events at a steady rate over the HTTP API, and
//! reports whether every client kept up, publish→client latency and herald's memory.
//! The figures in docs/BENCHMARKS.md ("Live stream") come from it.

mod publish;
mod server;
mod slow;
mod sse;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::server::Server;

#[derive(Debug, Parser)]
#[command(about = "Benchmark herald's live stream: N SSE clients, a steady publish rate")]
struct Args {
    /// The herald binary to start (build it with --release).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// Concurrent SSE clients (each one TCP connection; raise `ulimit -n` above twice this).
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Events published per second, in total.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Publisher tasks sharing the rate.
    #[arg(long, default_value_t = 16)]
    publishers: u32,
    /// Most POSTs outstanding at once (all publishers together).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Durable events (stored, then streamed) or transient ones (streamed only).
    #[arg(long, value_enum, default_value_t = Kind::Durable)]
    kind: Kind,
    /// How long to wait after publishing for clients to catch up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Slow clients besides: connections that send a request head one byte a second and
    /// never finish it, reconnecting whenever herald cuts them off.
    #[arg(long, default_value_t = 0)]
    half_header: u32,
    /// Slow clients besides: SSE clients (4 KiB receive window) that never read.
    #[arg(long, default_value_t = 0)]
    slow_readers: u32,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Durable,
    Transient,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0 && args.publishers > 0 && args.clients > 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::start(&args.herald)?;
    let event_type = match args.kind {
        Kind::Durable => server::DURABLE,
        Kind::Transient => server::TRANSIENT,
    };
    println!(
        "herald-ssebench: {} SSE clients, {} {event_type} events/s for {:?} ({} publishers), herald pid {} on {}",
        args.clients,
        args.rate,
        args.duration,
        args.publishers,
        server.pid(),
        server.addr
    );

    // Connect every client (a few at a time, so the accept queue never overflows) and
    // start reading at once; nothing is published until all are connected.
    let progress = Arc::new(sse::Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = JoinSet::new();
    for _ in 0..args.clients {
        let (addr, gate) = (server.addr, Arc::clone(&gate));
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await;
            sse::connect(addr, server::KEY).await
        });
    }
    let mut readers = JoinSet::new();
    while let Some(connected) = connecting.join_next().await {
        let connected = connected?.context("an SSE client could not connect")?;
        readers.spawn(sse::run(connected, Arc::clone(&progress), stop_rx.clone()));
    }
    let slow_stats = Arc::new(slow::SlowStats::default());
    let mut slow_clients = JoinSet::new();
    if args.half_header + args.slow_readers > 0 {
        for i in 0..args.half_header {
            slow_clients.spawn(slow::half_header(
                server.addr,
                Arc::clone(&slow_stats),
                stop_rx.clone(),
            ));
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for _ in 0..args.slow_readers {
            slow_clients.spawn({
                let (stats, stop) = (Arc::clone(&slow_stats), stop_rx.clone());
                let addr = server.addr;
                async move { slow::never_reads(addr, server::KEY, stats, stop).await }
            });
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let s = &slow_stats;
            let readers =
                s.readers_open.load(Ordering::Relaxed) + s.readers_refused.load(Ordering::Relaxed);
            if s.connects.load(Ordering::Relaxed) >= u64::from(args.half_header)
                && readers >= u64::from(args.slow_readers)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "slow clients: {} half-header connections made, {} never-reading SSE streams open ({} refused)",
            slow_stats.connects.load(Ordering::Relaxed),
            slow_stats.readers_open.load(Ordering::Relaxed),
            slow_stats.readers_refused.load(Ordering::Relaxed),
        );
    }
    let connected_memory = server.memory();
    println!(
        "connected {} clients; herald RSS {:.1} MiB",
        args.clients,
        mib(connected_memory.rss_kib)
    );

    // Sample herald's resident set while it works.
    let pid = server.pid();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampling = tokio::spawn({
        let peak_rss = Arc::clone(&peak_rss);
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(250));
            loop {
                ticks.tick().await;
                peak_rss.fetch_max(server::memory(pid).rss_kib, Ordering::Relaxed);
            }
        }
    });

    let cpu_before = (
        server.cpu_seconds(),
        server::cpu_seconds("/proc/self/stat"),
        server::machine_busy_seconds(),
    );
    let wall = Instant::now();
    let plan = publish::Plan {
        rate: args.rate,
        tasks: args.publishers,
        max_in_flight: args.max_in_flight,
        duration: args.duration,
    };
    let published = publish::run(server.addr, server::KEY, event_type, &plan).await;

    // Drain: until every client has received (or been told it missed) every event.
    let expected = published.accepted * u64::from(args.clients);
    let drain_start = Instant::now();
    while drain_start.elapsed() < args.drain {
        let seen =
            progress.events.load(Ordering::Relaxed) + progress.missed.load(Ordering::Relaxed);
        if seen >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_after = drain_start.elapsed();
    let wall = wall.elapsed();
    let cpu = (
        server.cpu_seconds() - cpu_before.0,
        server::cpu_seconds("/proc/self/stat") - cpu_before.1,
        server::machine_busy_seconds() - cpu_before.2,
    );
    let memory = server.memory();
    stop_tx.send_replace(true);
    let mut reports = Vec::new();
    while let Some(report) = readers.join_next().await {
        reports.push(report?);
    }
    sampling.abort();
    let sampled_peak = peak_rss.load(Ordering::Relaxed);
    if args.half_header > 0 {
        println!(
            "half-header clients: herald cut them off {} times ({} connections made in all)",
            slow_stats.cut_off.load(Ordering::Relaxed),
            slow_stats.connects.load(Ordering::Relaxed),
        );
    }
    slow_clients.abort_all();

    print_report(
        &args,
        &published,
        &reports,
        caught_up_after,
        wall,
        cpu,
        connected_memory,
        memory,
        sampled_peak,
    );
    drop(server);
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one flat report of one run; a struct would only rename them
fn print_report(
    args: &Args,
    published: &publish::Published,
    reports: &[sse::Report],
    caught_up_after: Duration,
    wall: Duration,
    cpu: (f64, f64, f64),
    connected: server::Memory,
    end: server::Memory,
    sampled_peak_kib: u64,
) {
    let secs = published.elapsed.as_secs_f64();
    println!(
        "published: {} accepted in {secs:.1} s ({:.0}/s), {} failed{}",
        published.accepted,
        published.accepted as f64 / secs,
        published.failed,
        published
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let h = &published.ingest_us;
    println!(
        "ingest POST round trip: p50 {} p99 {} max {}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.max())
    );

    let mut per_client: Vec<u64> = reports.iter().map(|r| r.events).collect();
    per_client.sort_unstable();
    let received: u64 = per_client.iter().sum();
    let expected = published.accepted * reports.len() as u64;
    let complete = per_client
        .iter()
        .filter(|n| **n >= published.accepted)
        .count();
    println!(
        "received: {received} of {expected} event messages ({:.3} %); per client min {} / median {} / max {}; {complete} of {} clients got every event; all caught up {:.2} s after publishing ended{}",
        100.0 * received as f64 / expected.max(1) as f64,
        per_client.first().unwrap_or(&0),
        per_client.get(per_client.len() / 2).unwrap_or(&0),
        per_client.last().unwrap_or(&0),
        reports.len(),
        caught_up_after.as_secs_f64(),
        if caught_up_after >= args.drain {
            " (drain limit reached)"
        } else {
            ""
        }
    );
    let lagged: u64 = reports.iter().map(|r| r.lagged).sum();
    let missed: u64 = reports.iter().map(|r| r.missed).sum();
    let lagging = reports.iter().filter(|r| r.lagged > 0).count();
    println!("lagged: {lagged} messages to {lagging} clients, {missed} events missed in all");
    let errors: Vec<&String> = reports.iter().filter_map(|r| r.error.as_ref()).collect();
    if let Some(first) = errors.first() {
        println!("stream errors: {} clients (first: {first})", errors.len());
    }

    let mut latency = Histogram::<u64>::new_with_bounds(1, 120_000_000, 2).expect("bounds");
    for r in reports {
        latency.add(&r.latency_us).expect("same bounds");
    }
    println!(
        "latency publish→client over {} messages: p50 {} p90 {} p99 {} p99.9 {} max {}",
        latency.len(),
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.9)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.value_at_quantile(0.999)),
        ms(latency.max())
    );
    println!(
        "herald memory: RSS {:.1} MiB with clients connected, {:.1} MiB at the end, sampled peak {:.1} MiB, VmHWM {:.1} MiB",
        mib(connected.rss_kib),
        mib(end.rss_kib),
        mib(sampled_peak_kib),
        mib(end.hwm_kib)
    );
    let wall = wall.as_secs_f64();
    let others = (cpu.2 - cpu.0 - cpu.1).max(0.0);
    println!(
        "CPU over {wall:.1} s: herald {:.1} s ({:.2} cores), this benchmark {:.1} s ({:.2} cores), other processes {others:.1} s ({:.2} cores)",
        cpu.0,
        cpu.0 / wall,
        cpu.1,
        cpu.1 / wall,
        others / wall
    );
}

fn ms(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
