//! `herald-load ingest`: N clients, each publishing single events back to back over its own
//! keep-alive connection for a fixed time; reports accepted events/s and reply latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use herald_loadgen::payload::{EventTemplate, RunIds, TARGET_BYTES};
use herald_loadgen::stats::{LatencySummary, per_second};
use serde::Serialize;
use tokio::time::Instant;

use crate::publish::{Publisher, Server, Tally};

/// A pause after a request that got no answer, so a server that is down is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub server: Server,
    /// More servers (nodes of one cluster): client n publishes to `[server, spread…][n % len]`.
    /// Set by `herald-load cluster`; not a flag.
    #[arg(skip)]
    pub spread: Vec<Server>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to publish before measuring (connections opened, caches warm).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Event type; must be declared in the server's configuration.
    #[arg(long = "type", default_value = "capsule.create")]
    pub event_type: String,
    /// `team_id` of the events; omitted by default (the key's team is used).
    #[arg(long)]
    pub team: Option<String>,
    /// Stop after this many requests in all, even if time remains.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_requests: u64,
    /// Print a JSON object instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub clients: u32,
    pub warmup_s: f64,
    pub measured_s: f64,
    pub event_type: String,
    pub event_bytes: usize,
    /// 2xx replies (`accepted`) to requests that started and finished within the window.
    pub events_per_s: f64,
    pub latency: LatencySummary,
    #[serde(flatten)]
    pub tally: Tally,
    /// Requests made during the warm-up or finishing after the window (not counted).
    pub uncounted: u64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let report = measure(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// Runs the clients of `args` for the warm-up and the window, and sums up what was counted.
pub async fn measure(args: &Args) -> anyhow::Result<Report> {
    let url = args.server.events_url()?;
    let servers: Vec<&Server> = std::iter::once(&args.server).chain(&args.spread).collect();
    let publishers = (0..args.clients as usize)
        .map(|n| Publisher::new(servers[n % servers.len()]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let template = Arc::new(EventTemplate {
        event_type: args.event_type.clone(),
        team: args.team.clone(),
    });
    let run = RunIds::fresh(SystemTime::now());
    let budget = Arc::new(AtomicU64::new(args.max_requests));
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    if !args.json {
        eprintln!(
            "herald-load ingest: {} clients → {url} for {} (+{} warm-up)",
            args.clients,
            humantime::format_duration(args.duration),
            humantime::format_duration(args.warmup)
        );
    }

    let tasks: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(n, publisher)| {
            let ids = run.child(&format!("c{n}"));
            let template = Arc::clone(&template);
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut uncounted = 0u64;
                let mut last_counted = None;
                let mut seq = 0;
                while Instant::now() < end && take_one(&budget) {
                    let body = template.body(&ids.id(seq), &[]);
                    seq += 1;
                    let began = Instant::now();
                    let outcome = publisher.publish(body).await;
                    let finished = Instant::now();
                    let failed = matches!(outcome, crate::publish::Outcome::Failed { .. });
                    if began >= measure_from && finished <= end {
                        tally.add(outcome, finished - began);
                        last_counted = Some(finished);
                    } else {
                        uncounted += 1;
                    }
                    if failed {
                        tokio::time::sleep_until(end.min(Instant::now() + ERROR_PAUSE)).await;
                    }
                }
                (tally, uncounted, last_counted)
            })
        })
        .collect();

    let mut tally = Tally::default();
    let mut uncounted = 0;
    let mut last_counted: Option<Instant> = None;
    for task in tasks {
        let (t, u, last) = task.await?;
        tally.merge(t);
        uncounted += u;
        last_counted = last_counted.max(last);
    }
    // When the request budget ran out early, the window is shorter than asked.
    let window_end = if budget.load(Ordering::Relaxed) == 0 {
        last_counted.unwrap_or(end).min(end)
    } else {
        end
    };
    let measured = window_end.saturating_duration_since(measure_from);
    let report = Report {
        url: url.to_string(),
        clients: args.clients,
        warmup_s: args.warmup.as_secs_f64(),
        measured_s: measured.as_secs_f64(),
        event_type: args.event_type.clone(),
        event_bytes: TARGET_BYTES,
        events_per_s: per_second(tally.accepted, measured),
        latency: tally.latencies.summary(),
        tally,
        uncounted,
    };
    Ok(report)
}

/// Takes one request from the shared budget; false once it is spent.
fn take_one(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

fn print_human(r: &Report) {
    println!(
        "ingest: {} clients, {:.1} s measured after {:.1} s warm-up, single {}-byte `{}` events",
        r.clients, r.measured_s, r.warmup_s, r.event_bytes, r.event_type
    );
    println!(
        "  accepted (2xx): {}  →  {:.0} events/s",
        r.tally.accepted, r.events_per_s
    );
    println!("  reply latency:  {}", r.latency);
    let problems = r.tally.problems();
    if problems.is_empty() {
        println!("  rejected: 0, errors: 0");
    }
    for line in problems {
        println!("  {line}");
    }
    println!(
        "  not counted (warm-up or finished after the window): {}",
        r.uncounted
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_exactly() {
        let budget = AtomicU64::new(2);
        assert!(take_one(&budget));
        assert!(take_one(&budget));
        assert!(!take_one(&budget));
        assert_eq!(budget.load(Ordering::Relaxed), 0);
    }
}
