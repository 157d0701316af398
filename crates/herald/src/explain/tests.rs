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

/// Noise control after matching: offline, the dedup key and window of the subscription
/// whose settings apply per channel, and a note that silences were not checked; with the
/// silences of a running herald, the one that stops a channel.
#[test]
fn noise_control_shows_dedup_keys_and_silences() {
    let config = config();
    let (event, e) = explain_event(
        &config,
        br#"{"event": "capsule.create", "outcome": "error", "team_id": "acme",
            "resource": {"type": "sandbox", "id": "sb_42"}, "metadata": {"region": "eu"}}"#,
        None,
    )
    .unwrap();
    let now = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
    insta::assert_snapshot!(render_noise(&noise(&config, &event, &e, None, now), false), @r#"
    noise control (match → silence → dedup → group or throttle → deliver):
      ops-hook (settings of acme.subscriptions[0]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          no grouping or throttle: sent on its own
      oncall (settings of acme.subscriptions[1]): silences not checked (offline; pass --url and --key); dedup_window 10m on [event, resource.id, outcome], key ["capsule.create","sb_42","error"]: a repeat of this key within 10m of a sent one is recorded as `suppressed`
          grouped by [event, resource.type]: joins group ["capsule.create","sandbox"] (event = capsule.create, resource.type = sandbox); a new group's digest goes out 30s after its first event, a busy group's next one 5m after the previous; each lists up to 100 events and counts the rest
      audit (settings of acme.subscriptions[3]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          no grouping or throttle: sent on its own
    "#);
    let silence = |id: &str, team: &str, channel: &str| Silence {
        id: id.into(),
        team: TeamId::parse(team).unwrap(),
        matchers: herald_core::SilenceMatchers {
            event: Some(herald_core::Pattern::parse("capsule.*").unwrap()),
            channel: Some(channel.into()),
            ..Default::default()
        },
        starts_at: Timestamp::parse("2026-12-01T11:00:00Z").unwrap(),
        ends_at: Timestamp::parse("2026-12-01T13:00:00Z").unwrap(),
        comment: "maintenance".into(),
        created_by: "ops".into(),
        created_at: now,
    };
    let silences = [
        silence("sil_other_team", "globex", "ops-hook"),
        silence("sil_hook", "acme", "ops-hook"),
    ];
    insta::assert_snapshot!(render_noise(&noise(&config, &event, &e, Some(&silences), now), true), @r#"
    noise control (match → silence → dedup → group or throttle → deliver):
      ops-hook (settings of acme.subscriptions[0]): silenced by sil_hook until 2026-12-01T13:00:00Z (maintenance): recorded as `silenced`, not sent
      oncall (settings of acme.subscriptions[1]): no silence in force matches; dedup_window 10m on [event, resource.id, outcome], key ["capsule.create","sb_42","error"]: a repeat of this key within 10m of a sent one is recorded as `suppressed`
          grouped by [event, resource.type]: joins group ["capsule.create","sandbox"] (event = capsule.create, resource.type = sandbox); a new group's digest goes out 30s after its first event, a busy group's next one 5m after the previous; each lists up to 100 events and counts the rest
      audit (settings of acme.subscriptions[3]): no silence in force matches; no dedup_window: repeats are not suppressed
          no grouping or throttle: sent on its own
    "#);
}

/// Grouping and throttle after dedup: the group this event joins (its key and labels) and
/// the timing of the oncall subscription; the throttle the admins channel sets for its
/// ungrouped subscriptions; and the same in the JSON form, under `group` and `throttle`.
#[test]
fn noise_control_shows_groups_and_throttles() {
    let config = config();
    let now = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
    let noise_of = |event: &[u8]| {
        let (event, e) = explain_event(&config, event, None).unwrap();
        noise(&config, &event, &e, None, now)
    };
    let create = noise_of(
        br#"{"event": "capsule.create", "outcome": "error", "team_id": "acme",
            "resource": {"type": "sandbox", "id": "sb_42"}, "metadata": {"region": "eu"}}"#,
    );
    let oncall: Vec<&Noise> = create.iter().filter(|n| n.channel == "oncall").collect();
    insta::assert_json_snapshot!(oncall, @r#"
    [
      {
        "channel": "oncall",
        "subscription": "acme.subscriptions[1]",
        "dedup": {
          "fields": [
            "event",
            "resource.id",
            "outcome"
          ],
          "key": "[\"capsule.create\",\"sb_42\",\"error\"]",
          "window": "10m"
        },
        "group": {
          "by": [
            "event",
            "resource.type"
          ],
          "key": "[\"capsule.create\",\"sandbox\"]",
          "labels": [
            {
              "field": "event",
              "value": "capsule.create"
            },
            {
              "field": "resource.type",
              "value": "sandbox"
            }
          ],
          "wait": "30s",
          "interval": "5m",
          "max_size": 100
        }
      }
    ]
    "#);
    let host_down = noise_of(br#"{"event": "host.down", "team_id": "acme"}"#);
    insta::assert_snapshot!(render_noise(&host_down, false), @r"
    noise control (match → silence → dedup → group or throttle → deliver):
      ops-hook (settings of acme.subscriptions[0]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          no grouping or throttle: sent on its own
      admins (settings of acme.subscriptions[2]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          throttle 20/1h (set on channel admins, counted across its ungrouped subscriptions): beyond 20 messages per 1h, events are folded into a digest that counts them
      audit (settings of acme.subscriptions[3]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          no grouping or throttle: sent on its own
    ");
    let admins: Vec<&Noise> = host_down.iter().filter(|n| n.channel == "admins").collect();
    insta::assert_json_snapshot!(admins, @r#"
    [
      {
        "channel": "admins",
        "subscription": "acme.subscriptions[2]",
        "throttle": {
          "rule": "20/1h",
          "limit": 20,
          "per": "1h",
          "scope": "channel",
          "counted_by": "admins"
        }
      }
    ]
    "#);
}

/// A subscription's own throttle is counted by its key; a group whose fields the event
/// lacks is still a group (of events lacking them), and `group_by = []` is one group.
#[test]
fn noise_control_names_the_scope_and_groups_without_labels() {
    let mut config = config();
    let mut subs = config.matcher.subscriptions().to_vec();
    // ops-hook throttles itself; audit groups on fields host.down events lack.
    subs[0].throttle = Some((
        herald_core::Throttle::parse("10/1m").unwrap(),
        ThrottleScope::Subscription(subs[0].key()),
    ));
    let grouping = |by: &[&str]| herald_core::Grouping {
        by: by
            .iter()
            .map(|f| herald_core::DedupField::parse(f).unwrap())
            .collect(),
        wait: std::time::Duration::from_secs(0),
        interval: std::time::Duration::from_secs(60),
        max_size: 5,
    };
    subs[3].group = Some(grouping(&["resource.id", "metadata.region"]));
    config.matcher = herald_core::Matcher::new(config.matcher.registry().clone(), subs.clone());
    let now = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
    let (event, e) = explain_event(
        &config,
        br#"{"event": "host.down", "team_id": "acme"}"#,
        None,
    )
    .unwrap();
    insta::assert_snapshot!(render_noise(&noise(&config, &event, &e, None, now), false), @r"
    noise control (match → silence → dedup → group or throttle → deliver):
      ops-hook (settings of acme.subscriptions[0]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          throttle 10/1m (this subscription's own): beyond 10 messages per 1m, events are folded into a digest that counts them
      admins (settings of acme.subscriptions[2]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          throttle 20/1h (set on channel admins, counted across its ungrouped subscriptions): beyond 20 messages per 1h, events are folded into a digest that counts them
      audit (settings of acme.subscriptions[3]): silences not checked (offline; pass --url and --key); no dedup_window: repeats are not suppressed
          grouped by [resource.id, metadata.region]: joins group [null,null] (none of its fields is set); a new group's digest goes out 0s after its first event, a busy group's next one 1m after the previous; each lists up to 5 events and counts the rest
    ");
    subs[3].group = Some(grouping(&[]));
    config.matcher = herald_core::Matcher::new(config.matcher.registry().clone(), subs);
    let audit: Vec<Noise> = noise(&config, &event, &e, None, now)
        .into_iter()
        .filter(|n| n.channel == "audit")
        .collect();
    insta::assert_snapshot!(render_noise(&audit, true), @r"
    noise control (match → silence → dedup → group or throttle → deliver):
      audit (settings of acme.subscriptions[3]): no silence in force matches; no dedup_window: repeats are not suppressed
          grouped: joins the subscription's one group (group_by = []); a new group's digest goes out 0s after its first event, a busy group's next one 1m after the previous; each lists up to 5 events and counts the rest
    ");
}

#[test]
fn silences_read_back_from_the_api_shape() {
    let json = serde_json::json!({
        "id": "sil_1", "team": "acme", "state": "active",
        "matchers": {"event": "capsule.*", "outcome": "error", "metadata": {"region": "eu"}, "channel": "oncall"},
        "starts_at": "2026-12-01T11:00:00Z", "ends_at": "2026-12-01T13:00:00Z",
        "comment": "maintenance", "created_by": "ops", "created_at": "2026-12-01T10:00:00Z"
    });
    let silence = silence_from_json(&json).unwrap();
    let mut again = serde_json::to_value(&silence).unwrap();
    again["state"] = "active".into();
    assert_eq!(again, json);
}

/// The example configuration with the oncall subscription grouping by region and the
/// webhook's subscription throttled (set on the model: the configuration keys are the
/// config crate's to test).
fn grouped_config() -> Config {
    let mut config = config();
    let mut subs = config.matcher.subscriptions().to_vec();
    subs[0].throttle = Some((
        herald_core::Throttle::parse("10/1m").unwrap(),
        herald_core::ThrottleScope::Subscription(subs[0].key()),
    ));
    subs[1].group = Some(herald_core::Grouping {
        by: vec![herald_core::DedupField::parse("metadata.region").unwrap()],
        wait: std::time::Duration::from_secs(30),
        interval: std::time::Duration::from_secs(300),
        max_size: 100,
    });
    config.matcher = herald_core::Matcher::new(config.matcher.registry().clone(), subs);
    config
}

#[test]
fn the_digest_preview_shows_the_built_in_digest_each_channel_would_send() {
    let config = grouped_config();
    let (event, e) = explain_event(
        &config,
        br#"{"id": "evt_1", "event": "capsule.create", "outcome": "error", "team_id": "acme",
            "timestamp": "2026-12-01T11:59:58Z",
            "resource": {"type": "sandbox", "id": "sb_42"}, "metadata": {"region": "eu"},
            "error": "out of memory"}"#,
        None,
    )
    .unwrap();
    let now = Timestamp::parse("2026-12-01T12:00:00Z").unwrap();
    let previews = digest::digest_previews(&config, &event, &e, now);
    // The audit file has neither grouping nor throttle: no digest preview.
    let channels: Vec<&str> = previews.iter().map(|p| p.channel.as_str()).collect();
    assert_eq!(channels, ["ops-hook", "oncall"]);
    insta::assert_snapshot!(digest::render_digest_previews(&previews), @r#"
    ── ops-hook (webhook digest preview: the digest beyond the throttle, with this event alone) ──
    {
      "type": "herald.digest",
      "id": "dlv_preview",
      "team": "acme",
      "subscription": "h_6b6d55b7fca5eb8d",
      "channel": "ops-hook",
      "kind": "throttle",
      "limit": 10,
      "per_seconds": 60,
      "total": 1,
      "listed": 1,
      "more": 0,
      "first_at": "2026-12-01T12:00:00Z",
      "last_at": "2026-12-01T12:00:00Z",
      "events": [
        {
          "id": "evt_1",
          "event": "capsule.create",
          "outcome": "error",
          "timestamp": "2026-12-01T11:59:58Z",
          "team_id": "acme",
          "resource": {
            "id": "sb_42",
            "type": "sandbox"
          },
          "metadata": {
            "region": "eu"
          },
          "error": "out of memory"
        }
      ]
    }

    ── oncall (telegram digest preview: its group's digest, with this event alone) ──
    <b>DIGEST</b> <b>1 × capsule.create (metadata.region = eu)</b>
    Team: acme
    First: 2026-12-01T12:00:00Z
    Last: 2026-12-01T12:00:00Z

    • 11:59:58Z <b>FAILED</b> capsule.create <code>sb_42</code>: out of memory
    "#);
}
