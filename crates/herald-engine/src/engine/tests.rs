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
    let path = dir.join("herald.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let outcome = herald_config::load_with_env(&path, &|_| None);
    let config = outcome
        .config
        .unwrap_or_else(|| panic!("{}", outcome.diagnostics));
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
