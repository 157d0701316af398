//! The store conformance suite: the promises every [`Store`] backend keeps, written once
//! against the trait. A backend runs it with [`store_conformance_tests!`] in its own tests
//! (the embedded store in `sqlite/tests.rs`); a new backend must pass it unchanged.
//!
//! What it checks: accepting is durable and idempotent across a reopen; held deliveries
//! (exclusive stores) are never claimed and come back due at a reopen; leases fence every
//! finish; `finish_many` reports each record on its own; `next_due` leaves out held and
//! excluded work, and an excluded channel's older backlog never hides another's due work;
//! retries of one team cannot touch another's; a manual retry of a dead delivery starts a
//! fresh budget and its attempt is recorded as manual; a bulk replay re-queues exactly what
//! its filter selects, of one team only, and `dead_count` counts one channel's dead
//! letters; `events_after` replays in order within scope; `health` is ok while the store
//! takes writes; pruning removes finished rows past their age (or over the size limit) in
//! batches and never a pending delivery or its event; chat migrations (per bot) and the
//! progress of split deliveries survive a reopen, and pruning a delivery removes its
//! progress; repeat suppression is decided in the accepting transaction (durable, once
//! under concurrency); silenced deliveries are finished and never due; silences are
//! durable, scoped to their team, and expire; an orphaned delivery is never due nor
//! retried until re-attached or moved (another team's move touches none of it); an attempt
//! finished with `Next::Wait` uses no retry budget; grouping and throttling (`digests`)
//! fold deliveries into digests that are sealed when claimed, survive a restart, open once
//! under concurrency, and are retried, replayed and pruned as their members need.
//!
//! Long on purpose: one function per promise, each a small story a reviewer reads on its
//! own; a promise added to the `Store` trait gets its case here, so the file grows with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald_core::{Event, Outcome, TeamId, Timestamp};

use crate::{
    Accepted, ChatMigration, Finish, NewAttempt, NewDelivery, Next, SplitProgress, Store,
    StoreError,
};

mod digests;
pub use digests::*;

/// A backend under test: opens stores, and reopens one as a restarted process would.
pub trait Backend {
    /// An empty store of this backend.
    fn open(&mut self) -> Arc<dyn Store>;
    /// The same data opened anew, after `store` (the only handle) is closed.
    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per conformance case, each with a fresh backend from `$make`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            accept_is_durable_and_idempotent,
            held_deliveries_are_never_claimed_and_are_due_after_a_reopen,
            every_finish_is_fenced_by_its_lease,
            finish_many_reports_each_record_on_its_own,
            next_due_leaves_out_held_and_excluded_work,
            an_excluded_backlog_never_hides_other_channels_work,
            a_team_cannot_retry_or_read_another_teams_rows,
            a_manual_retry_of_a_dead_delivery_starts_a_fresh_budget,
            replay_requeues_exactly_the_selected_deliveries_of_one_team,
            events_after_replays_in_order_within_scope,
            health_is_ok_while_the_store_takes_writes,
            prune_removes_finished_rows_past_their_age_and_never_pending_ones,
            chat_migrations_and_split_progress_survive_a_reopen,
            pruning_a_delivery_removes_its_split_progress,
            dedup_suppresses_repeats_inside_the_window_across_a_reopen,
            concurrent_accepts_of_one_key_send_it_once,
            silenced_deliveries_are_finished_and_never_due,
            finish_silenced_is_fenced_and_records_no_attempt,
            silences_are_durable_scoped_and_expire,
            prune_forgets_old_dedup_windows_and_ended_silences,
            orphans_wait_until_reattached_or_moved_by_their_own_team,
            a_channel_wide_failure_uses_no_retry_budget,
            grouped_deliveries_join_one_open_digest_per_group,
            a_live_group_falls_due_on_its_interval,
            a_digest_is_sealed_when_claimed_or_held,
            a_throttle_sends_its_limit_then_folds_into_the_windows_digest,
            suppressed_and_silenced_deliveries_are_neither_folded_nor_counted,
            a_grouped_delivery_is_retried_and_replayed_through_its_digest,
            prune_keeps_the_members_of_an_unfinished_digest,
            digest_members_lists_in_fold_order_up_to_the_limit,
            an_open_digest_survives_a_restart_and_falls_due_on_time,
            concurrent_accepts_for_one_group_open_one_digest,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let mut backend = $make;
                $crate::conformance::$case(&mut backend).await;
            }
        )*
    };
}

/// 2026-01-01T00:00:00Z plus `secs`.
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + i128::from(secs)) * 1_000_000_000)
}

fn team(name: &str) -> TeamId {
    TeamId::parse(name).unwrap()
}

fn event(team_name: &str, id: &str) -> Event {
    Event {
        id: id.into(),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: at(-5),
        team_id: team(team_name),
        actor: None,
        resource: None,
        metadata: BTreeMap::from([("region".to_string(), "eu".to_string())]),
        error: Some("disk full".into()),
    }
}

fn delivery(id: &str, channel: &str, held: bool) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        channel: channel.into(),
        subscription: 0,
        subscription_name: Some(format!("sub_{channel}")),
        held,
        silence: None,
        dedup: None,
        fold: None,
    }
}

fn attempt(status: u16) -> NewAttempt {
    NewAttempt {
        started_at: at(1),
        duration_ms: 3,
        status_code: Some(status),
        error: (status >= 400).then(|| format!("HTTP {status}")),
        response: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn accept(store: &dyn Store, event: Event, deliveries: Vec<NewDelivery>) -> Accepted {
    let mut out = store
        .accept(vec![(event, deliveries)], at(0))
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    out.remove(0)
}

/// Whether the store may hold deliveries in memory (an exclusive store).
fn holds(store: &dyn Store) -> bool {
    store.holder().is_some()
}

pub async fn accept_is_durable_and_idempotent(backend: &mut impl Backend) {
    let store = backend.open();
    let first = accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_a", "a", false), delivery("dlv_b", "b", false)],
    )
    .await;
    assert_eq!(
        first,
        Accepted::New {
            id: "evt_1".into(),
            suppressed: vec![],
            folded: vec![],
            opened: vec![],
        }
    );
    let store = backend.reopen(store);
    let (stored, deliveries) = store.get_event(None, "evt_1").await.unwrap().unwrap();
    assert_eq!(stored, event("acme", "evt_1"));
    let ids: Vec<_> = deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["dlv_a", "dlv_b"]);
    let again = accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_c", "c", false)],
    )
    .await;
    assert_eq!(again, Accepted::Duplicate { id: "evt_1".into() });
    let (_, deliveries) = store.get_event(None, "evt_1").await.unwrap().unwrap();
    assert_eq!(deliveries.len(), 2, "a duplicate adds no delivery");
    // The same id in another team is another event.
    let other = accept(&*store, event("globex", "evt_1"), vec![]).await;
    assert_eq!(
        other,
        Accepted::New {
            id: "evt_1".into(),
            suppressed: vec![],
            folded: vec![],
            opened: vec![],
        }
    );
}

pub async fn held_deliveries_are_never_claimed_and_are_due_after_a_reopen(
    backend: &mut impl Backend,
) {
    let store = backend.open();
    if !holds(&*store) {
        // A shared store holds nothing: everything it accepts is claimable.
        accept(
            &*store,
            event("acme", "evt_1"),
            vec![delivery("dlv_1", "a", false)],
        )
        .await;
        let claims = store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
        assert_eq!(claims.len(), 1);
        return;
    }
    let holder = store.holder().cloned().unwrap();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![
            delivery("dlv_held", "a", true),
            delivery("dlv_free", "b", false),
        ],
    )
    .await;
    let claimed = store.hold_due(at(100), 10, &[]).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["dlv_free"], "a held delivery is never handed out");
    assert_eq!(claimed[0].lease, holder);
    assert!(
        store
            .claim_due(at(10_000), 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty(),
        "a held delivery never expires, and a hold never does either"
    );
    assert_eq!(store.next_due(&[]).await.unwrap(), None);
    // The holder finishes the one it held from the start.
    let results = store
        .finish_many(vec![Finish {
            delivery_id: "dlv_held".into(),
            lease: holder.clone(),
            attempt: attempt(200),
            next: Next::Succeeded,
            now: at(1),
        }])
        .await
        .unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    // The process dies holding dlv_free: a reopen makes it due at once, under a new holder.
    let store = backend.reopen(store);
    assert_ne!(store.holder(), Some(&holder));
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(0)));
    let again = store.hold_due(at(0), 10, &[]).await.unwrap();
    let ids: Vec<_> = again.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["dlv_free"]);
    let (held, _) = store.get_delivery(None, "dlv_held").await.unwrap().unwrap();
    assert_eq!(held.status, crate::DeliveryStatus::Succeeded);
}

/// Takes every due delivery the way this backend's dispatcher does.
async fn take_due(store: &dyn Store, now: Timestamp) -> Vec<crate::Claimed> {
    if holds(store) {
        store.hold_due(now, 100, &[]).await.unwrap()
    } else {
        store.claim_due(now, 100, LEASE, &[]).await.unwrap()
    }
}

pub async fn every_finish_is_fenced_by_its_lease(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false)],
    )
    .await;
    let claim = store
        .claim_due(at(0), 10, LEASE, &[])
        .await
        .unwrap()
        .remove(0);
    let stranger = crate::LeaseToken::from_string("not-the-lease".into());
    let err = store
        .finish("dlv_1", &stranger, attempt(200), Next::Succeeded, at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    store
        .finish(
            "dlv_1",
            &claim.lease,
            attempt(500),
            Next::RetryAt(at(60)),
            at(1),
        )
        .await
        .unwrap();
    let twice = store
        .finish("dlv_1", &claim.lease, attempt(500), Next::Dead, at(2))
        .await
        .unwrap_err();
    assert!(
        matches!(twice, StoreError::LeaseLost { .. }),
        "a lease is spent once"
    );
    let (record, attempts) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!((record.attempts, attempts.len()), (1, 1));
    assert_eq!(record.next_attempt_at, Some(at(60)));
    assert!(
        take_due(&*store, at(59)).await.is_empty(),
        "not due before its time"
    );
    assert_eq!(take_due(&*store, at(60)).await.len(), 1);
}

pub async fn finish_many_reports_each_record_on_its_own(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false), delivery("dlv_2", "b", false)],
    )
    .await;
    let claims = take_due(&*store, at(0)).await;
    assert_eq!(claims.len(), 2);
    let lease_of = |id: &str| {
        claims
            .iter()
            .find(|c| c.delivery.id == id)
            .unwrap()
            .lease
            .clone()
    };
    let finishes = vec![
        Finish {
            delivery_id: "dlv_1".into(),
            lease: lease_of("dlv_1"),
            attempt: attempt(200),
            next: Next::Succeeded,
            now: at(1),
        },
        Finish {
            delivery_id: "dlv_2".into(),
            lease: crate::LeaseToken::from_string("stale".into()),
            attempt: attempt(200),
            next: Next::Succeeded,
            now: at(1),
        },
        Finish {
            delivery_id: "dlv_missing".into(),
            lease: lease_of("dlv_1"),
            attempt: attempt(200),
            next: Next::Succeeded,
            now: at(1),
        },
    ];
    let results = store.finish_many(finishes).await.unwrap();
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::LeaseLost { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(StoreError::NotFound)),
        "{results:?}"
    );
    let (one, _) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    let (two, _) = store.get_delivery(None, "dlv_2").await.unwrap().unwrap();
    assert_eq!(one.status, crate::DeliveryStatus::Succeeded);
    assert_eq!(
        (two.status, two.attempts),
        (crate::DeliveryStatus::Pending, 0)
    );
}

pub async fn next_due_leaves_out_held_and_excluded_work(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_a", "a", false), delivery("dlv_b", "b", false)],
    )
    .await;
    let claims = take_due(&*store, at(0)).await;
    let mut finishes = Vec::new();
    for c in claims {
        let due = if c.delivery.channel == "a" {
            at(50)
        } else {
            at(80)
        };
        finishes.push(Finish {
            delivery_id: c.delivery.id,
            lease: c.lease,
            attempt: attempt(503),
            next: Next::RetryAt(due),
            now: at(1),
        });
    }
    let results = store.finish_many(finishes).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(50)));
    let without_a = [(team("acme"), "a".to_string())];
    assert_eq!(store.next_due(&without_a).await.unwrap(), Some(at(80)));
    let without_both = [(team("acme"), "a".into()), (team("acme"), "b".into())];
    assert_eq!(store.next_due(&without_both).await.unwrap(), None);
    // Another team's channel of the same name is not excluded.
    let other = [(team("globex"), "a".to_string())];
    assert_eq!(store.next_due(&other).await.unwrap(), Some(at(50)));
}

/// A disabled channel (excluded by the dispatcher) keeps its backlog, which is older than
/// anything else: reads for work still find the other team's due row, oldest first.
pub async fn an_excluded_backlog_never_hides_other_channels_work(backend: &mut impl Backend) {
    let store = backend.open();
    let backlog: Vec<_> = (0..300)
        .map(|i| delivery(&format!("dlv_a{i}"), "gone", false))
        .collect();
    accept(&*store, event("acme", "evt_a"), backlog).await;
    store
        .accept(
            vec![(
                event("globex", "evt_g"),
                vec![delivery("dlv_g", "ok", false)],
            )],
            at(5),
        )
        .await
        .unwrap();
    let gone = [(team("acme"), "gone".to_string())];
    assert_eq!(store.next_due(&gone).await.unwrap(), Some(at(5)));
    let claimed = if holds(&*store) {
        store.hold_due(at(10), 2, &gone).await.unwrap()
    } else {
        store.claim_due(at(10), 2, LEASE, &gone).await.unwrap()
    };
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["dlv_g"]);
    // The subscription's stable name comes back with the delivery.
    assert_eq!(
        claimed[0].delivery.subscription_name.as_deref(),
        Some("sub_ok")
    );
    assert_eq!(store.next_due(&gone).await.unwrap(), None);
    // Not excluded, the backlog is due first.
    assert_eq!(store.next_due(&[]).await.unwrap(), Some(at(0)));
}

pub async fn a_team_cannot_retry_or_read_another_teams_rows(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false)],
    )
    .await;
    let claim = take_due(&*store, at(0)).await.remove(0);
    store
        .finish("dlv_1", &claim.lease, attempt(400), Next::Dead, at(1))
        .await
        .unwrap();
    let globex = team("globex");
    assert!(matches!(
        store.retry_now(Some(&globex), "dlv_1", at(2)).await,
        Err(StoreError::NotFound)
    ));
    assert!(
        store
            .get_delivery(Some(&globex), "dlv_1")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_event(Some(&globex), "evt_1")
            .await
            .unwrap()
            .is_none()
    );
    let acme = team("acme");
    let revived = store.retry_now(Some(&acme), "dlv_1", at(3)).await.unwrap();
    assert_eq!(revived.status, crate::DeliveryStatus::Pending);
    assert_eq!(take_due(&*store, at(3)).await.len(), 1);
}

pub async fn a_manual_retry_of_a_dead_delivery_starts_a_fresh_budget(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false)],
    )
    .await;
    // Two scheduled attempts, then dead.
    let claim = take_due(&*store, at(0)).await.remove(0);
    assert_eq!(claim.delivery.budget_start, 0);
    let next = Next::RetryAt(at(10));
    let finished = store.finish("dlv_1", &claim.lease, attempt(500), next, at(1));
    finished.await.unwrap();
    let claim = take_due(&*store, at(10)).await.remove(0);
    let finished = store.finish("dlv_1", &claim.lease, attempt(500), Next::Dead, at(11));
    finished.await.unwrap();

    let revived = store.retry_now(None, "dlv_1", at(20)).await.unwrap();
    assert_eq!(
        (revived.status, revived.attempts, revived.budget_start),
        (crate::DeliveryStatus::Pending, 2, 2),
        "the two attempts before the retry no longer count against the schedule"
    );
    let claim = take_due(&*store, at(20)).await.remove(0);
    assert_eq!(
        claim.delivery.budget_start, 2,
        "the claim carries the budget"
    );
    let next = Next::RetryAt(at(30));
    let finished = store.finish("dlv_1", &claim.lease, attempt(500), next, at(21));
    finished.await.unwrap();
    // A retry of a pending delivery keeps its budget, but is still a manual attempt.
    let pending = store.retry_now(None, "dlv_1", at(22)).await.unwrap();
    assert_eq!(pending.budget_start, 2);
    let claim = take_due(&*store, at(22)).await.remove(0);
    let finished = store.finish("dlv_1", &claim.lease, attempt(500), next, at(23));
    finished.await.unwrap();
    let claim = take_due(&*store, at(30)).await.remove(0);
    let finished = store.finish("dlv_1", &claim.lease, attempt(200), Next::Succeeded, at(31));
    finished.await.unwrap();

    let store = backend.reopen(store);
    let (record, attempts) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!((record.attempts, record.budget_start), (5, 2));
    let manual: Vec<(u32, bool)> = attempts.iter().map(|a| (a.number, a.manual)).collect();
    assert_eq!(
        manual,
        [(1, false), (2, false), (3, true), (4, true), (5, false)],
        "only the attempt an operator asked for is manual"
    );
}

/// Accepts `event_id` of `team_name` at `at(secs)`, with one delivery to `channel`, and
/// takes it, attempts it once and finishes it with `status` and `next`.
async fn delivered_once(
    store: &dyn Store,
    (team_name, event_id, channel): (&str, &str, &str),
    secs: i64,
    status: u16,
    next: Next,
) {
    let id = format!("dlv_{event_id}");
    let batch = vec![(
        event(team_name, event_id),
        vec![delivery(&id, channel, false)],
    )];
    store.accept(batch, at(secs)).await.unwrap();
    let claim = take_due(store, at(secs)).await.remove(0);
    assert_eq!(claim.delivery.id, id);
    let finished = store.finish(&id, &claim.lease, attempt(status), next, at(secs));
    finished.await.unwrap();
}

pub async fn replay_requeues_exactly_the_selected_deliveries_of_one_team(
    backend: &mut impl Backend,
) {
    let store = backend.open();
    let far = Next::RetryAt(at(100_000));
    // acme: dead ones at 10, 20 (channel b) and 30, a succeeded one at 15, one waiting
    // for a retry at 25; globex: a dead one at 20.
    delivered_once(&*store, ("acme", "e10", "a"), 10, 500, Next::Dead).await;
    delivered_once(&*store, ("acme", "e15", "a"), 15, 200, Next::Succeeded).await;
    delivered_once(&*store, ("acme", "e20", "b"), 20, 500, Next::Dead).await;
    delivered_once(&*store, ("globex", "g20", "a"), 20, 500, Next::Dead).await;
    delivered_once(&*store, ("acme", "e25", "a"), 25, 503, far).await;
    delivered_once(&*store, ("acme", "e30", "a"), 30, 500, Next::Dead).await;
    let filter = |status, channel: Option<&str>, since, until: Option<i64>| crate::ReplayFilter {
        team: team("acme"),
        channel: channel.map(str::to_string),
        since: at(since),
        until: until.map(at),
        status,
    };
    use crate::ReplayStatus::{All, Dead, Failed};
    let cases = [
        (filter(Dead, None, 0, None), 3),
        (filter(Failed, None, 0, None), 4),
        (filter(All, None, 0, None), 5),
        (filter(Dead, Some("a"), 0, None), 2),
        (filter(Dead, None, 15, Some(30)), 1), // until is exclusive
        (filter(All, Some("nope"), 0, None), 0),
    ];
    for (f, want) in &cases {
        let counted = store.replay(f, true, at(40)).await.unwrap();
        assert_eq!(counted, *want, "dry run of {f:?}");
    }
    // dead_count (owner alerts' threshold) counts one channel of one team.
    for (team_name, channel, want) in [("acme", "a", 2), ("acme", "b", 1), ("globex", "a", 1)] {
        let count = store.dead_count(&team(team_name), channel).await.unwrap();
        assert_eq!(count, want, "dead letters of {team_name}/{channel}");
    }
    let (dead, _) = store.get_delivery(None, "dlv_e10").await.unwrap().unwrap();
    assert_eq!(
        dead.status,
        crate::DeliveryStatus::Dead,
        "a dry run changes nothing"
    );

    // Replay acme's dead deliveries of channel `a` created before 30.
    let selected = filter(Dead, Some("a"), 0, Some(30));
    assert_eq!(store.replay(&selected, false, at(40)).await.unwrap(), 1);
    let due: Vec<String> = take_due(&*store, at(40))
        .await
        .into_iter()
        .map(|c| c.delivery.id)
        .collect();
    assert_eq!(
        due,
        ["dlv_e10"],
        "exactly the selected delivery is due, and nothing else"
    );
    let (record, _) = store.get_delivery(None, "dlv_e10").await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.attempts, record.budget_start),
        (crate::DeliveryStatus::Pending, 1, 1),
        "same delivery, a fresh budget"
    );
    // What is held now is not replayed again; globex's rows are untouched by acme's replay.
    let everything = filter(All, None, 0, None);
    let again = store.replay(&everything, false, at(41)).await.unwrap();
    assert_eq!(again, 4, "e15, e20, e25 and e30; e10 is held");
    let store = backend.reopen(store);
    let (globex, _) = store.get_delivery(None, "dlv_g20").await.unwrap().unwrap();
    assert_eq!(globex.status, crate::DeliveryStatus::Dead);
    let (succeeded, _) = store.get_delivery(None, "dlv_e15").await.unwrap().unwrap();
    assert_eq!(succeeded.status, crate::DeliveryStatus::Pending);
}

pub async fn events_after_replays_in_order_within_scope(backend: &mut impl Backend) {
    let store = backend.open();
    for (team_name, id) in [
        ("acme", "e1"),
        ("globex", "g1"),
        ("acme", "e2"),
        ("acme", "e3"),
    ] {
        accept(&*store, event(team_name, id), vec![]).await;
    }
    let acme = team("acme");
    let after: Vec<String> = store
        .events_after(Some(&acme), "e1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(after, ["e2", "e3"]);
    assert!(matches!(
        store.events_after(Some(&acme), "g1", 10).await,
        Err(StoreError::NotFound)
    ));
    let all: Vec<String> = store
        .events_after(None, "e1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, ["g1", "e2", "e3"]);
}

pub async fn health_is_ok_while_the_store_takes_writes(backend: &mut impl Backend) {
    let store = backend.open();
    store.health().await.expect("a fresh store is healthy");
    accept(
        &*store,
        event("acme", "e1"),
        vec![delivery("d1", "hook", false)],
    )
    .await;
    store.health().await.expect("healthy after a write");
    // The probe writes nothing a caller could see.
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    assert!(store.events_after(None, "e1", 10).await.unwrap().is_empty());
    let store = backend.reopen(store);
    store.health().await.expect("healthy after a reopen");
}

const DAY: i64 = 86_400;

/// Prunes at `now` in batches of one until no batch limit is reached; the sum of the
/// reports and the number of batches.
async fn prune_all(
    store: &dyn Store,
    limits: &crate::PruneLimits,
    now: Timestamp,
) -> (crate::PruneReport, usize) {
    let mut total = crate::PruneReport::default();
    for batches in 1..1000 {
        let r = store.prune(limits, now, 1).await.unwrap();
        total.events += r.events;
        total.deliveries += r.deliveries;
        total.dead += r.dead;
        total.attempts += r.attempts;
        total.dedup_windows += r.dedup_windows;
        total.silences += r.silences;
        total.fold_rows += r.fold_rows;
        total.over_size |= r.over_size;
        if !r.more {
            return (total, batches);
        }
    }
    panic!("pruning never finished: {total:?}");
}

pub async fn prune_removes_finished_rows_past_their_age_and_never_pending_ones(
    backend: &mut impl Backend,
) {
    let store = backend.open();
    for (id, deliveries) in [
        ("evt_done", vec!["dlv_done"]),
        ("evt_dead", vec!["dlv_dead"]),
        ("evt_retrying", vec!["dlv_retrying"]),
        ("evt_mixed", vec!["dlv_mixed_ok", "dlv_mixed_waiting"]),
        ("evt_none", vec![]),
    ] {
        let deliveries = deliveries
            .into_iter()
            .map(|d| delivery(d, "a", false))
            .collect();
        accept(&*store, event("acme", id), deliveries).await;
    }
    let claims = take_due(&*store, at(0)).await;
    let finishes = claims
        .into_iter()
        .filter(|c| c.delivery.id != "dlv_mixed_waiting")
        .map(|c| {
            let next = match c.delivery.id.as_str() {
                "dlv_dead" => Next::Dead,
                "dlv_retrying" => Next::RetryAt(at(1000 * DAY)),
                _ => Next::Succeeded,
            };
            Finish {
                delivery_id: c.delivery.id.clone(),
                lease: c.lease,
                attempt: attempt(if next == Next::Succeeded { 200 } else { 500 }),
                next,
                now: at(1),
            }
        })
        .collect();
    for result in store.finish_many(finishes).await.unwrap() {
        result.unwrap();
    }
    let limits = crate::PruneLimits {
        events: Duration::from_secs(30 * 86_400),
        attempts: Duration::from_secs(7 * 86_400),
        dead: Duration::from_secs(90 * 86_400),
        max_store_size: None,
        dedup: std::time::Duration::ZERO,
    };
    let attempts_of = |id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let (_, attempts) = store.get_delivery(None, id).await.unwrap().unwrap();
            attempts.len()
        }
    };
    let exists = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.get_event(None, id).await.unwrap().is_some() }
    };

    // Nothing is old enough yet.
    let (report, _) = prune_all(&*store, &limits, at(6 * DAY)).await;
    assert_eq!(report.removed(), 0, "{report:?}");

    // Past `attempts`: succeeded deliveries lose their attempts, in batches; the rest keep theirs.
    let (report, batches) = prune_all(&*store, &limits, at(8 * DAY)).await;
    assert_eq!(
        (report.attempts, report.deliveries, report.events),
        (2, 0, 0)
    );
    assert!(batches >= 3, "batches of 1 removed {report:?} in {batches}");
    assert_eq!(attempts_of("dlv_done").await, 0);
    assert_eq!(attempts_of("dlv_mixed_ok").await, 0);
    assert_eq!(attempts_of("dlv_dead").await, 1);
    assert_eq!(attempts_of("dlv_retrying").await, 1);

    // Past `events`: events whose deliveries all finished go; pending and dead ones stay.
    let (report, _) = prune_all(&*store, &limits, at(31 * DAY)).await;
    assert_eq!((report.events, report.deliveries, report.dead), (2, 1, 0));
    assert!(!exists("evt_done").await && !exists("evt_none").await);
    for id in ["evt_dead", "evt_retrying", "evt_mixed"] {
        assert!(exists(id).await, "{id} was pruned");
    }

    // Past `dead`: the dead letter goes, then its event.
    let (report, _) = prune_all(&*store, &limits, at(91 * DAY)).await;
    assert_eq!((report.events, report.deliveries, report.dead), (1, 1, 1));
    assert!(!exists("evt_dead").await);
    assert!(
        store
            .get_delivery(None, "dlv_dead")
            .await
            .unwrap()
            .is_none()
    );

    // Over the size limit, finished events go whatever their age; pending ones never do.
    accept(
        &*store,
        event("acme", "evt_fresh"),
        vec![delivery("dlv_fresh", "a", false)],
    )
    .await;
    let fresh = take_due(&*store, at(0)).await;
    let fresh: Vec<_> = fresh
        .into_iter()
        .filter(|c| c.delivery.id == "dlv_fresh")
        .map(|c| Finish {
            delivery_id: c.delivery.id.clone(),
            lease: c.lease,
            attempt: attempt(200),
            next: Next::Succeeded,
            now: at(92 * DAY),
        })
        .collect();
    assert_eq!(fresh.len(), 1);
    store.finish_many(fresh).await.unwrap()[0].clone().unwrap();
    let tiny = crate::PruneLimits {
        max_store_size: Some(1),
        dedup: std::time::Duration::ZERO,
        ..limits
    };
    let (report, _) = prune_all(&*store, &tiny, at(92 * DAY)).await;
    assert!(report.over_size, "{report:?}");
    assert!(!exists("evt_fresh").await);
    for id in ["evt_retrying", "evt_mixed"] {
        assert!(exists(id).await, "{id} was pruned for size");
    }
    assert_eq!(attempts_of("dlv_retrying").await, 1);
    let (_, mixed) = store.get_event(None, "evt_mixed").await.unwrap().unwrap();
    assert_eq!(mixed.len(), 2, "a pending event keeps every delivery");

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.events, stats.deliveries, stats.pending, stats.dead),
        (2, 3, 2, 0),
        "{stats:?}"
    );
    assert_eq!(stats.oldest_pending, Some(at(0)));
    assert!(stats.size_bytes > 0);
}

/// `bot`'s migrations, sorted.
async fn migrations_of(store: &dyn Store, bot: &str) -> Vec<(i64, i64)> {
    let mut pairs: Vec<(i64, i64)> = store
        .chat_migrations(bot)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.from, m.to))
        .collect();
    pairs.sort_unstable();
    pairs
}

pub async fn chat_migrations_and_split_progress_survive_a_reopen(backend: &mut impl Backend) {
    let store = backend.open();
    assert!(store.chat_migrations("111").await.unwrap().is_empty());
    let migrate = |from, to| ChatMigration { from, to };
    store
        .record_chat_migration("111", migrate(-5, -1_000_000_000_005), at(1))
        .await
        .unwrap();
    store
        .record_chat_migration("111", migrate(-6, -1_000_000_000_006), at(1))
        .await
        .unwrap();
    // Another bot's knowledge is its own.
    store
        .record_chat_migration("222", migrate(-5, -1_000_000_000_999), at(1))
        .await
        .unwrap();
    // A second migration of the same chat replaces the first.
    store
        .record_chat_migration("111", migrate(-6, -1_000_000_000_066), at(2))
        .await
        .unwrap();

    let halfway = SplitProgress {
        parts: 3,
        delivered: 1,
    };
    assert_eq!(store.split_progress("dlv_split").await.unwrap(), None);
    store
        .set_split_progress("dlv_split", halfway, at(1))
        .await
        .unwrap();
    store
        .set_split_progress(
            "dlv_other",
            SplitProgress {
                parts: 2,
                delivered: 1,
            },
            at(1),
        )
        .await
        .unwrap();
    let further = SplitProgress {
        parts: 3,
        delivered: 2,
    };
    store
        .set_split_progress("dlv_split", further, at(2))
        .await
        .unwrap();

    let store = backend.reopen(store);
    assert_eq!(
        migrations_of(&*store, "111").await,
        [(-6, -1_000_000_000_066), (-5, -1_000_000_000_005)]
    );
    assert_eq!(
        migrations_of(&*store, "222").await,
        [(-5, -1_000_000_000_999)]
    );
    assert!(migrations_of(&*store, "333").await.is_empty());
    assert_eq!(
        store.split_progress("dlv_split").await.unwrap(),
        Some(further)
    );

    // A finished delivery's progress is forgotten; the others' stays.
    assert!(store.clear_split_progress("dlv_split").await.unwrap());
    assert!(!store.clear_split_progress("dlv_split").await.unwrap());
    assert_eq!(store.split_progress("dlv_split").await.unwrap(), None);
    assert_eq!(
        store
            .split_progress("dlv_other")
            .await
            .unwrap()
            .map(|p| p.delivered),
        Some(1)
    );
}

pub async fn pruning_a_delivery_removes_its_split_progress(backend: &mut impl Backend) {
    let store = backend.open();
    for (event_id, delivery_id) in [
        ("evt_done", "dlv_done"),
        ("evt_dead", "dlv_dead"),
        ("evt_waiting", "dlv_waiting"),
    ] {
        accept(
            &*store,
            event("acme", event_id),
            vec![delivery(delivery_id, "chat", false)],
        )
        .await;
    }
    let halfway = SplitProgress {
        parts: 2,
        delivered: 1,
    };
    for id in ["dlv_done", "dlv_dead", "dlv_waiting"] {
        store.set_split_progress(id, halfway, at(1)).await.unwrap();
    }
    // Finished without the progress being cleared (a channel that failed to clear it):
    // retention still removes it with the delivery.
    let finishes = take_due(&*store, at(0))
        .await
        .into_iter()
        .map(|c| {
            let next = match c.delivery.id.as_str() {
                "dlv_done" => Next::Succeeded,
                "dlv_dead" => Next::Dead,
                _ => Next::RetryAt(at(1000 * DAY)),
            };
            Finish {
                delivery_id: c.delivery.id.clone(),
                lease: c.lease,
                attempt: attempt(if next == Next::Succeeded { 200 } else { 500 }),
                next,
                now: at(1),
            }
        })
        .collect();
    for result in store.finish_many(finishes).await.unwrap() {
        result.unwrap();
    }
    let limits = crate::PruneLimits {
        events: Duration::from_secs(30 * 86_400),
        attempts: Duration::from_secs(7 * 86_400),
        dead: Duration::from_secs(90 * 86_400),
        max_store_size: None,
        dedup: Duration::ZERO,
    };
    let progress = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.split_progress(id).await.unwrap() }
    };

    prune_all(&*store, &limits, at(31 * DAY)).await;
    assert_eq!(progress("dlv_done").await, None, "pruned with its event");
    assert_eq!(
        progress("dlv_dead").await,
        Some(halfway),
        "a dead letter is kept"
    );
    assert_eq!(progress("dlv_waiting").await, Some(halfway));

    prune_all(&*store, &limits, at(91 * DAY)).await;
    assert_eq!(
        progress("dlv_dead").await,
        None,
        "pruned with the dead letter"
    );
    assert_eq!(
        progress("dlv_waiting").await,
        Some(halfway),
        "a pending delivery keeps its progress"
    );
}

fn deduped(id: &str, subscription: &str, key: &str, window_secs: u64) -> NewDelivery {
    NewDelivery {
        subscription_name: Some(subscription.into()),
        dedup: Some(crate::DedupClaim {
            key: key.into(),
            window: Duration::from_secs(window_secs),
        }),
        ..delivery(id, "a", false)
    }
}

/// Accepts one event with `deliveries` at `now`; the ids stored as suppressed.
async fn accept_at(
    store: &dyn Store,
    event: Event,
    deliveries: Vec<NewDelivery>,
    now: Timestamp,
) -> Vec<String> {
    match store
        .accept(vec![(event, deliveries)], now)
        .await
        .unwrap()
        .remove(0)
    {
        Accepted::New { suppressed, .. } => suppressed,
        other => panic!("not new: {other:?}"),
    }
}

pub async fn dedup_suppresses_repeats_inside_the_window_across_a_reopen(
    backend: &mut impl Backend,
) {
    let store = backend.open();
    let key = r#"["capsule.create","sb_1"]"#;
    // The first of a key is sent and opens a 60 s window.
    let none = accept_at(
        &*store,
        event("acme", "e1"),
        vec![deduped("d1", "s", key, 60)],
        at(0),
    )
    .await;
    assert!(none.is_empty());
    let repeat = accept_at(
        &*store,
        event("acme", "e2"),
        vec![deduped("d2", "s", key, 60)],
        at(10),
    )
    .await;
    assert_eq!(repeat, ["d2"]);
    // The window survives a restart.
    let store = backend.reopen(store);
    let repeat = accept_at(
        &*store,
        event("acme", "e3"),
        vec![deduped("d3", "s", key, 60)],
        at(59),
    )
    .await;
    assert_eq!(repeat, ["d3"]);
    // Another key, another subscription, another team: each its own window.
    for (team, id, sub, k) in [
        ("acme", "e4", "s", r#"["capsule.create","sb_2"]"#),
        ("acme", "e5", "other", key),
        ("globex", "e6", "s", key),
    ] {
        let sent = accept_at(
            &*store,
            event(team, id),
            vec![deduped(&format!("d_{id}"), sub, k, 60)],
            at(20),
        )
        .await;
        assert!(sent.is_empty(), "{team} {id} {sub} was suppressed");
    }
    // At the window's end the key is sent again and opens a new window from then.
    let sent = accept_at(
        &*store,
        event("acme", "e7"),
        vec![deduped("d7", "s", key, 60)],
        at(60),
    )
    .await;
    assert!(sent.is_empty());
    let repeat = accept_at(
        &*store,
        event("acme", "e8"),
        vec![deduped("d8", "s", key, 60)],
        at(61),
    )
    .await;
    assert_eq!(repeat, ["d8"]);

    let status = |id: &'static str| {
        let store = Arc::clone(&store);
        async move {
            let (d, attempts) = store.get_delivery(None, id).await.unwrap().unwrap();
            assert!(attempts.is_empty());
            (d.status, d.duplicate_of, d.next_attempt_at)
        }
    };
    use crate::DeliveryStatus::{Pending, Suppressed};
    assert_eq!(status("d1").await.0, Pending);
    assert_eq!(
        status("d2").await,
        (Suppressed, Some("d1".to_string()), None)
    );
    assert_eq!(
        status("d3").await,
        (Suppressed, Some("d1".to_string()), None)
    );
    assert_eq!(
        status("d8").await,
        (Suppressed, Some("d7".to_string()), None)
    );
    // Suppressed deliveries are never handed out; they are listed under their status.
    let due: Vec<_> = take_due(&*store, at(100))
        .await
        .into_iter()
        .map(|c| c.delivery.id)
        .collect();
    assert!(
        !due.iter()
            .any(|id| ["d2", "d3", "d8"].contains(&id.as_str())),
        "{due:?}"
    );
    let page = store
        .list_deliveries(&crate::DeliveryFilter {
            team: Some(team("acme")),
            status: Some(Suppressed),
            ..crate::DeliveryFilter::default()
        })
        .await
        .unwrap();
    let listed: Vec<_> = page.deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed, ["d8", "d3", "d2"]);
}

pub async fn concurrent_accepts_of_one_key_send_it_once(backend: &mut impl Backend) {
    let store = backend.open();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            accept_at(
                &*store,
                event("acme", &format!("e{i}")),
                vec![deduped(&format!("d{i}"), "s", "k", 600)],
                at(i),
            )
            .await
            .len()
        }));
    }
    let mut suppressed = 0;
    for task in tasks {
        suppressed += task.await.unwrap();
    }
    assert_eq!(
        suppressed, 15,
        "exactly one of 16 concurrent repeats is sent"
    );
}

pub async fn silenced_deliveries_are_finished_and_never_due(backend: &mut impl Backend) {
    let store = backend.open();
    let silenced = NewDelivery {
        silence: Some("sil_1".into()),
        // A silenced delivery opens no dedup window: after the silence, the key is sent.
        ..deduped("dlv_quiet", "s", "k", 600)
    };
    let held = holds(&*store);
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![silenced, delivery("dlv_loud", "b", held)],
    )
    .await;
    let (quiet, attempts) = store
        .get_delivery(None, "dlv_quiet")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            quiet.status,
            quiet.silence_id.as_deref(),
            quiet.next_attempt_at,
            attempts.len()
        ),
        (crate::DeliveryStatus::Silenced, Some("sil_1"), None, 0)
    );
    assert_eq!(quiet.reason().as_deref(), Some("silenced by sil_1"));
    assert!(
        take_due(&*store, at(1000))
            .await
            .iter()
            .all(|c| c.delivery.id != "dlv_quiet")
    );
    let sent = accept_at(
        &*store,
        event("acme", "evt_2"),
        vec![deduped("dlv_after", "s", "k", 600)],
        at(1),
    )
    .await;
    assert!(
        sent.is_empty(),
        "the silenced delivery opened a dedup window"
    );
    // An operator may still send it: a retry makes it pending and forgets the silence.
    let retried = store.retry_now(None, "dlv_quiet", at(2)).await.unwrap();
    assert_eq!(
        (retried.status, retried.silence_id),
        (crate::DeliveryStatus::Pending, None)
    );
}

pub async fn finish_silenced_is_fenced_and_records_no_attempt(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false)],
    )
    .await;
    let claim = take_due(&*store, at(0)).await.remove(0);
    let stranger = crate::LeaseToken::from_string("not-the-lease".into());
    let err = store
        .finish_silenced("dlv_1", &stranger, "sil_1", at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    store
        .finish_silenced("dlv_1", &claim.lease, "sil_1", at(1))
        .await
        .unwrap();
    let (record, attempts) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.silence_id.as_deref(), attempts.len()),
        (crate::DeliveryStatus::Silenced, Some("sil_1"), 0)
    );
    let again = store
        .finish("dlv_1", &claim.lease, attempt(200), Next::Succeeded, at(2))
        .await;
    assert!(
        matches!(again, Err(StoreError::LeaseLost { .. })),
        "{again:?}"
    );
    let store = backend.reopen(store);
    assert!(take_due(&*store, at(1000)).await.is_empty());
}

fn silence(id: &str, team_name: &str, starts: i64, ends: i64) -> herald_core::Silence {
    herald_core::Silence {
        id: id.into(),
        team: team(team_name),
        matchers: herald_core::SilenceMatchers {
            event: Some(herald_core::Pattern::parse("capsule.*").unwrap()),
            outcome: Some(Outcome::Error),
            metadata: BTreeMap::from([("region".to_string(), "eu".to_string())]),
            channel: Some("a".into()),
        },
        starts_at: at(starts),
        ends_at: at(ends),
        comment: "maintenance".into(),
        created_by: "ops@acme".into(),
        created_at: at(0),
    }
}

pub async fn silences_are_durable_scoped_and_expire(backend: &mut impl Backend) {
    use herald_core::SilenceState::{Active, Expired, Pending};
    let store = backend.open();
    for s in [
        silence("sil_a1", "acme", 0, 100),
        silence("sil_a2", "acme", 50, 200),
        silence("sil_g1", "globex", 0, 100),
    ] {
        store.create_silence(s).await.unwrap();
    }
    let store = backend.reopen(store);
    let ids = |list: Vec<herald_core::Silence>| list.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let filter = |team_name: Option<&str>, state, now| crate::SilenceFilter {
        team: team_name.map(team),
        state,
        now: at(now),
    };
    assert_eq!(
        ids(store
            .list_silences(&filter(Some("acme"), None, 10))
            .await
            .unwrap()),
        ["sil_a2", "sil_a1"]
    );
    assert_eq!(
        ids(store.list_silences(&filter(None, None, 10)).await.unwrap()),
        ["sil_g1", "sil_a2", "sil_a1"]
    );
    assert_eq!(
        ids(store
            .list_silences(&filter(Some("acme"), Some(Pending), 10))
            .await
            .unwrap()),
        ["sil_a2"]
    );
    assert_eq!(
        ids(store
            .list_silences(&filter(Some("acme"), Some(Active), 10))
            .await
            .unwrap()),
        ["sil_a1"]
    );
    assert_eq!(
        ids(store
            .list_silences(&filter(Some("acme"), Some(Expired), 150))
            .await
            .unwrap()),
        ["sil_a1"]
    );
    assert_eq!(
        store.get_silence(None, "sil_a1").await.unwrap(),
        Some(silence("sil_a1", "acme", 0, 100))
    );
    // Another team's silence is absent: not readable, not expirable.
    assert_eq!(
        store
            .get_silence(Some(&team("globex")), "sil_a1")
            .await
            .unwrap(),
        None
    );
    let err = store
        .expire_silence(Some(&team("globex")), "sil_a1", at(10))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err}");
    assert_eq!(
        store
            .get_silence(None, "sil_a1")
            .await
            .unwrap()
            .unwrap()
            .ends_at,
        at(100)
    );
    // Expiring ends it now; a pending one is simply over; an ended one stays as it was.
    let ended = store
        .expire_silence(Some(&team("acme")), "sil_a1", at(10))
        .await
        .unwrap();
    assert_eq!((ended.starts_at, ended.ends_at), (at(0), at(10)));
    let ended = store.expire_silence(None, "sil_a2", at(20)).await.unwrap();
    assert_eq!((ended.starts_at, ended.ends_at), (at(20), at(20)));
    assert_eq!(ended.state(at(20)), Expired);
    let again = store.expire_silence(None, "sil_a1", at(30)).await.unwrap();
    assert_eq!(again.ends_at, at(10));
    let err = store
        .expire_silence(None, "sil_nope", at(30))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err}");
    // The live ones (not ended), every team's, for the engine to apply.
    assert_eq!(ids(store.live_silences(at(30)).await.unwrap()), ["sil_g1"]);
    let store = backend.reopen(store);
    assert_eq!(ids(store.live_silences(at(30)).await.unwrap()), ["sil_g1"]);
}

pub async fn prune_forgets_old_dedup_windows_and_ended_silences(backend: &mut impl Backend) {
    let store = backend.open();
    accept_at(
        &*store,
        event("acme", "e1"),
        vec![deduped("d1", "s", "k", 3600)],
        at(0),
    )
    .await;
    store
        .create_silence(silence("sil_old", "acme", 0, 100))
        .await
        .unwrap();
    store
        .create_silence(silence("sil_live", "acme", 0, 40 * DAY))
        .await
        .unwrap();
    let limits = crate::PruneLimits {
        events: Duration::from_secs(30 * 86_400),
        attempts: Duration::from_secs(7 * 86_400),
        dead: Duration::from_secs(90 * 86_400),
        max_store_size: None,
        dedup: Duration::from_secs(3600),
    };
    let (report, _) = prune_all(&*store, &limits, at(1800)).await;
    assert_eq!(
        (report.dedup_windows, report.silences),
        (0, 0),
        "{report:?}"
    );
    // The window is still open: a repeat is suppressed.
    let repeat = accept_at(
        &*store,
        event("acme", "e2"),
        vec![deduped("d2", "s", "k", 3600)],
        at(1800),
    )
    .await;
    assert_eq!(repeat, ["d2"]);
    let (report, _) = prune_all(&*store, &limits, at(31 * DAY)).await;
    assert_eq!(
        (report.dedup_windows, report.silences),
        (1, 1),
        "{report:?}"
    );
    assert!(store.get_silence(None, "sil_old").await.unwrap().is_none());
    assert!(store.get_silence(None, "sil_live").await.unwrap().is_some());
}

pub async fn orphans_wait_until_reattached_or_moved_by_their_own_team(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![
            delivery("dlv_1", "old", false),
            delivery("dlv_2", "old", false),
        ],
    )
    .await;
    let claims = take_due(&*store, at(0)).await;
    assert_eq!(claims.len(), 2);
    let stranger = crate::LeaseToken::from_string("not-the-lease".into());
    let why = || "channel `old` is gone".to_string();
    let err = store
        .orphan("dlv_1", &stranger, why(), at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
    for claim in &claims {
        let id = &claim.delivery.id;
        store.orphan(id, &claim.lease, why(), at(1)).await.unwrap();
    }
    let (record, attempts) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(record.status, crate::DeliveryStatus::Orphaned);
    assert_eq!(
        (record.attempts, attempts.len()),
        (0, 0),
        "no attempt recorded"
    );
    assert_eq!(record.last_error.as_deref(), Some("channel `old` is gone"));
    assert_eq!(record.next_attempt_at, None);
    assert!(take_due(&*store, at(100)).await.is_empty(), "never due");
    assert_eq!(store.next_due(&[]).await.unwrap(), None);
    let listed = store
        .list_deliveries(&crate::DeliveryFilter {
            status: Some(crate::DeliveryStatus::Orphaned),
            ..crate::DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.deliveries.len(), 2);
    let err = store.retry_now(None, "dlv_1", at(2)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Orphaned { channel, .. } if channel == "old"),
        "{err}"
    );

    // Another team cannot move them, even naming the same channels.
    let moves = |team_name: &str| crate::MoveFilter {
        team: team(team_name),
        from_channel: "old".into(),
        to_channel: "new".into(),
        status: crate::MoveStatus::Orphaned,
    };
    assert_eq!(
        store
            .move_deliveries(&moves("globex"), at(3))
            .await
            .unwrap(),
        0
    );
    // A reload that brings another team's `old` back re-attaches nothing of acme's.
    let globex_old = [(team("globex"), "old".to_string())];
    assert_eq!(store.reattach_orphans(&globex_old, at(3)).await.unwrap(), 0);
    // acme's `old` back: re-attached, due at once.
    let acme_old = [(team("acme"), "old".to_string())];
    assert_eq!(store.reattach_orphans(&acme_old, at(4)).await.unwrap(), 2);
    let claims = take_due(&*store, at(4)).await;
    assert_eq!(claims.len(), 2);
    for claim in &claims {
        let id = &claim.delivery.id;
        store.orphan(id, &claim.lease, why(), at(5)).await.unwrap();
    }
    // Moved by their own team: re-pointed, due at once, same ids.
    assert_eq!(
        store.move_deliveries(&moves("acme"), at(6)).await.unwrap(),
        2
    );
    let store = backend.reopen(store);
    let claims = take_due(&*store, at(6)).await;
    let mut moved: Vec<(String, String)> = claims
        .iter()
        .map(|c| (c.delivery.id.clone(), c.delivery.channel.clone()))
        .collect();
    moved.sort();
    assert_eq!(
        moved,
        [
            ("dlv_1".to_string(), "new".to_string()),
            ("dlv_2".to_string(), "new".to_string())
        ]
    );
}

pub async fn a_channel_wide_failure_uses_no_retry_budget(backend: &mut impl Backend) {
    let store = backend.open();
    accept(
        &*store,
        event("acme", "evt_1"),
        vec![delivery("dlv_1", "a", false)],
    )
    .await;
    let claim = take_due(&*store, at(0)).await.remove(0);
    let finished = store.finish(
        "dlv_1",
        &claim.lease,
        attempt(429),
        Next::Wait(at(10)),
        at(1),
    );
    finished.await.unwrap();
    let claim = take_due(&*store, at(10)).await.remove(0);
    assert_eq!(
        (claim.delivery.attempts, claim.delivery.budget_start),
        (1, 1),
        "the attempt is recorded but not counted"
    );
    let finished = store.finish(
        "dlv_1",
        &claim.lease,
        attempt(500),
        Next::RetryAt(at(20)),
        at(11),
    );
    finished.await.unwrap();
    let (record, attempts) = store.get_delivery(None, "dlv_1").await.unwrap().unwrap();
    assert_eq!(
        (record.attempts, record.budget_start, attempts.len()),
        (2, 1, 2)
    );
    assert_eq!(record.status, crate::DeliveryStatus::Pending);
}
