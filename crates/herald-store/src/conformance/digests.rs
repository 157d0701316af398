//! Conformance cases of grouping and throttling (`NewDelivery::fold`): where a delivery
//! goes, when a digest falls due, that a claim seals it, that it survives a restart and
//! concurrent accepts, and how retries, replays and pruning treat digests and members.

use std::sync::Arc;
use std::time::Duration;

use herald_core::{DigestKind, Event, Timestamp};

use super::{LEASE, at, attempt, delivery, event, holds, prune_all, take_due};
use crate::{
    Accepted, DeliveryStatus, Finish, FoldClaim, NewDelivery, Next, OpenedDigest, Store, StoreError,
};

const WAIT: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_secs(300);

fn group_kind(region: &str) -> DigestKind {
    DigestKind::Group {
        labels: vec![("metadata.region".into(), region.into())],
    }
}

/// A delivery of subscription `sub` (channel `a`) that groups by `key`; it would open
/// the digest `dig_<id>`. Held where the store holds, which grouping ignores.
fn grouped(store: &dyn Store, id: &str, sub: &str, key: &str) -> NewDelivery {
    NewDelivery {
        subscription_name: Some(sub.into()),
        fold: Some(FoldClaim::Group {
            key: key.into(),
            kind: group_kind(key),
            wait: WAIT,
            interval: INTERVAL,
            digest_id: format!("dig_{id}"),
        }),
        ..delivery(id, "a", holds(store))
    }
}

fn throttle_kind(limit: u32) -> DigestKind {
    DigestKind::Throttle {
        limit,
        per_seconds: 60,
    }
}

/// A delivery of subscription `sub` throttled to `limit` per minute in `scope`.
fn throttled(id: &str, sub: &str, scope: &str, limit: u32) -> NewDelivery {
    NewDelivery {
        subscription_name: Some(sub.into()),
        fold: Some(FoldClaim::Throttle {
            scope: scope.into(),
            kind: throttle_kind(limit),
            limit,
            per: Duration::from_secs(60),
            digest_id: format!("dig_{id}"),
        }),
        ..delivery(id, "a", false)
    }
}

/// What became of one accepted event: (suppressed, folded, opened).
async fn fold_at(
    store: &dyn Store,
    event: Event,
    deliveries: Vec<NewDelivery>,
    now: Timestamp,
) -> (Vec<String>, Vec<String>, Vec<OpenedDigest>) {
    match store
        .accept(vec![(event, deliveries)], now)
        .await
        .unwrap()
        .remove(0)
    {
        Accepted::New {
            suppressed,
            folded,
            opened,
            ..
        } => (suppressed, folded, opened),
        other => panic!("not new: {other:?}"),
    }
}

fn opened(id: &str, due: i64) -> Vec<OpenedDigest> {
    vec![OpenedDigest {
        id: id.into(),
        channel: "a".into(),
        due: at(due),
    }]
}

async fn record(store: &dyn Store, id: &str) -> crate::DeliveryRecord {
    store.get_delivery(None, id).await.unwrap().unwrap().0
}

/// The ids of the digest's listed members' events, and its total.
async fn members(store: &dyn Store, digest: &str) -> (Vec<String>, u64) {
    let m = store.digest_members(digest, 100).await.unwrap().unwrap();
    (m.events.into_iter().map(|e| e.id).collect(), m.total)
}

fn ids(claims: &[crate::Claimed]) -> Vec<&str> {
    claims.iter().map(|c| c.delivery.id.as_str()).collect()
}

/// Finishes every claim as succeeded.
async fn succeed(store: &dyn Store, claims: Vec<crate::Claimed>, now: Timestamp) {
    let finishes = claims
        .into_iter()
        .map(|c| Finish {
            delivery_id: c.delivery.id,
            lease: c.lease,
            attempt: attempt(200),
            next: Next::Succeeded,
            now,
        })
        .collect();
    for result in store.finish_many(finishes).await.unwrap() {
        result.unwrap();
    }
}

pub async fn grouped_deliveries_join_one_open_digest_per_group(backend: &mut impl super::Backend) {
    let store = backend.open();
    let s = &*store;
    // e1 opens eu's digest, due after the wait; e2 (eu) joins it; e3 (us) opens its own;
    // another subscription's eu is another group.
    let first = fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    assert_eq!(first, (vec![], vec!["d1".into()], opened("dig_d1", 30)));
    let second = fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "eu")],
        at(10),
    )
    .await;
    assert_eq!(second, (vec![], vec!["d2".into()], vec![]));
    let us = fold_at(
        s,
        event("acme", "e3"),
        vec![grouped(s, "d3", "s", "us")],
        at(5),
    )
    .await;
    assert_eq!(us.2, opened("dig_d3", 35));
    let other = fold_at(
        s,
        event("acme", "e4"),
        vec![grouped(s, "d4", "t", "eu")],
        at(6),
    )
    .await;
    assert_eq!(other.2, opened("dig_d4", 36));
    let globex = fold_at(
        s,
        event("globex", "g1"),
        vec![grouped(s, "g1", "s", "eu")],
        at(7),
    );
    assert_eq!(
        globex.await.2,
        opened("dig_g1", 37),
        "teams never share a group"
    );

    // The digest is an ordinary pending delivery of the first member's event.
    let digest = record(s, "dig_d1").await;
    assert!(digest.is_digest(), "{digest:?}");
    assert_eq!(
        (
            digest.status,
            digest.event_id.as_str(),
            digest.channel.as_str(),
            digest.subscription_name.as_deref(),
            digest.next_attempt_at,
            digest.digest.clone(),
        ),
        (
            DeliveryStatus::Pending,
            "e1",
            "a",
            Some("s"),
            Some(at(30)),
            Some(group_kind("eu"))
        )
    );
    // Members are grouped: finished, never due, naming their digest.
    let member = record(s, "d2").await;
    assert!(!member.is_digest());
    assert_eq!(
        (
            member.status,
            member.digest_id.as_deref(),
            member.next_attempt_at
        ),
        (DeliveryStatus::Grouped, Some("dig_d1"), None)
    );
    assert_eq!(
        member.reason().as_deref(),
        Some("grouped into digest dig_d1")
    );
    let (_, of_e1) = s.get_event(None, "e1").await.unwrap().unwrap();
    let listed: Vec<_> = of_e1.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed, ["dig_d1", "d1"]);

    // Nothing is due before the first digest; then exactly the digests, never a member.
    assert_eq!(s.next_due(&[]).await.unwrap(), Some(at(30)));
    assert!(take_due(s, at(29)).await.is_empty());
    let due = take_due(s, at(36)).await;
    assert_eq!(ids(&due), ["dig_d1", "dig_d3", "dig_d4"]);
    assert_eq!(
        due[0].event.id, "e1",
        "a digest is claimed with its first event"
    );
    assert_eq!(
        members(s, "dig_d1").await,
        (vec!["e1".to_string(), "e2".to_string()], 2)
    );
    assert_eq!(members(s, "dig_d3").await, (vec!["e3".to_string()], 1));
    let page = s
        .list_deliveries(&crate::DeliveryFilter {
            status: Some(DeliveryStatus::Grouped),
            team: Some(super::team("acme")),
            ..crate::DeliveryFilter::default()
        })
        .await
        .unwrap();
    let listed: Vec<_> = page.deliveries.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(listed, ["d4", "d3", "d2", "d1"]);
}

pub async fn a_live_group_falls_due_on_its_interval(backend: &mut impl super::Backend) {
    let store = backend.open();
    let s = &*store;
    fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    let first = take_due(s, at(30)).await;
    assert_eq!(ids(&first), ["dig_d1"]);
    succeed(s, first, at(31)).await;
    // The group fell due at 30: the next event waits for 30 + interval, not for the wait.
    let next = fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "eu")],
        at(40),
    )
    .await;
    assert_eq!(next.2, opened("dig_d2", 330));
    let join = fold_at(
        s,
        event("acme", "e3"),
        vec![grouped(s, "d3", "s", "eu")],
        at(50),
    )
    .await;
    assert_eq!(join.1, ["d3"]);
    assert!(join.2.is_empty());
    assert!(take_due(s, at(329)).await.is_empty());
    let second = take_due(s, at(330)).await;
    assert_eq!(ids(&second), ["dig_d2"]);
    assert_eq!(second[0].event.id, "e2");
    succeed(s, second, at(331)).await;
    assert_eq!(
        members(s, "dig_d2").await,
        (vec!["e2".to_string(), "e3".to_string()], 2)
    );
    // Quiet for a whole interval after 330: the group starts over with the wait.
    let quiet = fold_at(
        s,
        event("acme", "e4"),
        vec![grouped(s, "d4", "s", "eu")],
        at(630),
    );
    assert_eq!(quiet.await.2, opened("dig_d4", 660));
}

pub async fn a_digest_is_sealed_when_claimed_or_held(backend: &mut impl super::Backend) {
    let store = backend.open();
    let s = &*store;
    // Two groups: `eu`'s digest is taken with a lease (claim_due), `us`'s the way this
    // backend's dispatcher takes work (hold_due for an exclusive store).
    fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "us")],
        at(0),
    )
    .await;
    let claimed = s.claim_due(at(30), 1, LEASE, &[]).await.unwrap();
    assert_eq!(ids(&claimed), ["dig_d1"]);
    let taken = take_due(s, at(30)).await;
    assert_eq!(ids(&taken), ["dig_d2"]);
    // Arriving after the claim: each opens its group's next digest, due on the interval.
    let late_eu = fold_at(
        s,
        event("acme", "e3"),
        vec![grouped(s, "d3", "s", "eu")],
        at(31),
    );
    assert_eq!(late_eu.await.2, opened("dig_d3", 330));
    let late_us = fold_at(
        s,
        event("acme", "e4"),
        vec![grouped(s, "d4", "s", "us")],
        at(31),
    );
    assert_eq!(late_us.await.2, opened("dig_d4", 330));
    // A failed attempt and its retry carry exactly the same members under the same id.
    let lease = claimed[0].lease.clone();
    let retry = Next::RetryAt(at(40));
    s.finish("dig_d1", &lease, attempt(500), retry, at(32))
        .await
        .unwrap();
    let more = fold_at(
        s,
        event("acme", "e5"),
        vec![grouped(s, "d5", "s", "eu")],
        at(41),
    )
    .await;
    assert!(more.2.is_empty(), "e5 joins the open digest dig_d3");
    let again = s.claim_due(at(41), 10, LEASE, &[]).await.unwrap();
    assert_eq!(ids(&again), ["dig_d1"]);
    assert_eq!(members(s, "dig_d1").await, (vec!["e1".to_string()], 1));
    assert_eq!(
        members(s, "dig_d3").await,
        (vec!["e3".to_string(), "e5".to_string()], 2)
    );
    assert_eq!(members(s, "dig_d2").await, (vec!["e2".to_string()], 1));
}

pub async fn a_throttle_sends_its_limit_then_folds_into_the_windows_digest(
    backend: &mut impl super::Backend,
) {
    let store = backend.open();
    let s = &*store;
    // Channel scope: two subscriptions count together.
    let scope = "channel:a";
    for (i, sub, secs) in [(1, "s", 0), (2, "t", 1)] {
        let sent = fold_at(
            s,
            event("acme", &format!("e{i}")),
            vec![throttled(&format!("d{i}"), sub, scope, 2)],
            at(secs),
        )
        .await;
        assert_eq!(sent, (vec![], vec![], vec![]), "d{i} is within the limit");
    }
    let third = fold_at(
        s,
        event("acme", "e3"),
        vec![throttled("d3", "s", scope, 2)],
        at(2),
    )
    .await;
    assert_eq!(third, (vec![], vec!["d3".into()], opened("dig_d3", 60)));
    let fourth = fold_at(
        s,
        event("acme", "e4"),
        vec![throttled("d4", "t", scope, 2)],
        at(3),
    )
    .await;
    assert_eq!(fourth, (vec![], vec!["d4".into()], vec![]));
    let folded = record(s, "d4").await;
    assert_eq!(
        folded.reason().as_deref(),
        Some("folded by throttle into digest dig_d3")
    );
    assert_eq!(record(s, "dig_d3").await.digest, Some(throttle_kind(2)));
    // Another scope, another team: their own windows.
    let own = fold_at(
        s,
        event("acme", "e5"),
        vec![throttled("d5", "s", "sub:s", 2)],
        at(4),
    );
    assert!(own.await.1.is_empty());
    let globex = fold_at(
        s,
        event("globex", "g1"),
        vec![throttled("g1", "s", scope, 2)],
        at(4),
    );
    assert!(globex.await.1.is_empty());
    // The singles are due at once; the digest when the window ends.
    let now = take_due(s, at(4)).await;
    assert_eq!(ids(&now), ["d1", "d2", "d5", "g1"]);
    succeed(s, now, at(5)).await;
    assert_eq!(
        members(s, "dig_d3").await,
        (vec!["e3".to_string(), "e4".to_string()], 2)
    );
    let window_end = take_due(s, at(60)).await;
    assert_eq!(ids(&window_end), ["dig_d3"]);
    // At the window's end a new one starts with the next delivery.
    let next = fold_at(
        s,
        event("acme", "e6"),
        vec![throttled("d6", "s", scope, 2)],
        at(60),
    );
    assert_eq!(next.await, (vec![], vec![], vec![]));
}

pub async fn suppressed_and_silenced_deliveries_are_neither_folded_nor_counted(
    backend: &mut impl super::Backend,
) {
    let store = backend.open();
    let s = &*store;
    let dedup = |key: &str| {
        Some(crate::DedupClaim {
            key: key.into(),
            window: Duration::from_secs(600),
        })
    };
    let with_key = |id: &str, key: &str| NewDelivery {
        dedup: dedup(key),
        ..throttled(id, "s", "sub:s", 2)
    };
    assert!(
        fold_at(s, event("acme", "e1"), vec![with_key("d1", "k1")], at(0))
            .await
            .1
            .is_empty()
    );
    // A repeat inside its dedup window is suppressed: not folded, and not counted.
    let repeat = fold_at(s, event("acme", "e2"), vec![with_key("d2", "k1")], at(1)).await;
    assert_eq!(repeat, (vec!["d2".into()], vec![], vec![]));
    let second = fold_at(s, event("acme", "e3"), vec![with_key("d3", "k2")], at(2)).await;
    assert_eq!(second, (vec![], vec![], vec![]), "the limit is 2 singles");
    let third = fold_at(s, event("acme", "e4"), vec![with_key("d4", "k3")], at(3)).await;
    assert_eq!(third.1, ["d4"]);
    assert_eq!(record(s, "d2").await.status, DeliveryStatus::Suppressed);
    // A silenced delivery is stored silenced: it joins no group and opens no digest.
    let quiet = NewDelivery {
        silence: Some("sil_1".into()),
        ..grouped(s, "d5", "g", "eu")
    };
    let silenced = fold_at(s, event("acme", "e5"), vec![quiet], at(4)).await;
    assert_eq!(silenced, (vec![], vec![], vec![]));
    let quiet = record(s, "d5").await;
    assert_eq!(
        (quiet.status, quiet.digest_id, quiet.digest),
        (DeliveryStatus::Silenced, None, None)
    );
    assert!(s.digest_members("dig_d5", 10).await.unwrap().is_none());
    // The group is still new: the next delivery opens its first digest after the wait.
    let next = fold_at(
        s,
        event("acme", "e6"),
        vec![grouped(s, "d6", "g", "eu")],
        at(5),
    );
    assert_eq!(next.await.2, opened("dig_d6", 35));
}

pub async fn a_grouped_delivery_is_retried_and_replayed_through_its_digest(
    backend: &mut impl super::Backend,
) {
    let store = backend.open();
    let s = &*store;
    fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "eu")],
        at(1),
    )
    .await;
    let err = s.retry_now(None, "d2", at(2)).await.unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::NotRetryable {
                status: DeliveryStatus::Grouped,
                digest: Some(d),
                ..
            } if d == "dig_d1"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("dig_d1"), "{err}");
    // The digest dies; a replay of everything re-queues the digest and no member.
    let claim = take_due(s, at(30)).await.remove(0);
    s.finish("dig_d1", &claim.lease, attempt(500), Next::Dead, at(31))
        .await
        .unwrap();
    let filter = crate::ReplayFilter {
        team: super::team("acme"),
        channel: None,
        since: at(-10),
        until: None,
        status: crate::ReplayStatus::All,
    };
    assert_eq!(s.replay(&filter, true, at(40)).await.unwrap(), 1);
    assert_eq!(s.replay(&filter, false, at(40)).await.unwrap(), 1);
    assert_eq!(record(s, "d1").await.status, DeliveryStatus::Grouped);
    let again = take_due(s, at(40)).await;
    assert_eq!(ids(&again), ["dig_d1"]);
    assert_eq!(
        members(s, "dig_d1").await,
        (vec!["e1".to_string(), "e2".to_string()], 2)
    );
    s.finish("dig_d1", &again[0].lease, attempt(500), Next::Dead, at(41))
        .await
        .unwrap();
    // And an operator's retry of the dead digest makes it due again.
    let retried = s.retry_now(None, "dig_d1", at(50)).await.unwrap();
    assert_eq!(
        (retried.status, retried.next_attempt_at),
        (DeliveryStatus::Pending, Some(at(50)))
    );
    assert!(retried.is_digest());
}

pub async fn prune_keeps_the_members_of_an_unfinished_digest(backend: &mut impl super::Backend) {
    let store = backend.open();
    let s = &*store;
    const DAY: i64 = 86_400;
    let limits = crate::PruneLimits {
        events: Duration::from_secs(30 * 86_400),
        attempts: Duration::from_secs(7 * 86_400),
        dead: Duration::from_secs(90 * 86_400),
        max_store_size: None,
        dedup: Duration::ZERO,
    };
    // e1 opens the digest, e2 (another event) joins it; e3 is a single within its
    // throttle's limit.
    fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "eu")],
        at(20),
    )
    .await;
    let throttle = throttled("t1", "s", "sub:s", 1);
    fold_at(s, event("acme", "e3"), vec![throttle], at(0)).await;
    let exists = |id: &'static str| {
        let store = Arc::clone(&store);
        async move { store.get_event(None, id).await.unwrap().is_some() }
    };
    // The digest is pending long past every age: its members and their events stay.
    // Only the throttle window goes: its period is over and it has no digest.
    let (report, _) = prune_all(s, &limits, at(40 * DAY)).await;
    assert_eq!(
        (report.events, report.deliveries, report.fold_rows),
        (0, 0, 1),
        "{report:?}"
    );
    assert!(exists("e2").await);
    assert_eq!(members(s, "dig_d1").await.1, 2);
    let claims = take_due(s, at(40 * DAY)).await;
    assert_eq!(ids(&claims), ["t1", "dig_d1"]);
    // Dead, it still keeps them (a dead digest may be retried) until it goes itself.
    let lease = claims[1].lease.clone();
    s.finish("dig_d1", &lease, attempt(500), Next::Dead, at(40 * DAY))
        .await
        .unwrap();
    succeed(s, vec![claims.into_iter().next().unwrap()], at(40 * DAY)).await;
    // The group, whose digest is no longer open and whose interval is over, is forgotten.
    let (report, _) = prune_all(s, &limits, at(80 * DAY)).await;
    assert!(exists("e2").await, "{report:?}");
    assert_eq!(
        (report.events, report.fold_rows),
        (1, 1),
        "only e3 goes: {report:?}"
    );
    assert_eq!(members(s, "dig_d1").await.1, 2);
    // Past the dead letters' age the digest goes, then every member's event.
    let (report, _) = prune_all(s, &limits, at(131 * DAY)).await;
    assert_eq!((report.dead, report.events), (1, 2), "{report:?}");
    assert!(!exists("e1").await && !exists("e2").await);
    assert!(s.digest_members("dig_d1", 10).await.unwrap().is_none());
    // A group that was forgotten starts over with the wait.
    let fresh = fold_at(
        s,
        event("acme", "e9"),
        vec![grouped(s, "d9", "s", "eu")],
        at(131 * DAY),
    );
    assert_eq!(fresh.await.2, opened("dig_d9", 131 * DAY + 30));
}

pub async fn digest_members_lists_in_fold_order_up_to_the_limit(backend: &mut impl super::Backend) {
    let store = backend.open();
    let s = &*store;
    // Accepted out of id order, in one batch and then one by one.
    let batch = ["e5", "e1"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let d = grouped(s, &format!("d{i}"), "s", "eu");
            (event("acme", id), vec![d])
        })
        .collect();
    s.accept(batch, at(1)).await.unwrap();
    for (i, id) in [(2, "e9"), (3, "e2"), (4, "e7")] {
        let d = grouped(s, &format!("d{i}"), "s", "eu");
        fold_at(s, event("acme", id), vec![d], at(i + 1)).await;
    }
    let listed = s.digest_members("dig_d0", 3).await.unwrap().unwrap();
    let order: Vec<_> = listed.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(order, ["e5", "e1", "e9"]);
    assert_eq!(
        (listed.total, listed.first_at, listed.last_at),
        (5, at(1), at(5))
    );
    assert_eq!(listed.events[0], event("acme", "e5"));
    // Not a digest: a member, an ordinary delivery, an unknown id.
    fold_at(
        s,
        event("acme", "plain"),
        vec![delivery("dlv_plain", "a", false)],
        at(6),
    )
    .await;
    for id in ["d1", "dlv_plain", "dig_unknown"] {
        assert!(s.digest_members(id, 3).await.unwrap().is_none(), "{id}");
    }
}

pub async fn an_open_digest_survives_a_restart_and_falls_due_on_time(
    backend: &mut impl super::Backend,
) {
    let store = backend.open();
    let s = &*store;
    fold_at(
        s,
        event("acme", "e1"),
        vec![grouped(s, "d1", "s", "eu")],
        at(0),
    )
    .await;
    fold_at(
        s,
        event("acme", "e2"),
        vec![grouped(s, "d2", "s", "eu")],
        at(5),
    )
    .await;
    let store = backend.reopen(store);
    let s = &*store;
    assert_eq!(s.next_due(&[]).await.unwrap(), Some(at(30)));
    // Still open after the restart: a new member joins it rather than opening another.
    let join = fold_at(
        s,
        event("acme", "e3"),
        vec![grouped(s, "d3", "s", "eu")],
        at(10),
    )
    .await;
    assert_eq!(join, (vec![], vec!["d3".into()], vec![]));
    assert!(take_due(s, at(29)).await.is_empty());
    let due = take_due(s, at(30)).await;
    assert_eq!(ids(&due), ["dig_d1"]);
    assert_eq!(
        members(s, "dig_d1").await,
        (vec!["e1".into(), "e2".into(), "e3".into()], 3)
    );
    succeed(s, due, at(31)).await;
    assert!(take_due(s, at(1000)).await.is_empty(), "sent once");
}

pub async fn concurrent_accepts_for_one_group_open_one_digest(backend: &mut impl super::Backend) {
    let store = backend.open();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let d = grouped(&*store, &format!("d{i}"), "s", "eu");
            fold_at(&*store, event("acme", &format!("e{i}")), vec![d], at(0)).await
        }));
    }
    let mut opened = Vec::new();
    let mut folded = 0;
    for task in tasks {
        let (_, f, o) = task.await.unwrap();
        folded += f.len();
        opened.extend(o);
    }
    assert_eq!((folded, opened.len()), (16, 1), "{opened:?}");
    let digest = &opened[0].id;
    assert_eq!(members(&*store, digest).await.1, 16);
    // The throttle's window, likewise: limit 3 of 16, one digest for the rest.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let d = throttled(&format!("t{i}"), "s", "sub:s", 3);
            fold_at(&*store, event("acme", &format!("t{i}")), vec![d], at(1)).await
        }));
    }
    let (mut folded, mut opened) = (0, Vec::new());
    for task in tasks {
        let (_, f, o) = task.await.unwrap();
        folded += f.len();
        opened.extend(o);
    }
    assert_eq!((folded, opened.len()), (13, 1), "{opened:?}");
    assert_eq!(members(&*store, &opened[0].id).await.1, 13);
}
