//! Digests (`herald:formatter@0.2.0`'s `format-digest`): a 0.1.0 plugin still loads and
//! leaves them to herald, a 0.2.0 plugin renders or declines them, and a digest render
//! is sandboxed and fails like a single event's.

use std::time::Duration;

use herald_core::{Digest, DigestKind, Format, TeamId, Timestamp};
use herald_plugins::{Interface, Limits, PluginError, PluginSet, PluginSpec};

use super::*;

/// A group of three failed `capsule.create` in eu-west-1, two of them listed.
fn digest() -> Digest {
    let first = event();
    let second = event_from(
        r#"{"id":"evt_01JDX9","event":"capsule.create","outcome":"error",
            "timestamp":"2026-11-25T17:31:00Z","team_id":"acme",
            "resource":{"id":"cap_a0","type":"capsule"},
            "metadata":{"region":"eu-west-1"},
            "error":"quota exceeded"}"#,
    );
    Digest {
        id: "dlv_digest_1".into(),
        team: TeamId::parse("acme").unwrap(),
        subscription: "oncall-errors".into(),
        channel: "oncall".into(),
        kind: DigestKind::Group {
            labels: vec![("metadata.region".into(), "eu-west-1".into())],
        },
        events: vec![first, second],
        total: 3,
        first_at: Timestamp::parse("2026-11-25T17:30:00Z").unwrap(),
        last_at: Timestamp::parse("2026-11-25T17:32:30Z").unwrap(),
    }
}

fn set_with(name: &str, crate_name: &str, quarantine_after: u32) -> PluginSet {
    let set = PluginSet::new(host(), quarantine_after);
    set.insert(PluginSpec {
        name: name.to_string(),
        path: wasm(crate_name),
        limits: test_limits(),
    })
    .unwrap_or_else(|e| panic!("{crate_name} loads: {e}"));
    set
}

#[test]
fn a_0_1_plugin_loads_and_leaves_digests_to_herald() {
    let host = host();
    let legacy = load(&host, "fixture-v0-1").expect("a 0.1.0 plugin loads");
    assert_eq!(legacy.interface(), Interface::V0_1);
    assert_eq!(legacy.interface().to_string(), "herald:formatter@0.1.0");
    assert!(!legacy.renders_digests());
    let r = rendered(legacy.format(&event(), "webhook", &settings(&[])));
    assert_eq!(r.body, "v0.1 capsule.create for acme on webhook");
    // Not run for a digest: nothing to time, nothing logged.
    let render = legacy.render_digest(&digest(), "webhook", &settings(&[]));
    assert_eq!(render.result, Ok(None));
    assert_eq!((render.elapsed, render.logs.len()), (Duration::ZERO, 0));

    let set = set_with("legacy", "fixture-v0-1", 5);
    assert!(!set.renders_digests("legacy"));
    assert_eq!(
        set.render_digest("legacy", "webhook", &digest(), &settings(&[])),
        Ok(None)
    );
    assert_eq!(set.status()[0].interface, Interface::V0_1);
}

#[test]
fn a_0_2_plugin_renders_a_digest() {
    let set = set_with("echo", "fixture-echo", 5);
    assert!(set.renders_digests("echo"));
    assert_eq!(set.status()[0].interface, Interface::V0_2);
    let r = set
        .render_digest("echo", "webhook", &digest(), &settings(&[]))
        .unwrap()
        .expect("echo renders digests");
    assert_eq!(r.format, Format::Text);
    assert_eq!(
        r.body,
        "digest dlv_digest_1: 3 × capsule.create (metadata.region = eu-west-1) for acme on webhook [evt_01JDX8,evt_01JDX9] +1 more, 2026-11-25T17:30:00Z to 2026-11-25T17:32:30Z"
    );
    assert_eq!(
        r.subject.as_deref(),
        Some("digest: 3 × capsule.create (metadata.region = eu-west-1)")
    );

    // A throttle digest, as JSON: the kind arrives as a variant.
    let mut throttled = digest();
    throttled.kind = DigestKind::Throttle {
        limit: 10,
        per_seconds: 60,
    };
    let r = set
        .render_digest(
            "echo",
            "webhook",
            &throttled,
            &settings(&[("format", "json")]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(r.format, Format::Json);
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "digest": "dlv_digest_1",
            "headline": "3 events folded by throttle 10/1m",
            "total": 3,
            "more": 1,
            "events": ["evt_01JDX8", "evt_01JDX9"],
            "channel": "webhook",
        })
    );
}

#[test]
fn card_renders_digests_for_telegram_and_email() {
    let host = host();
    let card = load(&host, "card").unwrap();
    assert_eq!(card.interface(), Interface::V0_2);

    let tg = card
        .format_digest(&digest(), "telegram", &settings(&[]))
        .unwrap()
        .unwrap();
    assert_eq!(tg.format, Format::Html);
    assert_eq!(
        tg.body,
        "❌ <b>3 × capsule.create (metadata.region = eu-west-1)</b>\n\
         • <code>2026-11-25T17:30:00Z</code> capsule.create failed · capsule cap_9f: quota exceeded: 10/10 capsules (see *limits* &amp; `docs`)\n\
         • <code>2026-11-25T17:31:00Z</code> capsule.create failed · capsule cap_a0: quota exceeded\n\
         … and 1 more\n\
         <i>2026-11-25T17:30:00Z – 2026-11-25T17:32:30Z</i>"
    );

    let md = card
        .format_digest(&digest(), "telegram", &settings(&[("markup", "markdown")]))
        .unwrap()
        .unwrap();
    assert_eq!(md.format, Format::Markdown);
    assert!(
        md.body
            .starts_with("❌ *3 × capsule\\.create \\(metadata\\.region \\= eu\\-west\\-1\\)*\n"),
        "{}",
        md.body
    );

    let email = card
        .format_digest(
            &digest(),
            "email",
            &settings(&[("dashboard_url", "https://dash.example.com")]),
        )
        .unwrap()
        .unwrap();
    assert_eq!(email.format, Format::Html);
    assert_eq!(
        email.subject.as_deref(),
        Some("[acme] 3 × capsule.create (metadata.region = eu-west-1)")
    );
    assert!(
        email
            .body
            .contains("<a href=\"https://dash.example.com/events/evt_01JDX9\""),
        "{}",
        email.body
    );
    assert!(email.body.contains("<p>… and 1 more</p>"), "{}", email.body);
    let text = email.text_alternative.unwrap();
    assert!(
        text.starts_with("3 × capsule.create (metadata.region = eu-west-1)\n\n2026-11-25T17:30:00Z  capsule.create failed · capsule cap_9f"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "… and 1 more\n\n2026-11-25T17:30:00Z – 2026-11-25T17:32:30Z · dlv_digest_1\n"
        ),
        "{text}"
    );

    // Its own rules hold for digests too: a bad setting is its error, a channel kind it
    // does not render is refused before it runs.
    assert!(matches!(
        card.format_digest(&digest(), "email", &settings(&[("accent", "red")])),
        Err(PluginError::Returned(m)) if m.starts_with("accent must be a colour")
    ));
    assert_eq!(
        card.format_digest(&digest(), "webhook", &settings(&[])),
        Err(PluginError::UnsupportedChannel {
            kind: "webhook".into(),
            supported: "telegram, email".into()
        })
    );
}

#[test]
fn a_declining_plugin_leaves_the_digest_to_herald() {
    let set = set_with("decline", "fixture-digest-decline", 5);
    assert!(set.renders_digests("decline"), "it exports format-digest");
    assert_eq!(
        set.render_digest("decline", "telegram", &digest(), &settings(&[])),
        Ok(None)
    );
    // Echo declines when told to; its log line shows it ran.
    let host = host();
    let echo = load(&host, "fixture-echo").unwrap();
    let render = echo.render_digest(&digest(), "webhook", &settings(&[("digest", "decline")]));
    assert_eq!(render.result, Ok(None));
    assert_eq!(
        render
            .logs
            .iter()
            .map(|l| l.message.as_str())
            .collect::<Vec<_>>(),
        ["rendering digest dlv_digest_1 for webhook"]
    );
    assert_eq!(
        set.render_digest("nope", "webhook", &digest(), &settings(&[])),
        Err(PluginError::Unknown("nope".into()))
    );
}

#[test]
fn a_trap_in_the_digest_call_is_an_error_that_counts_towards_quarantine() {
    let set = set_with("trap", "fixture-digest-trap", 2);
    let err = set
        .render_digest("trap", "webhook", &digest(), &settings(&[]))
        .unwrap_err();
    let PluginError::Trap(message) = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(
        message.starts_with("wasm `unreachable` instruction executed (panicked at "),
        "{message}"
    );
    assert!(
        message.ends_with("digest of 3 events is too much)"),
        "{message}"
    );
    assert!(err.is_plugin_fault());
    // Single events still render: the failure was the digest's.
    let one = set.format("trap", &event(), "webhook", &settings(&[]));
    assert_eq!(rendered(one).body, "trap capsule.create on webhook");
    // Two consecutive failures quarantine it for the team, digests and events alike.
    for _ in 0..2 {
        assert_eq!(
            set.render_digest("trap", "webhook", &digest(), &settings(&[]))
                .unwrap_err()
                .kind(),
            "trap"
        );
    }
    assert!(matches!(
        set.render_digest("trap", "webhook", &digest(), &settings(&[])),
        Err(PluginError::Quarantined { failures: 2, .. })
    ));
    assert!(matches!(
        set.format("trap", &event(), "webhook", &settings(&[])),
        Err(PluginError::Quarantined { .. })
    ));

    // The plugin's own error and bad output are errors as for one event.
    let host = host();
    let echo = load(&host, "fixture-echo").unwrap();
    assert_eq!(
        echo.format_digest(&digest(), "webhook", &settings(&[("digest_fail", "nope")])),
        Err(PluginError::Returned("nope".into()))
    );
}

#[test]
fn the_limits_hold_in_the_digest_call() {
    let host = host();
    let spin = host
        .load("spin", &wasm("fixture-spin"), Limits::default())
        .expect("behaves on the sample digest");
    assert_eq!(
        spin.format_digest(&digest(), "webhook", &settings(&[])),
        Err(PluginError::Timeout {
            timeout: Duration::from_millis(50)
        })
    );
    let bomb = load(&host, "fixture-memory-bomb").unwrap();
    assert_eq!(
        bomb.format_digest(&digest(), "webhook", &settings(&[]))
            .unwrap_err()
            .to_string(),
        "memory limit of 16 MiB exceeded"
    );
    host_still_works(&host);
}
