//! Day-two operations against real receivers: manual retries with a fresh budget, bulk
//! replay, webhook secret rotation, owner alerts.

use serde_json::{Value, json};

use crate::harness::*;

/// The id of the only delivery of `event_id`, once it has one.
fn only_delivery(h: &Herald, event_id: &str, key: &str) -> String {
    let deliveries = h.wait_deliveries(event_id, key, "one delivery", |d| d.len() == 1);
    deliveries[0]["id"]
        .as_str()
        .expect("delivery id")
        .to_string()
}

/// `(number, manual)` of each attempt.
fn manual_flags(attempts: &[Value]) -> Vec<(u64, bool)> {
    attempts
        .iter()
        .map(|a| {
            let manual = a["manual"]
                .as_bool()
                .unwrap_or_else(|| panic!("attempt without a boolean `manual`: {a}"));
            (a["number"].as_u64().unwrap_or(0), manual)
        })
        .collect()
}

#[test]
fn a_manual_retry_after_dead_gets_the_full_schedule_again() {
    let rx = Receiver::scripted("down", [], Answer::status(500));
    let h = Herald::start(
        "ops-retry-budget",
        &Conf::new()
            .schedule(&["200ms", "200ms"])
            .webhook("acme", "down", &rx)
            .subscribe("acme", "down", &["*"]),
    );
    h.post(&json!({"id": "evt_budget", "event": "host.down"}), ACME_KEY)
        .expect(202);
    let id = only_delivery(&h, "evt_budget", ACME_KEY);
    // The first attempt and two retries, then dead.
    let (delivery, attempts) = h.wait_delivery(&id, ACME_KEY, "dead", |d, _| d["status"] == "dead");
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(
        manual_flags(&attempts),
        [(1, false), (2, false), (3, false)]
    );
    rx.assert_stays(3, QUIET);

    let reply = h.post_empty(&format!("/v1/deliveries/{id}/retry"), ACME_KEY);
    reply.expect(200);
    // A fresh budget: the manual attempt and the whole schedule (two retries) again.
    let requests = rx.wait_for(6, WAIT);
    assert!(
        requests.iter().all(|r| r.webhook_id() == id),
        "same webhook-id"
    );
    let (delivery, attempts) = h.wait_delivery(&id, ACME_KEY, "dead again", |d, a| {
        d["status"] == "dead" && a.len() == 6
    });
    assert_eq!(delivery["attempts"], 6, "{delivery}");
    assert_eq!(delivery["budget_start"], 3, "{delivery}");
    assert_eq!(
        manual_flags(&attempts),
        [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, false),
            (6, false)
        ],
        "{attempts:#?}"
    );
    rx.assert_stays(6, QUIET);
}

/// The secret a rotating channel adds next to [`WEBHOOK_SECRET`] (Standard Webhooks' test
/// vector B).
const NEW_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
/// A secret the channel does not have: the verifier must reject with it.
const OTHER_SECRET: &str = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw=";

/// Runs the Standard Webhooks reference verifier (Python `standardwebhooks`) on a
/// received request with `secret`: `Ok` when it verifies, `Err(why)` when it rejects.
/// Panics, saying what to install, when Python or the package is missing.
fn reference_verify(request: &Request, secret: &str) -> Result<(), String> {
    let script = crate::support::repo().join("tests/support/verify_webhook.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).args([
        secret,
        request.header("webhook-id"),
        request.header("webhook-timestamp"),
        request.header("webhook-signature"),
    ]);
    let child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|e| {
        panic!(
            "cannot run python3 ({e}) for the Standard Webhooks verifier: install Python 3 and \
             `python3 -m pip install standardwebhooks==1.1.0` (scripts/setup does both)"
        )
    });
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("a stdin pipe");
        stdin
            .write_all(&request.body)
            .expect("write the body to the verifier");
    }
    let out = child.wait_with_output().expect("wait for the verifier");
    let said = crate::support::text(&out.stdout);
    match out.status.code() {
        Some(0) => Ok(()),
        Some(1) => Err(said),
        _ => panic!(
            "the Standard Webhooks verifier could not run: {said}{}\ninstall it with \
             `python3 -m pip install standardwebhooks==1.1.0` (scripts/setup does)",
            crate::support::text(&out.stderr)
        ),
    }
}

#[test]
fn a_receiver_with_either_rotating_secret_verifies_every_message() {
    let rx = Receiver::start("rotating");
    let h = Herald::start(
        "ops-rotation",
        &Conf::new()
            .raw(&format!(
                "[teams.acme.channels.rotating]\ntype = \"webhook\"\nurl = \"{}\"\n\
                 secrets = [\"{NEW_SECRET}\", \"{WEBHOOK_SECRET}\"]\n",
                rx.url()
            ))
            .subscribe("acme", "rotating", &["*"]),
    );
    for n in 0..3 {
        let event = json!({"id": format!("evt_rot_{n}"), "event": "capsule.create"});
        h.post(&event, ACME_KEY).expect(202);
    }
    let requests = rx.wait_for(3, WAIT);
    for request in &requests {
        let signatures: Vec<&str> = request.header("webhook-signature").split(' ').collect();
        assert_eq!(
            signatures.len(),
            2,
            "one v1 signature per secret: {signatures:?}"
        );
        assert!(
            signatures.iter().all(|s| s.starts_with("v1,")),
            "{signatures:?}"
        );
        for secret in [NEW_SECRET, WEBHOOK_SECRET] {
            if let Err(why) = reference_verify(request, secret) {
                panic!("a receiver on one of the rotating secrets rejected {request:?}: {why}");
            }
        }
        assert!(
            reference_verify(request, OTHER_SECRET).is_err(),
            "the verifier accepted a secret the channel does not have"
        );
    }
    assert_no_secret("the server log", &h.logs());
    let logs = h.logs();
    assert!(
        !logs.contains("C2FVsBQIhrscChlQIMV"),
        "the new secret leaked into the log"
    );
}

/// `POST /v1/replay` with `body` as `key`.
fn replay(h: &Herald, body: &Value, key: &str) -> ApiReply {
    h.client().request(
        reqwest::Method::POST,
        "/v1/replay",
        Some(key),
        Some(("application/json", body.to_string().into_bytes())),
    )
}

#[test]
fn replay_redelivers_exactly_the_selected_deliveries_with_their_webhook_ids() {
    let rx_a = Receiver::scripted("replay-a", [], Answer::status(500));
    let rx_b = Receiver::scripted("replay-b", [], Answer::status(500));
    let rx_g = Receiver::scripted("replay-g", [], Answer::status(500));
    let h = Herald::start(
        "ops-replay",
        &Conf::new()
            .schedule(&["100ms"])
            .webhook("acme", "a", &rx_a)
            .webhook("acme", "b", &rx_b)
            .webhook("globex", "g", &rx_g)
            .subscribe("acme", "a", &["host.down"])
            .subscribe("acme", "b", &["capsule.create"])
            .subscribe("globex", "g", &["*"]),
    );
    for (id, event) in [
        ("evt_a1", "host.down"),
        ("evt_a2", "host.down"),
        ("evt_b1", "capsule.create"),
    ] {
        h.post(&json!({"id": id, "event": event}), ACME_KEY)
            .expect(202);
    }
    h.post(&json!({"id": "evt_g1", "event": "host.down"}), GLOBEX_KEY)
        .expect(202);
    let dead = |event: &str, key: &str| {
        let id = only_delivery(&h, event, key);
        h.wait_delivery(&id, key, "dead", |d, _| d["status"] == "dead");
        id
    };
    let a_ids = [dead("evt_a1", ACME_KEY), dead("evt_a2", ACME_KEY)];
    let b_id = dead("evt_b1", ACME_KEY);
    dead("evt_g1", GLOBEX_KEY);
    // Two attempts each (the first and one retry).
    rx_a.assert_stays(4, QUIET);
    rx_b.assert_stays(2, QUIET);
    rx_g.assert_stays(2, QUIET);
    let since = "2000-01-01T00:00:00Z";

    // A team key cannot replay another team's deliveries, whatever else it asks.
    let denied = replay(
        &h,
        &json!({"team": "acme", "since": since, "status": "all"}),
        GLOBEX_KEY,
    );
    let error = denied.expect_error(403, "forbidden");
    assert_eq!(error["field"], "team", "{error}");
    // Bad input names its field.
    let bad = replay(&h, &json!({"team": "acme", "since": "yesterday"}), ACME_KEY);
    assert_eq!(bad.expect_error(422, "invalid_replay")["field"], "since");
    let bad = replay(
        &h,
        &json!({"team": "acme", "since": since, "channel": "nope"}),
        ACME_KEY,
    );
    assert_eq!(bad.expect_error(422, "invalid_replay")["field"], "channel");

    // A dry run counts and changes nothing.
    let body =
        json!({"team": "acme", "channel": "a", "since": since, "status": "dead", "dry_run": true});
    let counted = replay(&h, &body, ACME_KEY).expect(200);
    assert_eq!(counted, json!({"count": 2, "dry_run": true}));
    rx_a.assert_stays(4, QUIET);

    // The endpoint is back: replay channel a's dead deliveries.
    rx_a.set_default(Answer::status(200));
    let body = json!({"team": "acme", "channel": "a", "since": since, "status": "dead"});
    let replayed = replay(&h, &body, ACME_KEY).expect(200);
    assert_eq!(replayed, json!({"count": 2, "dry_run": false}));
    let requests = rx_a.wait_for(6, WAIT);
    let mut again: Vec<&str> = requests[4..].iter().map(|r| r.webhook_id()).collect();
    again.sort();
    let mut want: Vec<&str> = a_ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(again, want, "the original webhook-ids, each once");
    for id in &a_ids {
        let (delivery, attempts) =
            h.wait_delivery(id, ACME_KEY, "succeeded", |d, _| d["status"] == "succeeded");
        assert_eq!(delivery["attempts"], 3, "{delivery}");
        assert_eq!(attempts[2]["manual"], true, "{attempts:#?}");
    }
    rx_a.assert_stays(6, QUIET);
    rx_b.assert_stays(2, QUIET);
    rx_g.assert_stays(2, QUIET);

    // The CLI goes through the same API.
    let args = [
        "--team",
        "acme",
        "--channel",
        "b",
        "--since",
        since,
        "--dry-run",
    ];
    let out = h.cli("replay", ACME_KEY, &args, "");
    assert!(out.status.success(), "{}", outputs(&out));
    let said = crate::support::text(&out.stdout);
    assert!(
        said.contains("1 deliveries would be replayed"),
        "{}",
        outputs(&out)
    );
    let out = h.cli("replay", GLOBEX_KEY, &args[..6], "");
    assert!(
        !out.status.success(),
        "a team key replayed another team's: {}",
        outputs(&out)
    );
    assert!(outputs(&out).contains("403"), "{}", outputs(&out));
    rx_b.set_default(Answer::status(200));
    let out = h.cli("replay", ACME_KEY, &args[..6], "");
    assert!(out.status.success(), "{}", outputs(&out));
    let requests = rx_b.wait_for(3, WAIT);
    assert_eq!(requests[2].webhook_id(), b_id);
    rx_b.assert_stays(3, QUIET);
    rx_g.assert_stays(2, QUIET);
}

#[test]
fn an_endpoint_answering_410_produces_exactly_one_alert_on_the_alert_channel() {
    let gone = Receiver::scripted("gone", [], Answer::status(410));
    let ops = Receiver::start("ops");
    let h = Herald::start(
        "ops-alerts",
        &Conf::new()
            .webhook("acme", "gone", &gone)
            .webhook("acme", "ops", &ops)
            .team_line("acme", "alerts = \"ops\"")
            .subscribe("acme", "gone", &["*"]),
    );
    for n in 0..5 {
        let event = json!({"id": format!("evt_gone_{n}"), "event": "host.down"});
        h.post(&event, ACME_KEY).expect(202);
    }
    let alerts = ops.wait_for(1, WAIT);
    let alert = alerts[0].json();
    assert_eq!(alert["event"], "herald.channel.disabled", "{alert}");
    assert_eq!(alert["team_id"], "acme", "{alert}");
    assert_eq!(alert["metadata"]["channel"], "gone", "{alert}");
    assert_eq!(alert["metadata"]["state"], "disabled", "{alert}");
    let how = alert["metadata"]["how_to_fix"].as_str().unwrap_or("");
    assert!(how.contains("/v1/channels/acme/gone/enable"), "{alert}");
    assert!(
        alert["error"].as_str().is_some_and(|e| e.contains("410")),
        "the reason is in the alert: {alert}"
    );
    // One alert per state change, however many deliveries hit the 410.
    ops.assert_stays(1, QUIET);
    assert!(
        gone.count() >= 1,
        "the failing endpoint was tried: {}",
        gone.count()
    );
    // The alert is a durable delivery like any other, listed by the API.
    let listed = h.get("/v1/deliveries?channel=ops", ACME_KEY).expect(200);
    let rows = listed["deliveries"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 1, "{listed}");
    assert_eq!(rows[0]["event_type"], "herald.channel.disabled", "{listed}");
    assert_eq!(rows[0]["id"], alerts[0].webhook_id(), "{listed}");
    h.wait_delivery(
        rows[0]["id"].as_str().unwrap(),
        ACME_KEY,
        "succeeded",
        |d, _| d["status"] == "succeeded",
    );
    // Re-enabled, failing again: a new state change, a second alert.
    h.post_empty("/v1/channels/acme/gone/enable", ACME_KEY)
        .expect(200);
    ops.wait_for(2, WAIT);
    ops.assert_stays(2, QUIET);
    // Nothing of this leaked into globex.
    let theirs = h.get("/v1/deliveries", GLOBEX_KEY).expect(200);
    assert_eq!(theirs["deliveries"], json!([]), "{theirs}");
}

#[test]
fn dead_letters_reaching_the_threshold_alert_once() {
    let down = Receiver::scripted("down", [], Answer::status(500));
    let ops = Receiver::start("ops-dead");
    let h = Herald::start(
        "ops-dead-letters",
        &Conf::new()
            .schedule(&["50ms"])
            .webhook("acme", "down", &down)
            .webhook("acme", "ops", &ops)
            .team_line("acme", "alerts = \"ops\"\nalert_dead_letters = 2")
            .subscribe("acme", "down", &["*"]),
    );
    for n in 0..4 {
        let event = json!({"id": format!("evt_dl_{n}"), "event": "host.down"});
        h.post(&event, ACME_KEY).expect(202);
    }
    // Every delivery dies (two attempts each); the alert comes once, at the crossing.
    down.wait_for(8, WAIT);
    for n in 0..4 {
        let id = only_delivery(&h, &format!("evt_dl_{n}"), ACME_KEY);
        h.wait_delivery(&id, ACME_KEY, "dead", |d, _| d["status"] == "dead");
    }
    let alerts = ops.wait_for(1, WAIT);
    let alert = alerts[0].json();
    assert_eq!(alert["event"], "herald.channel.dead_letters", "{alert}");
    assert_eq!(alert["metadata"]["channel"], "down", "{alert}");
    let how = alert["metadata"]["how_to_fix"].as_str().unwrap_or("");
    assert!(
        how.contains("herald replay --team acme --channel down"),
        "{alert}"
    );
    ops.assert_stays(1, QUIET);
}
