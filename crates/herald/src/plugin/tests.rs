//! `herald plugin test` output, with real plugins from plugins/ (built for
//! wasm32-wasip2 by the first test that needs them).

use std::collections::BTreeMap;
use std::time::Duration;

use herald_plugins::{HostOptions, Limits, PluginHost, build};

use super::*;

fn render(plugin: &str, channel: &str, settings: &[(&str, &str)]) -> String {
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let plugin = host
        // A generous deadline: a busy test machine must not turn this into a timeout.
        .load(
            plugin,
            &build::plugin_wasm(plugin),
            Limits {
                timeout: Duration::from_secs(2),
                ..Limits::default()
            },
        )
        .unwrap();
    let event = RawEvent::from_json(
        br#"{"id":"evt_1","event":"host.down","timestamp":"2026-11-25T17:30:00Z","team_id":"acme","error":"no heartbeat for 90s"}"#,
    )
    .unwrap()
    .into_event(None, Timestamp::from_unix_nanos(0), String::new)
    .unwrap();
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut render = plugin.render(&event, channel, &settings);
    render.elapsed = Duration::from_micros(42);
    let (text, ok) = report(&render, channel);
    format!("ok={ok}\n{text}")
}

#[test]
fn a_rendered_message_with_its_log() {
    insta::assert_snapshot!(render("fixture-echo", "telegram", &[("tag", "x")]), @r"
    ok=true
    rendered: for telegram in 42µs
    format:   text
    subject:  subject: host.down
    --- body (44 bytes) ---
    host.down for acme on telegram [tag=x] tag=x
    --- log (1 lines) ---
    info  rendering evt_1 for telegram
    ");
}

#[test]
fn an_email_with_a_text_alternative() {
    let out = render("card", "email", &[]);
    assert!(out.starts_with("ok=true\nrendered: for email in 42µs\nformat:   html\nsubject:  [acme] host.down\n--- body ("), "{out}");
    assert!(out.contains("--- text alternative ("), "{out}");
    assert!(out.ends_with("--- log: none ---\n"), "{out}");
}

#[test]
fn skips_and_failures_are_said_plainly() {
    insta::assert_snapshot!(render("fixture-echo", "webhook", &[("skip", "not today")]), @r"
    ok=true
    skipped:  for webhook in 42µs: not today
    --- log (1 lines) ---
    info  rendering evt_1 for webhook
    ");
    insta::assert_snapshot!(render("slack", "telegram", &[]), @r"
    ok=false
    FAILED:   for telegram after 42µs: does not render for `telegram` channels (it supports: webhook)
              (herald would deliver with its built-in formatter and record this error)
    --- log: none ---
    ");
}

fn render_digest(plugin: &str, count: u16, settings: &[(&str, &str)]) -> String {
    let host = PluginHost::new(HostOptions::default()).unwrap();
    let plugin = host
        .load(
            plugin,
            &build::plugin_wasm(plugin),
            Limits {
                timeout: Duration::from_secs(2),
                ..Limits::default()
            },
        )
        .unwrap();
    let event = RawEvent::from_json(
        br#"{"id":"evt_1","event":"host.down","timestamp":"2026-11-25T17:30:00Z","team_id":"acme"}"#,
    )
    .unwrap()
    .into_event(None, Timestamp::from_unix_nanos(0), String::new)
    .unwrap();
    let settings: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let digest = digest_of(&event, count, "webhook");
    let mut render = plugin.render_digest(&digest, "webhook", &settings);
    render.elapsed = Duration::from_micros(42);
    let (text, ok) = report_digest(&render, "webhook");
    format!("ok={ok}\n{text}")
}

#[test]
fn a_digest_rendered_declined_or_failed() {
    insta::assert_snapshot!(render_digest("fixture-echo", 2, &[]), @r"
    ok=true
    rendered: for webhook in 42µs
    format:   text
    subject:  digest: 2 × host.down
    --- body (123 bytes) ---
    digest dlv_test: 2 × host.down for acme on webhook [evt_1-1,evt_1-2] +0 more, 2026-11-25T17:30:00Z to 2026-11-25T17:30:00Z
    --- log (1 lines) ---
    info  rendering digest dlv_test for webhook
    ");
    insta::assert_snapshot!(render_digest("fixture-v0-1", 1, &[]), @r"
    ok=true
    declined: for webhook in 42µs: herald would render its built-in digest
    --- log: none ---
    ");
    insta::assert_snapshot!(render_digest("fixture-echo", 1, &[("digest_fail", "no")]), @r"
    ok=false
    FAILED:   for webhook after 42µs: plugin error: no
              (herald would deliver with its built-in digest and record this error)
    --- log (1 lines) ---
    info  rendering digest dlv_test for webhook
    ");
}

#[test]
fn settings_and_durations_parse() {
    assert_eq!(parse_setting("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert!(parse_setting("=x").is_err());
    assert!(parse_setting("novalue").is_err());
    assert_eq!(humantime_duration("50ms"), Ok(Duration::from_millis(50)));
    assert_eq!(humantime_duration("2s"), Ok(Duration::from_secs(2)));
    assert!(humantime_duration("fast").is_err());
}
