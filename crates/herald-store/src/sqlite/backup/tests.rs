//! Tests of backup and restore against real database files, with ingest running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use herald_core::{Event, TeamId, Timestamp};

use crate::{NewDelivery, SqliteStore, Store, StoreError};

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        event: "capsule.create".into(),
        outcome: None,
        timestamp: Timestamp::from_unix_nanos(1_767_225_600_000_000_000),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: None,
        metadata: Default::default(),
        error: None,
    }
}

async fn accept(store: &SqliteStore, id: &str) {
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
    let now = Timestamp::from_unix_nanos(1_767_225_600_000_000_000);
    store
        .accept(vec![(event(id), vec![delivery])], now)
        .await
        .unwrap();
}

/// The ids of the events in the store in `dir`, after `herald serve`'s way of opening it
/// (migrations, lock) succeeded.
async fn event_ids(dir: &std::path::Path) -> BTreeSet<String> {
    let store = SqliteStore::open(dir).unwrap();
    assert!(
        store
            .get_event(None, "no-such-event")
            .await
            .unwrap()
            .is_none()
    );
    let db = store.path().to_owned();
    drop(store);
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_ingest_holds_everything_accepted_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = Arc::new(SqliteStore::open(&data).unwrap());
    let mut before = BTreeSet::new();
    for i in 0..300 {
        let id = format!("before_{i}");
        accept(&store, &id).await;
        before.insert(id);
    }
    // Ingest goes on while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                accept(&store, &format!("during_{n}")).await;
                n += 1;
            }
            n
        })
    };
    let dest = tmp.path().join("copy.db");
    let (d, b) = (data.clone(), dest.clone());
    let report = tokio::task::spawn_blocking(move || SqliteStore::backup(&d, &b))
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    let during = ingest.await.unwrap();
    assert!(during > 0, "no event was accepted while the backup ran");
    assert!(report.events >= 300, "{report:?}");
    assert_eq!(report.deliveries, report.events, "{report:?}");
    assert!(
        !tmp.path().join("copy.db-wal").exists(),
        "a backup is one self-contained file"
    );

    // The backup opens as a store and holds every event accepted before it started.
    let opened = tmp.path().join("opened");
    std::fs::create_dir(&opened).unwrap();
    std::fs::copy(&dest, opened.join(super::super::DB_FILE)).unwrap();
    let restored = event_ids(&opened).await;
    let missing: Vec<_> = before.difference(&restored).collect();
    assert!(missing.is_empty(), "missing from the backup: {missing:?}");
    assert_eq!(restored.len() as u64, report.events);

    // A backup never overwrites a file.
    let again = SqliteStore::backup(&data, &dest).unwrap_err();
    assert!(matches!(again, StoreError::File { .. }), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_refused_while_the_store_is_open_and_replaces_it_when_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = SqliteStore::open(&data).unwrap();
    accept(&store, "before_1").await;
    let backup = tmp.path().join("backup.db");
    SqliteStore::backup(&data, &backup).unwrap();
    accept(&store, "before_2").await;

    let refused = SqliteStore::restore(&backup, &data, 7).unwrap_err();
    let StoreError::Locked { holder, .. } = &refused else {
        panic!("expected Locked, got {refused}");
    };
    assert!(holder.contains(&std::process::id().to_string()), "{holder}");
    drop(store);
    // Nothing was touched by the refused restore.
    assert_eq!(
        event_ids(&data).await,
        BTreeSet::from(["before_1".to_string(), "before_2".to_string()])
    );

    let report = SqliteStore::restore(&backup, &data, 7).unwrap();
    assert_eq!(report.events, 1);
    let kept = report
        .previous
        .clone()
        .expect("the replaced database is kept");
    assert!(kept.ends_with("herald.db.before-restore-7"), "{kept:?}");
    assert_eq!(
        event_ids(&data).await,
        BTreeSet::from(["before_1".to_string()])
    );
    // The kept database still holds what was replaced.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::copy(&kept, old.join(super::super::DB_FILE)).unwrap();
    assert_eq!(event_ids(&old).await.len(), 2);
}

#[test]
fn restore_refuses_what_is_not_a_herald_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not a database").unwrap();
    let other = tmp.path().join("other.db");
    rusqlite::Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let newer = tmp.path().join("newer.db");
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 9999")
        .unwrap();
    for (path, expected) in [
        (&text, "not a readable SQLite database"),
        (&other, "no schema version"),
        (&newer, "newer than the"),
        (&tmp.path().join("absent.db"), "no such file"),
    ] {
        let err = SqliteStore::restore(path, &data, 1).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, StoreError::NotHerald { .. }) && message.contains(expected),
            "{}: {message}",
            path.display()
        );
    }
    assert!(
        !data.join(super::super::DB_FILE).exists(),
        "a refused restore creates no store"
    );
}
