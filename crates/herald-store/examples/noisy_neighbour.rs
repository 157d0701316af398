//! Benchmark: does one team's backlog behind a disabled channel slow another team's
//! ingest? (issue 15, item 3)
//!
//! Team `noisy` gets `backlog` due deliveries on its channel `gone` (a 410 endpoint: the
//! dispatcher excludes it from every read for work), built with the store's own `accept`
//! in batches of 5,000. Then `producers` tasks accept `events` single events of team
//! `quiet`, each waiting for its commit as an HTTP request would, while a dispatcher task
//! reads for work every 10 ms the way `dispatch.rs` does (`hold_due` of a page, then
//! `next_due`, both excluding `noisy/gone`). Both share the writer thread with ingest.
//! Prints the accept latency percentiles. Release build, as for every figure:
//!
//! ```text
//! cargo run --release -p herald-store --example noisy_neighbour -- [backlog] [producers] [events]
//! ```
//!
//! Defaults: a backlog of 500,000, 64 producers, 20,000 events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::{Event, Outcome, Resource, TeamId, Timestamp};
use herald_store::{NewDelivery, SqliteStore, Store};

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Timestamp::from_unix_nanos(i128::try_from(nanos).unwrap_or(0))
}

fn event(team: &TeamId, n: u64) -> Event {
    Event {
        id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: now(),
        team_id: team.clone(),
        actor: None,
        resource: Some(Resource {
            id: format!("cap_{n:012}"),
            kind: "capsule".into(),
        }),
        metadata: BTreeMap::from([("region".into(), "eu-west-3".into())]),
        error: Some("create failed: quota exceeded".into()),
    }
}

fn delivery(channel: &str, held: bool) -> NewDelivery {
    NewDelivery {
        id: format!("dlv_{}", uuid::Uuid::now_v7().simple()),
        channel: channel.into(),
        subscription: 0,
        subscription_name: None,
        held,
        silence: None,
        dedup: None,
        fold: None,
    }
}

fn arg<T: std::str::FromStr>(index: usize, default: T) -> T {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backlog: u64 = arg(1, 500_000);
    let producers: u64 = arg(2, 64);
    let events: u64 = arg(3, 20_000);
    let temp = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(temp.path())?);
    let (noisy, quiet) = (TeamId::parse("noisy")?, TeamId::parse("quiet")?);

    // The backlog: due at once (not held), as after a restart with the channel disabled.
    let built = Instant::now();
    let mut made = 0;
    while made < backlog {
        let batch: Vec<_> = (made..backlog.min(made + 5_000))
            .map(|n| (event(&noisy, n), vec![delivery("gone", false)]))
            .collect();
        made += batch.len() as u64;
        store.accept(batch, now()).await?;
    }
    println!(
        "backlog of {backlog} built in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let dispatcher = {
        let (store, stop, reads) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&reads));
        let exclude = vec![(noisy.clone(), "gone".to_string())];
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // The store's dev-dependencies leave out tokio's timer; a blocking-pool
                // sleep does the same here.
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(10)))
                    .await
                    .map_err(|_| herald_store::StoreError::Internal("sleep failed"))?;
                store.hold_due(now(), 100, &exclude).await?;
                store.next_due(&exclude).await?;
                reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), herald_store::StoreError>(())
        })
    };

    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (store, team, issued) = (Arc::clone(&store), quiet.clone(), Arc::clone(&issued));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return Ok::<_, herald_store::StoreError>(latencies);
                }
                let sent = Instant::now();
                store
                    .accept(vec![(event(&team, n), vec![delivery("ok", true)])], now())
                    .await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    dispatcher.await??;
    latencies.sort_unstable();
    println!(
        "{events} accepts of team quiet by {producers} producers in {:.2} s: {:.0} accepts/s; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} dispatcher reads",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        reads.load(Ordering::Relaxed),
    );
    Ok(())
}
