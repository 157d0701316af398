//! Matcher throughput: events matched per second against 100 and 10,000 teams, each with
//! 10 subscriptions mixing exact, prefix-wildcard, `*`, outcome and metadata filters.
//! Events come either from every team (each event likely a cache miss at 10,000 teams)
//! or from 100 of them (the index is as large, but the working set is not).
//!
//! Run: `cargo bench -p herald-core --bench matcher`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{
    Event, EventKind, EventTypeRegistry, Matcher, Outcome, Pattern, RawEvent, Subscription, TeamId,
    Timestamp,
};

const RESOURCES: [&str; 8] = [
    "capsule", "host", "volume", "network", "image", "snapshot", "key", "billing",
];
const VERBS: [&str; 6] = ["create", "destroy", "update", "start", "stop", "fail"];

fn registry() -> (EventTypeRegistry, Vec<String>) {
    let mut r = EventTypeRegistry::new();
    let mut types = Vec::new();
    for res in RESOURCES {
        for verb in VERBS {
            let t = format!("{res}.{verb}");
            r.declare(t.clone(), EventKind::Durable);
            types.push(t);
        }
        r.declare(format!("{res}.state.changed"), EventKind::Transient);
    }
    (r, types)
}

/// `teams` teams with 10 subscriptions each; events come from `active` of them.
fn world(teams: usize, active: usize) -> (Matcher, Vec<Event>) {
    let (registry, types) = registry();
    let mut subs = Vec::with_capacity(teams * 10);
    for t in 0..teams {
        let team = TeamId::parse(&format!("team{t}")).unwrap();
        for i in 0..10 {
            let res = RESOURCES[(t + i) % RESOURCES.len()];
            let verb = VERBS[(t * 7 + i) % VERBS.len()];
            let pattern = match i % 5 {
                0 => format!("{res}.*"),
                1 | 2 => format!("{res}.{verb}"),
                3 => "*".to_string(),
                _ => format!("{}.{verb}", RESOURCES[(t + i + 3) % RESOURCES.len()]),
            };
            let mut s = Subscription::new(
                team.clone(),
                i,
                format!("ch{i}"),
                vec![Pattern::parse(&pattern).unwrap()],
            );
            if i % 3 == 1 {
                s.outcome = Some(Outcome::Error);
            }
            if i % 4 == 2 {
                s.metadata.insert("region".into(), "eu".into());
            }
            if i == 9 {
                s.active = false;
            }
            subs.push(s);
        }
    }
    let matcher = Matcher::new(registry, subs);
    // 4,096 events spread over the teams and types, half with outcome error, a third in eu.
    let events = (0..4096usize)
        .map(|n| {
            let team = ((n * 7919) % active) * (teams / active);
            let mut metadata = std::collections::BTreeMap::new();
            metadata.insert(
                "region".to_string(),
                if n % 3 == 0 { "eu" } else { "us" }.to_string(),
            );
            RawEvent {
                id: Some(format!("e{n}")),
                event: types[(n * 31) % types.len()].clone(),
                outcome: Some(if n % 2 == 0 {
                    Outcome::Error
                } else {
                    Outcome::Success
                }),
                timestamp: None,
                team_id: Some(format!("team{team}")),
                actor: None,
                resource: None,
                metadata,
                error: None,
            }
            .into_event(None, Timestamp::from_unix_nanos(0), String::new)
            .unwrap()
        })
        .collect();
    (matcher, events)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    // (teams configured, teams the events come from)
    for (teams, active) in [(100usize, 100usize), (10_000, 10_000), (10_000, 100)] {
        let (matcher, events) = world(teams, active);
        let total: usize = events.iter().map(|e| matcher.matches(e).len()).sum();
        assert!(total > 0, "the benchmark world must produce matches");
        group.throughput(Throughput::Elements(events.len() as u64));
        let id = BenchmarkId::new(format!("teams={teams}"), format!("events-from={active}"));
        group.bench_function(id, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for e in &events {
                    matcher.for_each_match(black_box(e), |s| {
                        black_box(s);
                        n += 1;
                    });
                }
                n
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
