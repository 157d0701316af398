//! Load example: how many single-event accepts per second group commit sustains.
//!
//! Each of `PRODUCERS` tasks accepts one event with one delivery at a time and waits for
//! its commit, as concurrent HTTP requests would. Run with a release build, on the disk
//! herald will use:
//!
//! ```text
//! cargo run --release -p herald-store --example accept_load -- [producers] [events] [dir]
//! ```
//!
//! Defaults: 64 producers, 200 000 events, a temporary directory under the system's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use herald_core::{Actor, ActorType, Event, Outcome, Resource, TeamId, Timestamp};
use herald_store::{NewDelivery, SqliteStore, Store};

fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Timestamp::from_unix_nanos(i128::try_from(nanos).unwrap_or(0))
}

/// An event of about 500 bytes of JSON, like the ones the control planes publish.
fn sample_event(team: &TeamId, n: u64) -> Event {
    Event {
        id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: now(),
        team_id: team.clone(),
        actor: Some(Actor {
            kind: ActorType::ApiKey,
            id: Some("key_01HV3X4Q9Z".into()),
            name: Some("ci-deployer".into()),
        }),
        resource: Some(Resource {
            id: format!("cap_{n:012}"),
            kind: "capsule".into(),
        }),
        metadata: BTreeMap::from([
            ("region".into(), "eu-west-3".into()),
            ("host".into(), "node-17.internal".into()),
            ("image".into(), "registry.example/app:2026.01.5".into()),
            ("request_id".into(), "req_6c1f9d3a2b7e4f10".into()),
        ]),
        error: Some(
            "create failed: quota exceeded for team; 12 of 12 capsules in use, \
             release one or raise the quota"
                .into(),
        ),
    }
}

fn arg<T: std::str::FromStr>(index: usize, default: T) -> T {
    std::env::args()
        .nth(index)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let producers: u64 = arg(1, 64);
    let events: u64 = arg(2, 200_000);
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(3)
        .map_or_else(|| temp.path().to_owned(), Into::into);
    let store = Arc::new(SqliteStore::open(&dir)?);
    let team = TeamId::parse("acme")?;

    let issued = Arc::new(AtomicU64::new(0));
    let before = store.write_stats();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (store, team, issued) = (Arc::clone(&store), team.clone(), Arc::clone(&issued));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return Ok::<(), herald_store::StoreError>(());
                }
                let delivery = NewDelivery {
                    id: format!("dlv_{}", uuid::Uuid::now_v7().simple()),
                    channel: "ops-slack".into(),
                    subscription: 0,
                    subscription_name: None,
                    held: true,
                    silence: None,
                    dedup: None,
                    fold: None,
                };
                store
                    .accept(vec![(sample_event(&team, n), vec![delivery])], now())
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let stats = store.write_stats();
    let transactions = stats.transactions - before.transactions;
    let requests = stats.requests - before.requests;

    println!(
        "{events} accepts by {producers} producers in {:.2} s: {:.0} accepts/s",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "{transactions} transactions, {:.1} requests per transaction on average",
        requests as f64 / transactions.max(1) as f64
    );
    println!("queue depth {}", store.queue_depth().await?);
    Ok(())
}
