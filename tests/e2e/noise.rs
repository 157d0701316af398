//! Noise control end to end: repeat suppression (`dedup_window`) and silences, against
//! real webhook receivers; suppressed and silenced deliveries are recorded, never sent.
//! No timing is asserted: a window or silence that must have ended is waited for by
//! publishing until herald sends again, and only the order of what happened is checked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use herald_core::Timestamp;
use serde_json::{Value, json};

use crate::harness::*;
use crate::support::{herald as herald_command, run};

/// Now plus `secs` (negative for the past), as RFC 3339.
fn time_from_now(secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let nanos = now.as_nanos() as i128 + i128::from(secs) * 1_000_000_000;
    Timestamp::from_unix_nanos(nanos).to_string()
}

fn create_silence(herald: &Herald, key: &str, body: &Value) -> crate::harness::ApiReply {
    herald.client().request(
        Method::POST,
        "/v1/silences",
        Some(key),
        Some(("application/json", body.to_string().into_bytes())),
    )
}

/// The only delivery of event `id` once it is no longer pending.
fn settled(herald: &Herald, id: &str) -> Value {
    herald.wait_deliveries(id, ACME_KEY, "one delivery, settled", |d| {
        d.len() == 1 && d[0]["status"] != "pending"
    })[0]
        .clone()
}

/// The deliveries of `status` (newest first), as `GET /v1/deliveries?status=` lists them.
fn listed(herald: &Herald, status: &str, key: &str) -> Vec<Value> {
    herald
        .get(&format!("/v1/deliveries?status={status}"), key)
        .expect(200)["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Publishes `make(n)` for n = 0, 1, … until its delivery to the channel is sent rather
/// than stopped with `stopped` (a window or a silence ended); returns how many were
/// stopped before that, with their deliveries.
fn publish_until_sent(herald: &Herald, stopped: &str, make: impl Fn(usize) -> Value) -> Vec<Value> {
    let mut before = Vec::new();
    for n in 0.. {
        let event = make(n);
        herald.post(&event, ACME_KEY).expect(202);
        let delivery = settled(herald, event["id"].as_str().unwrap());
        if delivery["status"] == stopped {
            before.push(delivery);
            assert!(n < 400, "still {stopped} after {n} events");
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        return before;
    }
    unreachable!()
}

const DEDUP: &str = r#"
[[teams.acme.subscriptions]]
channel = "hook"
events = ["capsule.*"]
dedup_window = "WINDOW"
dedup_key = ["event", "resource.id"]
"#;

fn failure(id: &str, resource: &str) -> Value {
    json!({"id": id, "event": "capsule.create", "outcome": "error",
           "resource": {"type": "sandbox", "id": resource}})
}

#[test]
fn dedup_suppresses_repeats_inside_the_window_and_not_after() {
    let rx = Receiver::start("hook");
    let herald = Herald::start(
        "noise-dedup",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .raw(&DEDUP.replace("WINDOW", "2s")),
    );
    herald.post(&failure("e1", "sb_1"), ACME_KEY).expect(202);
    let first = settled(&herald, "e1");
    assert_eq!(first["status"], "succeeded");
    // The same key at once: recorded, not sent, naming the delivery it repeats.
    herald.post(&failure("e2", "sb_1"), ACME_KEY).expect(202);
    let repeat = settled(&herald, "e2");
    assert_eq!(
        (&repeat["status"], &repeat["duplicate_of"]),
        (&json!("suppressed"), &first["id"])
    );
    // Another key is another message.
    herald.post(&failure("e3", "sb_2"), ACME_KEY).expect(202);
    assert_eq!(settled(&herald, "e3")["status"], "succeeded");
    // After the window the key is sent again (every repeat before that was suppressed as
    // a duplicate of the first), and that one opens the next window.
    let suppressed = publish_until_sent(&herald, "suppressed", |n| {
        failure(&format!("e4_{n}"), "sb_1")
    });
    for d in &suppressed {
        assert_eq!(d["duplicate_of"], first["id"], "{d}");
    }
    let n = suppressed.len();
    let reopened = settled(&herald, &format!("e4_{n}"));
    herald.post(&failure("e5", "sb_1"), ACME_KEY).expect(202);
    assert_eq!(settled(&herald, "e5")["duplicate_of"], reopened["id"]);

    let sent: Vec<String> = rx.wait_for(3, WAIT).iter().map(Request::event_id).collect();
    assert_eq!(sent, ["e1", "e3", &format!("e4_{n}")]);
    rx.assert_stays(3, QUIET);
    // The suppressed ones are listed under their status, the team's only.
    let listed_ids: Vec<String> = listed(&herald, "suppressed", ACME_KEY)
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_ids.len(), n + 2, "{listed_ids:?}");
    assert_eq!(listed_ids[0], "e5");
    assert!(listed(&herald, "suppressed", GLOBEX_KEY).is_empty());
}

#[test]
fn a_dedup_window_survives_a_restart() {
    let rx = Receiver::start("hook");
    let mut herald = Herald::start(
        "noise-dedup-restart",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .raw(&DEDUP.replace("WINDOW", "1h")),
    );
    herald.post(&failure("e1", "sb_1"), ACME_KEY).expect(202);
    let first = settled(&herald, "e1");
    herald.restart();
    herald.post(&failure("e2", "sb_1"), ACME_KEY).expect(202);
    let repeat = settled(&herald, "e2");
    assert_eq!(
        (&repeat["status"], &repeat["duplicate_of"]),
        (&json!("suppressed"), &first["id"])
    );
    // Concurrent repeats of a new key: exactly one is sent.
    let batch: Vec<Value> = (0..20).map(|i| failure(&format!("c{i}"), "sb_9")).collect();
    let client = herald.client();
    let threads: Vec<_> = batch
        .chunks(5)
        .map(|chunk| {
            let (client, chunk) = (client.clone(), chunk.to_vec());
            std::thread::spawn(move || client.post(&json!(chunk), ACME_KEY).expect(202))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let statuses: Vec<String> = (0..20)
        .map(|i| {
            settled(&herald, &format!("c{i}"))["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "succeeded").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "suppressed").count(),
        19,
        "{statuses:?}"
    );
    let sent: Vec<String> = rx.wait_for(2, WAIT).iter().map(Request::event_id).collect();
    assert_eq!(sent[0], "e1");
    rx.assert_stays(2, QUIET);
}

fn noisy_conf(hook: &Receiver, other: &Receiver, globex: &Receiver) -> Conf {
    Conf::new()
        .webhook("acme", "hook", hook)
        .webhook("acme", "other", other)
        .webhook("globex", "g", globex)
        .subscribe("acme", "hook", &["*"])
        .subscribe("acme", "other", &["*"])
        .subscribe("globex", "g", &["*"])
}

fn event(id: &str, event_type: &str, region: &str) -> Value {
    json!({"id": id, "event": event_type, "outcome": "error", "metadata": {"region": region}})
}

/// `(channel, status, silence_id)` of each delivery of event `id`, by channel.
fn outcomes(herald: &Herald, id: &str, key: &str) -> Vec<(String, String, Option<String>)> {
    let deliveries = herald.wait_deliveries(id, key, "all settled", |d| {
        !d.is_empty() && d.iter().all(|d| d["status"] != "pending")
    });
    let mut out: Vec<_> = deliveries
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
                d["silence_id"].as_str().map(str::to_string),
            )
        })
        .collect();
    out.sort();
    out
}

fn sent(channel: &str) -> (String, String, Option<String>) {
    (channel.to_string(), "succeeded".to_string(), None)
}

#[test]
fn a_silence_stops_exactly_what_it_matches_for_exactly_its_time() {
    let (hook, other, globex) = (
        Receiver::start("hook"),
        Receiver::start("other"),
        Receiver::start("g"),
    );
    let herald = Herald::start("noise-silence", &noisy_conf(&hook, &other, &globex));
    let silence = create_silence(
        &herald,
        ACME_KEY,
        &json!({
            "matchers": {"event": "capsule.*", "metadata": {"region": "eu"}, "channel": "hook"},
            "ends_at": time_from_now(3600),
            "comment": "maintenance of eu",
            "created_by": "ops@acme",
        }),
    )
    .expect(201)["silence"]
        .clone();
    let id = silence["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&silence["team"], &silence["state"]),
        (&json!("acme"), &json!("active"))
    );

    // Matching: the hook delivery is silenced and names the silence; the rest is sent.
    herald
        .post(&event("m1", "capsule.create", "eu"), ACME_KEY)
        .expect(202);
    assert_eq!(
        outcomes(&herald, "m1", ACME_KEY),
        [
            ("hook".to_string(), "silenced".to_string(), Some(id.clone())),
            sent("other")
        ]
    );
    // Not matching: another region, another type, another team.
    herald
        .post(&event("n1", "capsule.create", "us"), ACME_KEY)
        .expect(202);
    herald
        .post(&event("n2", "host.down", "eu"), ACME_KEY)
        .expect(202);
    herald
        .post(&event("g1", "capsule.create", "eu"), GLOBEX_KEY)
        .expect(202);
    for n in ["n1", "n2"] {
        assert_eq!(
            outcomes(&herald, n, ACME_KEY),
            [sent("hook"), sent("other")]
        );
    }
    assert_eq!(outcomes(&herald, "g1", GLOBEX_KEY), [sent("g")]);

    // A silence that starts later does not stop anything yet.
    create_silence(
        &herald,
        ADMIN_TOKEN,
        &json!({
            "team": "acme",
            "matchers": {"event": "host.down"},
            "starts_at": time_from_now(3600),
            "ends_at": time_from_now(7200),
            "comment": "next week's move",
            "created_by": "ops@acme",
        }),
    )
    .expect(201);
    herald
        .post(&event("n3", "host.down", "us"), ACME_KEY)
        .expect(202);
    assert_eq!(
        outcomes(&herald, "n3", ACME_KEY),
        [sent("hook"), sent("other")]
    );

    // Another team can neither see nor expire it: the id answers 404, as an unknown one.
    let theirs = herald.get("/v1/silences", GLOBEX_KEY).expect(200);
    assert_eq!(theirs["silences"], json!([]));
    herald
        .get(&format!("/v1/silences/{id}"), GLOBEX_KEY)
        .expect_error(404, "not_found");
    herald
        .post_empty(&format!("/v1/silences/{id}/expire"), GLOBEX_KEY)
        .expect_error(404, "not_found");
    herald
        .client()
        .request(
            Method::DELETE,
            &format!("/v1/silences/{id}"),
            Some(GLOBEX_KEY),
            None,
        )
        .expect_error(404, "not_found");
    herald
        .get("/v1/silences/sil_nope", ACME_KEY)
        .expect_error(404, "not_found");
    herald
        .post(&event("m2", "capsule.create", "eu"), ACME_KEY)
        .expect(202);
    assert_eq!(outcomes(&herald, "m2", ACME_KEY)[0].1, "silenced");

    // The team lists its own (the admin every team's), by state.
    let active = herald
        .get("/v1/silences?state=active", ACME_KEY)
        .expect(200);
    let ids: Vec<&str> = active["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    let pending = herald
        .get("/v1/silences?state=pending&team=acme", ADMIN_TOKEN)
        .expect(200);
    assert_eq!(pending["silences"].as_array().unwrap().len(), 1);

    // Expired, it stops nothing more: the same event is sent again.
    let ended = herald
        .post_empty(&format!("/v1/silences/{id}/expire"), ACME_KEY)
        .expect(200);
    assert_eq!(ended["silence"]["state"], "expired");
    herald
        .post(&event("m3", "capsule.create", "eu"), ACME_KEY)
        .expect(202);
    assert_eq!(
        outcomes(&herald, "m3", ACME_KEY),
        [sent("hook"), sent("other")]
    );

    // What was silenced is listed under its status, with the silence; the hook received
    // exactly the events the silence did not match.
    let silenced: Vec<String> = listed(&herald, "silenced", ACME_KEY)
        .iter()
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(silenced, ["m2", "m1"]);
    let mut at_hook: Vec<String> = hook
        .wait_for(4, WAIT)
        .iter()
        .map(Request::event_id)
        .collect();
    at_hook.sort();
    assert_eq!(at_hook, ["m3", "n1", "n2", "n3"]);
    hook.assert_stays(4, QUIET);
}

#[test]
fn a_silence_ends_at_its_end_time() {
    let hook = Receiver::start("hook");
    let herald = Herald::start(
        "noise-silence-ends",
        &Conf::new()
            .webhook("acme", "hook", &hook)
            .subscribe("acme", "hook", &["*"]),
    );
    let silence = create_silence(
        &herald,
        ACME_KEY,
        &json!({
            "matchers": {"channel": "hook"},
            "ends_at": time_from_now(2),
            "comment": "a short one",
            "created_by": "ops@acme",
        }),
    )
    .expect(201)["silence"]
        .clone();
    // Silenced until its end, then sent: only the order is checked.
    let before = publish_until_sent(
        &herald,
        "silenced",
        |n| json!({"id": format!("t{n}"), "event": "host.down"}),
    );
    for d in &before {
        assert_eq!(d["silence_id"], silence["id"]);
    }
    let n = before.len();
    let at_hook: Vec<String> = hook
        .wait_for(1, WAIT)
        .iter()
        .map(Request::event_id)
        .collect();
    assert_eq!(at_hook, [format!("t{n}")]);
}

#[test]
fn a_silence_stops_deliveries_already_waiting_for_a_retry() {
    let hook = Receiver::start("hook");
    hook.set_default(Answer::status(503));
    let herald = Herald::start(
        "noise-silence-queued",
        &Conf::new()
            .schedule(&["1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"])
            .webhook("acme", "hook", &hook)
            .subscribe("acme", "hook", &["*"]),
    );
    herald
        .post(&json!({"id": "q1", "event": "host.down"}), ACME_KEY)
        .expect(202);
    let delivery = herald.wait_deliveries("q1", ACME_KEY, "attempted and retrying", |d| {
        d.len() == 1 && d[0]["attempts"].as_u64() >= Some(1)
    })[0]
        .clone();
    let silence = create_silence(
        &herald,
        ACME_KEY,
        &json!({
            "matchers": {"event": "host.down"},
            "ends_at": time_from_now(3600),
            "comment": "the receiver is down for maintenance",
            "created_by": "ops@acme",
        }),
    )
    .expect(201)["silence"]
        .clone();
    let (stopped, attempts) = herald.wait_delivery(
        delivery["id"].as_str().unwrap(),
        ACME_KEY,
        "silenced before its next attempt",
        |d, _| d["status"] == "silenced",
    );
    assert_eq!(stopped["silence_id"], silence["id"]);
    // No attempt after the silence: the receiver saw exactly the attempts recorded.
    hook.assert_stays(attempts.len(), QUIET);
    assert_eq!(hook.count(), attempts.len());
}

#[test]
fn silence_requests_are_validated_field_by_field() {
    let (hook, other, globex) = (
        Receiver::start("hook"),
        Receiver::start("other"),
        Receiver::start("g"),
    );
    let herald = Herald::start("noise-silence-invalid", &noisy_conf(&hook, &other, &globex));
    let base = json!({
        "matchers": {"channel": "hook"},
        "ends_at": time_from_now(60),
        "comment": "c",
        "created_by": "me",
    });
    let with = |path: &[&str], value: Value| {
        let mut body = base.clone();
        let mut at = &mut body;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = value;
        body
    };
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "matchers",
            with(&["matchers"], json!({})),
            json!(ACME_KEY),
            "at least one matcher",
        ),
        (
            "matchers.channel",
            with(&["matchers", "channel"], json!("nope")),
            json!(ACME_KEY),
            "no channel `nope`",
        ),
        (
            "matchers.event",
            with(&["matchers", "event"], json!("capsule.*.x")),
            json!(ACME_KEY),
            "invalid pattern",
        ),
        (
            "matchers.event",
            with(&["matchers", "event"], json!("capsule.state.changed")),
            json!(ACME_KEY),
            "transient",
        ),
        (
            "matchers.outcome",
            with(&["matchers", "outcome"], json!("maybe")),
            json!(ACME_KEY),
            "expected success or error",
        ),
        (
            "matchers.colour",
            with(&["matchers", "colour"], json!("red")),
            json!(ACME_KEY),
            "unknown field",
        ),
        (
            "ends_at",
            with(&["ends_at"], json!(time_from_now(-60))),
            json!(ACME_KEY),
            "later than `starts_at`",
        ),
        (
            "ends_at",
            {
                let mut body = with(&["ends_at"], json!(time_from_now(-60)));
                body["starts_at"] = json!(time_from_now(-120));
                body
            },
            json!(ACME_KEY),
            "in the past",
        ),
        (
            "ends_at",
            with(&["ends_at"], json!("tomorrow")),
            json!(ACME_KEY),
            "RFC 3339",
        ),
        (
            "comment",
            with(&["comment"], json!(" ")),
            json!(ACME_KEY),
            "required",
        ),
        (
            "team",
            base.clone(),
            json!(ADMIN_TOKEN),
            "required with the admin token",
        ),
    ];
    for (field, body, key, message) in cases {
        let reply = create_silence(&herald, key.as_str().unwrap(), &body);
        let error = reply.expect_error(422, "invalid_silence");
        assert_eq!(error["field"], field, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
    // A team key cannot silence another team.
    let reply = create_silence(&herald, ACME_KEY, &with(&["team"], json!("globex")));
    reply.expect_error(403, "forbidden");
    herald
        .get("/v1/silences?state=soon", ACME_KEY)
        .expect_error(400, "invalid_query");
    herald
        .get("/v1/deliveries?status=muted", ACME_KEY)
        .expect_error(400, "invalid_query");
    // Nothing was created.
    assert_eq!(
        herald.get("/v1/silences", ADMIN_TOKEN).expect(200)["silences"],
        json!([])
    );
}

/// `herald silence add|list|expire` and `herald explain --url` against a running herald.
#[test]
fn the_silence_commands_and_explain_against_a_running_herald() {
    let (hook, other, globex) = (
        Receiver::start("hook"),
        Receiver::start("other"),
        Receiver::start("g"),
    );
    let herald = Herald::start("noise-cli", &noisy_conf(&hook, &other, &globex));
    let cli = |args: &[&str]| {
        let mut cmd = herald_command();
        cmd.env_remove("HERALD_URL")
            .env_remove("HERALD_KEY")
            .args(["silence"]);
        cmd.arg(args[0])
            .args(["--url", herald.url(), "--key", ACME_KEY])
            .args(&args[1..]);
        let out = run(cmd, "");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let added = cli(&[
        "add",
        "--event",
        "capsule.*",
        "--meta",
        "region=eu",
        "--channel",
        "hook",
        "--duration",
        "2h",
        "--comment",
        "eu maintenance",
        "--created-by",
        "ops",
    ]);
    assert!(added.starts_with("silence sil_"), "{added}");
    assert!(
        added.contains("(active, team acme, event capsule.*, region=eu, channel hook until "),
        "{added}"
    );
    let id = added.split_whitespace().nth(1).unwrap().to_string();
    let listed = cli(&["list", "--state", "active"]);
    assert!(
        listed.contains(&id) && listed.contains("eu maintenance (ops)"),
        "{listed}"
    );

    // explain reads the silences in force from the server and names the one that stops
    // each channel; offline it says it did not check.
    let event = r#"{"event":"capsule.create","team_id":"acme","metadata":{"region":"eu"}}"#;
    let config = herald.dir().join("herald.toml");
    let explain = |online: bool| {
        let mut cmd = herald_command();
        cmd.env_remove("HERALD_URL").env_remove("HERALD_KEY");
        cmd.args(["explain", "--event", "-", "--config"])
            .arg(&config);
        if online {
            cmd.args(["--url", herald.url(), "--key", ACME_KEY]);
        }
        cmd.current_dir(herald.dir());
        let out = run(cmd, event);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let online = explain(true);
    assert!(
        online.contains(&format!(
            "hook (settings of acme.subscriptions[0]): silenced by {id} until"
        )),
        "{online}"
    );
    assert!(
        online.contains("other (settings of acme.subscriptions[1]): no silence in force matches"),
        "{online}"
    );
    let offline = explain(false);
    assert!(
        offline.contains("silences not checked (offline; pass --url and --key)"),
        "{offline}"
    );

    let expired = cli(&["expire", &id]);
    assert!(
        expired.contains(&format!("silence {id} is expired")),
        "{expired}"
    );
    assert!(cli(&["list", "--state", "active"]).contains("(no silences)"));
    let online = explain(true);
    assert!(
        online.contains("hook (settings of acme.subscriptions[0]): no silence in force matches"),
        "{online}"
    );
}

/// `herald check` reports noise-control mistakes with their locations.
#[test]
fn check_reports_dedup_mistakes_with_their_locations() {
    let s = crate::support::Scratch::new("check-dedup");
    s.write(
        "herald.toml",
        r#"[[event_types]]
name = "capsule.create"

[teams.acme]
api_keys = ["k"]

[teams.acme.channels.hook]
type = "file"
path = "hook.jsonl"

[[teams.acme.subscriptions]]
channel = "hook"
events = ["capsule.create"]
dedup_window = "10 parsecs"
dedup_key = ["event", "resource", "metadata."]

[[teams.acme.subscriptions]]
channel = "hook"
events = ["*"]
dedup_key = ["event"]
"#,
    );
    let mut cmd = herald_command();
    cmd.current_dir(&s.dir)
        .args(["check", "herald.toml", "--format", "short"]);
    let out = run(cmd, "");
    let stderr = crate::support::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for line in [
        "herald.toml:14:16: error: invalid dedup_window `10 parsecs`",
        "herald.toml:15:23: error: unknown dedup key field `resource`; expected one of event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY",
        "herald.toml:15:35: error: `metadata.` needs a key",
        "herald.toml:20:13: error: dedup_key needs a dedup_window",
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(line)),
            "missing `{line}` in:\n{stderr}"
        );
    }
}
