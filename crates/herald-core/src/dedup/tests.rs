//! Dedup key tests: worked examples, and properties — two events share a key exactly when
//! they agree on every key field, whatever else differs.

use proptest::prelude::*;

use super::*;
use crate::event::{Actor, Outcome, Resource, Timestamp};
use crate::team::TeamId;

fn event(
    event_type: &str,
    outcome: Option<Outcome>,
    resource: Option<(&str, &str)>,
    actor: Option<(ActorType, Option<&str>)>,
    meta: &[(&str, &str)],
) -> Event {
    Event {
        id: "e1".into(),
        event: event_type.into(),
        outcome,
        timestamp: Timestamp::from_unix_nanos(0),
        team_id: TeamId::parse("acme").unwrap(),
        actor: actor.map(|(kind, id)| Actor {
            kind,
            id: id.map(str::to_string),
            name: None,
        }),
        resource: resource.map(|(kind, id)| Resource {
            id: id.into(),
            kind: kind.into(),
        }),
        metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        error: None,
    }
}

fn dedup(fields: &[&str]) -> Dedup {
    Dedup {
        window: Duration::from_secs(600),
        fields: fields
            .iter()
            .map(|f| DedupField::parse(f).unwrap())
            .collect(),
    }
}

#[test]
fn parse_names_every_field_and_refuses_the_rest() {
    for name in [
        "event",
        "outcome",
        "resource.type",
        "resource.id",
        "actor.type",
        "actor.id",
        "metadata.region",
    ] {
        assert_eq!(DedupField::parse(name).unwrap().to_string(), name);
    }
    assert_eq!(
        DedupField::parse("resource").unwrap_err(),
        "unknown dedup key field `resource`; expected one of event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY"
    );
    assert_eq!(
        DedupField::parse("metadata.").unwrap_err(),
        "`metadata.` needs a key, as in `metadata.region`"
    );
}

#[test]
fn the_key_lists_the_values_in_order_with_null_for_absent_ones() {
    let e = event(
        "capsule.create",
        Some(Outcome::Error),
        Some(("sandbox", "sb_42")),
        Some((ActorType::ApiKey, None)),
        &[("region", "eu")],
    );
    let d = dedup(&[
        "event",
        "resource.id",
        "outcome",
        "actor.type",
        "actor.id",
        "metadata.region",
        "metadata.zone",
    ]);
    assert_eq!(
        d.key_for(&e),
        r#"["capsule.create","sb_42","error","api_key",null,"eu",null]"#
    );
    // Absent and empty are different values.
    let empty = event("capsule.create", None, None, None, &[("zone", "")]);
    let absent = event("capsule.create", None, None, None, &[]);
    let d = dedup(&["metadata.zone"]);
    assert_ne!(d.key_for(&empty), d.key_for(&absent));
}

#[test]
fn the_default_key_is_event_outcome_and_resource() {
    let d = dedup(DEFAULT_DEDUP_KEY);
    let a = event("host.down", None, Some(("host", "h1")), None, &[("x", "1")]);
    let b = event("host.down", None, Some(("host", "h1")), None, &[("x", "2")]);
    let c = event("host.down", None, Some(("host", "h2")), None, &[]);
    assert_eq!(d.key_for(&a), d.key_for(&b));
    assert_ne!(d.key_for(&a), d.key_for(&c));
}

const FIELDS: &[&str] = &[
    "event",
    "outcome",
    "resource.type",
    "resource.id",
    "actor.type",
    "actor.id",
    "metadata.a",
    "metadata.b",
];

/// Small alphabets, so that equal values (and so equal keys) are common. Values may hold
/// the characters JSON escapes, and `"`/`,` that a naive join would confuse.
fn value() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "x", "y", "x,y", "\"", "a\"b", "null", "é"])
        .prop_map(String::from)
}

fn any_event() -> impl Strategy<Value = Event> {
    (
        prop::sample::select(vec!["capsule.create", "host.down"]),
        prop::option::of(prop::sample::select(vec![Outcome::Success, Outcome::Error])),
        prop::option::of((value(), value())),
        prop::option::of((
            prop::sample::select(vec![ActorType::User, ActorType::System]),
            prop::option::of(value()),
        )),
        prop::collection::btree_map(
            prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from),
            value(),
            0..3,
        ),
    )
        .prop_map(|(ty, outcome, resource, actor, metadata)| {
            let mut e = event(ty, outcome, None, None, &[]);
            e.resource = resource.map(|(kind, id)| Resource { id, kind });
            e.actor = actor.map(|(kind, id)| Actor {
                kind,
                id,
                name: None,
            });
            e.metadata = metadata;
            e
        })
}

fn any_fields() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(FIELDS.to_vec(), 1..=FIELDS.len()).prop_shuffle()
}

proptest! {
    /// Two events share a key exactly when every key field has the same value in both.
    #[test]
    fn same_key_iff_every_field_agrees(fields in any_fields(), a in any_event(), b in any_event()) {
        let d = dedup(&fields);
        let agree = d.fields.iter().all(|f| f.value(&a) == f.value(&b));
        prop_assert_eq!(d.key_for(&a) == d.key_for(&b), agree);
    }

    /// Fields outside the key never change it: not the id, time, error, or other metadata.
    #[test]
    fn other_fields_never_change_the_key(fields in any_fields(), a in any_event(), other in any_event(), note in value()) {
        let d = dedup(&fields);
        let mut b = a.clone();
        b.id = format!("{}-other", a.id);
        b.timestamp = Timestamp::from_unix_nanos(1_000_000_000);
        b.error = Some(note.clone());
        b.metadata.insert("c".into(), note);
        // Copy over from `other` every field the key does not name.
        let named = |name: &str| fields.contains(&name);
        if !named("event") { b.event = other.event.clone(); }
        if !named("outcome") { b.outcome = other.outcome; }
        if !named("resource.type") && !named("resource.id") { b.resource = other.resource.clone(); }
        if !named("actor.type") && !named("actor.id") { b.actor = other.actor.clone(); }
        for key in ["a", "b"] {
            if !named(&format!("metadata.{key}")) {
                match other.metadata.get(key) {
                    Some(v) => { b.metadata.insert(key.into(), v.clone()); }
                    None => { b.metadata.remove(key); }
                }
            }
        }
        prop_assert_eq!(d.key_for(&a), d.key_for(&b));
    }
}

#[test]
fn metadata_keys_outside_the_key_are_ignored() {
    let d = dedup(&["metadata.a"]);
    let a = event("host.down", None, None, None, &[("a", "1"), ("b", "1")]);
    let b = event("host.down", None, None, None, &[("a", "1"), ("b", "2")]);
    assert_eq!(d.key_for(&a), d.key_for(&b));
}
