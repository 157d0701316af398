//! `[delivery]`: the retry schedule, the attempt timeout, private networks and the
//! worker limits.

use std::time::Duration;

use toml::Spanned;

use super::{In, Loader, at};
use crate::model::{DEFAULT_MAX_CONCURRENCY_PER_CHANNEL, DEFAULT_WORKERS, DeliveryConfig};
use crate::raw::RawDelivery;

const DEFAULT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest retry delay: beyond a month a retry is an outage, not a schedule, and
/// the bound keeps `now + delay` far from overflowing.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
const TIMEOUT_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(600);

impl Loader<'_> {
    pub(super) fn delivery(&mut self, raw: Option<In<RawDelivery>>) -> Option<DeliveryConfig> {
        let default_schedule: Vec<Duration> = DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        let Some(In { file, value }) = raw else {
            return Some(DeliveryConfig {
                retry_schedule: default_schedule,
                timeout: DEFAULT_TIMEOUT,
                allow_private_networks: false,
                concurrency_per_channel: None,
                max_concurrency_per_channel: DEFAULT_MAX_CONCURRENCY_PER_CHANNEL,
                workers: DEFAULT_WORKERS,
            });
        };
        let mut ok = true;
        let retry_schedule = match &value.retry_schedule {
            Some(list) => {
                if list.get_ref().len() > 50 {
                    self.error(
                        "retry_schedule may list at most 50 delays",
                        at(file, list.span()),
                    );
                    ok = false;
                }
                let mut out = Vec::new();
                for item in list.get_ref() {
                    match self.duration_in(
                        item,
                        file,
                        "retry delay",
                        Duration::ZERO..=MAX_RETRY_DELAY,
                    ) {
                        Some(d) => out.push(d),
                        None => ok = false,
                    }
                }
                out
            }
            None => default_schedule,
        };
        let timeout = match &value.timeout {
            Some(t) => self.duration_in(t, file, "timeout", TIMEOUT_RANGE),
            None => Some(DEFAULT_TIMEOUT),
        };
        let mut bounded = |v: &Option<Spanned<u32>>, default: u32, name: &str| match v {
            Some(n) if !(1..=1024).contains(n.get_ref()) => {
                self.error(
                    format!("{name} must be between 1 and 1024"),
                    at(file, n.span()),
                );
                None
            }
            Some(n) => Some(*n.get_ref() as usize),
            None => Some(default as usize),
        };
        // Absent: adaptive (learnt per channel up to the ceiling); set: pinned.
        let concurrency_per_channel = match &value.concurrency_per_channel {
            Some(_) => {
                bounded(&value.concurrency_per_channel, 1, "concurrency_per_channel").map(Some)
            }
            None => Some(None),
        };
        let max_concurrency_per_channel = bounded(
            &value.max_concurrency_per_channel,
            DEFAULT_MAX_CONCURRENCY_PER_CHANNEL as u32,
            "max_concurrency_per_channel",
        );
        let workers = bounded(&value.workers, DEFAULT_WORKERS as u32, "workers");
        if !ok {
            return None;
        }
        Some(DeliveryConfig {
            retry_schedule,
            timeout: timeout?,
            allow_private_networks: value.allow_private_networks,
            concurrency_per_channel: concurrency_per_channel?,
            max_concurrency_per_channel: max_concurrency_per_channel?,
            workers: workers?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{SUB, check};

    #[test]
    fn wrong_value_types() {
        check(
            &format!("{SUB}[delivery]\ntimeout = 15\nallow_private_networks = \"no\"\n"),
            "herald.toml:22:11: error: invalid type: integer `15`, expected a string\nherald.toml:23:26: error: invalid type: string \"no\", expected a boolean",
        );
    }

    #[test]
    fn concurrency_limits_are_bounded() {
        check(
            &format!(
                "{SUB}[delivery]\nconcurrency_per_channel = 0\nmax_concurrency_per_channel = 5000\n"
            ),
            "herald.toml:22:27: error: concurrency_per_channel must be between 1 and 1024\nherald.toml:23:31: error: max_concurrency_per_channel must be between 1 and 1024",
        );
    }

    #[test]
    fn invalid_retry_delay() {
        check(
            &format!("{SUB}[delivery]\nretry_schedule = [\"5s\", \"soon\"]\n"),
            "herald.toml:22:25: error: invalid retry delay `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")",
        );
    }

    #[test]
    fn durations_are_bounded_never_a_panic() {
        check(
            &format!(
                "{SUB}[delivery]\nretry_schedule = [\"500000000000y\", \"400d\", \"0s\"]\ntimeout = \"1000000y\"\n"
            ),
            "herald.toml:22:19: error: retry delay `500000000000y` is out of range: write a retry delay between 0s and 30days\n\
             herald.toml:22:36: error: retry delay `400d` is out of range: write a retry delay between 0s and 30days\n\
             herald.toml:23:11: error: timeout `1000000y` is out of range: write a timeout between 100ms and 10m",
        );
    }
}
