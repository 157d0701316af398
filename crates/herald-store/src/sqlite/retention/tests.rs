//! Pruning a store full of old rows while ingest goes on, and the switch of an older
//! database to incremental vacuum.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_core::{Event, TeamId, Timestamp};

use crate::{Finish, NewAttempt, NewDelivery, Next, PruneLimits, SqliteStore, Store};

const DAY: i64 = 86_400;
const OLD: usize = 600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + i128::from(secs)) * 1_000_000_000)
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        event: "capsule.create".into(),
        outcome: None,
        timestamp: at(0),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: None,
        metadata: Default::default(),
        error: None,
    }
}

fn batch(ids: impl Iterator<Item = String>) -> Vec<(Event, Vec<NewDelivery>)> {
    ids.map(|id| {
        let delivery = NewDelivery {
            id: format!("dlv_{id}"),
            channel: "hook".into(),
            subscription: 0,
            held: false,
            silence: None,
            dedup: None,
            fold: None,
            subscription_name: None,
        };
        (event(&id), vec![delivery])
    })
    .collect()
}

fn pragma(store: &SqliteStore, name: &str) -> i64 {
    rusqlite::Connection::open(store.path())
        .unwrap()
        .query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_are_pruned_in_batches_while_ingest_continues_and_pending_ones_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&tmp.path().join("data")).unwrap());
    assert_eq!(
        pragma(&store, "auto_vacuum"),
        2,
        "a new store vacuums incrementally"
    );
    // A hundred days ago: OLD events, a third each succeeded, dead and still retrying.
    store
        .accept(batch((0..OLD).map(|i| format!("old_{i}"))), at(0))
        .await
        .unwrap();
    let claims = store.hold_due(at(0), OLD, &[]).await.unwrap();
    assert_eq!(claims.len(), OLD);
    let finishes = claims
        .into_iter()
        .map(|c| {
            let n: usize = c.delivery.id.rsplit('_').next().unwrap().parse().unwrap();
            let next = match n % 3 {
                0 => Next::Succeeded,
                1 => Next::Dead,
                _ => Next::RetryAt(at(101 * DAY)),
            };
            Finish {
                delivery_id: c.delivery.id.clone(),
                lease: c.lease,
                attempt: NewAttempt {
                    started_at: at(1),
                    duration_ms: 5,
                    status_code: Some(if next == Next::Succeeded { 200 } else { 500 }),
                    error: None,
                    response: Some("x".repeat(2000)),
                },
                next,
                now: at(1),
            }
        })
        .collect();
    for r in store.finish_many(finishes).await.unwrap() {
        r.unwrap();
    }
    let before = store.stats().await.unwrap();
    assert_eq!(
        (before.events, before.pending),
        (OLD as u64, OLD as u64 / 3)
    );

    // Ingest goes on, one event per commit, while pruning runs in batches of 50.
    let now = at(100 * DAY);
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) || n < 20 {
                store
                    .accept(batch(std::iter::once(format!("new_{n}"))), now)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let limits = PruneLimits {
        events: Duration::from_secs(30 * DAY as u64),
        attempts: Duration::from_secs(7 * DAY as u64),
        dead: Duration::from_secs(90 * DAY as u64),
        max_store_size: None,
        dedup: std::time::Duration::ZERO,
    };
    let (mut batches, mut removed) = (0, crate::PruneReport::default());
    loop {
        let r = store.prune(&limits, now, 50).await.unwrap();
        batches += 1;
        removed.events += r.events;
        removed.dead += r.dead;
        if !r.more {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let ingested = ingest.await.unwrap();
    assert!(batches > 4, "pruned in {batches} batches");
    // Succeeded events go; dead letters (90 days) go, and then their events.
    assert_eq!(removed.events, 2 * OLD as u64 / 3, "{removed:?}");
    assert_eq!(removed.dead, OLD as u64 / 3, "{removed:?}");

    let after = store.stats().await.unwrap();
    assert_eq!(after.pending, before.pending + ingested as u64);
    assert_eq!(after.events, OLD as u64 / 3 + ingested as u64);
    assert_eq!(after.dead, 0);
    assert_eq!(after.oldest_pending, Some(at(0)));
    for i in (2..OLD).step_by(3) {
        let id = format!("dlv_old_{i}");
        let (d, attempts) = store.get_delivery(None, &id).await.unwrap().unwrap();
        assert_eq!(d.status, crate::DeliveryStatus::Pending, "{id}");
        assert_eq!(attempts.len(), 1, "{id} lost its attempt");
    }
    for n in 0..ingested {
        let id = format!("new_{n}");
        assert!(store.get_event(None, &id).await.unwrap().is_some(), "{id}");
    }
    // Freed pages went back to the filesystem.
    assert!(
        pragma(&store, "freelist_count") < 100,
        "free pages kept: {}",
        pragma(&store, "freelist_count")
    );
}

#[test]
fn a_database_from_before_retention_is_switched_to_incremental_vacuum() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    {
        let conn = rusqlite::Connection::open(dir.join(super::super::DB_FILE)).unwrap();
        conn.execute_batch(super::super::schema::MIGRATIONS[0])
            .unwrap();
        conn.execute_batch("PRAGMA user_version = 1").unwrap();
        let mode: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    let store = SqliteStore::open(&dir).unwrap();
    assert_eq!(pragma(&store, "auto_vacuum"), 2);
    assert_eq!(
        pragma(&store, "user_version"),
        super::super::schema::schema_version()
    );
}
