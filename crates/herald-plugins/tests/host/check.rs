//! `herald check`'s plugin validation: every configured plugin loaded as the server
//! would, and each subscription's channel kind checked against its plugin.

use herald_plugins::{check_config, host_options_for, specs_from_config};

use super::*;

#[test]
fn check_config_loads_every_plugin_and_checks_channel_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"[telegram]
bot_token = "1:test"

[plugins.card]
path = "{card}"
[plugins.slack]
path = "{slack}"
timeout = "20ms"
[plugins.gone]
path = "gone.wasm"

[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["k"]
[teams.acme.channels.tg]
type = "telegram"
chat_id = 1
[teams.acme.channels.hook]
type = "webhook"
url = "https://hooks.example.com/x"

[[teams.acme.subscriptions]]
channel = "tg"
events = ["*"]
formatter = "card"
[[teams.acme.subscriptions]]
channel = "hook"
events = ["*"]
formatter = "slack"
[[teams.acme.subscriptions]]
channel = "tg"
events = ["*"]
formatter = "slack"
[[teams.acme.subscriptions]]
channel = "hook"
events = ["*"]
formatter = "gone"
"#,
        card = wasm("card").display(),
        slack = wasm("slack").display(),
    );
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, config).unwrap();
    let outcome = herald_config::load_with_env(&path, &|_| None);
    let config = outcome
        .config
        .unwrap_or_else(|| panic!("{}", outcome.diagnostics));

    let specs = specs_from_config(&config);
    assert_eq!(specs.len(), 3);
    let slack = specs.iter().find(|s| s.name == "slack").unwrap();
    assert_eq!(slack.limits.timeout, std::time::Duration::from_millis(20));
    assert_eq!(
        host_options_for(&config).cache_dir,
        Some(dir.path().join("data/plugin-cache"))
    );

    let checks = check_config(&config, &host());
    let order: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["card", "slack", "gone"], "in configuration order");
    let verdict = |name: &str| {
        let check = checks.iter().find(|c| c.name == name).unwrap();
        let at = outcome.diagnostics.locate(&herald_config::Diagnostic {
            severity: herald_config::Severity::Error,
            message: String::new(),
            location: Some(check.location.clone()),
            label: None,
            help: None,
        });
        let at = at.rsplit('/').next().unwrap().to_string();
        match &check.result {
            Ok(info) => format!("{at}: ok {} {}", info.name, info.version),
            Err(e) => format!("{at}: {e}"),
        }
    };
    assert_eq!(verdict("card"), "herald.toml:5:8: ok card 0.1.0");
    let interface = |name: &str| checks.iter().find(|c| c.name == name).unwrap().interface;
    assert_eq!(interface("card"), Some(herald_plugins::Interface::V0_2));
    assert_eq!(interface("gone"), None);
    assert_eq!(
        verdict("slack"),
        "herald.toml:7:8: subscription acme.subscriptions[2] uses it for channel `tg`, a telegram channel, but it renders only for: webhook"
    );
    assert!(
        verdict("gone").starts_with("herald.toml:10:8: cannot read "),
        "{}",
        verdict("gone")
    );
}
