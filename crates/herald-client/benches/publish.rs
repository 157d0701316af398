//! The caller-side cost of one background `publish` call: validation, id generation and
//! the queue hand-off, with the sender task draining into a minimal ingest sink on
//! 127.0.0.1. Each sample's publishes are timed; the drain that follows is not, so the
//! queue never fills. Run: `cargo bench -p herald-client --bench publish`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use criterion::{Criterion, criterion_group, criterion_main};
use herald_client::{BackgroundOptions, Error, Event, Outcome, Publisher};

/// Answers every batch as herald would (`{"ids": [...]}`, one id per event).
async fn sink(body: Bytes) -> ([(&'static str, &'static str); 1], String) {
    let events: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
    let ids: Vec<String> = (0..events.len()).map(|i| i.to_string()).collect();
    (
        [("content-type", "application/json")],
        serde_json::json!({"ids": ids, "duplicates": []}).to_string(),
    )
}

fn publish(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let _guard = runtime.enter();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the sink");
    let url = format!("http://{}", listener.local_addr().expect("sink address"));
    runtime.spawn(async move {
        let app = Router::new().route("/v1/events", post(sink));
        let _ = axum::serve(listener, app).await;
    });
    let background = Publisher::new(url, "bench-key")
        .expect("a publisher")
        .spawn_with(BackgroundOptions::default().capacity(1_000_000));
    let template = Event::builder("capsule.create")
        .outcome(Outcome::Error)
        .resource("sandbox", "sb_42")
        .actor_system()
        .metadata("region", "eu")
        .error("out of memory")
        .build();
    let mut full = 0u64;
    c.bench_function("background publish (caller side)", |b| {
        // Each sample publishes its events (timed), then waits untimed for the sender task
        // to drain the queue, so the queue never fills whatever the sink's speed.
        b.iter_custom(|iters| {
            let events: Vec<Event> = (0..iters).map(|_| template.clone()).collect();
            let start = std::time::Instant::now();
            for event in events {
                match background.publish(event) {
                    Ok(id) => drop(std::hint::black_box(id)),
                    Err(Error::QueueFull { .. }) => full += 1,
                    Err(e) => panic!("publish failed: {e}"),
                }
            }
            let elapsed = start.elapsed();
            runtime
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), background.flush()).await
                })
                .expect("the queue drains within 60 s")
                .expect("flush");
            elapsed
        })
    });
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), background.close()).await })
        .expect("the queue drains within 60 s")
        .expect("close");
    let stats = background.stats();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert_eq!(
        full, 0,
        "the queue filled up {full} times: the figure would be wrong"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = publish
}
criterion_main!(benches);
