//! Exponential backoff with jitter, shared by the publisher, the background sender and the
//! subscriber's reconnects.

use std::time::Duration;

/// How long to wait between attempts: `initial`, doubling up to `max`, each delay moved by
/// up to ±20 % at random so many clients restarting together do not retry in lockstep.
///
/// ```
/// use std::time::Duration;
/// use herald_client::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// let third = backoff.delay(2); // 400 ms ± 20 %
/// assert!(third >= Duration::from_millis(320) && third <= Duration::from_millis(480));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 50 ms, doubling to at most 2 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = herald_client::Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    /// assert_eq!(b.max, Duration::from_secs(1));
    /// ```
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The delay after the `failures`-th consecutive failure (0 = the first).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let b = herald_client::Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    /// assert!(b.delay(40) <= Duration::from_millis(1200)); // capped, plus jitter
    /// ```
    pub fn delay(&self, failures: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(2u32.saturating_pow(failures.min(30)))
            .min(self.max);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_within_jitter() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        for (failures, base) in [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (50, 1000),
        ] {
            for _ in 0..50 {
                let d = b.delay(failures).as_secs_f64() * 1000.0;
                let base = f64::from(base);
                assert!(
                    d >= base * 0.8 - 1e-6 && d <= base * 1.2 + 1e-6,
                    "failure {failures}: {d} ms outside {base} ± 20 %"
                );
            }
        }
    }
}
