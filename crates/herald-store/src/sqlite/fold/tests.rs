//! Property test of grouping and throttling in the embedded store: for any sequence of
//! time advances, events (grouped, throttled or neither; with or without a dedup key;
//! silenced or not) and dispatch rounds (every due delivery claimed, then succeeded or
//! failed for a retry), once everything due has been sent: every event's delivery was
//! either sent itself, or is `grouped` into exactly one digest that was sent and lists it,
//! or is `suppressed`/`silenced` with its reason. None disappears, none is in two sent
//! messages, and a digest resent after a failure carries exactly the members it had.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use herald_core::{DigestKind, Event, TeamId, Timestamp};
use proptest::prelude::*;

use crate::{
    Accepted, DedupClaim, DeliveryStatus, Finish, FoldClaim, NewAttempt, NewDelivery, Next,
    SqliteStore, Store,
};

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + i128::from(secs)) * 1_000_000_000)
}

/// How an event's one delivery may be folded.
#[derive(Debug, Clone, Copy)]
enum Fold {
    None,
    /// Grouped by this key (wait 30 s, interval 120 s).
    Group(&'static str),
    /// Throttled to 2 per 60 s.
    Throttle,
}

#[derive(Debug, Clone)]
enum Op {
    Advance(i64),
    Publish {
        fold: Fold,
        dedup: Option<&'static str>,
        silenced: bool,
    },
    /// Claims every due delivery; succeeds them, or fails them for a retry 20 s later.
    Dispatch {
        fail: bool,
    },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let fold = prop_oneof![
        Just(Fold::None),
        Just(Fold::Group("eu")),
        Just(Fold::Group("us")),
        Just(Fold::Throttle),
    ];
    let publish = (
        fold,
        prop::option::weighted(0.3, prop::sample::select(vec!["k1", "k2"])),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(fold, dedup, silenced)| Op::Publish {
            fold,
            dedup,
            silenced,
        });
    let op = prop_oneof![
        2 => prop::sample::select(vec![1i64, 5, 29, 30, 60, 119, 120, 400]).prop_map(Op::Advance),
        5 => publish,
        2 => prop::bool::weighted(0.3).prop_map(|fail| Op::Dispatch { fail }),
    ];
    prop::collection::vec(op, 1..60)
}

fn event(n: usize) -> Event {
    Event {
        id: format!("e{n}"),
        event: "capsule.create".into(),
        outcome: None,
        timestamp: at(0),
        team_id: TeamId::parse("acme").unwrap(),
        actor: None,
        resource: None,
        metadata: BTreeMap::new(),
        error: None,
    }
}

fn delivery(n: usize, fold: Fold, dedup: Option<&str>, silenced: bool) -> NewDelivery {
    let (subscription, fold) = match fold {
        Fold::None => ("plain", None),
        Fold::Group(key) => (
            "grouped",
            Some(FoldClaim::Group {
                key: key.into(),
                kind: DigestKind::Group {
                    labels: vec![("metadata.region".into(), key.into())],
                },
                wait: Duration::from_secs(30),
                interval: Duration::from_secs(120),
                digest_id: format!("dig_{n}"),
            }),
        ),
        Fold::Throttle => (
            "throttled",
            Some(FoldClaim::Throttle {
                scope: "sub:throttled".into(),
                kind: DigestKind::Throttle {
                    limit: 2,
                    per_seconds: 60,
                },
                limit: 2,
                per: Duration::from_secs(60),
                digest_id: format!("dig_{n}"),
            }),
        ),
    };
    NewDelivery {
        id: format!("d{n}"),
        channel: "hook".into(),
        subscription: 0,
        subscription_name: Some(subscription.into()),
        held: false,
        silence: silenced.then(|| "sil_1".to_string()),
        dedup: dedup.map(|key| DedupClaim {
            key: key.into(),
            window: Duration::from_secs(90),
        }),
        fold,
    }
}

/// The messages sent: delivery id → the event ids it carried (a digest's members as read
/// when it was claimed; a single delivery its own event).
type Sent = HashMap<String, Vec<String>>;

/// Claims everything due at `now` and finishes it; returns how many were claimed.
async fn dispatch(store: &SqliteStore, now: i64, fail: bool, sent: &mut Sent) -> usize {
    let claims = store.hold_due(at(now), 1000, &[]).await.unwrap();
    let count = claims.len();
    let mut finishes = Vec::new();
    for claim in claims {
        let id = claim.delivery.id.clone();
        let carried = if claim.delivery.is_digest() {
            let members = store.digest_members(&id, 1000).await.unwrap().unwrap();
            assert_eq!(members.total as usize, members.events.len());
            assert_eq!(
                members.events[0], claim.event,
                "claimed with its first event"
            );
            members.events.into_iter().map(|e| e.id).collect()
        } else {
            vec![claim.event.id.clone()]
        };
        if let Some(before) = sent.get(&id) {
            assert_eq!(before, &carried, "{id} was resent with other members");
        }
        sent.insert(id.clone(), carried);
        finishes.push(Finish {
            delivery_id: id,
            lease: claim.lease,
            attempt: NewAttempt {
                started_at: at(now),
                duration_ms: 1,
                status_code: Some(if fail { 503 } else { 200 }),
                error: fail.then(|| "HTTP 503".to_string()),
                response: None,
            },
            next: if fail {
                Next::RetryAt(at(now + 20))
            } else {
                Next::Succeeded
            },
            now: at(now),
        });
    }
    for result in store.finish_many(finishes).await.unwrap() {
        result.unwrap();
    }
    count
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn every_event_is_sent_once_alone_or_in_one_digest_or_has_a_reason(ops in ops()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(dir.path()).unwrap();
            let (mut now, mut n) = (0i64, 0usize);
            let mut sent = Sent::new();
            let mut folded_reported = Vec::new();
            for op in &ops {
                match op {
                    Op::Advance(secs) => now += secs,
                    Op::Publish { fold, dedup, silenced } => {
                        let batch = vec![(event(n), vec![delivery(n, *fold, *dedup, *silenced)])];
                        match store.accept(batch, at(now)).await.unwrap().remove(0) {
                            Accepted::New { folded, .. } => folded_reported.extend(folded),
                            other => panic!("{other:?}"),
                        }
                        n += 1;
                    }
                    Op::Dispatch { fail } => {
                        dispatch(&store, now, *fail, &mut sent).await;
                    }
                }
            }
            // Flush everything: far enough ahead that every digest and retry is due.
            now += 100_000;
            while dispatch(&store, now, false, &mut sent).await > 0 {}
            assert_eq!(store.queue_depth().await.unwrap(), 0);

            // How many sent messages carry each event (each message counted once, however
            // many times it was attempted).
            let mut carried: HashMap<&str, usize> = HashMap::new();
            for events in sent.values() {
                for e in events {
                    *carried.entry(e.as_str()).or_default() += 1;
                }
            }
            for i in 0..n {
                let (id, event_id) = (format!("d{i}"), format!("e{i}"));
                let (d, _) = store
                    .get_delivery(None, &id)
                    .await
                    .unwrap()
                    .expect("no delivery disappears");
                let times = carried.get(event_id.as_str()).copied().unwrap_or(0);
                match d.status {
                    DeliveryStatus::Succeeded => {
                        assert_eq!(sent.get(&id), Some(&vec![event_id.clone()]));
                        assert_eq!(times, 1, "{event_id} sent alone and elsewhere");
                    }
                    DeliveryStatus::Grouped => {
                        assert!(folded_reported.contains(&id), "{id} folded but not reported");
                        let digest = d.digest_id.clone().expect("a grouped delivery names its digest");
                        assert!(d.reason().is_some_and(|r| r.contains(&digest)));
                        let (record, _) = store.get_delivery(None, &digest).await.unwrap().unwrap();
                        assert_eq!(record.status, DeliveryStatus::Succeeded, "{digest} not sent");
                        assert!(sent[&digest].contains(&event_id), "{digest} does not list {event_id}");
                        let members = store.digest_members(&digest, 1000).await.unwrap().unwrap();
                        assert!(members.events.iter().any(|e| e.id == event_id));
                        assert_eq!(times, 1, "{event_id} is in {times} sent messages");
                    }
                    DeliveryStatus::Suppressed | DeliveryStatus::Silenced => {
                        assert!(d.reason().is_some(), "{id} is {} without a reason", d.status);
                        assert_eq!(times, 0, "{event_id} was {} yet sent", d.status);
                    }
                    other => panic!("{id} ended {other}"),
                }
            }
            // Every sent digest's total is exactly the grouped deliveries naming it.
            for (id, events) in &sent {
                let Some(members) = store.digest_members(id, 1000).await.unwrap() else {
                    continue;
                };
                let page = store
                    .list_deliveries(&crate::DeliveryFilter {
                        status: Some(DeliveryStatus::Grouped),
                        limit: 1000,
                        ..crate::DeliveryFilter::default()
                    })
                    .await
                    .unwrap();
                let naming = page
                    .deliveries
                    .iter()
                    .filter(|d| d.digest_id.as_deref() == Some(id.as_str()))
                    .count();
                assert_eq!((members.total as usize, events.len()), (naming, naming));
            }
        });
    }
}
