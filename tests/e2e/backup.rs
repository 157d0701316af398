//! `herald backup` under load and `herald restore`: the restore drill of docs/operations.md.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;

use crate::harness::*;
use crate::support::{herald, run, text};

fn publish(client: &Client, id: &str) -> bool {
    let event = json!({"id": id, "event": "capsule.create"});
    let body = Some(("application/json", event.to_string().into_bytes()));
    matches!(
        client.try_request(axum::http::Method::POST, "/v1/events", Some(ACME_KEY), body),
        Ok(reply) if (200..300).contains(&reply.status)
    )
}

fn store_command(h: &Herald, command: &str, path: &std::path::Path) -> std::process::Output {
    let mut cmd = herald();
    cmd.arg(command)
        .arg(path)
        .arg("--config")
        .arg(h.dir().join("herald.toml"));
    run(cmd, "")
}

#[test]
fn a_backup_under_load_restores_every_event_committed_before_it_started() {
    let rx = Receiver::start("backup");
    let mut h = Herald::start(
        "backup-restore",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let mut before = BTreeSet::new();
    for i in 0..100 {
        let id = format!("evt_before_{i:03}");
        assert!(publish(&h.client(), &id), "{id} was not accepted");
        before.insert(id);
    }

    // Publishers keep posting while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..4)
        .map(|t| {
            let client = h.client();
            let (stop, during) = (Arc::clone(&stop), Arc::clone(&during));
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("evt_during_{t}_{n}");
                    if publish(&client, &id) {
                        accepted.push(id);
                        during.fetch_add(1, Ordering::SeqCst);
                    }
                    n += 1;
                }
                accepted
            })
        })
        .collect();
    wait_until("publishing under way", WAIT, || {
        match during.load(Ordering::SeqCst) {
            0 => Err("no event accepted yet".to_string()),
            _ => Ok(()),
        }
    });
    let backup = h.dir().join("herald-backup.db");
    let out = store_command(&h, "backup", &backup);
    stop.store(true, Ordering::SeqCst);
    // Each publisher's accepted events, in the order it sent them (each after the last's 202).
    let sequences: Vec<Vec<String>> = publishers
        .into_iter()
        .map(|p| p.join().expect("a publisher thread panicked"))
        .collect();
    assert!(
        out.status.success(),
        "herald backup failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("backup written"),
        "{}",
        text(&out.stdout)
    );

    // An event accepted after the backup: the restore must take it away again.
    assert!(publish(&h.client(), "evt_after_backup"));

    // Refused while herald holds the store, naming its pid.
    let out = store_command(&h, "restore", &backup);
    assert!(!out.status.success(), "restore ran beside a live herald");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("pid {}", h.pid())),
        "the refusal names the holder: {stderr}"
    );

    let status = h.terminate();
    assert!(status.success(), "herald exited with {status}");
    let out = store_command(&h, "restore", &backup);
    assert!(
        out.status.success(),
        "herald restore failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("before-restore-"),
        "the replaced database is kept: {}",
        text(&out.stdout)
    );

    h.restart();
    for id in &before {
        let reply = h.get(&format!("/v1/events/{id}"), ACME_KEY);
        assert_eq!(
            reply.status, 200,
            "{id} is missing after the restore: {}",
            reply.text
        );
    }
    eprintln!(
        "accepted while publishing beside the backup: {:?}",
        sequences.iter().map(Vec::len).collect::<Vec<_>>()
    );
    // A consistent snapshot: of each publisher's events, the restored store holds a prefix
    // (an event is never there without the ones acknowledged before it).
    for sequence in &sequences {
        let present: Vec<bool> = sequence
            .iter()
            .map(|id| h.get(&format!("/v1/events/{id}"), ACME_KEY).status == 200)
            .collect();
        let first_missing = present.iter().position(|p| !p).unwrap_or(present.len());
        assert!(
            present[first_missing..].iter().all(|p| !p),
            "not a snapshot: {sequence:?} restored as {present:?}"
        );
    }
    let reply = h.get("/v1/events/evt_after_backup", ACME_KEY);
    assert_eq!(
        reply.status, 404,
        "the restored store still has an event accepted after the backup"
    );
    // The restored store serves: a new event is accepted and delivered.
    assert!(publish(&h.client(), "evt_after_restore"));
    h.wait_deliveries("evt_after_restore", ACME_KEY, "delivered", |d| {
        d.iter().all(|d| d["status"] == "succeeded")
    });
}
