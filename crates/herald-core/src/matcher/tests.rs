//! Matcher tests: worked examples, and property tests of the index against the reference
//! semantics in `Subscription::reasons_against`, of team isolation and of pattern semantics.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::event::{Outcome, RawEvent, Timestamp};
use crate::pattern::Pattern;
use crate::subscription::SubscriptionId;

fn team(s: &str) -> TeamId {
    TeamId::parse(s).unwrap()
}

fn event(
    team_id: &str,
    event_type: &str,
    outcome: Option<Outcome>,
    meta: &[(&str, &str)],
) -> Event {
    RawEvent {
        id: Some("e1".into()),
        event: event_type.into(),
        outcome,
        timestamp: None,
        team_id: Some(team_id.into()),
        actor: None,
        resource: None,
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        error: None,
    }
    .into_event(None, Timestamp::from_unix_nanos(0), String::new)
    .unwrap()
}

fn registry() -> EventTypeRegistry {
    let mut r = EventTypeRegistry::new();
    for t in ["capsule.create", "capsule.destroy", "host.down"] {
        r.declare(t, EventKind::Durable);
    }
    r.declare("capsule.state.changed", EventKind::Transient);
    r
}

fn sub(team_id: &str, index: usize, channel: &str, patterns: &[&str]) -> Subscription {
    Subscription::new(
        team(team_id),
        index,
        channel,
        patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect(),
    )
}

/// The example configuration of the issue, for teams acme and globex.
fn example() -> Matcher {
    let mut oncall = sub("acme", 1, "oncall", &["capsule.create"]);
    oncall.outcome = Some(Outcome::Error);
    oncall.metadata.insert("region".into(), "eu".into());
    let mut off = sub("acme", 2, "archive", &["*"]);
    off.active = false;
    Matcher::new(
        registry(),
        vec![
            sub("acme", 0, "ops-hook", &["capsule.*", "host.down"]),
            oncall,
            off,
            sub("globex", 0, "everything", &["*"]),
        ],
    )
}

fn channels(m: &Matcher, e: &Event) -> String {
    m.matches(e)
        .iter()
        .map(|s| s.channel.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn worked_examples() {
    let m = example();
    let eu = [("region", "eu")];
    let us = [("region", "us")];
    let cases: Vec<(Event, &str)> = vec![
        (
            event("acme", "capsule.create", Some(Outcome::Error), &eu),
            "ops-hook,oncall",
        ),
        (
            event("acme", "capsule.create", Some(Outcome::Error), &us),
            "ops-hook",
        ),
        (
            event("acme", "capsule.create", Some(Outcome::Success), &eu),
            "ops-hook",
        ),
        (event("acme", "capsule.create", None, &eu), "ops-hook"),
        (event("acme", "host.down", None, &[]), "ops-hook"),
        (event("acme", "capsule.state.changed", None, &[]), ""),
        (event("acme", "not.declared", None, &[]), ""),
        (
            event("globex", "capsule.create", Some(Outcome::Error), &eu),
            "everything",
        ),
        (
            event("initech", "capsule.create", Some(Outcome::Error), &eu),
            "",
        ),
    ];
    for (e, want) in cases {
        assert_eq!(
            channels(&m, &e),
            want,
            "{} {} {:?}",
            e.team_id,
            e.event,
            e.metadata
        );
    }
}

#[test]
fn explain_gives_every_reason() {
    let m = example();
    let e = event(
        "acme",
        "capsule.destroy",
        Some(Outcome::Success),
        &[("region", "us")],
    );
    let lines: Vec<String> = m
        .explain(&e)
        .verdicts
        .iter()
        .map(|v| {
            let reasons: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
            format!(
                "{} {} {}: {}",
                v.subscription,
                v.channel,
                v.matched,
                reasons.join("; ")
            )
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"), @r"
    acme.subscriptions[0] ops-hook true: 
    acme.subscriptions[1] oncall false: event type not in [capsule.create]; outcome is `success`, wants `error`; metadata `region` is `us`, wants `eu`
    acme.subscriptions[2] archive false: inactive (active = false)
    ");
    let transient = m.explain(&event("acme", "capsule.state.changed", None, &[]));
    assert_eq!(transient.kind, Some(EventKind::Transient));
    assert!(
        transient
            .verdicts
            .iter()
            .all(|v| !v.matched && v.reasons[0] == Reason::TransientType)
    );
}

// ---- property tests -------------------------------------------------------------------

const SEGMENTS: &[&str] = &["a", "b", "c"];
const TEAMS: &[&str] = &["t0", "t1", "t2", "t3"];

fn event_type() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SEGMENTS), 1..4).prop_map(|s| s.join("."))
}

fn pattern() -> impl Strategy<Value = Pattern> {
    prop_oneof![
        1 => Just(Pattern::All),
        3 => event_type().prop_map(|t| Pattern::Prefix(format!("{t}."))),
        3 => event_type().prop_map(Pattern::Exact),
    ]
}

fn outcome() -> impl Strategy<Value = Option<Outcome>> {
    prop::option::of(prop_oneof![Just(Outcome::Success), Just(Outcome::Error)])
}

fn metadata() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(&["region", "tier"][..]).prop_map(String::from),
        prop::sample::select(&["eu", "us"][..]).prop_map(String::from),
        0..3,
    )
}

fn subscription() -> impl Strategy<
    Value = (
        String,
        Vec<Pattern>,
        Option<Outcome>,
        BTreeMap<String, String>,
        bool,
    ),
> {
    (
        prop::sample::select(TEAMS).prop_map(String::from),
        prop::collection::vec(pattern(), 1..4),
        outcome(),
        metadata(),
        prop::bool::weighted(0.85),
    )
}

fn world() -> impl Strategy<Value = (EventTypeRegistry, Vec<Subscription>)> {
    (
        prop::collection::btree_map(event_type(), prop::bool::weighted(0.2), 1..12),
        prop::collection::vec(subscription(), 0..40),
    )
        .prop_map(|(types, subs)| {
            let mut registry = EventTypeRegistry::new();
            for (name, transient) in types {
                registry.declare(
                    name,
                    if transient {
                        EventKind::Transient
                    } else {
                        EventKind::Durable
                    },
                );
            }
            let mut per_team: BTreeMap<String, usize> = BTreeMap::new();
            let subs = subs
                .into_iter()
                .map(|(t, patterns, outcome, metadata, active)| {
                    let index = per_team.entry(t.clone()).or_default();
                    let mut s = Subscription::new(team(&t), *index, format!("ch{index}"), patterns);
                    *index += 1;
                    s.outcome = outcome;
                    s.metadata = metadata;
                    s.active = active;
                    s
                })
                .collect();
            (registry, subs)
        })
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        prop::sample::select(TEAMS),
        event_type(),
        outcome(),
        metadata(),
    )
        .prop_map(|(t, ty, o, m)| {
            let meta: Vec<(&str, &str)> = m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            event(t, &ty, o, &meta)
        })
}

proptest! {
    /// The index returns exactly the subscriptions the reference semantics accept, in order.
    #[test]
    fn index_agrees_with_reference((registry, subs) in world(), events in prop::collection::vec(any_event(), 1..20)) {
        let m = Matcher::new(registry.clone(), subs.clone());
        for e in &events {
            let got: Vec<&SubscriptionId> = m.matches(e).iter().map(|s| &s.id).collect();
            let want: Vec<&SubscriptionId> = if registry.kind(&e.event) == Some(EventKind::Durable) {
                subs.iter().filter(|s| s.reasons_against(e).is_empty()).map(|s| &s.id).collect()
            } else {
                Vec::new()
            };
            prop_assert_eq!(&got, &want);
            let explanation = m.explain(e);
            let explained: Vec<&SubscriptionId> = explanation.verdicts.iter().filter(|v| v.matched).map(|v| &v.id).collect();
            prop_assert_eq!(&got, &explained);
        }
    }

    /// An event of team A never matches, nor is explained against, a subscription of team B.
    #[test]
    fn team_isolation((registry, subs) in world(), events in prop::collection::vec(any_event(), 1..20)) {
        let m = Matcher::new(registry, subs);
        for e in &events {
            for s in m.matches(e) {
                prop_assert_eq!(&s.id.team, &e.team_id);
            }
            for v in m.explain(e).verdicts {
                prop_assert_eq!(&v.id.team, &e.team_id);
            }
        }
    }

    /// Transient and undeclared types are never matched, whatever the subscriptions say.
    #[test]
    fn transient_and_undeclared_never_match((registry, subs) in world(), e in any_event()) {
        let kind = registry.kind(&e.event);
        let m = Matcher::new(registry, subs);
        if kind != Some(EventKind::Durable) {
            prop_assert!(m.matches(&e).is_empty());
        }
    }

    /// `p.*` matches exactly the types whose leading segments are `p`; exact matches only
    /// itself; `*` matches everything.
    #[test]
    fn pattern_semantics(ty in event_type(), other in event_type()) {
        let segments: Vec<&str> = ty.split('.').collect();
        for k in 1..segments.len() {
            let prefix = segments[..k].join(".");
            let p = Pattern::parse(&format!("{prefix}.*")).unwrap();
            prop_assert!(p.matches(&ty));
            let other_segments: Vec<&str> = other.split('.').collect();
            let expect = other_segments.len() > k && other_segments[..k] == segments[..k];
            prop_assert_eq!(p.matches(&other), expect);
        }
        let exact = Pattern::parse(&ty).unwrap();
        prop_assert!(exact.matches(&ty));
        prop_assert_eq!(exact.matches(&other), ty == other);
        prop_assert!(Pattern::All.matches(&other));
        // A prefix pattern never matches the bare prefix itself.
        let p = Pattern::parse(&format!("{ty}.*")).unwrap();
        prop_assert!(!p.matches(&ty));
    }
}
