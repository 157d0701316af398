//! Tests of `SqliteStore` against real database files in temporary directories.
//!
//! Long because it holds one case per behaviour of the embedded store (group commit,
//! restarts, leases, paging, scoping), each readable on its own; the promises every
//! backend shares are in `crate::conformance` and run at the end of this file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use herald_core::{Event, Outcome, TeamId, Timestamp};
use tempfile::TempDir;

use super::SqliteStore;
use crate::{
    Accepted, ChannelState, DeliveryFilter, DeliveryStatus, LeaseToken, NewAttempt, NewDelivery,
    Next, Store, StoreError,
};

/// 2026-01-01T00:00:00Z; tests count seconds from here.
const BASE_SECS: i128 = 1_767_225_600;
const LEASE: Duration = Duration::from_secs(30);

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((BASE_SECS + i128::from(secs)) * 1_000_000_000)
}

fn team(name: &str) -> TeamId {
    TeamId::parse(name).unwrap()
}

fn event(team_name: &str, id: &str, event_type: &str) -> Event {
    Event {
        id: id.into(),
        event: event_type.into(),
        outcome: Some(Outcome::Error),
        timestamp: at(-5),
        team_id: team(team_name),
        actor: None,
        resource: None,
        metadata: BTreeMap::from([("capsule".to_string(), "c-1".to_string())]),
        error: Some("disk full".into()),
    }
}

fn delivery(id: &str, channel: &str) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        channel: channel.into(),
        subscription: 0,
        subscription_name: None,
        held: false,
        silence: None,
        dedup: None,
        fold: None,
    }
}

fn attempt(status_code: Option<u16>, error: Option<&str>) -> NewAttempt {
    NewAttempt {
        started_at: at(1),
        duration_ms: 120,
        status_code,
        error: error.map(str::to_owned),
        response: Some("body".into()),
    }
}

struct Fixture {
    dir: TempDir,
    store: Arc<SqliteStore>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
        Fixture { dir, store }
    }

    /// A process restart: the store is closed and opened again on the same files.
    fn restart(self) -> Fixture {
        let Fixture { dir, store } = self;
        drop(Arc::into_inner(store).expect("no other handle to the store"));
        let store = Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
        Fixture { dir, store }
    }

    async fn accept_one(&self, event: Event, deliveries: Vec<NewDelivery>) -> Accepted {
        let mut result = self
            .store
            .accept(vec![(event, deliveries)], at(0))
            .await
            .unwrap();
        assert_eq!(result.len(), 1);
        result.remove(0)
    }

    async fn claim_ids(&self, now: Timestamp, exclude: &[(TeamId, String)]) -> BTreeSet<String> {
        self.store
            .claim_due(now, 100, LEASE, exclude)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.delivery.id)
            .collect()
    }

    /// Holds the writer thread busy until the returned sender is dropped, so that the
    /// test can queue requests and know they land in the same group.
    async fn pause_writer(&self) -> std::sync::mpsc::Sender<()> {
        let (started, is_started) = tokio::sync::oneshot::channel();
        let (resume, wait) = std::sync::mpsc::channel::<()>();
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            store
                .writer
                .run(move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
                .unwrap();
        });
        is_started.await.unwrap();
        resume
    }

    async fn wait_until_queued(&self, n: usize) {
        while self.store.writer.queued() < n {
            tokio::task::yield_now().await;
        }
    }
}

fn ids<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_owned).collect()
}

#[tokio::test]
async fn accept_stores_the_event_and_its_fanout_in_one_transaction() {
    let f = Fixture::new();
    let original = event("acme", "evt_1", "capsule.create");
    let accepted = f
        .accept_one(
            original.clone(),
            vec![delivery("dlv_1", "slack"), delivery("dlv_2", "ops-mail")],
        )
        .await;
    assert_eq!(
        accepted,
        Accepted::New {
            id: "evt_1".into(),
            suppressed: vec![],
            folded: vec![],
            opened: vec![],
        }
    );

    let (stored, deliveries) = f
        .store
        .get_event(Some(&team("acme")), "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, original);
    assert_eq!(deliveries.len(), 2);
    for (record, (id, channel)) in deliveries
        .iter()
        .zip([("dlv_1", "slack"), ("dlv_2", "ops-mail")])
    {
        assert_eq!(record.id, id);
        assert_eq!(record.channel, channel);
        assert_eq!(record.event_id, "evt_1");
        assert_eq!(record.team, team("acme"));
        assert_eq!(record.event_type, "capsule.create");
        assert_eq!(record.status, DeliveryStatus::Pending);
        assert_eq!(record.attempts, 0);
        assert_eq!(record.next_attempt_at, Some(at(0)));
        assert_eq!(record.created_at, at(0));
    }
    assert_eq!(f.store.queue_depth().await.unwrap(), 2);

    // A batch fails as a whole: the second event reuses a delivery id, so the first
    // event of the batch is not stored either.
    let err = f
        .store
        .accept(
            vec![
                (
                    event("acme", "evt_2", "capsule.create"),
                    vec![delivery("dlv_3", "slack")],
                ),
                (
                    event("acme", "evt_3", "capsule.create"),
                    vec![delivery("dlv_1", "slack")],
                ),
            ],
            at(0),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Sqlite(_)), "{err:?}");
    assert!(f.store.get_event(None, "evt_2").await.unwrap().is_none());
    assert!(f.store.get_delivery(None, "dlv_3").await.unwrap().is_none());
    assert_eq!(f.store.queue_depth().await.unwrap(), 2);
}

#[tokio::test]
async fn the_store_is_durable_and_full_sync() {
    let f = Fixture::new();
    let (mode, synchronous, foreign_keys) = f
        .store
        .writer
        .run(|conn| {
            let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            Ok((mode, sync, fk))
        })
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(synchronous, 2, "synchronous must be FULL");
    assert_eq!(foreign_keys, 1);
    assert!(f.dir.path().join("data").join(super::DB_FILE).is_file());
}

#[tokio::test]
async fn duplicates_within_a_batch_and_across_a_restart() {
    let f = Fixture::new();
    let results = f
        .store
        .accept(
            vec![
                (
                    event("acme", "evt_1", "capsule.create"),
                    vec![delivery("dlv_1", "slack")],
                ),
                (
                    event("acme", "evt_1", "capsule.create"),
                    vec![delivery("dlv_2", "slack")],
                ),
            ],
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(
        results,
        vec![
            Accepted::New {
                id: "evt_1".into(),
                suppressed: vec![],
                folded: vec![],
                opened: vec![],
            },
            Accepted::Duplicate { id: "evt_1".into() }
        ]
    );
    assert!(f.store.get_delivery(None, "dlv_2").await.unwrap().is_none());

    let f = f.restart();
    let again = f
        .accept_one(
            event("acme", "evt_1", "capsule.create"),
            vec![delivery("dlv_3", "slack")],
        )
        .await;
    assert!(again.is_duplicate());
    assert_eq!(again.id(), "evt_1");
    assert!(f.store.get_delivery(None, "dlv_3").await.unwrap().is_none());
    assert_eq!(f.store.queue_depth().await.unwrap(), 1);

    // The same id in another team is another event.
    let other = f
        .accept_one(
            event("globex", "evt_1", "host.down"),
            vec![delivery("dlv_4", "pager")],
        )
        .await;
    assert_eq!(
        other,
        Accepted::New {
            id: "evt_1".into(),
            suppressed: vec![],
            folded: vec![],
            opened: vec![],
        }
    );
    let (acme_event, acme_deliveries) = f
        .store
        .get_event(Some(&team("acme")), "evt_1")
        .await
        .unwrap()
        .unwrap();
    let (globex_event, globex_deliveries) = f
        .store
        .get_event(Some(&team("globex")), "evt_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acme_event.event, "capsule.create");
    assert_eq!(globex_event.event, "host.down");
    assert_eq!(acme_deliveries[0].id, "dlv_1");
    assert_eq!(globex_deliveries[0].id, "dlv_4");
    assert_eq!(f.store.queue_depth().await.unwrap(), 2);
}

#[tokio::test]
async fn an_expired_lease_is_claimable_again_and_fences_the_old_worker() {
    let f = Fixture::new();
    let original = event("acme", "evt_1", "capsule.create");
    f.accept_one(original.clone(), vec![delivery("dlv_1", "slack")])
        .await;

    let first = f.store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery.id, "dlv_1");
    assert_eq!(first[0].delivery.attempts, 0);
    assert_eq!(first[0].event, original);
    assert_eq!(first[0].lease_until, at(30));

    // Held by the first worker while its lease runs.
    assert!(f.claim_ids(at(29), &[]).await.is_empty());

    // The first worker died: after its lease the delivery is claimed again, under a new
    // lease. This survives a restart, as a `kill -9` would need.
    let f = f.restart();
    let second = f.store.claim_due(at(31), 10, LEASE, &[]).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.id, "dlv_1");
    assert_ne!(second[0].lease, first[0].lease);

    // The first worker comes back and reports: fenced off, nothing recorded.
    let err = f
        .store
        .finish(
            "dlv_1",
            &first[0].lease,
            attempt(Some(200), None),
            Next::Succeeded,
            at(32),
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::LeaseLost { delivery } if delivery == "dlv_1"));
    let (record, attempts) = f.store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(record.status, DeliveryStatus::Pending);
    assert_eq!(record.attempts, 0);
    assert_eq!(record.updated_at, at(0));
    assert!(attempts.is_empty());

    // The current holder finishes normally; its token is then spent too.
    f.store
        .finish(
            "dlv_1",
            &second[0].lease,
            attempt(Some(200), None),
            Next::Succeeded,
            at(33),
        )
        .await
        .unwrap();
    let again = f
        .store
        .finish(
            "dlv_1",
            &second[0].lease,
            attempt(Some(200), None),
            Next::Succeeded,
            at(34),
        )
        .await;
    assert!(matches!(again, Err(StoreError::LeaseLost { .. })));
    let missing = f
        .store
        .finish(
            "dlv_nope",
            &second[0].lease,
            attempt(None, None),
            Next::Dead,
            at(34),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)));
}

#[tokio::test]
async fn retries_follow_the_schedule_until_success_dead_or_skipped() {
    let f = Fixture::new();
    f.accept_one(
        event("acme", "evt_1", "capsule.create"),
        vec![
            delivery("dlv_ok", "slack"),
            delivery("dlv_dead", "hook"),
            delivery("dlv_skip", "mail"),
        ],
    )
    .await;
    let claimed = f.store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let lease_of = |id: &str| {
        claimed
            .iter()
            .find(|c| c.delivery.id == id)
            .map(|c| c.lease.clone())
            .unwrap()
    };

    f.store
        .finish(
            "dlv_ok",
            &lease_of("dlv_ok"),
            attempt(Some(503), Some("HTTP 503")),
            Next::RetryAt(at(60)),
            at(2),
        )
        .await
        .unwrap();
    let (record, _) = f.store.get_delivery(None, "dlv_ok").await.unwrap().unwrap();
    assert_eq!(record.status, DeliveryStatus::Pending);
    assert_eq!(record.attempts, 1);
    assert_eq!(record.next_attempt_at, Some(at(60)));
    assert_eq!(record.last_status_code, Some(503));
    assert_eq!(record.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(record.updated_at, at(2));

    f.store
        .finish(
            "dlv_dead",
            &lease_of("dlv_dead"),
            attempt(Some(400), Some("HTTP 400")),
            Next::Dead,
            at(2),
        )
        .await
        .unwrap();
    f.store
        .finish(
            "dlv_skip",
            &lease_of("dlv_skip"),
            attempt(None, Some("channel disabled")),
            Next::Skipped,
            at(2),
        )
        .await
        .unwrap();

    assert!(f.claim_ids(at(59), &[]).await.is_empty());
    let retry = f.store.claim_due(at(60), 10, LEASE, &[]).await.unwrap();
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].delivery.id, "dlv_ok");
    assert_eq!(retry[0].delivery.attempts, 1);
    f.store
        .finish(
            "dlv_ok",
            &retry[0].lease,
            attempt(Some(200), None),
            Next::Succeeded,
            at(61),
        )
        .await
        .unwrap();

    let (record, attempts) = f.store.get_delivery(None, "dlv_ok").await.unwrap().unwrap();
    assert_eq!(record.status, DeliveryStatus::Succeeded);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.next_attempt_at, None);
    assert_eq!(record.last_status_code, Some(200));
    assert_eq!(record.last_error, None);
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.number, a.status_code, a.error.as_deref(), a.duration_ms))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, Some(503), Some("HTTP 503"), 120),
            (2, Some(200), None, 120)
        ]
    );
    assert_eq!(attempts[0].response.as_deref(), Some("body"));
    assert_eq!(attempts[0].started_at, at(1));

    let (dead, _) = f
        .store
        .get_delivery(None, "dlv_dead")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, DeliveryStatus::Dead);
    assert_eq!(dead.next_attempt_at, None);
    let (skipped, _) = f
        .store
        .get_delivery(None, "dlv_skip")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(skipped.status, DeliveryStatus::Skipped);
    assert_eq!(skipped.last_error.as_deref(), Some("channel disabled"));

    assert!(f.claim_ids(at(1_000_000), &[]).await.is_empty());
    assert_eq!(f.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn release_makes_a_delivery_claimable_without_an_attempt() {
    let f = Fixture::new();
    f.accept_one(
        event("acme", "evt_1", "capsule.create"),
        vec![delivery("dlv_1", "slack")],
    )
    .await;
    let claimed = f.store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();

    let stale = LeaseToken::from_string("not-the-lease".into());
    assert!(matches!(
        f.store.release("dlv_1", &stale).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(f.claim_ids(at(1), &[]).await.is_empty());
    assert!(matches!(
        f.store.release("dlv_nope", &claimed[0].lease).await,
        Err(StoreError::NotFound)
    ));

    f.store.release("dlv_1", &claimed[0].lease).await.unwrap();
    assert_eq!(f.claim_ids(at(1), &[]).await, ids(["dlv_1"]));
    let (record, attempts) = f.store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(record.attempts, 0);
    assert!(attempts.is_empty());
}

#[tokio::test]
async fn retry_now_revives_dead_deliveries_within_scope() {
    let f = Fixture::new();
    let acme = team("acme");
    f.accept_one(
        event("acme", "evt_1", "capsule.create"),
        vec![delivery("dlv_1", "slack"), delivery("dlv_2", "hook")],
    )
    .await;
    let claimed = f.store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    let lease_1 = claimed.iter().find(|c| c.delivery.id == "dlv_1").unwrap();
    let lease_2 = claimed.iter().find(|c| c.delivery.id == "dlv_2").unwrap();
    f.store
        .finish(
            "dlv_1",
            &lease_1.lease,
            attempt(Some(500), Some("HTTP 500")),
            Next::Dead,
            at(1),
        )
        .await
        .unwrap();

    // Another team cannot see it, let alone retry it.
    let err = f
        .store
        .retry_now(Some(&team("globex")), "dlv_1", at(5))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
    let (still_dead, _) = f.store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(still_dead.status, DeliveryStatus::Dead);
    assert!(matches!(
        f.store.retry_now(None, "dlv_nope", at(5)).await,
        Err(StoreError::NotFound)
    ));

    let revived = f
        .store
        .retry_now(Some(&acme), "dlv_1", at(10))
        .await
        .unwrap();
    assert_eq!(revived.status, DeliveryStatus::Pending);
    assert_eq!(revived.next_attempt_at, Some(at(10)));
    assert_eq!(revived.attempts, 1);
    assert_eq!(revived.updated_at, at(10));
    assert_eq!(f.claim_ids(at(10), &[]).await, ids(["dlv_1"]));

    // A delivery being attempted right now keeps its lease and its worker.
    let in_flight = f.store.retry_now(None, "dlv_2", at(11)).await.unwrap();
    assert_eq!(in_flight.status, DeliveryStatus::Pending);
    assert_eq!(in_flight.next_attempt_at, Some(at(0)));
    f.store
        .finish(
            "dlv_2",
            &lease_2.lease,
            attempt(Some(200), None),
            Next::Succeeded,
            at(12),
        )
        .await
        .unwrap();

    let err = f
        .store
        .retry_now(Some(&acme), "dlv_2", at(13))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::NotRetryable {
            status: DeliveryStatus::Succeeded,
            ..
        }
    ));
}

#[tokio::test]
async fn claim_leaves_excluded_channels_alone() {
    let f = Fixture::new();
    f.accept_one(
        event("acme", "evt_1", "capsule.create"),
        vec![delivery("dlv_1", "slack"), delivery("dlv_2", "mail")],
    )
    .await;
    f.accept_one(
        event("globex", "evt_2", "capsule.create"),
        vec![delivery("dlv_3", "slack")],
    )
    .await;

    let busy = [(team("acme"), "slack".to_string())];
    assert_eq!(f.claim_ids(at(0), &busy).await, ids(["dlv_2", "dlv_3"]));
    assert!(f.claim_ids(at(0), &busy).await.is_empty());
    // The exclusion applies to that claim only.
    assert_eq!(f.claim_ids(at(0), &[]).await, ids(["dlv_1"]));
}

#[tokio::test]
async fn claim_honours_its_limit_oldest_due_first() {
    let f = Fixture::new();
    for i in 0..5 {
        f.store
            .accept(
                vec![(
                    event("acme", &format!("evt_{i}"), "capsule.create"),
                    vec![delivery(&format!("dlv_{i}"), "slack")],
                )],
                at(i),
            )
            .await
            .unwrap();
    }
    let first = f.store.claim_due(at(10), 2, LEASE, &[]).await.unwrap();
    let got: Vec<_> = first.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(got, ["dlv_0", "dlv_1"]);
    assert!(
        f.store
            .claim_due(at(10), 0, LEASE, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.claim_ids(at(10), &[]).await,
        ids(["dlv_2", "dlv_3", "dlv_4"])
    );
}

#[tokio::test]
async fn a_team_never_sees_another_teams_rows() {
    let f = Fixture::new();
    let (acme, globex) = (team("acme"), team("globex"));
    f.accept_one(
        event("acme", "evt_a1", "capsule.create"),
        vec![delivery("dlv_a1", "slack")],
    )
    .await;
    f.accept_one(event("globex", "evt_g1", "host.down"), vec![])
        .await;
    f.accept_one(event("acme", "evt_a2", "capsule.create"), vec![])
        .await;
    f.accept_one(event("globex", "evt_g2", "host.down"), vec![])
        .await;
    let claimed = f.store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    f.store
        .finish(
            "dlv_a1",
            &claimed[0].lease,
            attempt(Some(500), Some("HTTP 500")),
            Next::RetryAt(at(60)),
            at(1),
        )
        .await
        .unwrap();
    f.store
        .set_channel_state(ChannelState {
            team: acme.clone(),
            channel: "slack".into(),
            disabled: true,
            paused_until: None,
            reason: Some("410 Gone".into()),
            since: at(1),
        })
        .await
        .unwrap();

    // globex sees nothing of acme's.
    let s = &f.store;
    assert!(
        s.get_event(Some(&globex), "evt_a1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.get_delivery(Some(&globex), "dlv_a1")
            .await
            .unwrap()
            .is_none()
    );
    let page = s
        .list_deliveries(&DeliveryFilter {
            team: Some(globex.clone()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert!(page.deliveries.is_empty());
    let page = s
        .list_deliveries(&DeliveryFilter {
            team: Some(globex.clone()),
            event_id: Some("evt_a1".into()),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert!(page.deliveries.is_empty());
    assert!(matches!(
        s.events_after(Some(&globex), "evt_a1", 10).await,
        Err(StoreError::NotFound)
    ));
    assert!(s.channel_states(Some(&globex)).await.unwrap().is_empty());
    assert!(matches!(
        s.retry_now(Some(&globex), "dlv_a1", at(2)).await,
        Err(StoreError::NotFound)
    ));
    let replay: Vec<_> = s
        .events_after(Some(&globex), "evt_g1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(replay, ["evt_g2"]);

    // acme, and the admin, do see them.
    for scope in [Some(&acme), None] {
        assert!(s.get_event(scope, "evt_a1").await.unwrap().is_some());
        let (_, attempts) = s.get_delivery(scope, "dlv_a1").await.unwrap().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(s.channel_states(scope).await.unwrap().len(), 1);
    }
    let replay: Vec<_> = s
        .events_after(Some(&acme), "evt_a1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(replay, ["evt_a2"]);
    let replay: Vec<_> = s
        .events_after(None, "evt_a1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(replay, ["evt_g1", "evt_a2", "evt_g2"]);
    let replay = s.events_after(None, "evt_a1", 1).await.unwrap();
    assert_eq!(replay.len(), 1);
    assert_eq!(replay[0].id, "evt_g1");
}

#[tokio::test]
async fn list_deliveries_pages_newest_first_with_cursors_and_filters() {
    let f = Fixture::new();
    let acme = team("acme");
    let mut batch = Vec::new();
    for i in 0..25 {
        let (channel, event_type) = if i % 2 == 0 {
            ("slack", "capsule.create")
        } else {
            ("mail", "host.down")
        };
        batch.push((
            event("acme", &format!("evt_{i:02}"), event_type),
            vec![delivery(&format!("dlv_{i:02}"), channel)],
        ));
    }
    for i in 0..5 {
        batch.push((
            event("globex", &format!("evt_g{i}"), "capsule.create"),
            vec![delivery(&format!("dlv_g{i}"), "slack")],
        ));
    }
    f.store.accept(batch, at(0)).await.unwrap();

    let mut filter = DeliveryFilter {
        team: Some(acme.clone()),
        limit: 10,
        ..DeliveryFilter::default()
    };
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    loop {
        let page = f.store.list_deliveries(&filter).await.unwrap();
        pages.push(page.deliveries.len());
        seen.extend(page.deliveries.into_iter().map(|d| d.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(pages, [10, 10, 5]);
    let expected: Vec<_> = (0..25).rev().map(|i| format!("dlv_{i:02}")).collect();
    assert_eq!(seen, expected);

    let count = |filter: DeliveryFilter| {
        let store = Arc::clone(&f.store);
        async move {
            store
                .list_deliveries(&DeliveryFilter {
                    limit: 100,
                    ..filter
                })
                .await
                .unwrap()
                .deliveries
                .len()
        }
    };
    let scoped = |f: DeliveryFilter| DeliveryFilter {
        team: Some(acme.clone()),
        ..f
    };
    assert_eq!(count(DeliveryFilter::default()).await, 30);
    assert_eq!(
        count(scoped(DeliveryFilter {
            channel: Some("slack".into()),
            ..DeliveryFilter::default()
        }))
        .await,
        13
    );
    assert_eq!(
        count(scoped(DeliveryFilter {
            event_type: Some("host.down".into()),
            ..DeliveryFilter::default()
        }))
        .await,
        12
    );
    assert_eq!(
        count(scoped(DeliveryFilter {
            event_id: Some("evt_07".into()),
            ..DeliveryFilter::default()
        }))
        .await,
        1
    );
    assert_eq!(
        count(scoped(DeliveryFilter {
            status: Some(DeliveryStatus::Pending),
            ..DeliveryFilter::default()
        }))
        .await,
        25
    );
    assert_eq!(
        count(scoped(DeliveryFilter {
            status: Some(DeliveryStatus::Dead),
            ..DeliveryFilter::default()
        }))
        .await,
        0
    );

    for bad in ["", "c1_", "c1_-4", "c1_x", "12", "c2_12"] {
        let err = f
            .store
            .list_deliveries(&DeliveryFilter {
                cursor: Some(bad.into()),
                ..DeliveryFilter::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidCursor), "{bad}: {err:?}");
    }
}

#[tokio::test]
async fn group_commit_shares_one_transaction_among_queued_requests() {
    let f = Fixture::new();
    let before = f.store.write_stats();
    let resume = f.pause_writer().await;

    let mut tasks = Vec::new();
    for i in 0..200 {
        let store: Arc<dyn Store> = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .accept(
                    vec![(
                        event("acme", &format!("evt_{i}"), "capsule.create"),
                        vec![delivery(&format!("dlv_{i}"), "slack")],
                    )],
                    at(0),
                )
                .await
        }));
    }
    f.wait_until_queued(200).await;
    drop(resume);
    for task in tasks {
        let accepted = task.await.unwrap().unwrap();
        assert!(matches!(accepted[..], [Accepted::New { .. }]));
    }

    let after = f.store.write_stats();
    // The pause request, then all 200 accepts in one transaction.
    assert_eq!(after.requests - before.requests, 201);
    assert_eq!(after.transactions - before.transactions, 2);
    assert_eq!(f.store.queue_depth().await.unwrap(), 200);
}

#[tokio::test]
async fn a_failing_request_does_not_fail_the_rest_of_its_group() {
    let f = Fixture::new();
    f.accept_one(
        event("acme", "evt_0", "capsule.create"),
        vec![delivery("dlv_0", "slack")],
    )
    .await;
    let resume = f.pause_writer().await;
    let good = {
        let store = Arc::clone(&f.store);
        tokio::spawn(async move {
            store
                .accept(
                    vec![(event("acme", "evt_1", "x.y"), vec![delivery("dlv_1", "a")])],
                    at(0),
                )
                .await
        })
    };
    f.wait_until_queued(1).await;
    let bad = {
        let store = Arc::clone(&f.store);
        tokio::spawn(async move {
            // dlv_0 exists already: this request fails.
            store
                .accept(
                    vec![(event("acme", "evt_2", "x.y"), vec![delivery("dlv_0", "a")])],
                    at(0),
                )
                .await
        })
    };
    f.wait_until_queued(2).await;
    let before = f.store.write_stats();
    drop(resume);

    assert!(good.await.unwrap().is_ok());
    assert!(matches!(bad.await.unwrap(), Err(StoreError::Sqlite(_))));
    // Both were in the same group (the pause's transaction, then theirs).
    assert_eq!(f.store.write_stats().transactions - before.transactions, 2);
    assert!(f.store.get_event(None, "evt_1").await.unwrap().is_some());
    assert!(f.store.get_event(None, "evt_2").await.unwrap().is_none());
}

#[tokio::test]
async fn an_unreadable_stored_event_is_given_up_instead_of_blocking_the_queue() {
    let f = Fixture::new();
    f.accept_one(
        event("acme", "evt_1", "capsule.create"),
        vec![delivery("dlv_1", "slack")],
    )
    .await;
    f.accept_one(
        event("acme", "evt_2", "capsule.create"),
        vec![delivery("dlv_2", "slack")],
    )
    .await;
    f.store
        .writer
        .run(|conn| {
            conn.execute("UPDATE events SET body = '{}' WHERE id = 'evt_1'", [])?;
            Ok(())
        })
        .await
        .unwrap();

    assert_eq!(f.claim_ids(at(0), &[]).await, ids(["dlv_2"]));
    let (record, _) = f.store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(record.status, DeliveryStatus::Dead);
    assert!(
        record
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("stored event is unreadable")),
        "{record:?}"
    );
    assert!(matches!(
        f.store.get_event(None, "evt_1").await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn channel_states_are_kept_across_restarts() {
    let f = Fixture::new();
    let (acme, globex) = (team("acme"), team("globex"));
    let gone = ChannelState {
        team: acme.clone(),
        channel: "hook".into(),
        disabled: true,
        paused_until: None,
        reason: Some("410 Gone".into()),
        since: at(1),
    };
    let throttled = ChannelState {
        team: globex.clone(),
        channel: "telegram".into(),
        disabled: false,
        paused_until: Some(at(90)),
        reason: Some("429, retry after 90 s".into()),
        since: at(2),
    };
    f.store.set_channel_state(throttled.clone()).await.unwrap();
    f.store.set_channel_state(gone.clone()).await.unwrap();
    let replaced = ChannelState {
        paused_until: Some(at(120)),
        since: at(3),
        ..throttled.clone()
    };
    f.store.set_channel_state(replaced.clone()).await.unwrap();

    let f = f.restart();
    assert_eq!(
        f.store.channel_states(None).await.unwrap(),
        vec![gone.clone(), replaced]
    );
    assert!(
        f.store
            .clear_channel_state(&globex, "telegram")
            .await
            .unwrap()
    );
    assert!(
        !f.store
            .clear_channel_state(&globex, "telegram")
            .await
            .unwrap()
    );
    // Clearing is scoped to the team named.
    assert!(!f.store.clear_channel_state(&globex, "hook").await.unwrap());
    assert_eq!(f.store.channel_states(None).await.unwrap(), vec![gone]);
}

#[tokio::test]
async fn a_database_from_a_newer_herald_is_refused() {
    let f = Fixture::new();
    f.store
        .writer
        .run(|conn| {
            conn.execute_batch("PRAGMA user_version = 99")?;
            Ok(())
        })
        .await
        .unwrap();
    let Fixture { dir, store } = f;
    drop(store);
    let err = SqliteStore::open(&dir.path().join("data")).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open(m) if m.contains("schema version 99")),
        "{err}"
    );
}

#[tokio::test]
async fn migration_8_lets_an_older_databases_deliveries_be_orphaned() {
    // A database at schema 6 (before orphans) with a delivery in it.
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    {
        let conn = rusqlite::Connection::open(data.join(super::DB_FILE)).unwrap();
        for sql in &super::schema::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 6").unwrap();
        conn.execute_batch(
            "INSERT INTO events (id, team_id, event_type, body, accepted_at)
                 VALUES ('evt_1', 'acme', 'capsule.create', '{}', 0);
             INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, status, created_at, updated_at)
                 VALUES ('dlv_1', 1, 'acme', 'evt_1', 'capsule.create', 'old', 0, 'pending', 0, 0);",
        )
        .unwrap();
        let refused = conn.execute("UPDATE deliveries SET status = 'orphaned'", []);
        assert!(refused.is_err(), "schema 6 refuses the new status");
    }
    let store = SqliteStore::open(&data).unwrap();
    let orphaned = store
        .writer
        .run(|conn| {
            conn.execute("UPDATE deliveries SET status = 'orphaned'", [])?;
            let bad: i64 = conn.query_row(
                "SELECT count(*) FROM deliveries WHERE status NOT IN
                     ('pending', 'succeeded', 'dead', 'skipped', 'orphaned')",
                [],
                |row| row.get(0),
            )?;
            let check: String = conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))?;
            let typo = conn.execute("UPDATE deliveries SET status = 'orphan'", []);
            Ok((bad, check, typo.is_err()))
        })
        .await
        .unwrap();
    assert_eq!(
        orphaned,
        (0, "ok".to_string(), true),
        "the CHECK still guards other values"
    );
    let (record, _) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(record.status, crate::DeliveryStatus::Orphaned);
}

/// The embedded store under the shared conformance suite.
struct SqliteBackend {
    dir: TempDir,
}

impl crate::conformance::Backend for SqliteBackend {
    fn open(&mut self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.dir.path().join("data")).unwrap())
    }

    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(
            Arc::strong_count(&store),
            1,
            "close every handle before reopening"
        );
        drop(store);
        self.open()
    }
}

mod conformance {
    use super::*;

    crate::store_conformance_tests!(SqliteBackend {
        dir: tempfile::tempdir().unwrap()
    });
}

#[tokio::test]
async fn one_process_per_store_directory() {
    let f = Fixture::new();
    let dir = f.dir.path().join("data");
    let err = SqliteStore::open(&dir).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Locked { .. }), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "the error names the holder: {message}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(super::LOCK_FILE)).unwrap(),
        std::process::id().to_string()
    );
    // Closing the store frees the directory.
    let f = f.restart();
    drop(f);
}

#[tokio::test]
async fn finishes_are_committed_without_a_full_sync_and_ingest_with_one() {
    let f = Fixture::new();
    let accepted = f
        .store
        .accept(
            vec![(
                event("acme", "evt_1", "capsule.create"),
                vec![delivery("dlv_1", "a")],
            )],
            at(0),
        )
        .await
        .unwrap();
    assert_eq!(accepted.len(), 1);
    let claim = f.store.hold_due(at(0), 10, &[]).await.unwrap().remove(0);
    let results = f
        .store
        .finish_many(vec![crate::Finish {
            delivery_id: claim.delivery.id,
            lease: claim.lease,
            attempt: attempt(Some(200), None),
            next: Next::Succeeded,
            now: at(1),
        }])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(
        sync_level(&f.store, false).await,
        1,
        "a group of unsynced requests (finishes, holds) commits with synchronous = NORMAL"
    );
    assert_eq!(
        sync_level(&f.store, true).await,
        2,
        "a group with an accept in it commits with synchronous = FULL"
    );
}

/// The `synchronous` level a request of that kind runs under.
async fn sync_level(store: &SqliteStore, synced: bool) -> i64 {
    let read = |conn: &rusqlite::Connection| -> Result<i64, StoreError> {
        Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    };
    if synced {
        store.writer.run(read).await.unwrap()
    } else {
        store.writer.run_unsynced(read).await.unwrap()
    }
}

#[tokio::test]
async fn health_fails_when_the_writer_is_dead() {
    let f = Fixture::new();
    f.store
        .health()
        .await
        .expect("healthy while the writer runs");
    f.store.writer.kill_for_test().await;
    let err = f
        .store
        .health()
        .await
        .expect_err("a dead writer is unhealthy");
    assert!(matches!(err, StoreError::Closed), "{err}");
}

#[tokio::test]
async fn health_fails_when_free_space_is_below_the_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("data"))
        .unwrap()
        .with_min_free_bytes(u64::MAX);
    let err = store
        .health()
        .await
        .expect_err("no disk has u64::MAX bytes free");
    let message = err.to_string();
    assert!(matches!(err, StoreError::DiskFull { .. }), "{message}");
    assert!(message.contains("the disk holding"), "{message}");
    assert!(message.contains(&u64::MAX.to_string()), "{message}");
    let store = store.with_min_free_bytes(1);
    store.health().await.expect("any real disk has a byte free");
}

#[tokio::test]
async fn a_teams_replay_walks_its_own_events_through_an_index() {
    let f = Fixture::new();
    let conn = super::schema::open_reader(f.store.path()).unwrap();
    let plan: Vec<String> = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            super::queries::EVENTS_AFTER_TEAM
        ))
        .unwrap()
        .query_map(rusqlite::params![0, "acme", 10], |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let plan = plan.join("; ");
    assert!(
        plan.contains("USING INDEX events_team_seq")
            || plan.contains("USING COVERING INDEX events_team_seq"),
        "a team's Last-Event-ID replay must not scan other teams' events: {plan}"
    );
}

/// Migration 9 widens the deliveries' status CHECK in place: a store made before it keeps
/// its rows and takes the new statuses, on the writer and on a freshly opened reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_noise_control_takes_the_new_statuses() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let before = super::schema::MIGRATIONS
        .iter()
        .position(|sql| sql.contains("dedup_windows"))
        .unwrap();
    {
        let conn = rusqlite::Connection::open(dir.join(super::DB_FILE)).unwrap();
        for sql in &super::schema::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {before}"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO events (id, team_id, event_type, body, accepted_at)
             VALUES ('old', 'acme', 'capsule.create', '{}', 0);
             INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, status, created_at, updated_at)
             VALUES ('dlv_old', 1, 'acme', 'old', 'capsule.create', 'hook', 0, 'dead', 0, 0);",
        )
        .unwrap();
        let refused = conn.execute(
            "UPDATE deliveries SET status = 'silenced' WHERE id = 'dlv_old'",
            [],
        );
        let refused = refused.unwrap_err().to_string();
        assert!(refused.contains("CHECK"), "{refused}");
    }
    let store = SqliteStore::open(&dir).unwrap();
    let quiet = NewDelivery {
        silence: Some("sil_1".into()),
        ..delivery("dlv_quiet", "hook")
    };
    store
        .accept(
            vec![(event("acme", "evt_1", "capsule.create"), vec![quiet])],
            at(0),
        )
        .await
        .unwrap();
    let (quiet, _) = store
        .get_delivery(None, "dlv_quiet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(quiet.status, DeliveryStatus::Silenced);
    let (old, _) = store.get_delivery(None, "dlv_old").await.unwrap().unwrap();
    assert_eq!(old.status, DeliveryStatus::Dead);
    // Still refused: anything outside the widened list.
    let conn = rusqlite::Connection::open(dir.join(super::DB_FILE)).unwrap();
    let refused = conn.execute(
        "UPDATE deliveries SET status = 'bogus' WHERE id = 'dlv_old'",
        [],
    );
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("CHECK"), "{refused}");
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'deliveries'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(sql.contains("'suppressed', 'silenced'"), "{sql}");
}

/// Migration 10 widens the status CHECK once more and adds the digest columns: a store
/// made before grouping keeps its rows, and folds new deliveries into digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_before_grouping_folds_into_digests() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let before = super::schema::MIGRATIONS
        .iter()
        .position(|sql| sql.contains("digest_groups"))
        .unwrap();
    {
        let conn = rusqlite::Connection::open(dir.join(super::DB_FILE)).unwrap();
        for sql in &super::schema::MIGRATIONS[..before] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {before}"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO events (id, team_id, event_type, body, accepted_at)
             VALUES ('old', 'acme', 'capsule.create', '{}', 0);
             INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, status, created_at, updated_at)
             VALUES ('dlv_old', 1, 'acme', 'old', 'capsule.create', 'hook', 0, 'orphaned', 0, 0);",
        )
        .unwrap();
        let refused = conn
            .execute(
                "UPDATE deliveries SET status = 'grouped' WHERE id = 'dlv_old'",
                [],
            )
            .unwrap_err()
            .to_string();
        assert!(refused.contains("CHECK"), "{refused}");
    }
    let store = SqliteStore::open(&dir).unwrap();
    let grouped = NewDelivery {
        fold: Some(crate::FoldClaim::Group {
            key: "[]".into(),
            kind: herald_core::DigestKind::Group { labels: vec![] },
            wait: Duration::from_secs(30),
            interval: Duration::from_secs(300),
            digest_id: "dlv_digest".into(),
        }),
        ..delivery("dlv_member", "hook")
    };
    let accepted = store
        .accept(
            vec![(event("acme", "evt_1", "capsule.create"), vec![grouped])],
            at(0),
        )
        .await
        .unwrap();
    assert!(
        matches!(&accepted[0], Accepted::New { folded, opened, .. }
            if folded == &["dlv_member"] && opened[0].id == "dlv_digest"),
        "{accepted:?}"
    );
    let (member, _) = store
        .get_delivery(None, "dlv_member")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (member.status, member.digest_id.as_deref()),
        (DeliveryStatus::Grouped, Some("dlv_digest"))
    );
    let (old, _) = store.get_delivery(None, "dlv_old").await.unwrap().unwrap();
    assert_eq!(
        (old.status, old.digest_id),
        (DeliveryStatus::Orphaned, None)
    );
    let conn = rusqlite::Connection::open(dir.join(super::DB_FILE)).unwrap();
    let refused = conn
        .execute(
            "UPDATE deliveries SET status = 'bogus' WHERE id = 'dlv_old'",
            [],
        )
        .unwrap_err()
        .to_string();
    assert!(refused.contains("CHECK"), "{refused}");
}
