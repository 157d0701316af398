//! herald-client, the Rust SDK, against the real binary: publishing (durable, transient,
//! batches, refusals), background mode across a restart, a full queue, the subscriber's
//! resume across a restart, the in-process bus over herald, and a typed catalogue's TOML
//! through `herald check`.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_client::{
    BackgroundOptions, Backoff, Bus, Error, Event, EventCatalogue, HeraldBus, Message, Metrics,
    Notice, Outcome, Publisher, Subscriber, herald_events,
};

use crate::harness::*;
use crate::support::{Scratch, herald, run, text};

herald_events! {
    /// The registry of the harness's configuration, as a publisher declares it.
    enum Types {
        CapsuleCreate = "capsule.create",
        CapsuleDestroy = "capsule.destroy",
        HostDown = "host.down",
        transient CapsuleStateChanged = "capsule.state.changed",
    }
}

/// Retries quickly, so a test spends its time on the scenario, not on backoff.
fn quick() -> Backoff {
    Backoff::new(Duration::from_millis(25), Duration::from_millis(300))
}

/// Runs `future` on the test runtime for at most `limit` (the timer is made inside the
/// runtime, which it needs).
fn within<F: std::future::Future>(limit: Duration, future: F) -> Option<F::Output> {
    block_on(async { tokio::time::timeout(limit, future).await.ok() })
}

/// The next message of `subscriber` within [`WAIT`].
fn next(subscriber: &mut Subscriber) -> Message {
    within(WAIT, subscriber.next())
        .expect("a stream message within the wait")
        .expect("the stream keeps going")
}

/// The next event message, skipping delivery and channel messages.
fn next_event(subscriber: &mut Subscriber) -> (bool, Event) {
    loop {
        match next(subscriber) {
            Message::Event { durable, event } => return (durable, event),
            Message::Delivery(_) | Message::Channel(_) => continue,
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

fn webhook_conf(rx: &Receiver) -> Conf {
    Conf::new()
        .webhook("acme", "hook", rx)
        .subscribe("acme", "hook", &["*"])
}

#[test]
fn publish_reaches_the_webhook_and_publish_transient_only_the_stream() {
    let rx = Receiver::start("hook");
    let h = Herald::start("sdk-publish", &webhook_conf(&rx));
    let publisher = Publisher::builder(h.url(), ACME_KEY)
        .catalogue::<Types>()
        .build()
        .unwrap();
    let mut stream = Subscriber::new(h.url(), ACME_KEY).unwrap();
    block_on(stream.connect()).unwrap();

    let event = Event::builder(Types::CapsuleCreate)
        .outcome(Outcome::Error)
        .resource("sandbox", "sb_42")
        .actor_system()
        .metadata("region", "eu")
        .error("out of memory")
        .build();
    let published = block_on(publisher.publish(event)).unwrap();
    assert!(!published.duplicate);
    let body = rx.wait_for(1, WAIT)[0].json();
    assert_eq!(body["id"], published.id.as_str(), "{body}");
    assert_eq!(body["event"], "capsule.create", "{body}");
    assert_eq!(body["team_id"], "acme", "{body}");
    assert_eq!(body["outcome"], "error", "{body}");
    assert_eq!(body["actor"]["type"], "system", "{body}");
    assert_eq!(body["resource"]["id"], "sb_42", "{body}");
    assert_eq!(body["metadata"]["region"], "eu", "{body}");
    assert_eq!(body["error"], "out of memory", "{body}");
    let (durable, seen) = next_event(&mut stream);
    assert!(durable);
    assert_eq!(seen.id.as_deref(), Some(published.id.as_str()));

    let blip = Event::builder(Types::CapsuleStateChanged)
        .metadata("state", "booting")
        .build();
    let transient = block_on(publisher.publish_transient(blip)).unwrap();
    let (durable, seen) = next_event(&mut stream);
    assert!(!durable, "{seen:?}");
    assert_eq!(seen.id.as_deref(), Some(transient.id.as_str()));
    assert_eq!(seen.metadata["state"], "booting");
    assert_eq!(seen.team_id.as_deref(), Some("acme"));

    // The catalogue catches the wrong method before anything is sent.
    let wrong = block_on(publisher.publish(Event::builder(Types::CapsuleStateChanged).build()))
        .unwrap_err();
    assert!(wrong.to_string().contains("publish_transient"), "{wrong}");
    let wrong =
        block_on(publisher.publish_transient(Event::builder(Types::HostDown).build())).unwrap_err();
    assert!(matches!(wrong, Error::Catalogue { .. }), "{wrong}");

    // The same id again is a duplicate and delivers nothing new.
    let again = Event::builder(Types::HostDown)
        .id(published.id.clone())
        .build();
    assert!(block_on(publisher.publish(again)).unwrap().duplicate);

    // A batch: three more deliveries, ids in order.
    let batch: Vec<Event> = (0..3)
        .map(|i| {
            Event::builder(Types::HostDown)
                .id(format!("evt_sdk_batch_{i}"))
                .build()
        })
        .collect();
    let reply = block_on(publisher.publish_batch(batch)).unwrap();
    assert_eq!(
        reply.ids,
        ["evt_sdk_batch_0", "evt_sdk_batch_1", "evt_sdk_batch_2"]
    );
    rx.wait_for(4, WAIT);
    rx.assert_stays(4, QUIET);
    let delivered: BTreeSet<String> = rx.event_ids().into_iter().collect();
    assert!(
        !delivered.contains(&transient.id),
        "a transient event was delivered"
    );

    // herald's refusals keep their code, field and message, and never show the key.
    let plain = Publisher::new(h.url(), ACME_KEY).unwrap();
    let unknown = block_on(plain.publish(Event::builder("no.such.type").build())).unwrap_err();
    assert_eq!(unknown.code(), Some("unknown_event_type"), "{unknown}");
    assert_eq!(unknown.field(), Some("event"), "{unknown}");
    let stranger = Publisher::new(h.url(), "not-a-key").unwrap();
    let refused = block_on(stranger.publish(Event::builder("host.down").build())).unwrap_err();
    assert_eq!(refused.code(), Some("unauthorized"), "{refused}");
    assert!(!refused.is_retryable());
    let other_team =
        block_on(plain.publish(Event::builder("host.down").team("globex").build())).unwrap_err();
    assert_eq!(other_team.code(), Some("forbidden"), "{other_team}");
    for e in [&unknown, &refused, &other_team] {
        assert_no_secret("an SDK error", &format!("{e} {e:?}"));
    }
    assert_no_secret("the server log", &h.logs());
}

/// Counts what the background publisher reports.
#[derive(Debug, Default)]
struct Counts {
    sent: AtomicU64,
    retrying: AtomicU64,
    failed: Mutex<Vec<String>>,
}

impl Metrics for Counts {
    fn sent(&self, count: usize) {
        self.sent.fetch_add(count as u64, Ordering::SeqCst);
    }
    fn retrying(&self, _count: usize, _error: &Error) {
        self.retrying.fetch_add(1, Ordering::SeqCst);
    }
    fn failed(&self, events: &[Event], error: &Error) {
        let mut failed = self.failed.lock().unwrap();
        for e in events {
            failed.push(format!("{:?}: {error}", e.id));
        }
    }
}

#[test]
fn background_mode_delivers_every_event_once_across_a_restart() {
    let rx = Receiver::start("hook");
    let mut h = Herald::start("sdk-background-restart", &webhook_conf(&rx));
    h.keep_port();
    let counts = Arc::new(Counts::default());
    let background = block_on(async {
        Publisher::new(h.url(), ACME_KEY).unwrap().spawn_with(
            BackgroundOptions::default()
                .backoff(quick())
                .metrics(Arc::clone(&counts) as Arc<dyn Metrics>),
        )
    });
    let mut ids = Vec::new();
    let publish = |n: usize, ids: &mut Vec<String>| {
        for i in 0..n {
            let event = Event::builder("host.down")
                .metadata("n", i.to_string())
                .build();
            ids.push(background.publish(event).expect("queued"));
        }
    };
    publish(100, &mut ids);
    block_on(background.flush()).unwrap();

    // herald goes away for 2 s; publishing goes on (into the queue), nothing blocks.
    let status = h.terminate();
    assert!(status.success(), "herald exited with {status}");
    publish(100, &mut ids);
    std::thread::sleep(Duration::from_secs(2));
    publish(50, &mut ids);
    assert!(
        background.stats().pending >= 150,
        "events were lost or sent to nobody: {:?}",
        background.stats()
    );
    h.restart();
    publish(50, &mut ids);
    within(Duration::from_secs(60), background.close())
        .expect("the queue drains within 60 s")
        .unwrap();

    let stats = background.stats();
    assert_eq!(
        (stats.queued, stats.sent, stats.failed, stats.pending),
        (300, 300, 0, 0),
        "{stats:?}; failed: {:?}",
        counts.failed.lock().unwrap()
    );
    assert_eq!(counts.sent.load(Ordering::SeqCst), 300);
    assert!(
        counts.retrying.load(Ordering::SeqCst) > 0,
        "nothing was retried: the restart did not happen while events were queued"
    );
    rx.wait_for(300, Duration::from_secs(60));
    rx.assert_stays(300, QUIET);
    let delivered = rx.event_ids();
    let unique: HashSet<&String> = delivered.iter().collect();
    assert_eq!(
        unique.len(),
        delivered.len(),
        "an event was delivered twice"
    );
    let published: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique, published, "delivered ids differ from published ids");
}

#[test]
fn a_full_queue_errors_with_the_event_and_nothing_queued_is_lost() {
    let rx = Receiver::start("hook");
    let mut h = Herald::start("sdk-full-queue", &webhook_conf(&rx));
    h.keep_port();
    let status = h.terminate();
    assert!(status.success(), "herald exited with {status}");

    // Capacity 5 and batches of 2: at most 7 events are held (2 in the failing request).
    let background = block_on(async {
        Publisher::new(h.url(), ACME_KEY).unwrap().spawn_with(
            BackgroundOptions::default()
                .capacity(5)
                .max_batch(2)
                .backoff(quick()),
        )
    });
    let mut accepted = Vec::new();
    let refused = loop {
        let event = Event::builder("host.down")
            .id(format!("evt_full_{}", accepted.len()))
            .build();
        match background.publish(event) {
            Ok(id) => accepted.push(id),
            Err(e) => break e,
        }
        assert!(accepted.len() <= 7, "the queue never filled: {accepted:?}");
        // Give the sender a moment to take its batch, so the count does not depend on
        // whether it ran yet.
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(accepted.len() >= 5, "full after {} events", accepted.len());
    let Error::QueueFull { capacity, event } = refused else {
        panic!("expected QueueFull, got {refused:?}");
    };
    assert_eq!(capacity, 5);
    let handed_back = format!("evt_full_{}", accepted.len());
    assert_eq!(event.id.as_deref(), Some(handed_back.as_str()));

    // Waiting for room instead: the handed-back event goes in once herald is back.
    let waiting = {
        let background = background.clone();
        let event = *event;
        std::thread::spawn(move || block_on(background.publish_or_wait(event)))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiting.is_finished(),
        "publish_or_wait did not wait for room"
    );
    h.restart();
    let waited = waiting.join().unwrap().expect("queued once there was room");
    assert_eq!(waited, handed_back);
    within(Duration::from_secs(60), background.close())
        .expect("the queue drains within 60 s")
        .unwrap();
    accepted.push(handed_back);

    rx.wait_for(accepted.len(), WAIT);
    rx.assert_stays(accepted.len(), QUIET);
    let delivered: BTreeSet<String> = rx.event_ids().into_iter().collect();
    let expected: BTreeSet<String> = accepted.into_iter().collect();
    assert_eq!(delivered, expected);
    let closed = background
        .publish(Event::builder("host.down").build())
        .unwrap_err();
    assert!(
        matches!(closed, Error::Closed { event: Some(_) }),
        "{closed:?}"
    );
}

#[test]
fn the_subscriber_resumes_after_a_restart_without_missing_a_durable_event() {
    let mut h = Herald::start("sdk-subscriber-resume", &Conf::new());
    h.keep_port();
    let publisher = Publisher::builder(h.url(), ACME_KEY)
        .backoff(quick())
        .attempts(20)
        .build()
        .unwrap();
    let mut stream = Subscriber::new(h.url(), ACME_KEY)
        .unwrap()
        .backoff(quick())
        .events(["host.*", "capsule.*"])
        .unwrap();
    block_on(stream.connect()).unwrap();
    let first = block_on(publisher.publish(Event::builder("host.down").build())).unwrap();
    let (durable, seen) = next_event(&mut stream);
    assert!(durable);
    assert_eq!(seen.id.as_deref(), Some(first.id.as_str()));
    assert_eq!(stream.last_event_id(), Some(first.id.as_str()));

    // herald restarts; while the subscriber is away, durable and transient events arrive.
    h.restart();
    let mut missed = Vec::new();
    for event in ["host.down", "capsule.create", "capsule.destroy"] {
        missed.push(
            block_on(publisher.publish(Event::builder(event).build()))
                .unwrap()
                .id,
        );
    }
    let transient =
        block_on(publisher.publish(Event::builder("capsule.state.changed").build())).unwrap();

    // The subscriber notices, reconnects with Last-Event-ID and gets the durable ones.
    let mut resumed = Vec::new();
    for _ in 0..missed.len() {
        let (durable, event) = next_event(&mut stream);
        assert!(durable, "{event:?}");
        resumed.push(event.id.unwrap());
    }
    assert_eq!(resumed, missed);
    assert!(stream.is_connected());
    // Then live again; the transient event was never stored, so it is not replayed.
    let live = block_on(publisher.publish(Event::builder("host.down").build())).unwrap();
    let (durable, event) = next_event(&mut stream);
    assert!(durable);
    assert_ne!(event.id.as_deref(), Some(transient.id.as_str()));
    assert_eq!(event.id.as_deref(), Some(live.id.as_str()));
}

#[test]
fn herald_bus_publishes_through_herald_and_subscribes_by_type() {
    let h = Herald::start("sdk-herald-bus", &Conf::new());
    let background = block_on(async {
        Publisher::new(h.url(), ACME_KEY)
            .unwrap()
            .spawn_with(BackgroundOptions::default().backoff(quick()))
    });
    let bus = HeraldBus::new(background, h.url(), ACME_KEY);
    let (tx, rx) = std::sync::mpsc::channel::<Notice>();
    let subscription = block_on(bus.subscribe_connected(
        Box::new(move |n| {
            let _ = tx.send(n);
        }),
        &["host.*"],
    ))
    .unwrap();
    bus.publish(Event::builder("capsule.create").id("evt_bus_1").build())
        .unwrap();
    bus.publish(Event::builder("host.down").id("evt_bus_2").build())
        .unwrap();
    match rx.recv_timeout(WAIT).expect("a notice") {
        Notice::Event(e) => assert_eq!(e.id.as_deref(), Some("evt_bus_2")),
        other => panic!("{other:?}"),
    }
    block_on(bus.close()).unwrap();
    drop(subscription);
    // The handler went with the subscription: the channel ends, no stray capsule event.
    match rx.recv_timeout(WAIT) {
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        other => panic!("want the handler gone and nothing else received, got {other:?}"),
    }
}

#[test]
fn a_catalogues_toml_passes_herald_check() {
    let s = Scratch::new("sdk-catalogue-check");
    let config = |subscribe_to: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8650\"\n\n[store]\npath = \"data\"\n\n{}\n\
             [teams.acme]\napi_keys = [\"k\"]\n\n[teams.acme.channels.audit]\ntype = \"file\"\n\
             path = \"audit.jsonl\"\n\n[[teams.acme.subscriptions]]\nchannel = \"audit\"\n\
             events = [{subscribe_to}]\n",
            Types::registry_toml()
        )
    };
    let good = s.write("good.toml", &config("\"capsule.*\", \"host.down\""));
    let mut cmd = herald();
    cmd.arg("check").arg(&good);
    let out = run(cmd, "");
    assert!(out.status.success(), "{}", outputs(&out));
    assert!(
        text(&out.stdout).contains("4 event types"),
        "{}",
        outputs(&out)
    );

    // The kind came through: herald refuses a subscription to the transient type.
    let bad = s.write("bad.toml", &config("\"capsule.state.changed\""));
    let mut cmd = herald();
    cmd.arg("check").arg(&bad);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", outputs(&out));
    assert!(
        text(&out.stderr).contains("is transient") || text(&out.stdout).contains("is transient"),
        "{}",
        outputs(&out)
    );
}
