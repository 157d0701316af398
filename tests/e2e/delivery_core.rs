//! The delivery core: one process per store directory, adaptive per-channel concurrency,
//! and retries read back from the store at their due time, without polling.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::*;
use crate::support::herald;

#[test]
fn a_second_herald_on_the_same_store_exits_naming_the_first() {
    let rx = Receiver::start("hook");
    let mut first = Herald::start(
        "core-lock",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let config = first.dir().join("herald.toml");
    let mut second = herald()
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(first.dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second herald serve");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().expect("poll the second herald") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            panic!("the second herald on the same store kept running");
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    let output = second
        .wait_with_output()
        .expect("read the second herald's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "the second herald must fail: {stderr}");
    assert!(
        stderr.contains(&format!(
            "in use by another herald process (pid {})",
            first.pid()
        )),
        "the error must name the first process: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "the second herald must not serve"
    );

    // The first one was not disturbed: it still accepts and delivers.
    first
        .post(
            &json!({"id": "evt_after_lock", "event": "host.down"}),
            ACME_KEY,
        )
        .expect(202);
    assert_eq!(rx.wait_for(1, WAIT)[0].event_id(), "evt_after_lock");
    assert!(first.is_running());
}

/// The channel's `concurrency` object from `GET /v1/channels`.
fn lane(h: &Herald, channel: &str) -> Value {
    let body = h.get("/v1/channels", ACME_KEY).expect(200);
    body["channels"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["channel"] == channel))
        .map(|c| c["concurrency"].clone())
        .unwrap_or_else(|| panic!("no channel `{channel}` in {body}"))
}

#[test]
fn each_endpoint_gets_the_concurrency_it_can_take() {
    const EVENTS: usize = 1500;
    let fast = Receiver::start("fast");
    // Overloaded: every request is slow and refused with 503.
    let slow = Receiver::scripted(
        "slow",
        [],
        Answer::status(503).after(Duration::from_millis(40)),
    );
    let h = Herald::start(
        "core-adaptive",
        &Conf::new()
            .schedule(&["30s"])
            .webhook("acme", "fast", &fast)
            .webhook("acme", "slow", &slow)
            .subscribe("acme", "fast", &["*"])
            .subscribe("acme", "slow", &["*"]),
    );
    let start = lane(&h, "fast");
    assert_eq!(start["adaptive"], true, "{start}");
    assert_eq!(
        start["limit"], 4,
        "adaptive channels start at a few in flight: {start}"
    );

    for batch in 0..EVENTS / 100 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("evt_{batch}_{i}"), "event": "host.down"}))
            .collect();
        h.post(&Value::Array(events), ACME_KEY).expect(202);
    }
    let mut highest_fast = 0;
    let mut lowest_slow = u64::MAX;
    wait_until(
        "every event at the fast endpoint",
        Duration::from_secs(60),
        || {
            highest_fast = highest_fast.max(lane(&h, "fast")["limit"].as_u64().unwrap());
            lowest_slow = lowest_slow.min(lane(&h, "slow")["limit"].as_u64().unwrap());
            let n = fast.count();
            if n >= EVENTS {
                Ok(())
            } else {
                Err(format!("{n} of {EVENTS}"))
            }
        },
    );
    let slow_now = lane(&h, "slow");
    lowest_slow = lowest_slow.min(slow_now["limit"].as_u64().unwrap());
    assert!(
        highest_fast > 4,
        "the fast endpoint's limit never grew past its start of 4 (highest {highest_fast})"
    );
    assert!(
        lowest_slow < 4,
        "the refusing endpoint's limit never shrank below 4 (lowest {lowest_slow}, now {slow_now})"
    );
    assert!(
        slow.count() > 0 && slow.count() < EVENTS,
        "the refusing endpoint saw {} requests",
        slow.count()
    );
    // The metrics show the same limits.
    let metrics = h.get("/metrics", ADMIN_TOKEN);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text
            .contains("herald_channel_concurrency_limit{team=\"acme\",channel=\"fast\"}"),
        "{}",
        metrics.text
    );
}

fn unix_nanos(v: &Value) -> i128 {
    serde_json::from_value::<herald_core::Timestamp>(v.clone())
        .unwrap_or_else(|e| panic!("{v} is not a timestamp: {e}"))
        .unix_nanos()
}

fn metric(h: &Herald, name: &str) -> f64 {
    let text = h.get("/metrics", ADMIN_TOKEN).text;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_retry_pending_across_a_restart_fires_at_its_due_time_without_polling() {
    let rx = Receiver::scripted("hook", [Answer::status(500)], Answer::status(200));
    let mut h = Herald::start(
        "core-due",
        &Conf::new()
            .schedule(&["4s"])
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    h.post(&json!({"id": "evt_due", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.wait_for(1, WAIT);
    let deliveries = h.wait_deliveries("evt_due", ACME_KEY, "one", |d| d.len() == 1);
    let id = deliveries[0]["id"].as_str().unwrap().to_string();
    let (delivery, _) = h.wait_delivery(&id, ACME_KEY, "first attempt recorded", |d, _| {
        d["attempts"] == 1 && d["status"] == "pending"
    });
    let due = unix_nanos(&delivery["next_attempt_at"]);

    h.restart();
    let requests = rx.wait_for(2, WAIT);
    // The receiver's clock is the same as herald's: compare on the wall clock.
    let arrived = {
        let since = requests[1].at.elapsed();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        (now - since).as_nanos() as i128
    };
    assert!(
        arrived >= due,
        "the retry came {} ms before it was due",
        (due - arrived) / 1_000_000
    );
    assert_eq!(requests[1].webhook_id(), id);
    h.wait_delivery(&id, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    // Reads of the store since the restart: the start-up read and the one at the due
    // time (a few more if a timer fired a hair early). A 200 ms poll would be ~20.
    let reads = metric(&h, "herald_store_reads_total");
    assert!(
        (1.0..=4.0).contains(&reads),
        "{reads} store reads in the ~4 s before the retry was due: that is polling"
    );
}
