//! Parsing one published event: what every `POST /v1/events` pays before matching. The
//! body is the load generator's (about 500 bytes with actor, resource and metadata), and
//! a batch of 100 of them.
//!
//! Run: `cargo bench -p herald-core --bench event_parse`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use herald_core::RawEvent;

fn event(i: usize) -> serde_json::Value {
    serde_json::json!({
        "id": format!("load-1764800000000000-c17-{i}"),
        "event": "bench.ping",
        "outcome": "success",
        "actor": {"type": "system", "id": "herald-load", "name": "herald load generator"},
        "resource": {"id": format!("res-load-{i}"), "type": "benchmark"},
        "metadata": {
            "source": "herald-load",
            "region": "bench-local",
            "host": "127.0.0.1",
            "sent_at_ns": "1764800000123456789",
            "note": "padding that brings this benchmark event to a realistic size; padding that brings this benchmark event to a realistic size; padding that brings"
        }
    })
}

fn parse(c: &mut Criterion) {
    let one = event(7).to_string().into_bytes();
    let batch = serde_json::Value::Array((0..100).map(event).collect())
        .to_string()
        .into_bytes();
    let mut group = c.benchmark_group("event_parse");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one event", |b| {
        b.iter(|| RawEvent::body_from_json(black_box(&one)).unwrap())
    });
    group.throughput(Throughput::Elements(100));
    group.bench_function("batch of 100", |b| {
        b.iter(|| RawEvent::body_from_json(black_box(&batch)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
