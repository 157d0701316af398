//! The side-by-side results: one row per (workload, target) and the ratio of herald to
//! Alertmanager, rendered as the Markdown table docs/BENCHMARKS.md keeps.

use std::fmt::Write as _;

use herald_loadgen::stats::{LatencySummary, Micros};
use serde::Serialize;

use crate::drive::Delivered;

/// One target's figures in one delivery workload.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub target: String,
    pub deliveries_per_s: f64,
    pub expected: u64,
    pub delivered: u64,
    /// Publish → received, per delivery.
    pub latency: LatencySummary,
    pub missing: u64,
    /// Deliveries that came again: the same `webhook-id`, or the same (event, endpoint)
    /// under a new one (Alertmanager sends no id, so its repeats show only as the latter).
    pub duplicates: u64,
    /// Publishes not answered 2xx.
    pub publish_failures: u64,
    /// `VmHWM` of the target at the end of the run.
    pub peak_rss_kib: Option<u64>,
    pub timed_out: bool,
}

impl Row {
    pub fn new(workload: &str, target: &str, run: &Delivered) -> Row {
        let d = &run.deliveries;
        let publish_failures = run.publish.as_ref().map_or(0, |p| {
            p.tally.rejected.values().sum::<u64>() + p.tally.errors.values().sum::<u64>()
        });
        Row {
            workload: workload.to_string(),
            target: target.to_string(),
            deliveries_per_s: run.deliveries_per_s,
            expected: d.expected,
            delivered: d.delivered,
            latency: d.latency,
            missing: d.missing,
            duplicates: d.duplicates + d.repeated_pairs,
            publish_failures,
            peak_rss_kib: run.memory.and_then(|m| m.peak_kib),
            timed_out: run.timed_out,
        }
    }
}

/// herald's defaults against Alertmanager in one workload (`None` where either is absent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio {
    pub deliveries_per_s: f64,
    pub p50: f64,
    pub p99: f64,
    pub peak_rss: Option<f64>,
}

impl Ratio {
    pub fn of(herald: &Row, alertmanager: &Row) -> Ratio {
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        Ratio {
            deliveries_per_s: div(herald.deliveries_per_s, alertmanager.deliveries_per_s),
            p50: div(
                herald.latency.p50_us as f64,
                alertmanager.latency.p50_us as f64,
            ),
            p99: div(
                herald.latency.p99_us as f64,
                alertmanager.latency.p99_us as f64,
            ),
            peak_rss: match (herald.peak_rss_kib, alertmanager.peak_rss_kib) {
                (Some(h), Some(a)) => Some(div(h as f64, a as f64)),
                _ => None,
            },
        }
    }
}

pub const HEADER: &str = "| workload | target | deliveries/s | p50 | p99 | max | missing | duplicates | peak RSS |\n\
                          |---|---|---:|---:|---:|---:|---:|---:|---:|\n";

/// The rows of one workload, in order, then `herald / Alertmanager` when both ran.
pub fn render(rows: &[Row], ratio: Option<Ratio>) -> String {
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let workload = if n == 0 { row.workload.as_str() } else { "" };
        let mut notes = Vec::new();
        if row.timed_out {
            notes.push(format!("timed out, {} of {}", row.delivered, row.expected));
        }
        if row.publish_failures > 0 {
            notes.push(format!("{} publishes refused", row.publish_failures));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join("; "))
        };
        let _ = writeln!(
            out,
            "| {workload} | {}{notes} | {} | {} | {} | {} | {} | {} | {} |",
            row.target,
            thousands(row.deliveries_per_s),
            Micros(row.latency.p50_us),
            Micros(row.latency.p99_us),
            Micros(row.latency.max_us),
            row.missing,
            row.duplicates,
            row.peak_rss_kib.map_or("—".to_string(), mib),
        );
    }
    if let Some(r) = ratio {
        let _ = writeln!(
            out,
            "| | **herald / Alertmanager** | **{}** | {} | **{}** | | | | {} |",
            times(r.deliveries_per_s),
            times(r.p50),
            times(r.p99),
            r.peak_rss.map_or("—".to_string(), times),
        );
    }
    out
}

/// `2490.3` → `2,490`.
pub fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "—".to_string();
    }
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio as `0.61×`.
pub fn times(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}×")
    } else {
        "—".to_string()
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, per_s: f64, p50_ms: u64, p99_ms: u64, rss_mib: u64) -> Row {
        Row {
            workload: "W1 5,000 events → 1 endpoint".to_string(),
            target: target.to_string(),
            deliveries_per_s: per_s,
            expected: 5_000,
            delivered: 5_000,
            latency: LatencySummary {
                count: 5_000,
                p50_us: p50_ms * 1_000,
                p90_us: p99_ms * 1_000,
                p99_us: p99_ms * 1_000,
                max_us: p99_ms * 1_000,
                mean_us: p50_ms * 1_000,
            },
            missing: 0,
            duplicates: 0,
            publish_failures: 0,
            peak_rss_kib: Some(rss_mib * 1024),
            timed_out: false,
        }
    }

    #[test]
    fn a_workload_renders_both_rows_and_their_ratio() {
        let herald = row("herald (defaults)", 2_490.4, 695, 789, 30);
        let mut am = row("Alertmanager", 4_049.0, 20, 41, 60);
        am.workload = "ignored: only the first row names the workload".to_string();
        am.timed_out = true;
        am.delivered = 4_990;
        let ratio = Ratio::of(&herald, &am);
        assert_eq!(
            render(&[herald, am], Some(ratio)),
            "| W1 5,000 events → 1 endpoint | herald (defaults) | 2,490 | 695.00 ms | 789.00 ms | 789.00 ms | 0 | 0 | 30.0 MiB |\n\
             |  | Alertmanager (timed out, 4990 of 5000) | 4,049 | 20.00 ms | 41.00 ms | 41.00 ms | 0 | 0 | 60.0 MiB |\n\
             | | **herald / Alertmanager** | **0.62×** | 34.75× | **19.24×** | | | | 0.50× |\n"
        );
    }

    #[test]
    fn numbers_read_well() {
        let cases = [
            (0.0, "0"),
            (999.4, "999"),
            (1_000.0, "1,000"),
            (1_234_567.8, "1,234,568"),
        ];
        for (x, want) in cases {
            assert_eq!(thousands(x), want, "{x}");
        }
        assert_eq!(thousands(f64::NAN), "—");
        assert_eq!(times(f64::NAN), "—");
        assert_eq!(times(1.254), "1.25×");
    }
}
