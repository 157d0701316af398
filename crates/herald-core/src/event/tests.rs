//! Data-driven tests of event parsing and validation.

use super::*;

fn now() -> Timestamp {
    Timestamp::parse("2026-11-25T12:00:00Z").unwrap()
}

/// Parses and completes `json` for team `acme`; returns the event as JSON or the error text.
fn check(json: &str) -> String {
    let team = TeamId::parse("acme").unwrap();
    match RawEvent::from_json(json.as_bytes())
        .and_then(|raw| raw.into_event(Some(&team), now(), || "generated".into()))
    {
        Ok(event) => serde_json::to_string(&event).unwrap(),
        Err(err) => format!("error: {err}"),
    }
}

#[test]
fn the_canonical_example_round_trips() {
    let json = r#"{"id": "evt_123", "event": "capsule.create", "outcome": "error",
     "timestamp": "2026-11-23T10:00:00Z", "team_id": "acme",
     "actor": {"type": "user", "id": "u_1", "name": "Ada"},
     "resource": {"id": "sb_42", "type": "sandbox"},
     "metadata": {"host_ip": "10.0.0.5", "reason": "oom"}, "error": "out of memory"}"#;
    insta::assert_snapshot!(check(json), @r#"{"id":"evt_123","event":"capsule.create","outcome":"error","timestamp":"2026-11-23T10:00:00Z","team_id":"acme","actor":{"type":"user","id":"u_1","name":"Ada"},"resource":{"id":"sb_42","type":"sandbox"},"metadata":{"host_ip":"10.0.0.5","reason":"oom"},"error":"out of memory"}"#);
}

#[test]
fn fills_id_timestamp_and_team() {
    insta::assert_snapshot!(check(r#"{"event": "host.down"}"#),
        @r#"{"id":"generated","event":"host.down","timestamp":"2026-11-25T12:00:00Z","team_id":"acme","metadata":{}}"#);
}

#[test]
fn normalises_timestamps_to_utc() {
    insta::assert_snapshot!(check(r#"{"event": "host.down", "timestamp": "2026-11-23T12:30:00.5+02:00"}"#),
        @r#"{"id":"generated","event":"host.down","timestamp":"2026-11-23T10:30:00.5Z","team_id":"acme","metadata":{}}"#);
}

#[test]
fn errors_name_the_field() {
    let long = "x".repeat(3000);
    let many: Vec<String> = (0..65).map(|i| format!(r#""k{i}": "v""#)).collect();
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"event": "a", "colour": "red"}"#.into(),
            "error: colour: unknown field `colour`",
        ),
        (
            r#"{"outcome": "error"}"#.into(),
            "error: (body): missing field `event`",
        ),
        (
            r#"{"event": "a", "outcome": "failed"}"#.into(),
            "error: outcome: unknown variant `failed`",
        ),
        (
            r#"{"event": "a", "actor": {"type": "robot"}}"#.into(),
            "error: actor.type: unknown variant `robot`",
        ),
        (
            r#"{"event": "a", "actor": {"type": "user", "email": "x"}}"#.into(),
            "error: actor.email: unknown field `email`",
        ),
        (
            r#"{"event": "a", "metadata": {"n": 5}}"#.into(),
            "error: metadata.n: invalid type: integer `5`, expected a string",
        ),
        (
            r#"{"event": "a", "resource": {"id": "r"}}"#.into(),
            "error: resource: missing field `type`",
        ),
        (
            r#"{"event": ""}"#.into(),
            "error: event: event type must not be empty",
        ),
        (
            r#"{"event": "capsule..create"}"#.into(),
            "error: event: event type `capsule..create` has an empty segment",
        ),
        (
            r#"{"event": "capsule create"}"#.into(),
            "error: event: event type `capsule create` contains ' '",
        ),
        (
            r#"{"event": "a", "id": ""}"#.into(),
            "error: id: must not be empty",
        ),
        (
            r#"{"event": "a", "id": "a b"}"#.into(),
            "error: id: contains ' '",
        ),
        (
            format!(r#"{{"event": "a", "id": "{}"}}"#, "i".repeat(129)),
            "error: id: is longer than 128 bytes",
        ),
        (
            r#"{"event": "a", "timestamp": "yesterday"}"#.into(),
            "error: timestamp: `yesterday` is not an RFC 3339 timestamp",
        ),
        (
            r#"{"event": "a", "team_id": "ac me"}"#.into(),
            "error: team_id: team id `ac me` contains ' '",
        ),
        (
            format!(r#"{{"event": "a", "metadata": {{"reason": "{long}"}}}}"#),
            "error: metadata.reason: is longer than 2048 characters",
        ),
        (
            format!(r#"{{"event": "a", "metadata": {{{}}}}}"#, many.join(",")),
            "error: metadata: has 65 entries; at most 64 are allowed",
        ),
        (
            format!(r#"{{"event": "a", "error": "{}"}}"#, "e".repeat(8193)),
            "error: error: is longer than 8192 characters",
        ),
        (
            format!(r#"{{"event": "a", "actor": {{"type": "user", "name": "{long}"}}}}"#),
            "error: actor.name: is longer than 256 characters",
        ),
        (
            r#"{"event": "a",}"#.into(),
            "error: malformed JSON at line 1 column 15: trailing comma",
        ),
        (
            r#"{"event": "a""#.into(),
            "error: malformed JSON at line 1 column 13: EOF while parsing an object",
        ),
        (
            "not json".into(),
            "error: malformed JSON at line 1 column 2: expected ident",
        ),
    ];
    for (json, want) in cases {
        let got = check(&json);
        assert!(
            got.starts_with(want),
            "input {json:.80}\n  want prefix: {want}\n  got:         {got}"
        );
    }
}

#[test]
fn batches_name_the_element() {
    let body = br#"[{"event": "a"}, {"event": "b", "actor": {"type": "bot"}}]"#;
    let err = RawEvent::body_from_json(body).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("[1].actor.type: unknown variant `bot`"),
        "{err}"
    );
    let ok = RawEvent::body_from_json(br#" [{"event": "a"}, {"event": "b"}]"#).unwrap();
    assert!(matches!(ok, Body::Many(v) if v.len() == 2));
    let trailing = RawEvent::body_from_json(br#"[{"event": "a"}] x"#).unwrap_err();
    assert!(
        trailing
            .to_string()
            .starts_with("malformed JSON at line 1 column 18: trailing characters"),
        "{trailing}"
    );
    let one = RawEvent::body_from_json(br#"{"event": "a"}"#).unwrap();
    assert!(matches!(one, Body::One(e) if e.event == "a"));
}

#[test]
fn within_prefixes_field_paths() {
    let e = EventError::Invalid {
        field: "event".into(),
        message: "bad".into(),
    };
    assert_eq!(e.within("[2]").to_string(), "[2].event: bad");
}
