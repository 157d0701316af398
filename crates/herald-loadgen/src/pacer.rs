//! A steady publishing pace: event `i` becomes due at `i / rate` seconds, released by a ticker
//! to whichever client task is free, so a slow reply delays one client and not the schedule.

use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

/// The finest tick: tokio timers have millisecond resolution.
const MIN_TICK: Duration = Duration::from_millis(1);
/// The coarsest tick, so low rates still start promptly and end on time.
const MAX_TICK: Duration = Duration::from_millis(50);

/// When each of `total` events is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    total: u64,
    /// Events per second; `None` releases everything at once (burst).
    rate: Option<f64>,
}

impl Schedule {
    /// `rate` in events per second; 0 (or anything not positive and finite) means burst.
    pub fn new(total: u64, rate: f64) -> Schedule {
        let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
        Schedule { total, rate }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_burst(&self) -> bool {
        self.rate.is_none()
    }

    /// How many events are due `elapsed` after the start: the first at once, then one
    /// every `1 / rate`.
    pub fn due(&self, elapsed: Duration) -> u64 {
        match self.rate {
            None => self.total,
            Some(rate) => {
                let due = (elapsed.as_secs_f64() * rate).floor() as u64;
                due.saturating_add(1).min(self.total)
            }
        }
    }

    /// When event `index` (from 0) is due.
    pub fn due_at(&self, index: u64) -> Duration {
        match self.rate {
            None => Duration::ZERO,
            Some(rate) => Duration::from_secs_f64(index as f64 / rate),
        }
    }

    /// When the last event is due: how long publishing takes when the server keeps up.
    pub fn span(&self) -> Duration {
        self.due_at(self.total.saturating_sub(1))
    }

    /// How often the releasing ticker wakes.
    pub fn tick(&self) -> Duration {
        match self.rate {
            None => MIN_TICK,
            Some(rate) => Duration::from_secs_f64(1.0 / rate).clamp(MIN_TICK, MAX_TICK),
        }
    }

    /// Adds one permit to `permits` per event as it falls due, from `start` on, and returns
    /// once all `total` are released. Ticks the ticker missed release their events together
    /// on the next tick, so the average rate holds even when the process is briefly starved.
    pub async fn release(&self, start: Instant, permits: &Semaphore) {
        let mut released = 0;
        let mut ticker = tokio::time::interval_at(start, self.tick());
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        while released < self.total {
            ticker.tick().await;
            let due = self.due(start.elapsed());
            if due > released {
                // At most `total` permits in all; far below the semaphore's limit.
                permits.add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
                released = due;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steady_rate_releases_one_per_interval() {
        let s = Schedule::new(10, 100.0); // one every 10 ms
        let cases = [(0, 1), (9, 1), (10, 2), (55, 6), (90, 10), (1_000, 10)];
        for (at, due) in cases {
            assert_eq!(s.due(ms(at)), due, "at {at} ms");
        }
        assert_eq!(s.due_at(0), Duration::ZERO);
        assert_eq!(s.due_at(5), ms(50));
        assert_eq!(s.span(), ms(90));
    }

    #[test]
    fn due_never_decreases_and_reaches_total_at_the_span() {
        let s = Schedule::new(20_000, 2_000.0);
        let mut last = 0;
        for at in 0..=10_000 {
            let due = s.due(ms(at));
            assert!(due >= last, "at {at} ms");
            last = due;
        }
        assert_eq!(s.due(s.span()), 20_000);
        assert_eq!(s.due(ms(5_000)), 10_001);
    }

    #[test]
    fn burst_is_all_at_once() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let s = Schedule::new(5_000, rate);
            assert!(s.is_burst(), "{rate}");
            assert_eq!(s.due(Duration::ZERO), 5_000);
            assert_eq!(s.span(), Duration::ZERO);
        }
    }

    #[test]
    fn nothing_to_send_is_never_due() {
        assert_eq!(Schedule::new(0, 10.0).due(ms(100)), 0);
        assert_eq!(Schedule::new(0, 0.0).due(Duration::ZERO), 0);
    }

    #[test]
    fn ticks_stay_within_timer_resolution_and_promptness() {
        let cases = [
            (2_000.0, ms(1)),
            (100.0, ms(10)),
            (1.0, ms(50)),
            (0.0, ms(1)),
        ];
        for (rate, tick) in cases {
            assert_eq!(Schedule::new(10, rate).tick(), tick, "{rate}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn release_hands_out_exactly_total_permits() {
        let s = Schedule::new(250, 1_000.0);
        let permits = Semaphore::new(0);
        s.release(Instant::now(), &permits).await;
        assert_eq!(permits.available_permits(), 250);

        let burst = Schedule::new(7, 0.0);
        let permits = Semaphore::new(0);
        burst.release(Instant::now(), &permits).await;
        assert_eq!(permits.available_permits(), 7);
    }
}
