//! `herald check` and `herald explain` as a user runs them.

use crate::support::*;

#[test]
fn check_accepts_the_example_configuration() {
    let mut cmd = herald();
    cmd.arg("check")
        .arg(repo().join("config/herald.toml"))
        .envs(EXAMPLE_ENV.iter().copied());
    let out = run(cmd, "");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok — 2 teams, 5 channels, 5 subscriptions, 4 event types"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_reports_every_mistake_with_its_location_and_exits_1() {
    let s = Scratch::new("check-mistakes");
    s.write(
        "herald.toml",
        r#"include = ["teams/*.toml"]
[server]
listen = "127.0.0.1:8650"
colour = "blue"
admin_token = "env:HERALD_E2E_UNSET"

[[event_types]]
name = "capsule.create"
[[event_types]]
name = "capsule.state.changed"
transient = true

[teams.acme]
api_keys = ["shared-key"]

[teams.acme.channels.hook]
type = "webhook"
url = "https://hooks.example.com/h"

[teams.acme.channels.idle]
type = "file"
path = "idle.jsonl"

[[teams.acme.subscriptions]]
channel = "hok"
events = ["capsule.create"]

[[teams.acme.subscriptions]]
channel = "hook"
events = ["capsule.state.changed", "host.down", "capsule.*.x", "", "**"]
active = "yes"
"#,
    );
    s.write(
        "teams/globex.toml",
        "[teams.globex]\napi_keys = [\"shared-key\"]\n",
    );
    let mut cmd = herald();
    cmd.current_dir(&s.dir)
        .args(["check", "herald.toml", "--format", "short"]);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let expected = [
        "herald.toml:4:1: error: unknown field `colour`",
        "herald.toml:5:15: error: environment variable `HERALD_E2E_UNSET` (the admin token) is not set",
        "herald.toml:20:22: warning: channel `idle` of team `acme` has no subscription",
        "herald.toml:25:11: error: unknown channel `hok`: team `acme` declares no such channel (it has: hook, idle)",
        "herald.toml:30:11: error: event type `capsule.state.changed` is transient",
        "herald.toml:30:36: error: event type `host.down` is not declared",
        "herald.toml:30:49: error: invalid pattern `capsule.*.x`",
        "herald.toml:30:64: error: invalid pattern ``",
        "herald.toml:30:68: error: invalid pattern `**`",
        "herald.toml:31:10: error: invalid type: string \"yes\", expected a boolean",
        "teams/globex.toml:2:13: error: this API key is already used by team `acme` (at herald.toml:14:13)",
    ];
    for line in expected {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "missing `{line}` in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("herald.toml: 10 error(s), 1 warning(s)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("shared-key"),
        "a secret was printed:\n{stderr}"
    );

    // The default, human format shows the source line under each location.
    let mut cmd = herald();
    cmd.current_dir(&s.dir)
        .args(["check", "--config", "herald.toml"]);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("herald.toml:25:11: unknown channel `hok`"),
        "{stderr}"
    );
    assert!(stderr.contains("channel = \"hok\""), "{stderr}");
}

/// Grouping and throttle keys (issue 11): each mistake at its value, in whichever file it
/// is, and the keys of a valid subscription explained with the event's group.
#[test]
fn check_points_at_grouping_and_throttle_mistakes_and_explain_shows_the_group() {
    let s = Scratch::new("check-grouping");
    s.write(
        "herald.toml",
        r#"include = ["teams/*.toml"]
[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["acme-key"]

[teams.acme.channels.hook]
type = "webhook"
url = "https://hooks.example.com/h"
throttle = "30 a minute"

[[teams.acme.subscriptions]]
channel = "hook"
events = ["capsule.create"]
group_by = ["event", "region", "event"]
group_wait = "2m"
group_interval = "1m"
max_group_size = 5000
throttle = "10/1m"
"#,
    );
    s.write(
        "teams/globex.toml",
        "[teams.globex]\napi_keys = [\"globex-key\"]\n[teams.globex.channels.f]\ntype = \"file\"\npath = \"f.jsonl\"\n[[teams.globex.subscriptions]]\nchannel = \"f\"\nevents = [\"*\"]\ngroup_wait = \"forever\"\nthrottle = \"0/1m\"\n",
    );
    let mut cmd = herald();
    cmd.current_dir(&s.dir)
        .args(["check", "herald.toml", "--format", "short"]);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let expected = [
        "herald.toml:11:12: error: malformed throttle `30 a minute`; expected COUNT/DURATION",
        "herald.toml:16:22: error: unknown group_by field `region`; expected one of event, outcome,",
        "herald.toml:16:32: error: group_by field `event` is listed twice",
        "herald.toml:18:18: error: group_interval `1m` is shorter than group_wait `2m`",
        "herald.toml:19:18: error: max_group_size `5000` is out of range",
        "herald.toml:20:12: error: throttle does not apply to a grouped subscription: its group_interval already limits how often it sends",
        "teams/globex.toml:9:14: error: invalid group_wait `forever`",
        "teams/globex.toml:10:12: error: throttle `0/1m` allows no message at all",
    ];
    for line in expected {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "missing `{line}` in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("herald.toml: 8 error(s), 0 warning(s)"),
        "{stderr}"
    );

    // The example configuration groups its oncall subscription: explain names the group.
    let mut cmd = herald();
    cmd.args(["explain", "--json", "--event", "-", "--config"])
        .arg(repo().join("config/herald.toml"))
        .envs(EXAMPLE_ENV.iter().copied());
    let out = run(
        cmd,
        r#"{"event": "capsule.create", "outcome": "error", "team_id": "acme",
            "resource": {"type": "sandbox", "id": "sb_1"}, "metadata": {"region": "eu"}}"#,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let oncall = json["noise"]
        .as_array()
        .and_then(|all| all.iter().find(|n| n["channel"] == "oncall"))
        .unwrap_or_else(|| panic!("no oncall in {json:#}"));
    assert_eq!(oncall["group"]["key"], r#"["capsule.create","sandbox"]"#);
    assert_eq!(oncall["group"]["wait"], "30s");
    assert_eq!(
        oncall.get("throttle"),
        None,
        "a grouped subscription is not throttled"
    );
}

#[test]
fn check_fails_clearly_on_a_missing_file() {
    let mut cmd = herald();
    cmd.args(["check", "/nonexistent/herald.toml", "--format", "short"]);
    let out = run(cmd, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/herald.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_reads_the_event_from_stdin_and_a_file() {
    let event = r#"{"event": "capsule.create", "outcome": "error", "team_id": "acme", "metadata": {"region": "us"}}"#;
    let mut cmd = herald();
    cmd.args(["explain", "--event", "-", "--config"])
        .arg(repo().join("config/herald.toml"))
        .envs(EXAMPLE_ENV.iter().copied());
    let out = run(cmd, event);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("✗ acme.subscriptions[1] → oncall (telegram): does not match"),
        "{stdout}"
    );
    assert!(
        stdout.contains("- metadata `region` is `us`, wants `eu`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 of 4 subscriptions match; delivered to: ops-hook, audit"),
        "{stdout}"
    );

    let s = Scratch::new("explain-file");
    let path = s.write("event.json", r#"{"event": "host.down"}"#);
    let mut cmd = herald();
    cmd.args(["explain", "--json", "--team", "globex", "--event"])
        .arg(&path)
        .arg("--config")
        .arg(repo().join("config/herald.toml"))
        .envs(EXAMPLE_ENV.iter().copied());
    let out = run(cmd, "");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(json["team"], "globex");
    assert_eq!(json["verdicts"][0]["matched"], true);
}

#[test]
fn explain_rejects_an_invalid_event_naming_the_field() {
    let mut cmd = herald();
    cmd.args(["explain", "--event", "-", "--config"])
        .arg(repo().join("config/herald.toml"))
        .envs(EXAMPLE_ENV.iter().copied());
    let out = run(
        cmd,
        r#"{"event": "host.down", "team_id": "acme", "actor": {"type": "robot"}}"#,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("actor.type: unknown variant `robot`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_names_the_interface_each_plugin_targets() {
    let s = Scratch::new("check-plugins");
    let path = |crate_name: &str| {
        herald_plugins::build::plugin_wasm(crate_name)
            .display()
            .to_string()
    };
    s.write(
        "herald.toml",
        &format!(
            r#"[plugins.card]
path = "{}"
[plugins.legacy]
path = "{}"

[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["acme-key"]

[teams.acme.channels.audit]
type = "file"
path = "audit.jsonl"

[[teams.acme.subscriptions]]
channel = "audit"
events = ["capsule.create"]
formatter = "legacy"
"#,
            path("card"),
            path("fixture-v0-1")
        ),
    );
    let mut cmd = herald();
    cmd.current_dir(&s.dir)
        .args(["check", "--config", "herald.toml"]);
    let out = run(cmd, "");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "\n  plugin card: card 0.1.0, herald:formatter@0.2.0 (renders digests)\n  plugin legacy: v0-1 0.1.0, herald:formatter@0.1.0 (herald renders its digests)\n"
        ),
        "{stdout}"
    );
}

/// `herald explain` previews a digest the way the server renders it: by the subscription's
/// formatter when it renders digests, else by the built-in digest, saying why.
#[test]
fn explain_previews_digests_by_the_formatter_that_renders_them_else_built_in() {
    let s = Scratch::new("explain-digest-plugins");
    let path = |crate_name: &str| {
        herald_plugins::build::plugin_wasm(crate_name)
            .display()
            .to_string()
    };
    s.write(
        "herald.toml",
        &format!(
            r#"[plugins.echo]
path = "{}"
settings = {{ format = "json" }}
[plugins.legacy]
path = "{}"

[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["acme-key"]

[teams.acme.channels.modern]
type = "webhook"
url = "https://hooks.example.com/modern"

[teams.acme.channels.old]
type = "webhook"
url = "https://hooks.example.com/old"

[[teams.acme.subscriptions]]
channel = "modern"
events = ["capsule.create"]
formatter = "echo"
group_by = ["metadata.region"]

[[teams.acme.subscriptions]]
channel = "old"
events = ["capsule.create"]
formatter = "legacy"
group_by = ["metadata.region"]
"#,
            path("fixture-echo"),
            path("fixture-v0-1")
        ),
    );
    let mut cmd = herald();
    cmd.current_dir(&s.dir).args([
        "explain",
        "--json",
        "--event",
        "-",
        "--config",
        "herald.toml",
    ]);
    let out = run(
        cmd,
        r#"{"id": "evt_d1", "event": "capsule.create", "team_id": "acme", "metadata": {"region": "eu"}}"#,
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let preview = |channel: &str| {
        json["digest_renderings"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["channel"] == channel))
            .cloned()
            .unwrap_or_else(|| panic!("no digest preview for {channel} in {json:#}"))
    };

    // A 0.2.0 formatter renders it: echo's JSON names the digest and lists the event.
    let modern = preview("modern");
    assert_eq!(modern["formatter"], "echo", "{modern:#}");
    assert_eq!(modern.get("fallback"), None, "{modern:#}");
    let body: serde_json::Value =
        serde_json::from_str(modern["parts"][0].as_str().expect("a body")).expect("echo's JSON");
    assert_eq!(body["digest"], "dlv_preview", "{body:#}");
    assert_eq!(body["total"], 1, "{body:#}");
    assert_eq!(body["events"], serde_json::json!(["evt_d1"]), "{body:#}");
    assert_eq!(
        body["headline"],
        "1 × capsule.create (metadata.region = eu)"
    );

    // A 0.1.0 formatter cannot: the built-in digest is shown, and the preview says why.
    let old = preview("old");
    assert_eq!(old.get("formatter"), None, "{old:#}");
    let why = old["fallback"].as_str().expect("a fallback reason");
    assert!(
        why.contains("formatter `legacy` does not render digests"),
        "{why}"
    );
    let body: serde_json::Value =
        serde_json::from_str(old["parts"][0].as_str().expect("a body")).expect("the built-in JSON");
    assert_eq!(body["type"], "herald.digest", "{body:#}");
    assert_eq!(body["events"][0]["id"], "evt_d1", "{body:#}");
}
