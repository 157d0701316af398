//! Delivery semantics of `herald serve` against real webhook receivers: signing, retries,
//! dead letters, `Retry-After`, 410, a hanging endpoint, the file channel.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::*;

/// The id of the only delivery of `event_id`, once it has one.
fn only_delivery(h: &Herald, event_id: &str) -> String {
    let deliveries = h.wait_deliveries(event_id, ACME_KEY, "one delivery", |d| d.len() == 1);
    deliveries[0]["id"]
        .as_str()
        .expect("delivery id")
        .to_string()
}

/// The keys docs/api.md gives a delivery and an attempt.
const DELIVERY_KEYS: &[&str] = &[
    "id",
    "event_id",
    "team",
    "channel",
    "subscription",
    "subscription_name",
    "event_type",
    "status",
    "attempts",
    "budget_start",
    "next_attempt_at",
    "last_error",
    "last_status_code",
    "created_at",
    "updated_at",
];
const ATTEMPT_KEYS: &[&str] = &[
    "number",
    "started_at",
    "duration_ms",
    "status_code",
    "error",
    "response",
    "manual",
];

/// Asserts that `object` has every one of `keys`.
fn assert_keys(object: &Value, keys: &[&str]) {
    let map = object
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {object}"));
    let missing: Vec<&&str> = keys.iter().filter(|k| !map.contains_key(**k)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in {object}");
}

fn status_codes(attempts: &[Value]) -> Vec<Option<u64>> {
    attempts.iter().map(|a| a["status_code"].as_u64()).collect()
}

#[test]
fn an_event_reaches_the_webhook_signed_as_its_envelope() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "delivery-signed",
        // Two subscriptions of the team match, both pointing at one channel: one delivery.
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"])
            .subscribe("acme", "hook", &["capsule.*"]),
    );
    let sent = json!({
        "event": "capsule.create", "outcome": "error",
        "actor": {"type": "user", "id": "u_1", "name": "Ada"},
        "resource": {"id": "sb_42", "type": "sandbox"},
        "metadata": {"region": "eu", "host_ip": "10.0.0.5"},
        "error": "out of memory"
    });
    let reply = h.post(&sent, ACME_KEY).expect(202);
    let keys: Vec<&String> = reply.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["id"], "{reply}");
    let id = reply["id"].as_str().expect("a string id").to_string();
    assert!(!id.is_empty());

    rx.wait_for(1, WAIT);
    let deliveries = h.wait_deliveries(&id, ACME_KEY, "one succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    let delivery = &deliveries[0];
    assert_keys(delivery, DELIVERY_KEYS);
    let delivery_id = delivery["id"].as_str().unwrap();
    assert!(delivery_id.starts_with("dlv_"), "{delivery}");
    assert_eq!(delivery["event_id"], id.as_str(), "{delivery}");
    assert_eq!(delivery["team"], "acme", "{delivery}");
    assert_eq!(delivery["channel"], "hook", "{delivery}");
    assert_eq!(delivery["event_type"], "capsule.create", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["last_status_code"], 200, "{delivery}");
    rx.assert_stays(1, QUIET);

    let request = &rx.requests()[0];
    assert_eq!(request.webhook_id(), delivery_id);
    assert_eq!(request.header("content-type"), "application/json");
    assert!(
        request.header("user-agent").starts_with("herald/"),
        "{request:?}"
    );
    assert!(request.header("webhook-signature").starts_with("v1,"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!(
        (now - ts).abs() < 300,
        "webhook-timestamp {ts} vs now {now}"
    );

    // The body is the envelope: what was sent, with id, team and timestamp filled in.
    let body = request.json();
    let timestamp = body["timestamp"].as_str().expect("a timestamp");
    assert!(
        timestamp.ends_with('Z') && timestamp.contains('T') && timestamp.len() >= 20,
        "timestamp {timestamp} is not RFC 3339 UTC"
    );
    let mut expected = sent.clone();
    expected["id"] = json!(id);
    expected["team_id"] = json!("acme");
    expected["timestamp"] = json!(timestamp);
    assert_eq!(body, expected);

    // The stored event is the same envelope.
    let stored = h.get(&format!("/v1/events/{id}"), ACME_KEY).expect(200);
    assert_eq!(stored["event"], expected, "{stored}");
}

#[test]
fn a_failing_receiver_is_retried_with_the_same_webhook_id_until_it_succeeds() {
    let rx = Receiver::scripted(
        "flaky",
        [Answer::status(500), Answer::status(500)],
        Answer::status(200),
    );
    let h = Herald::start(
        "delivery-retries",
        &Conf::new()
            .schedule(&["200ms", "200ms", "200ms"])
            .webhook("acme", "flaky", &rx)
            .subscribe("acme", "flaky", &["*"]),
    );
    let event = json!({
        "id": "evt_retry_1", "event": "host.down", "timestamp": "2026-11-23T12:00:00+02:00"
    });
    h.post(&event, ACME_KEY).expect(202);
    let requests = rx.wait_for(3, WAIT);
    let delivery_id = only_delivery(&h, "evt_retry_1");
    for r in &requests {
        assert_eq!(r.webhook_id(), delivery_id);
        assert_eq!(r.event_id(), "evt_retry_1");
        // Any offset in, UTC out.
        let timestamp = r.json()["timestamp"].as_str().unwrap().to_string();
        assert!(
            timestamp.starts_with("2026-11-23T10:00:00") && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        // Only the timestamp header changes between attempts, never the body.
        assert_eq!(r.body, requests[0].body);
    }
    let (delivery, attempts) = h.wait_delivery(&delivery_id, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    for attempt in &attempts {
        assert_keys(attempt, ATTEMPT_KEYS);
    }
    assert_eq!(
        status_codes(&attempts),
        [Some(500), Some(500), Some(200)],
        "{attempts:#?}"
    );
    let numbers: Vec<_> = attempts.iter().map(|a| a["number"].as_u64()).collect();
    assert_eq!(numbers, [Some(1), Some(2), Some(3)]);
    // Each attempt keeps what the receiver answered; failures say why.
    assert_eq!(attempts[0]["response"], "500 from flaky", "{attempts:#?}");
    assert_eq!(attempts[2]["response"], "200 from flaky", "{attempts:#?}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{attempts:#?}"
    );
    assert_eq!(attempts[2]["error"], Value::Null, "{attempts:#?}");
    rx.assert_stays(3, QUIET);
}

#[test]
fn a_dead_delivery_is_listed_and_retried_by_the_cli() {
    let rx = Receiver::scripted("down", [], Answer::status(500));
    let h = Herald::start(
        "delivery-dead",
        &Conf::new()
            .schedule(&["200ms", "200ms", "200ms"])
            .webhook("acme", "down", &rx)
            .subscribe("acme", "down", &["*"]),
    );
    h.post(
        &json!({"id": "evt_dead_1", "event": "capsule.destroy"}),
        ACME_KEY,
    )
    .expect(202);
    rx.wait_for(4, WAIT);
    let delivery_id = only_delivery(&h, "evt_dead_1");
    let (delivery, attempts) =
        h.wait_delivery(&delivery_id, ACME_KEY, "dead", |d, _| d["status"] == "dead");
    assert_eq!(delivery["attempts"], 4, "{delivery}");
    assert_eq!(status_codes(&attempts), [Some(500); 4], "{attempts:#?}");
    assert_eq!(delivery["last_status_code"], 500, "{delivery}");
    rx.assert_stays(4, QUIET);

    let out = h.cli("deliveries", ACME_KEY, &["--status", "dead"], "");
    assert!(out.status.success(), "{}", outputs(&out));
    assert!(
        crate::support::text(&out.stdout).contains(&delivery_id),
        "{}",
        outputs(&out)
    );
    let out = h.cli("deliveries", ACME_KEY, &["--status", "dead", "--json"], "");
    assert!(out.status.success(), "{}", outputs(&out));
    let listed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {}", outputs(&out)));
    assert!(listed.to_string().contains(&delivery_id), "{listed}");
    let out = h.cli("deliveries", ACME_KEY, &["--status", "succeeded"], "");
    assert!(out.status.success(), "{}", outputs(&out));
    assert!(
        !crate::support::text(&out.stdout).contains(&delivery_id),
        "a dead delivery listed as succeeded: {}",
        outputs(&out)
    );

    rx.set_default(Answer::status(200));
    let out = h.cli("retry", ACME_KEY, &[&delivery_id], "");
    assert!(out.status.success(), "{}", outputs(&out));
    let requests = rx.wait_for(5, WAIT);
    assert_eq!(requests[4].webhook_id(), delivery_id);
    let (delivery, attempts) = h.wait_delivery(&delivery_id, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    assert_eq!(delivery["attempts"], 5, "{delivery}");
    assert_eq!(attempts.last().unwrap()["status_code"], 200);
    rx.assert_stays(5, QUIET);
}

#[test]
fn retry_after_on_429_is_honoured() {
    let rx = Receiver::scripted(
        "throttled",
        [Answer::status(429).header("retry-after", "1")],
        Answer::status(200),
    );
    let h = Herald::start(
        "delivery-retry-after",
        &Conf::new()
            .schedule(&["200ms"])
            .webhook("acme", "throttled", &rx)
            .subscribe("acme", "throttled", &["*"]),
    );
    h.post(&json!({"id": "evt_429", "event": "host.down"}), ACME_KEY)
        .expect(202);
    let requests = rx.wait_for(2, WAIT);
    // Never earlier than the schedule (200 ms less its 20 % jitter) allows.
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(150),
        "second attempt only {gap:?} after the first"
    );
    let delivery_id = only_delivery(&h, "evt_429");
    let (_, attempts) = h.wait_delivery(&delivery_id, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    assert_eq!(
        status_codes(&attempts),
        [Some(429), Some(200)],
        "{attempts:#?}"
    );
}

/// The `GET /v1/channels` entry of one channel.
fn channel_state(h: &Herald, team: &str, name: &str) -> Result<Value, String> {
    let reply = h.get("/v1/channels", ACME_KEY);
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, reply.text));
    }
    reply.json()["channels"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|c| c["team"] == team && c["channel"] == name)
                .cloned()
        })
        .ok_or(reply.text)
}

#[test]
fn gone_disables_the_channel_and_enabling_sends_what_waited() {
    let rx = Receiver::scripted("gone", [Answer::status(410)], Answer::status(200));
    let h = Herald::start(
        "delivery-gone",
        &Conf::new()
            .webhook("acme", "gone", &rx)
            .subscribe("acme", "gone", &["*"]),
    );
    h.post(&json!({"id": "evt_gone_1", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.wait_for(1, WAIT);
    let channel = wait_until("channel `gone` disabled", WAIT, || {
        let c = channel_state(&h, "acme", "gone")?;
        if c["state"] == "disabled" {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    });
    assert_keys(
        &channel,
        &["team", "channel", "type", "state", "reason", "since"],
    );
    assert_eq!(channel["type"], "webhook", "{channel}");
    assert!(
        channel["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a disabled channel says why: {channel}"
    );

    h.post(&json!({"id": "evt_gone_2", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.assert_stays(1, Duration::from_secs(1));
    for id in ["evt_gone_1", "evt_gone_2"] {
        let deliveries = h.wait_deliveries(id, ACME_KEY, "one", |d| d.len() == 1);
        assert_eq!(
            deliveries[0]["status"], "pending",
            "nothing is dropped while disabled: {deliveries:?}"
        );
    }

    let reply = h.post_empty("/v1/channels/acme/gone/enable", ACME_KEY);
    assert_eq!(reply.status, 200, "{}", reply.text);
    let requests = rx.wait_for(3, WAIT);
    let later: BTreeSet<String> = requests[1..].iter().map(|r| r.event_id()).collect();
    assert_eq!(
        later,
        BTreeSet::from(["evt_gone_1".to_string(), "evt_gone_2".to_string()])
    );
    for id in ["evt_gone_1", "evt_gone_2"] {
        h.wait_deliveries(id, ACME_KEY, "succeeded", |d| {
            d.len() == 1 && d[0]["status"] == "succeeded"
        });
    }
    let channel = channel_state(&h, "acme", "gone").unwrap();
    assert_eq!(channel["state"], "ok", "{channel}");
    rx.assert_stays(3, QUIET);

    // Disabled again; a configuration reload re-enables it too.
    rx.push(Answer::status(410));
    h.post(&json!({"id": "evt_gone_3", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.wait_for(4, WAIT);
    wait_until("channel `gone` disabled again", WAIT, || {
        let c = channel_state(&h, "acme", "gone")?;
        if c["state"] == "disabled" {
            Ok(())
        } else {
            Err(c.to_string())
        }
    });
    rx.assert_stays(4, QUIET);
    assert_eq!(
        h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200),
        json!({"reloaded": true})
    );
    let requests = rx.wait_for(5, WAIT);
    assert_eq!(requests[4].event_id(), "evt_gone_3");
    h.wait_deliveries("evt_gone_3", ACME_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
}

#[test]
fn a_hanging_endpoint_does_not_delay_a_healthy_one() {
    let slow = Receiver::scripted("slow", [], Answer::hang());
    let fast = Receiver::start("fast");
    let h = Herald::start(
        "delivery-hang",
        &Conf::new()
            .schedule(&["200ms"])
            .concurrency_per_channel(1)
            .webhook("acme", "slow", &slow)
            .webhook("acme", "fast", &fast)
            .subscribe("acme", "slow", &["*"])
            .subscribe("acme", "fast", &["*"]),
    );
    // Served one at a time, the slow channel's 5 × 2 attempts hang for 10 s in all; the
    // fast channel must not wait for them.
    let started = Instant::now();
    let ids: Vec<String> = (0..5).map(|i| format!("evt_hang_{i}")).collect();
    for id in &ids {
        h.post(&json!({"id": id, "event": "capsule.create"}), ACME_KEY)
            .expect(202);
    }
    let requests = fast.wait_for(5, Duration::from_secs(4));
    let got: BTreeSet<String> = requests.iter().map(|r| r.event_id()).collect();
    assert_eq!(
        got,
        ids.iter().cloned().collect(),
        "after {:?}",
        started.elapsed()
    );

    assert!(slow.count() >= 1, "the slow receiver was never called");
    let first = h.wait_deliveries(&ids[0], ACME_KEY, "both deliveries", |d| d.len() == 2);
    let slow_delivery = first
        .iter()
        .find(|d| d["channel"] == "slow")
        .expect("a delivery to `slow`");
    let (_, attempts) = h.wait_delivery(
        slow_delivery["id"].as_str().unwrap(),
        ACME_KEY,
        "an attempt that timed out",
        |_, attempts| {
            attempts
                .iter()
                .any(|a| a["error"].as_str().is_some_and(|e| e.contains("timed out")))
        },
    );
    assert_eq!(attempts[0]["status_code"], Value::Null, "{attempts:#?}");

    // concurrency_per_channel = 1: the slow channel's next attempt starts only when the
    // first has timed out (a lower bound, less the first request's time on the wire).
    let slow_requests = slow.wait_for(2, WAIT);
    let gap = slow_requests[1].at.duration_since(slow_requests[0].at);
    assert!(
        gap >= Duration::from_millis(800),
        "two attempts in flight at once on one channel: the second came {gap:?} after the first"
    );
}

#[test]
fn the_file_channel_writes_one_json_line_per_delivery() {
    let s = Conf::new()
        .file("acme", "audit", "audit/acme.jsonl")
        .subscribe("acme", "audit", &["*"]);
    let h = Herald::start("delivery-file", &s);
    h.post(
        &json!({"id": "evt_file_1", "event": "host.down", "metadata": {"region": "eu"}}),
        ACME_KEY,
    )
    .expect(202);
    let deliveries = h.wait_deliveries("evt_file_1", ACME_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    let path = h.dir().join("audit/acme.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(line["delivery_id"], deliveries[0]["id"], "{line}");
    assert_eq!(line["event"]["id"], "evt_file_1", "{line}");
    assert_eq!(line["event"]["event"], "host.down", "{line}");
    assert_eq!(line["event"]["team_id"], "acme", "{line}");
    assert_eq!(line["event"]["metadata"], json!({"region": "eu"}), "{line}");
}
