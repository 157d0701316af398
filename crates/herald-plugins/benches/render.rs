//! Renders per second with a fresh instance per render, for the example plugins.
//!
//! `cargo bench -p herald-plugins --bench render` (builds plugins/ for wasm32-wasip2
//! first). Each iteration is one complete render as herald runs it: a slot, a fresh
//! `Store`, instantiation from the `InstancePre` (pooling allocator), the `format` call,
//! the output checks and the conversion to `Rendered`.
//!
//! After criterion's wall-clock figures, the bench prints renders per CPU-second of the
//! rendering thread (from `/proc/thread-self/schedstat`): the per-core figure, which
//! stays meaningful on a machine that other work keeps busy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use herald_plugins::{HostOptions, Limits, Plugin, PluginHost, build, sample_event};

const CASES: &[(&str, &str)] = &[
    ("slack", "webhook"),
    ("discord", "webhook"),
    ("card", "telegram"),
    ("card", "email"),
    ("fixture-echo", "webhook"),
];

fn settings() -> BTreeMap<String, String> {
    [(
        "dashboard_url".to_string(),
        "https://dash.example.com".to_string(),
    )]
    .into()
}

fn load_all(host: &PluginHost) -> Vec<(String, &'static str, Plugin)> {
    CASES
        .iter()
        .map(|(name, channel)| {
            let plugin = host
                .load(name, &build::plugin_wasm(name), Limits::default())
                .expect("plugin loads");
            (format!("{name}/{channel}"), *channel, plugin)
        })
        .collect()
}

fn wall_clock(c: &mut Criterion, plugins: &[(String, &'static str, Plugin)]) {
    let event = sample_event();
    let settings = settings();
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    for (label, channel, plugin) in plugins {
        group.bench_function(label.as_str(), |b| {
            b.iter(|| {
                let out = plugin.format(&event, channel, &settings);
                assert!(out.is_ok(), "{out:?}");
                out
            })
        });
    }
    group.finish();
}

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

fn cpu_time(plugins: &[(String, &'static str, Plugin)]) {
    let event = sample_event();
    let settings = settings();
    println!("\nrenders per CPU-second (one thread, fresh instance per render):");
    for (label, channel, plugin) in plugins {
        for _ in 0..2_000 {
            let _ = plugin.format(&event, channel, &settings);
        }
        let (Some(cpu0), wall0) = (thread_cpu_ns(), Instant::now()) else {
            println!("  (no /proc/thread-self/schedstat here)");
            return;
        };
        let mut n: u64 = 0;
        while wall0.elapsed() < Duration::from_secs(3) {
            for _ in 0..100 {
                assert!(plugin.format(&event, channel, &settings).is_ok());
            }
            n += 100;
        }
        let wall = wall0.elapsed();
        let cpu = thread_cpu_ns().unwrap_or(cpu0) - cpu0;
        let per_render = cpu as f64 / n as f64;
        println!(
            "  {label:<24} {:>7.0} renders/CPU-s  ({:.1} µs CPU, {:.1} µs wall per render, {n} renders)",
            1e9 / per_render,
            per_render / 1000.0,
            wall.as_nanos() as f64 / n as f64 / 1000.0,
        );
    }
}

fn main() {
    let host = PluginHost::new(HostOptions::default()).expect("host");
    let plugins = load_all(&host);
    let mut criterion = Criterion::default().configure_from_args();
    wall_clock(&mut criterion, &plugins);
    criterion.final_summary();
    cpu_time(&plugins);
}
