//! Hostile plugins: each is stopped with a precise error, and the host keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_plugins::{Limits, PluginError};

use super::*;

#[test]
fn an_infinite_loop_times_out() {
    let host = host();
    let spin = host
        .load("spin", &wasm("fixture-spin"), Limits::default())
        .expect("behaves on the sample event");
    let err = spin
        .format(&event(), "webhook", &settings(&[]))
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::Timeout {
            timeout: Duration::from_millis(50)
        }
    );
    assert_eq!(err.to_string(), "timed out after 50ms");
    assert!(err.is_plugin_fault());
    // The same plugin, again: a fresh instance, the same verdict.
    assert_eq!(
        spin.format(&event(), "webhook", &settings(&[]))
            .unwrap_err()
            .kind(),
        "timeout"
    );
    host_still_works(&host);
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let host = host();
    let bomb = load(&host, "fixture-memory-bomb").unwrap();
    let err = bomb
        .format(&event(), "webhook", &settings(&[]))
        .unwrap_err();
    assert_eq!(err.to_string(), "memory limit of 16 MiB exceeded");

    let small = Limits {
        memory: 4 * 1024 * 1024,
        ..test_limits()
    };
    let bomb = host
        .load("bomb", &wasm("fixture-memory-bomb"), small)
        .unwrap();
    let err = bomb
        .format(&event(), "webhook", &settings(&[]))
        .unwrap_err();
    assert_eq!(err.to_string(), "memory limit of 4 MiB exceeded");
    host_still_works(&host);
}

#[test]
fn a_panic_is_a_trap_with_the_panic_message() {
    let host = host();
    // It panics on every event, so the load-time sample render already refuses it.
    let err = load(&host, "fixture-panic").unwrap_err();
    let PluginError::Validation(inner) = &err else {
        panic!("expected a validation failure, got {err:?}");
    };
    let PluginError::Trap(message) = inner.as_ref() else {
        panic!("expected a trap, got {inner:?}");
    };
    assert!(
        message.starts_with("wasm `unreachable` instruction executed (panicked at "),
        "{message}"
    );
    assert!(
        message.ends_with("no template for herald.sample)"),
        "{message}"
    );
    assert!(
        err.to_string()
            .starts_with("the sample render failed: trapped: ")
    );
    host_still_works(&host);
}

#[test]
fn a_10_mib_body_is_refused() {
    let host = host();
    let huge = load(&host, "fixture-huge-output").unwrap();
    let err = huge
        .format(&event(), "webhook", &settings(&[]))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "output body is 10485760 bytes; the limit is 262144"
    );
    host_still_works(&host);
}

#[test]
fn an_invalid_json_body_is_refused() {
    let host = host();
    let bad = load(&host, "fixture-bad-json").unwrap();
    let err = bad.format(&event(), "webhook", &settings(&[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "json body does not parse: key must be a string at line 1 column 27"
    );
    host_still_works(&host);
}

#[test]
fn a_forbidden_import_is_refused_at_load_naming_it() {
    let host = host();
    let err = load(&host, "fixture-forbidden-import").unwrap_err();
    let PluginError::ForbiddenImport { imports } = &err else {
        panic!("expected a forbidden import, got {err:?}");
    };
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem/types@0.2.")),
        "{imports:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("imports `"), "{text}");
    assert!(text.contains("`wasi:filesystem/preopens@0.2."), "{text}");
    assert!(
        text.contains("which herald's sandbox does not provide"),
        "{text}"
    );
    host_still_works(&host);
}

#[test]
fn a_different_wit_version_is_refused_at_load() {
    let host = host();
    let err = load(&host, "fixture-wrong-version").unwrap_err();
    assert_eq!(
        err,
        PluginError::WrongVersion {
            found: "0.3.0".into(),
            expected: "0.1.0 or 0.2.0".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "built against herald:formatter@0.3.0, but this herald implements herald:formatter 0.1.0 or 0.2.0: rebuild it with a matching herald-plugin-sdk / wit/formatter-0.2.0.wit"
    );
    host_still_works(&host);
}

#[test]
fn files_that_are_not_components_are_refused() {
    let host = host();
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: &[u8], expect: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = host.load(name, &path, Limits::default()).unwrap_err();
        assert_eq!(err.kind(), "not_a_component", "{err}");
        assert!(err.to_string().contains(expect), "{err}");
    };
    check("text.wasm", b"hello, this is text", "magic bytes");
    // The smallest valid core module: magic and version 1, no sections.
    check("core.wasm", b"\0asm\x01\0\0\0", "core WebAssembly module");
    let missing = host
        .load("missing", &dir.path().join("nope.wasm"), Limits::default())
        .unwrap_err();
    assert_eq!(missing.kind(), "read");
    host_still_works(&host);
}

#[test]
fn a_runaway_render_does_not_hold_up_other_renders() {
    let host = host();
    let slow = Limits {
        timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let spin = host.load("spin", &wasm("fixture-spin"), slow).unwrap();
    let echo = load(&host, "fixture-echo").unwrap();
    let spin_done = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(2));
    let runaway = {
        let (done, started) = (spin_done.clone(), started.clone());
        std::thread::spawn(move || {
            started.wait();
            let result = spin.format(&event(), "webhook", &settings(&[]));
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    started.wait();
    for _ in 0..5 {
        let r = rendered(echo.format(&event(), "webhook", &settings(&[])));
        assert!(r.body.starts_with("capsule.create failed"));
    }
    assert!(
        !spin_done.load(Ordering::SeqCst),
        "five renders of another plugin finished while the runaway one was still running"
    );
    let result = runaway.join().unwrap();
    assert_eq!(result.unwrap_err().kind(), "timeout");
}

#[test]
fn hostile_renders_at_once_are_each_contained() {
    let host = host();
    let threads: Vec<_> = [
        ("fixture-spin", "timeout"), // with the 2 s test deadline
        ("fixture-memory-bomb", "memory"),
        ("fixture-huge-output", "output_too_large"),
        ("fixture-bad-json", "invalid_json"),
        ("fixture-echo", "ok"),
    ]
    .into_iter()
    .map(|(name, expect)| {
        let plugin = load(&host, name).unwrap();
        std::thread::spawn(move || {
            let got = match plugin.format(&event(), "webhook", &settings(&[])) {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            (name, got, expect)
        })
    })
    .collect();
    for t in threads {
        let (name, got, expect) = t.join().unwrap();
        assert_eq!(got, expect, "{name}");
    }
    host_still_works(&host);
}

#[test]
fn writing_to_stdout_is_refused_with_a_pointer_to_the_log() {
    let host = host();
    let err = load(&host, "fixture-stdout").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("the sample render failed: trapped: called `wasi:cli/stdout@0.2."),
        "{text}"
    );
    assert!(
        text.ends_with("#get-stdout`, which herald's sandbox does not provide (write diagnostics with the log import instead)"),
        "{text}"
    );
    host_still_works(&host);
}
