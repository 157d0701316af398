//! Configuration loading tests: each mistake `herald check` must catch, with the exact
//! `file:line:col` it must point at, and the example configuration loading as written.

use std::path::{Path, PathBuf};

use super::*;

/// A scratch directory with the given files; removed on drop.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(files: &[(&str, &str)]) -> Files {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("herald-config-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Files { dir }
    }

    fn load(&self) -> LoadOutcome {
        load_with_env(&self.dir.join("herald.toml"), &test_env)
    }

    /// The short rendering, with the scratch directory removed from paths.
    fn short(&self) -> String {
        let prefix = format!("{}/", self.dir.display());
        self.load().diagnostics.render_short().replace(&prefix, "")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "ACME_API_KEY" => Some("acme-key".into()),
        "GLOBEX_API_KEY" => Some("globex-key".into()),
        "HERALD_ADMIN_TOKEN" => Some("admin-token".into()),
        "TELEGRAM_BOT_TOKEN" => Some("123:abc".into()),
        "ACME_WEBHOOK_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

const BASE: &str = r#"[[event_types]]
name = "capsule.create"
[[event_types]]
name = "capsule.destroy"
[[event_types]]
name = "host.down"
[[event_types]]
name = "capsule.state.changed"
transient = true

[teams.acme]
api_keys = ["env:ACME_API_KEY"]

[teams.acme.channels.hook]
type = "file"
path = "out.jsonl"
"#;

/// Loads BASE followed by `extra` and checks the short diagnostics exactly. Lines of
/// `extra` start at line 17.
fn check(extra: &str, expect: &str) {
    let files = Files::new(&[("herald.toml", &format!("{BASE}{extra}"))]);
    let got = files.short();
    assert_eq!(got.trim_end(), expect.trim_end(), "config tail:\n{extra}");
    assert_eq!(files.load().config.is_some(), !got.contains(": error: "));
}

const SUB: &str = "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n";

#[test]
fn valid_base_config_has_no_diagnostics() {
    check(SUB, "");
}

#[test]
fn unknown_top_level_key() {
    check(
        &format!("{SUB}\n[servr]\nlisten = \"x\"\n"),
        "herald.toml:22:2: error: unknown key `servr`; expected one of include, server, store, delivery, telegram, email, plugins, event_types, teams",
    );
}

#[test]
fn unknown_key_in_a_section() {
    check(
        &format!("{SUB}[server]\nlisten = \"127.0.0.1:1\"\nport = 8650\n"),
        "herald.toml:23:1: error: unknown field `port`, expected one of `listen`, `admin_token`, `max_body_bytes`",
    );
}

#[test]
fn unknown_key_in_a_channel() {
    check(
        "[teams.acme.channels.x]\ntype = \"webhook\"\nurl = \"https://example.com/h\"\nretries = 3\n[[teams.acme.subscriptions]]\nchannel = \"x\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
        "herald.toml:20:1: error: unknown field `retries`, expected one of `type`, `url`, `secret`",
    );
}

#[test]
fn unknown_key_in_a_team() {
    check(
        &format!("{SUB}[teams.acme.limits]\nrate = 1\n"),
        "herald.toml:21:13: error: unknown key `limits` in team `acme`; expected one of api_keys, channels, subscriptions, description",
    );
}

#[test]
fn unknown_key_in_a_subscription() {
    check(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nevent = \"host.down\"\n",
        "herald.toml:21:1: error: unknown field `event`, expected one of `name`, `channel`, `events`, `outcome`, `metadata`, `active`, `formatter`, `formatter_settings`",
    );
}

#[test]
fn wrong_value_types() {
    check(
        &format!("{SUB}[delivery]\ntimeout = 15\nallow_private_networks = \"no\"\n"),
        "herald.toml:22:11: error: invalid type: integer `15`, expected a string\nherald.toml:23:26: error: invalid type: string \"no\", expected a boolean",
    );
    check(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = \"*\"\n",
        "herald.toml:20:10: error: invalid type: string \"*\", expected a sequence",
    );
}

#[test]
fn unknown_channel_in_a_subscription() {
    check(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hok\"\nevents = [\"*\"]\n",
        "herald.toml:19:11: error: unknown channel `hok`: team `acme` declares no such channel (it has: hook)\nherald.toml:14:22: warning: channel `hook` of team `acme` has no subscription: nothing will be sent to it"
            .split('\n').rev().collect::<Vec<_>>().join("\n").as_str(),
    );
}

#[test]
fn subscribing_to_transient_or_undeclared_types() {
    check(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.state.changed\", \"host.up\", \"ui.*\"]\n",
        "herald.toml:20:11: error: event type `capsule.state.changed` is transient: it goes to the live stream only and cannot be subscribed to\n\
         herald.toml:20:36: error: event type `host.up` is not declared; add it under [[event_types]]\n\
         herald.toml:20:47: error: pattern `ui.*` matches no declared durable event type",
    );
}

#[test]
fn invalid_patterns() {
    check(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.*.x\", \"\", \"**\"]\n",
        "herald.toml:20:11: error: invalid pattern `capsule.*.x`: `*` must be a whole segment and the last one: `*`, or `capsule.*`\n\
         herald.toml:20:26: error: invalid pattern ``: a pattern must not be empty; use `*` for every type\n\
         herald.toml:20:30: error: invalid pattern `**`: `*` must be a whole segment and the last one: `*`, or `capsule.*`",
    );
}

#[test]
fn missing_environment_variable() {
    check(
        &format!("{SUB}[server]\nadmin_token = \"env:NOT_SET_ANYWHERE\"\n"),
        "herald.toml:22:15: error: environment variable `NOT_SET_ANYWHERE` (the admin token) is not set",
    );
    check(
        &format!("{SUB}[server]\nadmin_token = \"env:EMPTY\"\n"),
        "herald.toml:22:15: error: environment variable `EMPTY` (the admin token) is empty",
    );
}

#[test]
fn the_same_api_key_in_two_teams() {
    check(
        &format!("{SUB}[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n"),
        "herald.toml:22:13: error: this API key is already used by team `acme` (at herald.toml:12:13); each key must belong to one team",
    );
}

#[test]
fn the_same_api_key_across_included_files() {
    let files = Files::new(&[
        (
            "herald.toml",
            &format!("include = [\"teams/*.toml\"]\n{BASE}{SUB}"),
        ),
        (
            "teams/globex.toml",
            "[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n",
        ),
    ]);
    assert_eq!(
        files.short().trim_end(),
        "teams/globex.toml:2:13: error: this API key is already used by team `acme` (at herald.toml:13:13); each key must belong to one team"
    );
}

#[test]
fn a_channel_nothing_subscribes_to_is_a_warning() {
    let files = Files::new(&[("herald.toml", BASE)]);
    assert_eq!(
        files.short().trim_end(),
        "herald.toml:14:22: warning: channel `hook` of team `acme` has no subscription: nothing will be sent to it"
    );
    assert!(
        files.load().config.is_some(),
        "a warning does not make the config invalid"
    );
}

#[test]
fn invalid_toml_syntax() {
    check(
        "[teams.acme.channels.bad\n",
        "herald.toml:17:25: error: invalid TOML: unclosed table, expected `]`",
    );
}

#[test]
fn other_mistakes() {
    check(
        &format!("{SUB}[[event_types]]\nname = \"host.down\"\n"),
        "herald.toml:22:8: error: event type `host.down` is declared twice (first at herald.toml:6:8)",
    );
    check(
        &format!("{SUB}[server]\nlisten = \"localhost\"\n"),
        "herald.toml:22:10: error: invalid listen address `localhost`: write IP:PORT, e.g. \"127.0.0.1:8650\"",
    );
    check(
        &format!("{SUB}[delivery]\nretry_schedule = [\"5s\", \"soon\"]\n"),
        "herald.toml:22:25: error: invalid retry delay `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
    );
    check(
        "[teams.acme.channels.tg]\ntype = \"telegram\"\nchat_id = 1\n[[teams.acme.subscriptions]]\nchannel = \"tg\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
        "herald.toml:17:22: error: channel `tg` is a telegram channel, but there is no [telegram] section with a bot_token",
    );
    check(
        "[teams.acme.channels.h2]\ntype = \"webhook\"\nurl = \"ftp://example.com\"\nsecret = \"not-a-whsec\"\n[[teams.acme.subscriptions]]\nchannel = \"h2\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
        "herald.toml:19:7: error: webhook url must be http or https, not `ftp`\nherald.toml:20:10: error: webhook secret must start with `whsec_` (Standard Webhooks format)",
    );
    check(
        "[teams.acme.channels.x]\ntype = \"pager\"\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
        "herald.toml:17:22: warning: channel `x` of team `acme` has no subscription: nothing will be sent to it\n\
         herald.toml:18:8: error: unknown channel type `pager`; expected one of webhook, telegram, email, file",
    );
    check(
        &format!(
            "{SUB}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\n"
        ),
        "herald.toml:24:13: error: formatter `slack` is not a configured plugin; declare it under [plugins.slack] with a path",
    );
}

const PLUGIN: &str = "[plugins.slack]\npath = \"plugins/slack.wasm\"\n";

#[test]
fn plugins_and_formatters_resolve() {
    let extra = format!(
        "{PLUGIN}timeout = \"20ms\"\nmemory_limit = \"32MiB\"\nsettings = {{ channel = \"#ops\", max = 3, compact = true }}\n\
         [plugins.card]\npath = \"/abs/card.wasm\"\n\
         [[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\nformatter_settings = {{ channel = \"#alerts\", extra = 1.5 }}\n\
         [[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"card\"\n"
    );
    check(&extra, "");
    let files = Files::new(&[("herald.toml", &format!("{BASE}{extra}"))]);
    let config = files.load().config.unwrap();
    let slack = &config.plugins["slack"];
    assert_eq!(slack.path, files.dir.join("plugins/slack.wasm"));
    assert_eq!(slack.timeout, Duration::from_millis(20));
    assert_eq!(slack.memory_limit, 32 * 1024 * 1024);
    let card = &config.plugins["card"];
    assert_eq!(card.path, Path::new("/abs/card.wasm"));
    assert_eq!(card.timeout, DEFAULT_PLUGIN_TIMEOUT);
    assert_eq!(card.memory_limit, DEFAULT_PLUGIN_MEMORY_LIMIT);
    assert!(card.settings.is_empty());
    assert_eq!(
        files
            .load()
            .diagnostics
            .locate(&Diagnostic::error("", Some(slack.location.clone()))),
        format!("{}:18:8", files.dir.join("herald.toml").display())
    );

    let subs = config.matcher.subscriptions();
    let (plugin, settings) = config
        .formatter(&subs[0])
        .expect("slack formats subscription 0");
    assert_eq!(plugin.name, "slack");
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // The subscription's settings override the plugin's, key by key.
    assert_eq!(
        settings,
        [
            ("channel", "#alerts"),
            ("compact", "true"),
            ("extra", "1.5"),
            ("max", "3")
        ]
    );
    let (plugin, settings) = config.formatter(&subs[1]).unwrap();
    assert_eq!((plugin.name.as_str(), settings.len()), ("card", 0));
}

#[test]
fn plugin_mistakes() {
    check(
        &format!("{PLUGIN}fuel = 1\n{SUB}"),
        "herald.toml:19:1: error: unknown field `fuel`, expected one of `path`, `timeout`, `memory_limit`, `settings`",
    );
    check(
        &format!("[plugins.slack]\ntimeout = \"10ms\"\n{SUB}"),
        "herald.toml:17:1: error: missing field `path`",
    );
    check(
        &format!("{PLUGIN}timeout = \"10s\"\n{SUB}"),
        "herald.toml:19:11: error: plugin timeout must be between 1ms and 5s",
    );
    check(
        &format!("{PLUGIN}timeout = \"soon\"\n{SUB}"),
        "herald.toml:19:11: error: invalid plugin timeout `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
    );
    check(
        &format!("{PLUGIN}memory_limit = \"16 MB\"\n{SUB}"),
        "herald.toml:19:16: error: invalid memory_limit `16 MB`: write e.g. \"16MiB\", \"512KiB\" or a number of bytes",
    );
    check(
        &format!("{PLUGIN}memory_limit = \"1GiB\"\n{SUB}"),
        "herald.toml:19:16: error: memory_limit must be between 1MiB and 256MiB",
    );
    check(&format!("{PLUGIN}memory_limit = 1048576\n{SUB}"), "");
    check(
        &format!("{PLUGIN}settings = {{ ok = \"x\", nested = {{ a = 1 }}, list = [1] }}\n{SUB}"),
        "herald.toml:19:33: error: setting `nested` must be a string, number or boolean, not table\n\
         herald.toml:19:51: error: setting `list` must be a string, number or boolean, not array",
    );
    check(
        &format!("[plugins.\"no spaces\"]\npath = \"x.wasm\"\n{SUB}"),
        "herald.toml:17:10: error: invalid plugin name `no spaces`: use 1–64 letters, digits, `_` and `-`",
    );
    check(
        &format!(
            "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slak\"\n"
        ),
        "herald.toml:22:13: error: formatter `slak` is not a configured plugin (configured: slack)",
    );
    check(
        &format!(
            "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter_settings = {{ a = \"b\" }}\n"
        ),
        "herald.toml:22:22: error: formatter_settings needs a formatter: add formatter = \"PLUGIN\"",
    );
    check(
        &format!(
            "{PLUGIN}[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\nformatter_settings = {{ a = [] }}\n"
        ),
        "herald.toml:23:28: error: setting `a` must be a string, number or boolean, not array",
    );
    // A broken plugin is reported once, not again by every subscription that uses it.
    check(
        &format!(
            "{PLUGIN}timeout = \"1h\"\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"slack\"\n"
        ),
        "herald.toml:19:11: error: plugin timeout must be between 1ms and 5s",
    );
}

#[test]
fn plugins_belong_in_the_main_file() {
    let files = Files::new(&[
        (
            "herald.toml",
            &format!("include = [\"teams/*.toml\"]\n{BASE}{SUB}"),
        ),
        ("teams/p.toml", "[plugins.x]\npath = \"x.wasm\"\n"),
    ]);
    assert_eq!(
        files.short().trim_end(),
        "teams/p.toml:1:2: error: `plugins` may only be set in the main configuration file"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let files = Files::new(&[(
        "herald.toml",
        &format!(
            "{BASE}[server]\ncolour = 1\n[delivery]\ntimeout = 1\n\n[[teams.acme.subscriptions]]\nchannel = \"nope\"\nevents = [\"**\"]\noutcome = \"failed\"\n"
        ),
    )]);
    let out = files.short();
    assert_eq!(out.matches(": error: ").count(), 5, "{out}");
    for needle in [
        "unknown field `colour`",
        "expected a string",
        "unknown channel `nope`",
        "invalid pattern `**`",
        "unknown variant `failed`",
    ] {
        assert!(out.contains(needle), "missing {needle} in\n{out}");
    }
}

#[test]
fn secrets_never_appear_in_diagnostics() {
    let files = Files::new(&[(
        "herald.toml",
        &format!(
            "{BASE}{SUB}[teams.globex]\napi_keys = [\"env:ACME_API_KEY\"]\n[teams.globex.channels.w]\ntype = \"webhook\"\nurl = \"https://e.com\"\nsecret = \"env:ACME_API_KEY\"\n"
        ),
    )]);
    let outcome = files.load();
    assert!(outcome.diagnostics.has_errors());
    let rendered = outcome.diagnostics.render(false) + &outcome.diagnostics.render_short();
    assert!(!rendered.contains("acme-key"), "{rendered}");
}

#[test]
fn the_example_configuration_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/herald.toml");
    let outcome = load_with_env(&path, &test_env);
    assert_eq!(outcome.diagnostics.render_short(), "");
    let config = outcome.config.expect("example config is valid");
    let acme = TeamId::parse("acme").unwrap();
    let globex = TeamId::parse("globex").unwrap();
    assert_eq!(config.team_for_key("acme-key"), Some(&acme));
    assert_eq!(config.team_for_key("globex-key"), Some(&globex));
    assert_eq!(config.team_for_key("nobody"), None);
    assert_eq!(config.teams[&acme].channels.len(), 4);
    assert_eq!(
        config.matcher.registry().kind("capsule.state.changed"),
        Some(EventKind::Transient)
    );
    assert_eq!(config.delivery.retry_schedule.len(), 7);
    assert_eq!(config.server.listen.port(), 8650);
    assert!(config.store.path.ends_with("config/data"));
}
