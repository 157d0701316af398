//! The running engine against a real SQLite store, with a channel adapter (or a store
//! wrapper) swapped in for faults a real endpoint cannot cause (issue 15, item 6: a
//! panicking attempt, a failing finish).

mod faulty;

use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use herald_channels::{Channel, Outgoing, SendFuture, SendOutcome};
use herald_store::{DeliveryFilter, DeliveryStatus, SqliteStore};

use super::*;

const CONFIG: &str = r#"
[server]
admin_token = "admin"
[store]
path = "data"
[delivery]
retry_schedule = ["100ms", "100ms", "100ms"]
concurrency_per_channel = 2
[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["acme-key"]
[teams.acme.channels.hook]
type = "file"
path = "hook.jsonl"
[[teams.acme.subscriptions]]
channel = "hook"
events = ["*"]
"#;

/// The first `panics` sends panic; sends number `panics + 1` and `panics + 2` each wait
/// (bounded) until both are in flight at once, proving the channel has its two slots back;
/// every other send delivers.
struct Panicky {
    panics: usize,
    calls: AtomicUsize,
    in_pair: AtomicUsize,
    pair_met: tokio::sync::Notify,
    delivered: StdMutex<Vec<String>>,
}

impl Channel for Panicky {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            let call = self.calls.fetch_add(1, AtomicOrdering::SeqCst);
            if call < self.panics {
                panic!("test channel: send {call} panics");
            }
            if call < self.panics + 2 {
                let notified = self.pair_met.notified();
                if self.in_pair.fetch_add(1, AtomicOrdering::SeqCst) == 1 {
                    self.pair_met.notify_waiters();
                } else if tokio::time::timeout(Duration::from_secs(10), notified)
                    .await
                    .is_err()
                {
                    return SendOutcome::Permanent {
                        status: None,
                        error: "only one attempt in flight: a slot was lost".into(),
                        response: None,
                    };
                }
            }
            self.delivered
                .lock()
                .unwrap()
                .push(msg.delivery_id.to_string());
            SendOutcome::Delivered {
                status: Some(200),
                response: None,
            }
        })
    }
}

/// Delivers everything, counting its sends.
#[derive(Default)]
struct Counting {
    sends: AtomicUsize,
}

impl Channel for Counting {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, _msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            self.sends.fetch_add(1, AtomicOrdering::SeqCst);
            SendOutcome::Delivered {
                status: Some(200),
                response: None,
            }
        })
    }
}

fn sqlite(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.join("data")).unwrap())
}

/// Waits (bounded) until `n` deliveries succeeded; returns them.
async fn succeeded(engine: &Engine, n: usize) -> Vec<herald_store::DeliveryRecord> {
    let filter = DeliveryFilter {
        status: Some(DeliveryStatus::Succeeded),
        limit: 100,
        ..DeliveryFilter::default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = engine.store().list_deliveries(&filter).await.unwrap();
        if page.deliveries.len() >= n || Instant::now() > deadline {
            return page.deliveries;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn start(dir: &std::path::Path, store: Arc<dyn Store>, channel: Arc<dyn Channel>) -> Engine {
    start_with(dir, store, channel, |_| {}).await
}

/// Like [`start`], with the subscription changed by `edit` first.
async fn start_with(
    dir: &std::path::Path,
    store: Arc<dyn Store>,
    channel: Arc<dyn Channel>,
    edit: impl FnOnce(&mut herald_core::Subscription),
) -> Engine {
    let path = dir.join("herald.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let outcome = herald_config::load_with_env(&path, &|_| None);
    let mut config = outcome
        .config
        .unwrap_or_else(|| panic!("{}", outcome.diagnostics));
    let mut subs = config.matcher.subscriptions().to_vec();
    edit(&mut subs[0]);
    config.matcher = herald_core::Matcher::new(config.matcher.registry().clone(), subs);
    let engine = Engine::start(config.clone(), store, EngineOptions::default())
        .await
        .unwrap();
    let mut snapshot = Snapshot::build(config, None).unwrap();
    let team = TeamId::parse("acme").unwrap();
    snapshot
        .channels
        .insert((team, "hook".to_string()), channel);
    *engine.inner.snapshot.write().unwrap() = Arc::new(snapshot);
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_attempt_frees_its_slot_and_its_delivery_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let channel = Arc::new(Panicky {
        panics: 2,
        calls: AtomicUsize::new(0),
        in_pair: AtomicUsize::new(0),
        pair_met: tokio::sync::Notify::new(),
        delivered: StdMutex::new(Vec::new()),
    });
    let engine = start(dir.path(), sqlite(dir.path()), channel.clone()).await;
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    // Two first, so that both panic, then four more.
    for batch in [0..2, 2..6] {
        let events: Vec<String> = batch
            .map(|i| format!(r#"{{"id": "evt_{i}", "event": "capsule.create"}}"#))
            .collect();
        engine
            .ingest(&acme, format!("[{}]", events.join(",")).as_bytes())
            .await
            .unwrap();
        if channel.calls.load(AtomicOrdering::SeqCst) < 2 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while channel.calls.load(AtomicOrdering::SeqCst) < 2 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // Every delivery succeeds, the two whose attempt panicked included, without a restart.
    let succeeded = succeeded(&engine, 6).await;
    let all = engine
        .store()
        .list_deliveries(&DeliveryFilter {
            limit: 100,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(succeeded.len(), 6, "{:#?}", all.deliveries);
    let mut delivered = channel.delivered.lock().unwrap().clone();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 6, "{delivered:?}");
    // Both slots are free again, none counted as still in flight.
    let lane = engine
        .inner
        .scheduler()
        .status(&(TeamId::parse("acme").unwrap(), "hook".to_string()));
    assert_eq!((lane.limit, lane.in_flight), (2, 0), "{lane:?}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_finish_is_retried_until_recorded_and_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(faulty::FailingFinishes {
        inner: sqlite(dir.path()),
        fail: AtomicUsize::new(3),
        calls: AtomicUsize::new(0),
    });
    let channel = Arc::new(Counting::default());
    let engine = start(dir.path(), store.clone(), channel.clone()).await;
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    engine
        .ingest(&acme, br#"{"id": "evt_1", "event": "capsule.create"}"#)
        .await
        .unwrap();
    let done = succeeded(&engine, 1).await;
    assert_eq!(done.len(), 1, "the record was written in the end");
    assert_eq!(done[0].attempts, 1, "{done:?}");
    // Three failed writes, then the one that took: retried, not dropped…
    assert_eq!(store.calls.load(AtomicOrdering::SeqCst), 4);
    // …and the message went out once: a failing record never re-sends it.
    assert_eq!(channel.sends.load(AtomicOrdering::SeqCst), 1);
    engine.shutdown().await;
}

/// What a digest message carried: its delivery id, total and the ids of the events listed.
type SentDigest = (String, u64, Vec<String>);

/// Delivers everything, keeping what each digest carried and the ids of single events.
#[derive(Default)]
struct Recording {
    digests: StdMutex<Vec<SentDigest>>,
    singles: StdMutex<Vec<String>>,
}

impl Channel for Recording {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(async move {
            match msg.digest {
                Some(d) => self.digests.lock().unwrap().push((
                    msg.delivery_id.to_string(),
                    d.total,
                    d.events.iter().map(|e| e.id.clone()).collect(),
                )),
                None => self.singles.lock().unwrap().push(msg.event.id.clone()),
            }
            SendOutcome::Delivered {
                status: Some(200),
                response: None,
            }
        })
    }
}

fn grouping(by: &[&str], wait: Duration, max_size: u32) -> herald_core::Grouping {
    herald_core::Grouping {
        by: by
            .iter()
            .map(|f| herald_core::DedupField::parse(f).unwrap())
            .collect(),
        wait,
        interval: wait.max(Duration::from_secs(1)),
        max_size,
    }
}

/// Every delivery of the store, by event id.
async fn deliveries_by_event(
    engine: &Engine,
) -> std::collections::BTreeMap<String, Vec<herald_store::DeliveryRecord>> {
    let page = engine
        .store()
        .list_deliveries(&DeliveryFilter {
            limit: 1000,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::<String, Vec<_>>::new();
    for d in page.deliveries {
        out.entry(d.event_id.clone()).or_default().push(d);
    }
    out
}

/// Waits (bounded) until `recording` holds `n` digests.
async fn digests_sent(recording: &Recording, n: usize) -> Vec<SentDigest> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let sent = recording.digests.lock().unwrap().clone();
        if sent.len() >= n || Instant::now() > deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_group_becomes_one_digest_listing_the_first_max_group_size() {
    let dir = tempfile::tempdir().unwrap();
    let channel = Arc::new(Recording::default());
    let engine = start_with(dir.path(), sqlite(dir.path()), channel.clone(), |sub| {
        sub.group = Some(grouping(&[], Duration::ZERO, 3));
    })
    .await;
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let events: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id": "evt_{i}", "event": "capsule.create"}}"#))
        .collect();
    engine
        .ingest(&acme, format!("[{}]", events.join(",")).as_bytes())
        .await
        .unwrap();
    let sent = digests_sent(&channel, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let (digest_id, total, listed) = &sent[0];
    assert_eq!(*total, 5);
    assert_eq!(listed, &["evt_0", "evt_1", "evt_2"]);
    assert!(channel.singles.lock().unwrap().is_empty());
    // Every event's delivery is grouped into the digest that was sent; the digest itself
    // succeeded and stands under its first event.
    succeeded(&engine, 1).await;
    let by_event = deliveries_by_event(&engine).await;
    for i in 0..5 {
        let rows = &by_event[&format!("evt_{i}")];
        let member = rows.iter().find(|d| !d.is_digest()).unwrap();
        assert_eq!(member.status, DeliveryStatus::Grouped, "{member:?}");
        assert_eq!(member.digest_id.as_deref(), Some(digest_id.as_str()));
    }
    let digest = by_event["evt_0"].iter().find(|d| d.is_digest()).unwrap();
    assert_eq!(
        (&digest.id, digest.status),
        (digest_id, DeliveryStatus::Succeeded)
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_is_silenced_at_dispatch_only_when_one_silence_stops_every_listed_event() {
    let dir = tempfile::tempdir().unwrap();
    let channel = Arc::new(Recording::default());
    let engine = start_with(dir.path(), sqlite(dir.path()), channel.clone(), |sub| {
        sub.group = Some(grouping(&["metadata.zone"], Duration::from_secs(5), 100));
    })
    .await;
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let event = |id: &str, region: &str, zone: &str| {
        format!(
            r#"{{"id": "{id}", "event": "capsule.create", "metadata": {{"region": "{region}", "zone": "{zone}"}}}}"#
        )
    };
    let body = format!(
        "[{}]",
        [
            event("a1", "eu", "z1"),
            event("a2", "eu", "z1"),
            event("b1", "eu", "z2"),
            event("b2", "us", "z2"),
        ]
        .join(",")
    );
    engine.ingest(&acme, body.as_bytes()).await.unwrap();
    // Created once ingest has folded the events, long before their digests are due
    // (group_wait 5 s), so it can only act at dispatch.
    let start = crate::now();
    engine
        .create_silence(herald_core::Silence {
            id: String::new(),
            team: TeamId::parse("acme").unwrap(),
            matchers: herald_core::SilenceMatchers {
                metadata: [("region".to_string(), "eu".to_string())].into(),
                ..Default::default()
            },
            starts_at: start,
            ends_at: crate::after(start, Duration::from_secs(3600)),
            comment: "maintenance in eu".into(),
            created_by: "test".into(),
            created_at: start,
        })
        .await
        .unwrap();
    // z2 lists an event the silence does not match: sent. z1's digest: silenced.
    let sent = digests_sent(&channel, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].2, ["b1", "b2"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let silenced = loop {
        let by_event = deliveries_by_event(&engine).await;
        let digest = by_event["a1"].iter().find(|d| d.is_digest()).cloned();
        match digest {
            Some(d) if d.status == DeliveryStatus::Silenced => break d,
            other if Instant::now() > deadline => panic!("not silenced: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    };
    assert!(silenced.silence_id.is_some(), "{silenced:?}");
    // Finished as silenced: never sent.
    assert_eq!(channel.digests.lock().unwrap().len(), 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttle_sends_up_to_its_limit_and_folds_the_rest_into_one_digest() {
    let dir = tempfile::tempdir().unwrap();
    let channel = Arc::new(Recording::default());
    let engine = start_with(dir.path(), sqlite(dir.path()), channel.clone(), |sub| {
        let key = sub.key();
        sub.throttle = Some((
            herald_core::Throttle::parse("2/1s").unwrap(),
            herald_core::ThrottleScope::Subscription(key),
        ));
    })
    .await;
    let acme = Caller::Team(TeamId::parse("acme").unwrap());
    let events: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"id": "evt_{i}", "event": "capsule.create"}}"#))
        .collect();
    engine
        .ingest(&acme, format!("[{}]", events.join(",")).as_bytes())
        .await
        .unwrap();
    let sent = digests_sent(&channel, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].1, &sent[0].2),
        (
            3,
            &vec!["evt_2".to_string(), "evt_3".into(), "evt_4".into()]
        )
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while channel.singles.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut singles = channel.singles.lock().unwrap().clone();
    singles.sort();
    assert_eq!(singles, ["evt_0", "evt_1"]);
    engine.shutdown().await;
}
