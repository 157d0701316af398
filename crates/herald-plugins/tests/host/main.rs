//! Host tests against real plugins built from `plugins/` for wasm32-wasip2 (the first
//! test in the process builds them; a missing target fails the test, never skips it).

mod cache;
mod check;
mod digest;
mod examples;
mod guest;
mod hostile;
mod set;

use std::collections::BTreeMap;
use std::path::PathBuf;

use herald_core::{Event, RawEvent, TeamId, Timestamp};
use herald_plugins::{HostOptions, Limits, Plugin, PluginError, PluginHost, PluginOutput, build};

pub fn host() -> PluginHost {
    PluginHost::new(HostOptions::default()).expect("the host starts")
}

pub fn wasm(name: &str) -> PathBuf {
    build::plugin_wasm(name)
}

/// Test limits: the default memory cap, but a generous deadline, so a test machine
/// busy with other work cannot turn a good render into a timeout. Tests about the
/// deadline itself use [`Limits::default`] or their own.
pub fn test_limits() -> Limits {
    Limits {
        timeout: std::time::Duration::from_secs(2),
        ..Limits::default()
    }
}

pub fn load(host: &PluginHost, name: &str) -> Result<Plugin, PluginError> {
    host.load(name, &wasm(name), test_limits())
}

pub fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A realistic failed event, with text that needs escaping in every format.
pub fn event() -> Event {
    event_from(
        r#"{"id":"evt_01JDX8","event":"capsule.create","outcome":"error",
            "timestamp":"2026-11-25T17:30:00Z","team_id":"acme",
            "actor":{"type":"user","id":"usr_42","name":"Ada <ops> & co"},
            "resource":{"id":"cap_9f","type":"capsule"},
            "metadata":{"plan":"pro","region":"eu-west-1"},
            "error":"quota exceeded: 10/10 capsules (see *limits* & `docs`)"}"#,
    )
}

pub fn event_from(json: &str) -> Event {
    RawEvent::from_json(json.as_bytes())
        .expect("valid event JSON")
        .into_event(
            Some(&TeamId::parse("acme").unwrap()),
            Timestamp::parse("2026-11-25T17:30:00Z").unwrap(),
            || "evt_generated".to_string(),
        )
        .expect("valid event")
}

/// The rendered message, or a panic naming what happened instead.
pub fn rendered(out: Result<PluginOutput, PluginError>) -> herald_core::Rendered {
    match out {
        Ok(PluginOutput::Rendered(r)) => r,
        other => panic!("expected a rendered message, got {other:?}"),
    }
}

/// A good plugin renders normally on `host`: whatever happened before is contained.
pub fn host_still_works(host: &PluginHost) {
    let echo = load(host, "fixture-echo").expect("echo loads");
    let r = rendered(echo.format(&event(), "webhook", &settings(&[])));
    assert_eq!(
        r.body,
        "capsule.create failed for acme on webhook [] tag=v1"
    );
}
