//! Benchmark: accept latency (p50/p99) with and without a prune running over a big store.
//!
//! First builds a store of `events` old, finished events (one succeeded delivery and one
//! attempt each: three rows per event) with plain SQL in big transactions, then measures
//! single-event accepts by `producers` concurrent tasks for `seconds`, first alone and
//! then while pruning batch after batch (`[retention]` defaults: everything generated is
//! past them). Run with a release build:
//!
//! ```text
//! cargo run --release -p herald-store --example prune_load -- [events] [seconds] [producers] [dir] [batch]
//! ```
//!
//! Defaults: 3,333,334 events (10 M rows), 20 s, 16 producers, a temporary directory,
//! prune batches of 100 (the `[retention] batch` default).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_core::{Event, TeamId, Timestamp};
use herald_store::{NewDelivery, PruneLimits, PruneReport, SqliteStore, Store};

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Timestamp::from_unix_nanos(i128::try_from(nanos).unwrap_or(0))
}

fn arg<T: std::str::FromStr>(index: usize, default: T) -> T {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn event(id: String) -> Event {
    Event {
        id,
        event: "capsule.create".into(),
        outcome: None,
        timestamp: now(),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: None,
        metadata: [("region".to_string(), "eu-west-3".to_string())].into(),
        error: None,
    }
}

/// Fills the store with `events` finished events, a year old, in transactions of 100,000.
fn generate(db: &std::path::Path, events: u64) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(db)?;
    conn.execute_batch("PRAGMA synchronous = OFF")?;
    let have: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let have = u64::try_from(have).unwrap_or(0);
    let old: i64 = 1_735_689_600_000_000_000; // 2025-01-01
    let body = serde_json::to_string(&event("evt_template".into())).unwrap();
    let started = Instant::now();
    let mut n = have;
    while n < events {
        let tx = conn.transaction()?;
        {
            let mut ev = tx.prepare_cached(
                "INSERT INTO events (id, team_id, event_type, body, accepted_at)
                 VALUES (?1, 'acme', 'capsule.create', ?2, ?3)",
            )?;
            let mut dl = tx.prepare_cached(
                "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                     subscription, status, attempts, created_at, updated_at)
                 VALUES (?1, ?2, 'acme', ?3, 'capsule.create', 'hook', 0, 'succeeded', 1, ?4, ?4)",
            )?;
            let mut at = tx.prepare_cached(
                "INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code)
                 VALUES (?1, 1, ?2, 12, 200)",
            )?;
            let end = (n + 100_000).min(events);
            for i in n..end {
                let t = old + i as i64 * 1000;
                let id = format!("evt_gen_{i:010}");
                ev.execute(rusqlite::params![id, body, t])?;
                let seq = tx.last_insert_rowid();
                dl.execute(rusqlite::params![format!("dlv_gen_{i:010}"), seq, id, t])?;
                at.execute(rusqlite::params![tx.last_insert_rowid(), t])?;
            }
            n = end;
        }
        tx.commit()?;
        eprintln!(
            "generated {n} events ({} rows) in {:.0?}",
            n * 3,
            started.elapsed()
        );
    }
    Ok(())
}

/// Accepts single events from `producers` tasks for `seconds`; the sorted latencies.
async fn measure(
    store: &Arc<SqliteStore>,
    producers: usize,
    seconds: u64,
    tag: &str,
) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (store, stop, counter) =
                (Arc::clone(store), Arc::clone(&stop), Arc::clone(&counter));
            // Unique per run: a rerun on the same store must not accept duplicates.
            let tag = format!("{tag}_{}", std::process::id());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let id = format!("evt_{tag}_{n}");
                    let delivery = NewDelivery {
                        id: format!("dlv_{tag}_{n}"),
                        channel: "hook".into(),
                        subscription: 0,
                        held: true,
                        silence: None,
                        dedup: None,
                        fold: None,
                        subscription_name: None,
                    };
                    let started = Instant::now();
                    store
                        .accept(vec![(event(id), vec![delivery])], now())
                        .await
                        .unwrap();
                    latencies.push(started.elapsed());
                }
                latencies
            })
        })
        .collect();
    // (herald-store's tokio has no timer; a blocking sleep on the blocking pool will do.)
    tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_secs(seconds)))
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn report(name: &str, latencies: &[Duration], seconds: u64) {
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{name}: {} accepts ({:.0}/s), p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        pick(0.50),
        pick(0.99),
        latencies[latencies.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let events: u64 = arg(1, 3_333_334);
    let seconds: u64 = arg(2, 20);
    let producers: usize = arg(3, 16);
    let batch: usize = arg(5, 100);
    let tmp;
    let dir = match std::env::args().nth(4) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().unwrap();
            tmp.path().join("data")
        }
    };
    let db = SqliteStore::open(&dir).unwrap().path().to_owned();
    generate(&db, events).unwrap();
    let store = Arc::new(SqliteStore::open(&dir).unwrap());
    println!("store: {} bytes", std::fs::metadata(&db).unwrap().len());

    let alone = measure(&store, producers, seconds, "alone").await;
    report("ingest alone", &alone, seconds);

    let limits = PruneLimits {
        events: Duration::from_secs(30 * 86_400),
        attempts: Duration::from_secs(7 * 86_400),
        dead: Duration::from_secs(90 * 86_400),
        max_store_size: None,
        dedup: std::time::Duration::ZERO,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pruner = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut total = PruneReport::default();
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = store.prune(&limits, now(), batch).await.unwrap();
                batches += 1;
                total.events += r.events;
                total.deliveries += r.deliveries;
                total.attempts += r.attempts;
                if !r.more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            (total, batches)
        })
    };
    let during = measure(&store, producers, seconds, "prune").await;
    stop.store(true, Ordering::Relaxed);
    let (pruned, batches) = pruner.await.unwrap();
    report("ingest during prune", &during, seconds);
    println!(
        "pruned in {seconds} s: {} rows ({} events, {} deliveries, {} attempts) in {batches} batches",
        pruned.removed(),
        pruned.events,
        pruned.deliveries,
        pruned.attempts
    );
}
