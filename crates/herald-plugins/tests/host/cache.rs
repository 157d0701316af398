//! The on-disk cache of compiled plugins.

use herald_plugins::{HostOptions, Limits, PluginHost};

use super::*;

fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    files.sort();
    files
}

#[test]
fn compiled_plugins_are_cached_by_content_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("plugin-cache");
    let options = HostOptions {
        cache_dir: Some(cache.clone()),
        ..HostOptions::default()
    };
    let first = PluginHost::new(options.clone()).unwrap();
    first
        .load("echo", &wasm("fixture-echo"), test_limits())
        .unwrap();
    let files = artifacts(&cache);
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let wasm_sha = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(wasm("fixture-echo")).unwrap());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert!(name.starts_with(&format!("{wasm_sha}-")), "{name}");
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Another host (a restart) loads from the cache without rewriting it.
    let second = PluginHost::new(options.clone()).unwrap();
    let echo = second
        .load("echo", &wasm("fixture-echo"), test_limits())
        .unwrap();
    assert_eq!(artifacts(&cache), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );
    assert!(echo.format(&event(), "webhook", &settings(&[])).is_ok());

    // A damaged artifact is discarded and rebuilt.
    std::fs::write(&files[0], b"not an artifact").unwrap();
    let third = PluginHost::new(options).unwrap();
    let echo = third
        .load("echo", &wasm("fixture-echo"), test_limits())
        .unwrap();
    assert!(echo.format(&event(), "webhook", &settings(&[])).is_ok());
    assert_ne!(std::fs::read(&files[0]).unwrap(), b"not an artifact");

    // A different plugin gets an artifact of its own.
    third.load("card", &wasm("card"), test_limits()).unwrap();
    assert_eq!(artifacts(&cache).len(), 2);
}

#[test]
fn an_unwritable_cache_only_costs_compile_time() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file-not-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(blocker.join("cache")),
        ..HostOptions::default()
    })
    .unwrap();
    let echo = host
        .load("echo", &wasm("fixture-echo"), test_limits())
        .unwrap();
    assert!(echo.format(&event(), "webhook", &settings(&[])).is_ok());
}

#[test]
fn limits_above_the_host_maximum_are_refused() {
    let host = host();
    let err = host
        .load(
            "echo",
            &wasm("fixture-echo"),
            Limits {
                memory: 1024 * 1024 * 1024,
                ..Limits::default()
            },
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid limits: memory_limit 1024 MiB is above this host's maximum of 256 MiB"
    );
}
