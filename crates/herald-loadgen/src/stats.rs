//! Latency histograms and their summaries, rates, and the human rendering of both.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded exactly: one hour. Longer ones are clamped to it.
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies in microseconds: percentiles to three significant digits, the maximum exact.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
    max: u64,
}

impl Default for Latencies {
    fn default() -> Self {
        // 1 µs .. 1 h at 3 significant digits are valid bounds, so this cannot fail.
        let histogram =
            Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds");
        Latencies { histogram, max: 0 }
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS);
        self.record_micros(micros);
    }

    pub fn record_micros(&mut self, micros: u64) {
        let micros = micros.clamp(1, MAX_MICROS);
        self.histogram.saturating_record(micros);
        self.max = self.max.max(micros);
    }

    /// Adds `other`'s samples (both have the same bounds, so nothing is lost).
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        if h.is_empty() {
            return LatencySummary::default();
        }
        // A bucket's upper edge can lie above the exact maximum; never report more than it.
        let at = |q| h.value_at_quantile(q).min(self.max);
        LatencySummary {
            count: h.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: self.max,
            mean_us: h.mean().round() as u64,
        }
    }
}

/// Percentiles of a set of latencies, in microseconds; all zero when there are none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: u64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no samples");
        }
        write!(
            f,
            "p50 {}  p90 {}  p99 {}  max {}  (mean {}, {} samples)",
            Micros(self.p50_us),
            Micros(self.p90_us),
            Micros(self.p99_us),
            Micros(self.max_us),
            Micros(self.mean_us),
            self.count
        )
    }
}

/// A microsecond count shown in the unit that reads best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micros(pub u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us < 1_000 {
            write!(f, "{us} µs")
        } else if us < 1_000_000 {
            write!(f, "{:.2} ms", us as f64 / 1e3)
        } else {
            write!(f, "{:.2} s", us as f64 / 1e6)
        }
    }
}

/// `count` per second over `elapsed`; 0 when no time passed.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(micros: impl IntoIterator<Item = u64>) -> LatencySummary {
        let mut l = Latencies::default();
        for us in micros {
            l.record_micros(us);
        }
        l.summary()
    }

    /// Within hdrhistogram's 3-significant-digit precision.
    fn close(actual: u64, expected: u64) -> bool {
        actual.abs_diff(expected) <= expected / 500 + 1
    }

    #[test]
    fn percentiles_of_one_to_a_thousand() {
        let s = summary_of(1..=1000);
        assert_eq!(s.count, 1000);
        for (actual, expected) in [(s.p50_us, 500), (s.p90_us, 900), (s.p99_us, 990)] {
            assert!(close(actual, expected), "{actual} vs {expected}");
        }
        assert_eq!(s.max_us, 1000);
        assert!(close(s.mean_us, 500), "{}", s.mean_us);
    }

    #[test]
    fn a_single_slow_sample_shows_in_the_max_and_not_the_median() {
        let s = summary_of(std::iter::repeat_n(2_000, 999).chain([5_000_000]));
        assert!(close(s.p50_us, 2_000));
        assert!(close(s.p99_us, 2_000));
        assert_eq!(s.max_us, 5_000_000);
    }

    #[test]
    fn percentiles_never_exceed_the_maximum() {
        let s = summary_of([12_971]);
        assert_eq!((s.p50_us, s.p99_us, s.max_us), (12_971, 12_971, 12_971));
    }

    #[test]
    fn empty_is_all_zero() {
        assert_eq!(summary_of([]), LatencySummary::default());
        assert_eq!(LatencySummary::default().to_string(), "no samples");
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut l = Latencies::default();
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(10 * 3600));
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.max_us, MAX_MICROS);
    }

    #[test]
    fn merging_adds_samples() {
        let mut a = Latencies::default();
        let mut b = Latencies::default();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 3);
        assert!(close(s.p50_us, 3_000));
    }

    #[test]
    fn durations_read_well() {
        let cases = [
            (0, "0 µs"),
            (999, "999 µs"),
            (1_500, "1.50 ms"),
            (250_000, "250.00 ms"),
            (2_345_678, "2.35 s"),
        ];
        for (us, want) in cases {
            assert_eq!(Micros(us).to_string(), want);
        }
    }

    #[test]
    fn rates() {
        assert_eq!(per_second(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
    }
}
