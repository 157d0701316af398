//! Snapshot tests of `herald explain` on the example configuration.

use std::path::Path;

use super::*;

fn config() -> Config {
    let env = |name: &str| match name {
        "ACME_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        other => Some(format!("{other}-value")),
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
    herald_config::load_with_env(&path, &env)
        .config
        .expect("example config is valid")
}

fn text(event: &str) -> String {
    let config = config();
    match explain(&config, event.as_bytes(), None) {
        Ok(e) => render(&config, &e),
        Err(err) => format!("error: {err:#}"),
    }
}

#[test]
fn a_failed_create_in_eu_reaches_oncall() {
    insta::assert_snapshot!(text(r#"{"event": "capsule.create", "outcome": "error", "team_id": "acme",
        "metadata": {"region": "eu"}}"#), @r#"
    event `capsule.create` of team `acme` is durable: stored and delivered to matching subscriptions
      ✓ acme.subscriptions[0] → ops-hook (webhook): matches
      ✓ acme.subscriptions[1] → oncall (telegram): matches
      ✗ acme.subscriptions[2] "hosts to the admins" → admins (email): does not match
          - event type not in [host.down]
      ✓ acme.subscriptions[3] → audit (file): matches
    3 of 4 subscriptions match; delivered to: ops-hook, oncall, audit
    "#);
}

#[test]
fn why_not_lists_every_reason() {
    insta::assert_snapshot!(text(r#"{"event": "capsule.destroy", "outcome": "success", "team_id": "acme",
        "metadata": {"region": "us"}}"#), @r#"
    event `capsule.destroy` of team `acme` is durable: stored and delivered to matching subscriptions
      ✓ acme.subscriptions[0] → ops-hook (webhook): matches
      ✗ acme.subscriptions[1] → oncall (telegram): does not match
          - event type not in [capsule.create]
          - outcome is `success`, wants `error`
          - metadata `region` is `us`, wants `eu`
      ✗ acme.subscriptions[2] "hosts to the admins" → admins (email): does not match
          - event type not in [host.down]
      ✓ acme.subscriptions[3] → audit (file): matches
    2 of 4 subscriptions match; delivered to: ops-hook, audit
    "#);
    insta::assert_snapshot!(text(r#"{"event": "capsule.create", "team_id": "acme"}"#), @r#"
    event `capsule.create` of team `acme` is durable: stored and delivered to matching subscriptions
      ✓ acme.subscriptions[0] → ops-hook (webhook): matches
      ✗ acme.subscriptions[1] → oncall (telegram): does not match
          - event has no outcome, wants `error`
          - metadata `region` is absent, wants `eu`
      ✗ acme.subscriptions[2] "hosts to the admins" → admins (email): does not match
          - event type not in [host.down]
      ✓ acme.subscriptions[3] → audit (file): matches
    2 of 4 subscriptions match; delivered to: ops-hook, audit
    "#);
}

#[test]
fn transient_and_undeclared_types() {
    insta::assert_snapshot!(text(r#"{"event": "capsule.state.changed", "team_id": "globex"}"#), @r"
    event `capsule.state.changed` of team `globex` is transient: live stream only, never stored or delivered
      ✗ globex.subscriptions[0] → audit (file): does not match
          - event type is transient: live stream only, never delivered
    0 of 1 subscriptions match
    ");
    insta::assert_snapshot!(text(r#"{"event": "disk.full", "team_id": "globex"}"#), @r"
    event `disk.full` of team `globex` is not declared in [[event_types]]: herald rejects it at ingest (422)
      ✗ globex.subscriptions[0] → audit (file): does not match
          - event type is not declared
    0 of 1 subscriptions match
    ");
}

#[test]
fn bad_events_are_explained_too() {
    insta::assert_snapshot!(text(r#"{"event": "host.down"}"#), @"error: the event has no team_id; pass --team NAME");
    insta::assert_snapshot!(text(r#"{"event": "host.down", "team_id": "initech"}"#), @"error: team `initech` is not configured");
    insta::assert_snapshot!(text(r#"{"event": "host.down", "team": "acme"}"#), @"error: the event is not valid: team: unknown field `team`, expected one of `id`, `event`, `outcome`, `timestamp`, `team_id`, `actor`, `resource`, `metadata`, `error` at line 1 column 29");
}

#[test]
fn json_output() {
    let config = config();
    let e = explain(
        &config,
        br#"{"event": "host.down", "team_id": "acme"}"#,
        None,
    )
    .unwrap();
    insta::assert_json_snapshot!(e, @r#"
    {
      "event_type": "host.down",
      "team": "acme",
      "kind": "durable",
      "verdicts": [
        {
          "subscription": "acme.subscriptions[0]",
          "channel": "ops-hook",
          "matched": true
        },
        {
          "subscription": "acme.subscriptions[1]",
          "channel": "oncall",
          "matched": false,
          "reasons": [
            {
              "reason": "event_type",
              "patterns": [
                "capsule.create"
              ]
            },
            {
              "reason": "outcome",
              "wanted": "error",
              "got": null
            },
            {
              "reason": "metadata_missing",
              "key": "region",
              "wanted": "eu"
            }
          ]
        },
        {
          "subscription": "acme.subscriptions[2]",
          "name": "hosts to the admins",
          "channel": "admins",
          "matched": true
        },
        {
          "subscription": "acme.subscriptions[3]",
          "channel": "audit",
          "matched": true
        }
      ]
    }
    "#);
}
