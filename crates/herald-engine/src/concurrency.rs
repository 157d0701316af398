//! Adaptive concurrency per channel: additive increase, multiplicative decrease on what
//! the endpoint shows (after Vector's adaptive request concurrency).
//!
//! Time is cut into windows about one round trip long. At the end of a window the limit
//! is halved if the endpoint pushed back (429, 5xx, timeout, connection failure), cut by
//! a tenth if the window's mean latency rose clearly above its long-run mean (the endpoint
//! is queueing: by more than 2.5 standard deviations, more than a tenth of the mean — half
//! during slow start — and more than a millisecond), and raised by one if neither happened and the limit was actually reached
//! (so an idle channel does not grow a limit it never uses); until the endpoint first
//! pushes back or slows down, the limit doubles instead (slow start). The long-run mean is the
//! baseline of an endpoint that is not queueing: windows that rose move it only slightly.
//! Pure: the caller passes the clock in.

use std::time::{Duration, Instant};

/// The first limit of an adaptive channel: a few in flight, grown from there.
pub const INITIAL_LIMIT: usize = 4;

/// Multiplier on back-pressure (429, 5xx, timeouts).
const BACK_PRESSURE_RATIO: f64 = 0.5;
/// Multiplier when latency rose.
const LATENCY_RATIO: f64 = 0.9;
/// Smoothing of the long-run latency mean and variance.
const EWMA_ALPHA: f64 = 0.4;
/// How far one window that rose moves the baseline towards its latency.
const BASELINE_DRIFT: f64 = 0.1;
/// How many standard deviations above its mean a window's latency must be to count as a
/// rise (below that it is noise).
const DEVIATION_SCALE: f64 = 2.5;
/// A rise must also be at least this fraction of the mean: a very steady endpoint would
/// otherwise read a few microseconds of jitter as queueing.
const MIN_RISE: f64 = 0.1;
/// During slow start a rise must be at least this fraction of the mean. Each window
/// doubles the limit, so an endpoint past its knee shows it at once as a large rise; a
/// tenth, tried first, read a loopback endpoint's scheduling noise on a busy machine as
/// queueing and ended slow start at 8 in flight with a burst waiting. (After slow start
/// the tenth stays: there the limit creeps up by one, and a wide tolerance would let the
/// baseline creep up with it.)
const SLOW_START_MIN_RISE: f64 = 0.5;
/// And at least this much in absolute terms: below a millisecond, a rise is the sender's
/// and the endpoint's CPU scheduling, not a queue worth giving up throughput for.
const MIN_RISE_ABSOLUTE: f64 = 0.001;
/// The shortest window: a sub-millisecond endpoint would otherwise adjust on every reply.
const MIN_WINDOW: Duration = Duration::from_millis(5);

/// What one attempt showed about its endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The endpoint answered; its latency counts.
    Answered,
    /// The endpoint is overloaded or unreachable (429, 5xx, timeout, connection error).
    BackPressure,
    /// Nothing to learn about load (e.g. a 4xx, a formatter skip).
    Neutral,
}

/// How a channel's limit is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `concurrency_per_channel = N`: always N.
    Pinned(usize),
    /// Learnt between 1 and `max`, starting at `initial`.
    Adaptive { initial: usize, max: usize },
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    mean: f64,
    variance: f64,
    seeded: bool,
}

impl Ewma {
    fn update(&mut self, value: f64) {
        if self.seeded {
            let delta = value - self.mean;
            self.mean += EWMA_ALPHA * delta;
            self.variance = (1.0 - EWMA_ALPHA) * (self.variance + EWMA_ALPHA * delta * delta);
        } else {
            self.mean = value;
            self.variance = 0.0;
            self.seeded = true;
        }
    }
}

/// One channel's concurrency limit.
#[derive(Debug, Clone)]
pub struct Limiter {
    policy: Policy,
    limit: f64,
    past: Ewma,
    window_start: Option<Instant>,
    rtt_sum: f64,
    rtt_count: u32,
    reached_limit: bool,
    back_pressure: bool,
    /// Until the endpoint first shows a limit (a latency rise or back-pressure), the limit
    /// doubles per window instead of growing by one: a burst to a fast endpoint reaches
    /// its ceiling in a few round trips, not sixty (TCP's slow start).
    slow_start: bool,
}

impl Limiter {
    pub fn new(policy: Policy) -> Limiter {
        let limit = match policy {
            Policy::Pinned(n) => n.max(1),
            Policy::Adaptive { initial, max } => initial.clamp(1, max.max(1)),
        };
        Limiter {
            policy,
            limit: limit as f64,
            past: Ewma::default(),
            window_start: None,
            rtt_sum: 0.0,
            rtt_count: 0,
            reached_limit: false,
            back_pressure: false,
            slow_start: true,
        }
    }

    /// Attempts this channel may have in flight now.
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    pub fn is_adaptive(&self) -> bool {
        matches!(self.policy, Policy::Adaptive { .. })
    }

    /// Switches policy (a reload); an adaptive limit keeps what it learnt, within the new
    /// ceiling.
    pub fn set_policy(&mut self, policy: Policy) {
        if policy == self.policy {
            return;
        }
        let learnt = self.limit();
        *self = Limiter::new(policy);
        if let Policy::Adaptive { max, .. } = policy {
            self.limit = learnt.clamp(1, max.max(1)) as f64;
        }
    }

    /// An attempt started; `in_flight` counts it.
    pub fn on_start(&mut self, in_flight: usize, now: Instant) {
        self.window_start.get_or_insert(now);
        if in_flight >= self.limit() {
            self.reached_limit = true;
        }
    }

    /// An attempt ended after `rtt` (the send alone) with `signal`. Returns true when the
    /// limit changed.
    pub fn on_end(&mut self, rtt: Duration, signal: Signal, now: Instant) -> bool {
        let Policy::Adaptive { max, .. } = self.policy else {
            return false;
        };
        match signal {
            Signal::Answered => {
                self.rtt_sum += rtt.as_secs_f64();
                self.rtt_count += 1;
            }
            Signal::BackPressure => self.back_pressure = true,
            Signal::Neutral => {}
        }
        let start = *self.window_start.get_or_insert(now);
        let window = Duration::from_secs_f64(self.past.mean).max(MIN_WINDOW);
        if now.duration_since(start) < window {
            return false;
        }
        let before = self.limit();
        self.adjust(max);
        self.window_start = Some(now);
        self.rtt_sum = 0.0;
        self.rtt_count = 0;
        self.reached_limit = false;
        self.back_pressure = false;
        self.limit() != before
    }

    fn adjust(&mut self, max: usize) {
        let max = max.max(1) as f64;
        if self.back_pressure {
            self.slow_start = false;
            self.limit = (self.limit * BACK_PRESSURE_RATIO).max(1.0);
            return;
        }
        if self.rtt_count == 0 {
            return;
        }
        let current = self.rtt_sum / f64::from(self.rtt_count);
        let rose = self.past.seeded && {
            let tolerance = if self.slow_start {
                SLOW_START_MIN_RISE
            } else {
                MIN_RISE
            };
            let threshold = (self.past.variance.sqrt() * DEVIATION_SCALE)
                .max(self.past.mean * tolerance)
                .max(MIN_RISE_ABSOLUTE);
            current > self.past.mean + threshold
        };
        if rose {
            self.slow_start = false;
            self.limit = (self.limit * LATENCY_RATIO).max(1.0);
            // The baseline is the latency of an endpoint that is not queueing, so a rise
            // moves it only a little: enough that a lasting change of the endpoint's own
            // speed is accepted after a while, not so much that queueing becomes normal.
            self.past.mean += BASELINE_DRIFT * (current - self.past.mean);
        } else {
            if self.reached_limit {
                let grown = if self.slow_start {
                    self.limit.floor() * 2.0
                } else {
                    self.limit.floor() + 1.0
                };
                self.limit = grown.min(max);
            }
            self.past.update(current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_config::DEFAULT_MAX_CONCURRENCY_PER_CHANNEL as DEFAULT_MAX_LIMIT;

    const ADAPTIVE: Policy = Policy::Adaptive {
        initial: INITIAL_LIMIT,
        max: DEFAULT_MAX_LIMIT,
    };

    /// Runs `windows` windows of `per_window` attempts each, all at the limit, with the
    /// latency and signal `shape` gives for the in-flight count; returns the limit after.
    fn drive(
        limiter: &mut Limiter,
        windows: usize,
        mut shape: impl FnMut(usize) -> (Duration, Signal),
    ) -> usize {
        let mut now = Instant::now();
        for _ in 0..windows {
            let in_flight = limiter.limit();
            let (rtt, signal) = shape(in_flight);
            for _ in 0..in_flight {
                limiter.on_start(in_flight, now);
            }
            now += rtt.max(MIN_WINDOW);
            for _ in 0..in_flight {
                limiter.on_end(rtt, signal, now);
            }
        }
        limiter.limit()
    }

    #[test]
    fn a_fast_flat_endpoint_grows_to_the_ceiling() {
        let mut l = Limiter::new(ADAPTIVE);
        let end = drive(&mut l, 200, |_| {
            (Duration::from_millis(1), Signal::Answered)
        });
        assert_eq!(end, DEFAULT_MAX_LIMIT);
    }

    #[test]
    fn a_fast_endpoint_reaches_its_ceiling_within_a_few_round_trips() {
        let mut l = Limiter::new(ADAPTIVE);
        let after = drive(&mut l, 5, |_| (Duration::from_millis(1), Signal::Answered));
        assert_eq!(after, DEFAULT_MAX_LIMIT, "4 → 8 → 16 → 32 → 64");
    }

    #[test]
    fn slow_start_ends_at_the_first_rise() {
        // Flat at 10 ms up to 8 in flight, then queueing: doubling stops at the knee and
        // additive growth takes over from there.
        let mut l = Limiter::new(ADAPTIVE);
        let after = drive(&mut l, 3, |n| {
            let extra = n.saturating_sub(8) as u64;
            (Duration::from_millis(10 + 10 * extra), Signal::Answered)
        });
        assert_eq!(after, 14, "4 → 8 → 16, then 16 × 0.9 once the latency rose");
        assert!(!l.slow_start);
    }

    #[test]
    fn slow_start_rides_out_noise_that_is_not_queueing() {
        // Latency that jumps whatever the load: a loopback endpoint on a machine whose two
        // cores the producer shares (0.5 → 1.3 ms: +160 %, but under the absolute floor),
        // and a remote one (10 → 14 ms: +40 %, under half the mean). With a tenth of the
        // mean as the only tolerance, slow start ended at 8 on the first such jump, with
        // a burst waiting.
        for micros in [
            [500, 500, 1300, 600, 1200, 500],
            [10_000, 10_000, 14_000, 11_000, 13_000, 10_000],
        ] {
            let mut l = Limiter::new(ADAPTIVE);
            let mut samples = micros.iter();
            let after = drive(&mut l, micros.len(), |_| {
                let rtt = Duration::from_micros(*samples.next().unwrap());
                (rtt, Signal::Answered)
            });
            assert_eq!(
                after, DEFAULT_MAX_LIMIT,
                "{micros:?} µs: 4 → 8 → 16 → 32 → 64 through the noise"
            );
        }
    }

    #[test]
    fn back_pressure_halves_down_to_one() {
        let mut l = Limiter::new(Policy::Adaptive {
            initial: 32,
            max: 64,
        });
        let after_one = drive(&mut l, 1, |_| {
            (Duration::from_millis(5), Signal::BackPressure)
        });
        assert_eq!(after_one, 16);
        let end = drive(&mut l, 20, |_| {
            (Duration::from_millis(5), Signal::BackPressure)
        });
        assert_eq!(end, 1, "the floor is one");
    }

    #[test]
    fn an_endpoint_that_queues_is_held_near_its_knee() {
        // Flat at 10 ms up to 8 in flight, then every extra request adds 10 ms.
        let mut l = Limiter::new(ADAPTIVE);
        let end = drive(&mut l, 300, |n| {
            let extra = n.saturating_sub(8) as u64;
            (Duration::from_millis(10 + 10 * extra), Signal::Answered)
        });
        assert!(
            (6..=12).contains(&end),
            "limit {end} should stay near the knee at 8"
        );
    }

    #[test]
    fn a_noisy_fast_endpoint_still_grows() {
        // Latency jumps between 1 and 3 ms whatever the load (a busy machine).
        let mut l = Limiter::new(ADAPTIVE);
        let mut i = 0u64;
        let end = drive(&mut l, 400, |_| {
            i += 1;
            let ms = 1 + (i * 7919 % 3);
            (Duration::from_millis(ms), Signal::Answered)
        });
        assert!(end >= 32, "limit {end} should grow well past its start");
    }

    #[test]
    fn a_lasting_slowdown_is_accepted_as_the_new_baseline() {
        let mut l = Limiter::new(ADAPTIVE);
        drive(&mut l, 200, |_| {
            (Duration::from_millis(2), Signal::Answered)
        });
        let end = drive(&mut l, 400, |_| {
            (Duration::from_millis(20), Signal::Answered)
        });
        assert_eq!(end, DEFAULT_MAX_LIMIT, "flat at 20 ms is not queueing");
    }

    #[test]
    fn a_pinned_limit_never_moves() {
        let mut l = Limiter::new(Policy::Pinned(7));
        assert_eq!(
            drive(&mut l, 50, |_| (Duration::from_millis(1), Signal::Answered)),
            7
        );
        assert_eq!(
            drive(&mut l, 50, |_| (
                Duration::from_secs(1),
                Signal::BackPressure
            )),
            7
        );
        assert!(!l.is_adaptive());
    }

    #[test]
    fn an_unused_limit_does_not_grow() {
        let mut l = Limiter::new(ADAPTIVE);
        let mut now = Instant::now();
        for _ in 0..100 {
            l.on_start(1, now);
            now += Duration::from_millis(10);
            l.on_end(Duration::from_millis(1), Signal::Answered, now);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT);
    }

    #[test]
    fn switching_policy_keeps_what_was_learnt_within_the_new_ceiling() {
        let mut l = Limiter::new(ADAPTIVE);
        drive(&mut l, 200, |_| {
            (Duration::from_millis(1), Signal::Answered)
        });
        l.set_policy(Policy::Adaptive {
            initial: INITIAL_LIMIT,
            max: 16,
        });
        assert_eq!(l.limit(), 16);
        l.set_policy(Policy::Pinned(3));
        assert_eq!(l.limit(), 3);
    }
}
