//! The double's flood control: Telegram's message limits, enforced on arrival.
//!
//! Telegram does not publish exact rules; its FAQ says about one message per second per
//! chat (short bursts tolerated), at most 20 messages per minute to a group, and about 30
//! messages per second overall. The double turns those into three checks, each on the
//! arrival time of a `sendMessage` it is about to accept:
//!
//! - per chat: a token bucket refilling one message per `per_chat_interval`, holding
//!   `per_chat_burst` messages (a chat idle for a while takes a burst at once);
//! - per group (negative chat ids): at most `per_group` messages in any `group_window`;
//! - overall: at most `overall` messages in any `overall_window`.
//!
//! A message that would break one of them is answered `429 Too Many Requests: retry after
//! N` with `parameters.retry_after = N`, the whole seconds until it would pass (at least 1,
//! as Telegram never says 0). Refused messages do not count against the limits.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits the double enforces. [`RateLimits::telegram`] is the default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    pub per_chat_interval: Duration,
    pub per_chat_burst: u32,
    pub per_group: u32,
    pub group_window: Duration,
    pub overall: u32,
    pub overall_window: Duration,
}

impl RateLimits {
    /// One message per second per chat with bursts of 3, 20 per minute per group, 30 per
    /// second overall.
    pub fn telegram() -> RateLimits {
        RateLimits {
            per_chat_interval: Duration::from_secs(1),
            per_chat_burst: 3,
            per_group: 20,
            group_window: Duration::from_secs(60),
            overall: 30,
            overall_window: Duration::from_secs(1),
        }
    }

    /// The same counts over time spans `factor` times shorter (`factor` 10 turns one
    /// message per second into one per 100 ms): for benchmarks that should not take minutes.
    pub fn scaled(self, factor: f64) -> RateLimits {
        RateLimits {
            per_chat_interval: self.per_chat_interval.div_f64(factor),
            group_window: self.group_window.div_f64(factor),
            overall_window: self.overall_window.div_f64(factor),
            ..self
        }
    }

    /// No limits at all.
    pub fn off() -> RateLimits {
        RateLimits {
            per_chat_interval: Duration::ZERO,
            per_chat_burst: u32::MAX,
            per_group: u32::MAX,
            group_window: Duration::ZERO,
            overall: u32::MAX,
            overall_window: Duration::ZERO,
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::telegram()
    }
}

#[derive(Debug, Default)]
pub(super) struct FloodControl {
    /// Theoretical arrival time per chat (the token bucket as GCRA).
    chat_tat: HashMap<i64, Instant>,
    groups: HashMap<i64, VecDeque<Instant>>,
    overall: VecDeque<Instant>,
}

impl FloodControl {
    /// Accepts a message to `chat` arriving at `now`, or says how long until it would be.
    pub(super) fn admit(
        &mut self,
        limits: &RateLimits,
        chat: i64,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;

        let tolerance = limits
            .per_chat_interval
            .saturating_mul(limits.per_chat_burst.saturating_sub(1));
        let tat = self.chat_tat.get(&chat).copied().unwrap_or(now);
        if let Some(allowed_at) = tat.checked_sub(tolerance)
            && allowed_at > now
        {
            wait = wait.max(allowed_at - now);
        }

        let group = self.groups.entry(chat).or_default();
        if chat < 0 {
            wait = wait.max(window_wait(
                group,
                limits.per_group,
                limits.group_window,
                now,
            ));
        }
        wait = wait.max(window_wait(
            &mut self.overall,
            limits.overall,
            limits.overall_window,
            now,
        ));

        if !wait.is_zero() {
            return Err(wait);
        }
        self.chat_tat
            .insert(chat, tat.max(now) + limits.per_chat_interval);
        if chat < 0 {
            group.push_back(now);
        }
        self.overall.push_back(now);
        Ok(())
    }
}

/// How long until one more message fits in `history` (arrivals, oldest first); drops
/// arrivals that have left the window.
fn window_wait(
    history: &mut VecDeque<Instant>,
    limit: u32,
    window: Duration,
    now: Instant,
) -> Duration {
    while let Some(&oldest) = history.front() {
        if oldest + window <= now {
            history.pop_front();
        } else {
            break;
        }
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if history.len() < limit {
        return Duration::ZERO;
    }
    // The (len - limit + 1)th oldest must leave the window first.
    let blocking = history[history.len() - limit];
    (blocking + window).saturating_duration_since(now)
}

/// What the double puts in `retry_after`: whole seconds, at least one.
pub(super) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_chat_takes_a_burst_then_one_per_interval() {
        let limits = RateLimits::telegram();
        let mut flood = FloodControl::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(flood.admit(&limits, 7, t0), Ok(()));
        }
        let wait = flood.admit(&limits, 7, t0).unwrap_err();
        assert_eq!(wait, SECOND);
        // Another chat is not affected.
        assert_eq!(flood.admit(&limits, 8, t0), Ok(()));
        assert_eq!(flood.admit(&limits, 7, t0 + SECOND), Ok(()));
        assert!(flood.admit(&limits, 7, t0 + SECOND).is_err());
        assert_eq!(flood.admit(&limits, 7, t0 + 2 * SECOND), Ok(()));
    }

    #[test]
    fn a_group_takes_twenty_per_minute() {
        let limits = RateLimits::telegram();
        let mut flood = FloodControl::default();
        let t0 = Instant::now();
        for i in 0..20 {
            let at = t0 + i * 3 * SECOND / 2;
            assert_eq!(flood.admit(&limits, -5, at), Ok(()), "message {i}");
        }
        // The 21st at 30 s waits for the first to leave the minute.
        let wait = flood.admit(&limits, -5, t0 + 30 * SECOND).unwrap_err();
        assert_eq!(wait, 30 * SECOND);
        assert_eq!(flood.admit(&limits, -5, t0 + 60 * SECOND), Ok(()));
    }

    #[test]
    fn thirty_per_second_overall() {
        let limits = RateLimits::telegram();
        let mut flood = FloodControl::default();
        let t0 = Instant::now();
        for chat in 0..30 {
            assert_eq!(flood.admit(&limits, chat, t0), Ok(()));
        }
        assert_eq!(flood.admit(&limits, 99, t0).unwrap_err(), SECOND);
        assert_eq!(flood.admit(&limits, 99, t0 + SECOND), Ok(()));
    }

    #[test]
    fn scaled_limits_keep_the_counts() {
        let limits = RateLimits::telegram().scaled(10.0);
        assert_eq!(limits.per_chat_interval, Duration::from_millis(100));
        assert_eq!(limits.group_window, Duration::from_secs(6));
        assert_eq!(limits.per_group, 20);
        let mut flood = FloodControl::default();
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(flood.admit(&RateLimits::off(), 1, t0), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
    }
}
