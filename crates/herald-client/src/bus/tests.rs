//! The in-memory bus: subscriptions by type and to everything, unsubscribe on drop, the
//! lagged notice, close.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

/// How long a test waits for something that must happen promptly.
const WAIT: Duration = Duration::from_secs(10);

fn event(event_type: &str, id: &str) -> RawEvent {
    RawEvent::builder(event_type).id(id).build()
}

/// A handler that forwards every notice to the returned receiver.
fn recorder() -> (Handler, mpsc::UnboundedReceiver<Notice>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Box::new(move |n| {
            let _ = tx.send(n);
        }),
        rx,
    )
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Notice>) -> Notice {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notice within the wait")
        .expect("the subscription is still open")
}

fn id(notice: &Notice) -> String {
    match notice {
        Notice::Event(e) => e.id.clone().unwrap_or_default(),
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_their_types_and_empty_means_all() {
    let bus = MemoryBus::new();
    let (capsules, mut capsules_rx) = recorder();
    let (everything, mut everything_rx) = recorder();
    let (exact, mut exact_rx) = recorder();
    let _a = bus.subscribe(capsules, &["capsule.*"]).unwrap();
    let _b = bus.subscribe(everything, &[]).unwrap();
    let _c = bus.subscribe(exact, &["host.down", "capsule"]).unwrap();

    for (t, i) in [
        ("capsule.create", "1"),
        ("capsule", "2"),
        ("capsules.x", "3"),
        ("host.down", "4"),
        ("capsule.state.changed", "5"),
    ] {
        bus.publish(event(t, i)).unwrap();
    }
    // The same semantics as herald's patterns: `capsule.*` is not `capsule` nor `capsules.x`.
    assert_eq!(id(&next(&mut capsules_rx).await), "1");
    assert_eq!(id(&next(&mut capsules_rx).await), "5");
    let mut all = Vec::new();
    for _ in 0..5 {
        all.push(id(&next(&mut everything_rx).await));
    }
    assert_eq!(all, ["1", "2", "3", "4", "5"]);
    assert_eq!(id(&next(&mut exact_rx).await), "2");
    assert_eq!(id(&next(&mut exact_rx).await), "4");

    // Nothing else arrived: a marker published last is the next thing each one sees.
    bus.publish(event("capsule.destroy", "end")).unwrap();
    assert_eq!(id(&next(&mut capsules_rx).await), "end");
    bus.publish(event("host.down", "end2")).unwrap();
    assert_eq!(id(&next(&mut exact_rx).await), "end2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pattern_is_refused_like_herald_refuses_it() {
    let bus = MemoryBus::new();
    let (h, _rx) = recorder();
    let e = bus.subscribe(h, &["caps*"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid pattern `caps*`: `*` must be a whole segment and the last one: `*`, or `capsule.*`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_subscription_unsubscribes() {
    let bus = MemoryBus::new();
    let (h, mut rx) = recorder();
    let subscription = bus.subscribe(h, &[]).unwrap();
    assert_eq!(bus.subscriber_count(), 1);
    bus.publish(event("host.down", "before")).unwrap();
    assert_eq!(id(&next(&mut rx).await), "before");

    drop(subscription);
    // The handler (and the sender inside it) is dropped with the subscription's task:
    // the receiver sees the end rather than any later event.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            // Publishing until the task is gone; none of these may reach the handler.
            let _ = bus.publish(event("host.down", "after"));
            match tokio::time::timeout(Duration::from_millis(20), rx.recv()).await {
                Ok(None) => return None,
                Ok(Some(n)) => return Some(n),
                Err(_) => continue,
            }
        }
    })
    .await
    .expect("the subscription ends within the wait");
    assert_eq!(end, None, "a notice arrived after unsubscribing");
    assert_eq!(bus.subscriber_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_told_what_it_missed_and_goes_on() {
    let bus = MemoryBus::with_capacity(4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The handler blocks on the first event until the test lets it go.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let handler: Handler = Box::new(move |n: Notice| {
        let first = matches!(&n, Notice::Event(e) if e.id.as_deref() == Some("0"));
        let _ = tx.send(n);
        if first {
            let _ = release_rx.lock().unwrap().recv();
        }
    });
    let _s = bus.subscribe(handler, &[]).unwrap();
    bus.publish(event("host.down", "0")).unwrap();
    assert_eq!(id(&next(&mut rx).await), "0");
    // The handler is stuck on "0": publish capacity + 3 more; the 3 oldest are lost to it.
    for i in 1..=7 {
        bus.publish(event("host.down", &i.to_string())).unwrap();
    }
    release_tx.send(()).unwrap();
    assert_eq!(next(&mut rx).await, Notice::Lagged { missed: 3 });
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(id(&next(&mut rx).await));
    }
    assert_eq!(rest, ["4", "5", "6", "7"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_subscriptions_after_what_was_published_and_refuses_more() {
    let bus = MemoryBus::new();
    let (h, mut rx) = recorder();
    let subscription = bus.subscribe(h, &[]).unwrap();
    bus.publish(event("host.down", "last")).unwrap();
    bus.close().await.unwrap();
    let refused = bus.publish(event("host.down", "late")).unwrap_err();
    assert!(
        matches!(&refused, Error::Closed { event: Some(e) } if e.id.as_deref() == Some("late")),
        "{refused:?}"
    );
    tokio::time::timeout(WAIT, subscription.finished())
        .await
        .expect("the subscription ends after close");
    assert_eq!(id(&next(&mut rx).await), "last");
    assert!(rx.recv().await.is_none());
}
