//! The retry policy: when the next attempt happens, or that there is none.

use std::time::Duration;

use herald_channels::SendOutcome;
use herald_core::Timestamp;
use herald_store::Next;

use crate::after;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before retry 1, 2, …; after the last, a failing delivery is dead.
    pub schedule: Vec<Duration>,
    /// Relative jitter applied to each delay (0.2 = ±20 %).
    pub jitter: f64,
}

impl RetryPolicy {
    pub fn new(schedule: Vec<Duration>) -> RetryPolicy {
        RetryPolicy {
            schedule,
            jitter: 0.2,
        }
    }

    /// What follows attempt number `attempt` (1-based) that ended with `outcome`.
    /// `random` is uniform in [0, 1) and picks the jitter.
    pub fn next(&self, attempt: u32, outcome: &SendOutcome, now: Timestamp, random: f64) -> Next {
        match outcome {
            SendOutcome::Delivered { .. } => Next::Succeeded,
            // The engine resends with the built-in rendering first; refused again, the
            // message itself is at fault.
            SendOutcome::Permanent { .. } | SendOutcome::RenderingRefused { .. } => Next::Dead,
            SendOutcome::ChannelFailure { after: hint, .. } => {
                self.wait(attempt, *hint, now, random)
            }
            // The channel is disabled; the delivery waits (claims skip disabled channels)
            // and goes out once the channel is re-enabled.
            SendOutcome::Disable { .. } => Next::RetryAt(now),
            SendOutcome::Retry { after: hint, .. } => {
                let Some(base) = self.schedule.get(attempt.saturating_sub(1) as usize) else {
                    return Next::Dead;
                };
                let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
                let scheduled = base.mul_f64(factor.max(0.0));
                let delay = match hint {
                    Some(hint) => (*hint).clamp(scheduled, scheduled * 2),
                    None => scheduled,
                };
                Next::RetryAt(after(now, delay))
            }
        }
    }

    /// What follows a channel-wide failure at attempt number `attempt` (1-based, every
    /// attempt counted): the delivery waits the schedule's `attempt`-th delay (the last one
    /// repeating), `hint` clamped as for a retry, and is never given up on — the channel
    /// failed, not the message ([`Next::Wait`] leaves its retry budget alone).
    pub fn wait(&self, attempt: u32, hint: Option<Duration>, now: Timestamp, random: f64) -> Next {
        let step = (attempt.saturating_sub(1) as usize).min(self.schedule.len().saturating_sub(1));
        let base = self
            .schedule
            .get(step)
            .copied()
            .unwrap_or(Duration::from_secs(60));
        let factor = 1.0 + self.jitter * (2.0 * random - 1.0);
        let scheduled = base.mul_f64(factor.max(0.0));
        let delay = match hint {
            Some(hint) => hint.clamp(scheduled, scheduled * 2),
            None => scheduled,
        };
        Next::Wait(after(now, delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry(after: Option<u64>) -> SendOutcome {
        SendOutcome::Retry {
            after: after.map(Duration::from_secs),
            status: Some(503),
            error: "HTTP 503".into(),
            response: None,
        }
    }

    fn channel() -> SendOutcome {
        SendOutcome::ChannelFailure {
            after: None,
            status: Some(535),
            error: "login refused".into(),
            response: None,
        }
    }

    /// The delay in seconds of the next attempt, or a word for the other outcomes.
    fn check(attempt: u32, outcome: SendOutcome, random: f64) -> String {
        let policy = RetryPolicy::new([5, 300, 1800].map(Duration::from_secs).to_vec());
        let now = Timestamp::from_unix_nanos(1_000_000_000_000);
        match policy.next(attempt, &outcome, now, random) {
            Next::RetryAt(t) => format!("{:.1}s", (t.unix_nanos() - now.unix_nanos()) as f64 / 1e9),
            Next::Wait(t) => format!(
                "wait {:.1}s",
                (t.unix_nanos() - now.unix_nanos()) as f64 / 1e9
            ),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn schedule_jitter_and_retry_after() {
        let delivered = || SendOutcome::Delivered {
            status: Some(200),
            response: None,
        };
        let permanent = || SendOutcome::Permanent {
            status: None,
            error: "ssrf".into(),
            response: None,
        };
        let gone = || SendOutcome::Disable {
            status: Some(410),
            error: "gone".into(),
            response: None,
        };
        let cases: Vec<(u32, SendOutcome, f64, &str)> = vec![
            (1, delivered(), 0.5, "Succeeded"),
            (1, permanent(), 0.5, "Dead"),
            (1, gone(), 0.5, "0.0s"),
            (1, retry(None), 0.5, "5.0s"),
            (1, retry(None), 0.0, "4.0s"),      // -20 %
            (1, retry(None), 0.999999, "6.0s"), // +20 %
            (2, retry(None), 0.5, "300.0s"),
            (3, retry(None), 0.5, "1800.0s"),
            (4, retry(None), 0.5, "Dead"),      // schedule exhausted
            (9, retry(None), 0.5, "Dead"),      // far beyond the schedule
            (1, retry(Some(7)), 0.5, "7.0s"),   // Retry-After within [5, 10]
            (1, retry(Some(60)), 0.5, "10.0s"), // clamped to 2 × scheduled
            (1, retry(Some(1)), 0.5, "5.0s"),   // never earlier than scheduled
            (1, channel(), 0.5, "wait 5.0s"),
            (3, channel(), 0.5, "wait 1800.0s"),
            (9, channel(), 0.5, "wait 1800.0s"), // the last delay repeats, never dead
        ];
        for (attempt, outcome, random, want) in cases {
            let label = format!("attempt {attempt} {outcome:?} r={random}");
            assert_eq!(check(attempt, outcome, random), want, "{label}");
        }
    }
}
