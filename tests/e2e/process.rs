//! `herald serve` as a process: graceful restart, kill -9 under load, configuration reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[test]
fn a_pending_retry_survives_a_graceful_restart() {
    let rx = Receiver::scripted("hook", [Answer::status(500)], Answer::status(200));
    let mut h = Herald::start(
        "process-restart",
        &Conf::new()
            .schedule(&["2s"])
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    h.post(&json!({"id": "evt_resume", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.wait_for(1, WAIT);
    let deliveries = h.wait_deliveries("evt_resume", ACME_KEY, "one", |d| d.len() == 1);
    let delivery_id = deliveries[0]["id"].as_str().unwrap().to_string();
    h.wait_delivery(&delivery_id, ACME_KEY, "first attempt recorded", |d, _| {
        d["attempts"] == 1 && d["status"] == "pending"
    });

    let status = h.terminate();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    h.restart();

    let requests = rx.wait_for(2, WAIT);
    assert_eq!(requests[1].webhook_id(), delivery_id);
    assert_eq!(requests[1].event_id(), "evt_resume");
    let (delivery, attempts) = h.wait_delivery(&delivery_id, ACME_KEY, "succeeded", |d, _| {
        d["status"] == "succeeded"
    });
    assert_eq!(delivery["attempts"], 2, "{delivery}");
    let codes: Vec<_> = attempts.iter().map(|a| a["status_code"].as_u64()).collect();
    assert_eq!(codes, [Some(500), Some(200)], "{attempts:#?}");
    rx.assert_stays(2, QUIET);
}

#[test]
fn every_accepted_event_is_delivered_after_kill_9_under_load() {
    const EVENTS: usize = 300;
    const THREADS: usize = 8;
    // Slow receivers (4 attempts in flight per channel, pinned, 50 ms each) keep a backlog
    // of accepted but undelivered events at the moment of the kill.
    let slow_ok = || Answer::status(200).after(Duration::from_millis(50));
    let a = Receiver::scripted("a", [], slow_ok());
    let b = Receiver::scripted("b", [], slow_ok());
    let mut h = Herald::start(
        "process-kill9",
        &Conf::new()
            .concurrency_per_channel(4)
            .webhook("acme", "a", &a)
            .webhook("acme", "b", &b)
            .subscribe("acme", "a", &["*"])
            .subscribe("acme", "b", &["*"]),
    );

    let next = Arc::new(AtomicUsize::new(0));
    let replies = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let publishers: Vec<_> = (0..THREADS)
        .map(|_| {
            let client = h.client();
            let (next, replies) = (Arc::clone(&next), Arc::clone(&replies));
            let (accepted, refused) = (Arc::clone(&accepted), Arc::clone(&refused));
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= EVENTS {
                        break;
                    }
                    let id = format!("evt_load_{i:03}");
                    let event = json!({"id": id, "event": "capsule.create"});
                    let body = Some(("application/json", event.to_string().into_bytes()));
                    // An error means the server died under this request: not accepted.
                    if let Ok(reply) = client.try_request(
                        axum::http::Method::POST,
                        "/v1/events",
                        Some(ACME_KEY),
                        body,
                    ) {
                        if (200..300).contains(&reply.status) {
                            accepted.lock().unwrap().push(id);
                        } else {
                            refused
                                .lock()
                                .unwrap()
                                .push(format!("{id}: HTTP {} {}", reply.status, reply.text));
                        }
                        replies.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    wait_until("half of the replies", Duration::from_secs(60), || {
        let n = replies.load(Ordering::SeqCst);
        if n >= EVENTS / 2 {
            Ok(())
        } else {
            Err(format!("{n} replies"))
        }
    });
    h.kill9();
    let delivered_before_kill = a.count().min(b.count());
    eprintln!(
        "killed after {} replies; receivers had {} and {} requests",
        replies.load(Ordering::SeqCst),
        a.count(),
        b.count()
    );
    for p in publishers {
        p.join().expect("a publisher thread panicked");
    }
    let refused = refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "refused before the kill: {refused:#?}");
    let accepted: BTreeSet<String> = accepted.lock().unwrap().iter().cloned().collect();
    assert!(
        accepted.len() >= EVENTS / 2,
        "only {} accepted",
        accepted.len()
    );
    assert!(
        delivered_before_kill < accepted.len(),
        "everything was delivered before the kill: the test did not exercise recovery"
    );

    h.restart();
    for rx in [&a, &b] {
        wait_until(
            "every accepted event at both receivers",
            Duration::from_secs(60),
            || {
                let got: BTreeSet<String> = rx.event_ids().into_iter().collect();
                let missing: Vec<&String> = accepted.difference(&got).collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} missing: {missing:?}", missing.len()))
                }
            },
        );
    }
    // Duplicates are allowed, but a delivery keeps its webhook-id; the two channels'
    // deliveries of one event are different deliveries.
    let webhook_ids = |rx: &Receiver| {
        let mut by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in rx.wait_for(0, WAIT) {
            by_event
                .entry(r.event_id())
                .or_default()
                .insert(r.webhook_id().to_string());
        }
        for (event, ids) in &by_event {
            assert_eq!(
                ids.len(),
                1,
                "{event} came with several webhook-ids: {ids:?}"
            );
        }
        by_event
    };
    let (at_a, at_b) = (webhook_ids(&a), webhook_ids(&b));
    for id in &accepted {
        assert_ne!(at_a[id], at_b[id], "{id}: one webhook-id for two channels");
    }
}

#[test]
fn sighup_and_the_admin_api_reload_the_configuration_or_keep_the_old_one() {
    let a = Receiver::start("a");
    let b = Receiver::start("b");
    let base = Conf::new()
        .webhook("acme", "a", &a)
        .subscribe("acme", "a", &["*"]);
    let mut h = Herald::start("process-reload", &base);
    h.post(&json!({"id": "evt_hup_1", "event": "host.down"}), ACME_KEY)
        .expect(202);
    a.wait_for(1, WAIT);

    // A new channel and subscription, picked up on SIGHUP.
    let with_b = base
        .clone()
        .webhook("acme", "b", &b)
        .subscribe("acme", "b", &["*"]);
    h.write_config(&with_b.render());
    h.reload_sighup();
    wait_until("channel `b` after SIGHUP", WAIT, || {
        let reply = h.get("/v1/channels", ADMIN_TOKEN);
        let has_b = reply.status == 200
            && reply.json()["channels"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["team"] == "acme" && c["channel"] == "b"));
        if has_b { Ok(()) } else { Err(reply.text) }
    });
    h.post(&json!({"id": "evt_hup_2", "event": "host.down"}), ACME_KEY)
        .expect(202);
    a.wait_for(2, WAIT);
    b.wait_for(1, WAIT);
    assert_eq!(b.event_ids(), ["evt_hup_2"]);

    // A broken file: the server keeps the configuration it has and says where the problem is.
    let broken = with_b.clone().delivery_line("colour = \"blue\"");
    let text = broken.render();
    let line = text
        .lines()
        .position(|l| l == "colour = \"blue\"")
        .expect("the broken line")
        + 1;
    h.write_config(&text);
    h.reload_sighup();
    let logs = h.wait_for_log(&format!("herald.toml:{line}:1"));
    assert!(logs.contains("colour"), "{logs}");
    assert!(h.is_running(), "herald stopped on a broken reload");
    h.post(&json!({"id": "evt_hup_3", "event": "host.down"}), ACME_KEY)
        .expect(202);
    a.wait_for(3, WAIT);
    b.wait_for(2, WAIT);

    // The admin API does the same, and says what is wrong.
    let error = h
        .post_empty("/v1/admin/reload", ADMIN_TOKEN)
        .expect_error(422, "invalid_config");
    assert!(
        error["message"].as_str().unwrap().contains("colour"),
        "{error}"
    );
    h.write_config(&with_b.render());
    h.post_empty("/v1/admin/reload", ACME_KEY)
        .expect_error(403, "forbidden");
    assert_eq!(
        h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200),
        json!({"reloaded": true})
    );
    h.post(&json!({"id": "evt_hup_4", "event": "host.down"}), ACME_KEY)
        .expect(202);
    a.wait_for(4, WAIT);
    b.wait_for(3, WAIT);
    assert_eq!(b.event_ids(), ["evt_hup_2", "evt_hup_3", "evt_hup_4"]);
    assert_no_secret("the server log", &h.logs());
}

/// An open live stream (a dashboard left open) must not hold a graceful shutdown open:
/// SIGTERM ends the stream and herald exits 0.
#[test]
fn sigterm_ends_open_streams_and_exits() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let conf = Conf::new();
    let mut herald = Herald::start("sigterm-stream", &conf);
    let addr = herald.url().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to herald");
    write!(
        stream,
        "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ACME_KEY}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let exit = herald.terminate();
    assert!(
        exit.success(),
        "herald exited with {exit} while a stream was open"
    );
    // The stream was ended by the server, not left hanging.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
}
