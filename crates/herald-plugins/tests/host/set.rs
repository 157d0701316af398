//! The plugin set: quarantine after consecutive failures, atomic hot reload of good
//! versions, rejection of broken ones, and the file watcher.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herald_plugins::{HostOptions, Limits, PluginError, PluginSet, PluginSpec, Reload};

use super::*;

fn spec(name: &str, path: &Path) -> PluginSpec {
    PluginSpec {
        name: name.to_string(),
        path: path.to_path_buf(),
        limits: test_limits(),
    }
}

/// Puts plugin crate `from`'s component at `to`, as an operator deploying a file would
/// (write a temporary file, rename over).
fn deploy(from: &str, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(wasm(from), &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn consecutive_failures_quarantine_a_plugin_until_it_is_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.wasm");
    deploy("fixture-echo", &path);
    let set = PluginSet::new(host(), 3);
    set.insert(spec("echo", &path)).unwrap();
    let fail = settings(&[("fail", "boom")]);
    let ok = settings(&[]);

    // A success in between resets the count.
    for _ in 0..2 {
        assert!(set.format("echo", &event(), "webhook", &fail).is_err());
    }
    assert!(set.format("echo", &event(), "webhook", &ok).is_ok());
    assert_eq!(set.status()[0].consecutive_failures, 0);

    for _ in 0..3 {
        assert_eq!(
            set.format("echo", &event(), "webhook", &fail),
            Err(PluginError::Returned("boom".into()))
        );
    }
    let quarantined = set.format("echo", &event(), "webhook", &ok).unwrap_err();
    assert_eq!(
        quarantined,
        PluginError::Quarantined {
            failures: 3,
            last: "plugin error: boom".into()
        }
    );
    assert!(
        !quarantined.is_plugin_fault(),
        "quarantine does not feed itself"
    );
    let status = &set.status()[0];
    assert_eq!(status.quarantined.as_deref(), Some("plugin error: boom"));

    // A reload (SIGHUP, config reload) lifts the quarantine even for the same file.
    assert_eq!(
        set.reload("echo"),
        Ok(Reload::Swapped {
            version: "0.1.0".into()
        })
    );
    assert!(set.format("echo", &event(), "webhook", &ok).is_ok());
    assert_eq!(set.status()[0].quarantined, None);
    assert_eq!(
        set.format("nope", &event(), "webhook", &ok),
        Err(PluginError::Unknown("nope".into()))
    );
}

#[test]
fn one_teams_failures_never_quarantine_a_plugin_for_another_team() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.wasm");
    deploy("fixture-echo", &path);
    let set = PluginSet::new(host(), 3);
    set.insert(spec("echo", &path)).unwrap();
    let fail = settings(&[("fail", "boom")]);
    let ok = settings(&[]);
    let acme = event();
    let mut globex = event();
    globex.team_id = herald_core::TeamId::parse("globex").unwrap();

    for _ in 0..3 {
        assert!(set.format("echo", &acme, "webhook", &fail).is_err());
    }
    assert!(matches!(
        set.format("echo", &acme, "webhook", &ok),
        Err(PluginError::Quarantined { failures: 3, .. })
    ));
    // globex's events still render, and its status shows no failure of acme's.
    assert!(set.format("echo", &globex, "webhook", &ok).is_ok());
    let globex_status = &set.status_for_team("globex")[0];
    assert_eq!(
        (
            globex_status.consecutive_failures,
            globex_status.quarantined.as_deref()
        ),
        (0, None)
    );
    let acme_status = &set.status_for_team("acme")[0];
    assert_eq!(
        acme_status.quarantined.as_deref(),
        Some("plugin error: boom")
    );
    // The admin's view names the quarantined team.
    assert_eq!(set.status()[0].quarantined_teams, ["acme"]);
}

#[test]
fn hot_reload_swaps_good_versions_and_rejects_broken_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("formatter.wasm");
    deploy("fixture-echo", &path);
    let set = PluginSet::new(host(), 5);
    set.insert(spec("f", &path)).unwrap();
    let none = settings(&[]);
    let v1 = rendered(set.format("f", &event(), "webhook", &none));
    assert_eq!(v1.format, herald_core::Format::Text);
    assert!(set.reload_changed().is_empty(), "nothing changed yet");

    // A renderer holding the old version keeps it across the swap.
    let held = set.get("f").unwrap();
    deploy("discord", &path);
    let changes = set.reload_changed();
    assert_eq!(
        changes,
        vec![(
            "f".to_string(),
            Ok(Reload::Swapped {
                version: "0.1.0".into()
            })
        )]
    );
    assert_eq!(set.get("f").unwrap().info().name, "discord");
    let v2 = rendered(set.format("f", &event(), "webhook", &none));
    assert_eq!(v2.format, herald_core::Format::Json);
    assert_eq!(rendered(held.format(&event(), "webhook", &none)), v1);

    // A broken version (panics on every event) is rejected; discord keeps serving.
    deploy("fixture-panic", &path);
    let changes = set.reload_changed();
    assert_eq!(changes.len(), 1);
    let err = changes[0].1.as_ref().unwrap_err();
    assert_eq!(err.kind(), "validation", "{err}");
    assert_eq!(set.get("f").unwrap().info().name, "discord");
    assert_eq!(rendered(set.format("f", &event(), "webhook", &none)), v2);
    assert!(
        set.reload_changed().is_empty(),
        "a rejected file is reported once"
    );

    // So are a forbidden import, and bytes that are not a component at all.
    deploy("fixture-forbidden-import", &path);
    assert_eq!(
        set.reload_changed()[0].1.as_ref().unwrap_err().kind(),
        "forbidden_import"
    );
    std::fs::write(&path, b"half-written garbage").unwrap();
    assert_eq!(
        set.reload_changed()[0].1.as_ref().unwrap_err().kind(),
        "not_a_component"
    );
    assert_eq!(rendered(set.format("f", &event(), "webhook", &none)), v2);

    // An explicit reload of a broken file fails the same way and changes nothing.
    assert!(set.reload("f").is_err());
    assert_eq!(set.get("f").unwrap().info().name, "discord");

    // And a good version again.
    deploy("fixture-echo", &path);
    assert!(matches!(
        set.reload_changed()[0].1,
        Ok(Reload::Swapped { .. })
    ));
    assert_eq!(rendered(set.format("f", &event(), "webhook", &none)), v1);
}

#[test]
fn a_render_in_flight_finishes_on_the_version_it_started_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("formatter.wasm");
    // A warm compile cache keeps the reload below quick (no cranelift run), so it
    // surely happens while the old version's render is still running.
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(dir.path().join("cache")),
        ..HostOptions::default()
    })
    .unwrap();
    host.load("warm", &wasm("fixture-echo"), test_limits())
        .unwrap();
    deploy("fixture-spin", &path);
    let set = Arc::new(PluginSet::new(host, 5));
    let slow = PluginSpec {
        limits: Limits {
            timeout: Duration::from_secs(4),
            ..Limits::default()
        },
        ..spec("f", &path)
    };
    set.insert(slow).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(2));
    let in_flight = {
        let (set, done, started) = (set.clone(), done.clone(), started.clone());
        std::thread::spawn(move || {
            started.wait();
            let result = set.format("f", &event(), "webhook", &settings(&[]));
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    started.wait();
    deploy("fixture-echo", &path);
    assert!(matches!(
        set.reload_changed()[0].1,
        Ok(Reload::Swapped { .. })
    ));
    let new = rendered(set.format("f", &event(), "webhook", &settings(&[])));
    assert!(
        new.body.starts_with("capsule.create failed"),
        "{}",
        new.body
    );
    assert!(
        !done.load(Ordering::SeqCst),
        "the old version's render was still running while the new one served"
    );
    // The old render ends as the old version does: stopped by its deadline.
    assert_eq!(in_flight.join().unwrap().unwrap_err().kind(), "timeout");
}

#[test]
fn the_watcher_picks_up_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("formatter.wasm");
    deploy("fixture-echo", &path);
    let set = Arc::new(PluginSet::new(host(), 5));
    set.insert(spec("f", &path)).unwrap();
    let watcher = set.watch(Duration::from_millis(20));
    deploy("discord", &path);
    let deadline = Instant::now() + Duration::from_secs(60);
    while set.get("f").unwrap().info().name != "discord" {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload within 60s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watcher);
}

#[test]
fn a_set_reports_what_failed_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.wasm");
    deploy("card", &good);
    let set = PluginSet::new(host(), 5);
    let failed = set.insert_all([
        spec("card", &good),
        spec("missing", &dir.path().join("missing.wasm")),
    ]);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "missing");
    assert_eq!(failed[0].1.kind(), "read");
    assert_eq!(set.names(), ["card"]);
    assert!(set.remove("card"));
    assert!(set.names().is_empty());
}

#[test]
fn sync_follows_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.wasm"), dir.path().join("b.wasm"));
    deploy("fixture-echo", &a);
    deploy("card", &b);
    let set = PluginSet::new(host(), 1);
    set.insert(spec("a", &a)).unwrap();
    set.insert(spec("old", &a)).unwrap();
    // Quarantine `a` (one failure is enough here).
    assert!(
        set.format("a", &event(), "webhook", &settings(&[("fail", "x")]))
            .is_err()
    );
    assert_eq!(
        set.format("a", &event(), "webhook", &settings(&[]))
            .unwrap_err()
            .kind(),
        "quarantined"
    );

    let outcome = set.sync([
        spec("a", &a),
        PluginSpec {
            limits: Limits {
                memory: 8 * 1024 * 1024,
                ..test_limits()
            },
            ..spec("b", &b)
        },
        spec("broken", &dir.path().join("missing.wasm")),
    ]);
    let kinds: Vec<(&str, &str)> = outcome
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_ref().map_or_else(|e| e.kind(), |_| "ok")))
        .collect();
    assert_eq!(kinds, [("a", "ok"), ("b", "ok"), ("broken", "read")]);
    assert_eq!(
        set.names(),
        ["a", "b"],
        "`old` is gone, `broken` never loaded"
    );
    assert!(
        set.format("a", &event(), "webhook", &settings(&[])).is_ok(),
        "quarantine lifted"
    );
    assert_eq!(set.get("b").unwrap().limits().memory, 8 * 1024 * 1024);
}
