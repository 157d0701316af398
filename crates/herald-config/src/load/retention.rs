//! `[retention]`: how long finished events, attempts and dead letters are kept, and an
//! optional ceiling on the store's size.
//!
//! The defaults are bounded (30 days of events, 7 of attempt records, 90 of dead letters):
//! a store that keeps everything forever fills its disk, and nobody notices until it has.

use std::time::Duration;

use toml::Spanned;

use super::{In, Loader, at};
use crate::model::RetentionConfig;
use crate::raw::RawRetention;

const DAY: u64 = 24 * 60 * 60;
const DEFAULT_EVENTS: Duration = Duration::from_secs(30 * DAY);
const DEFAULT_ATTEMPTS: Duration = Duration::from_secs(7 * DAY);
const DEFAULT_DEAD: Duration = Duration::from_secs(90 * DAY);
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_BATCH: u32 = 100;

impl Loader<'_> {
    pub(super) fn retention(&mut self, raw: Option<In<RawRetention>>) -> Option<RetentionConfig> {
        let Some(In { file, value }) = raw else {
            return Some(RetentionConfig {
                events: DEFAULT_EVENTS,
                attempts: DEFAULT_ATTEMPTS,
                dead: DEFAULT_DEAD,
                max_store_size: None,
                interval: DEFAULT_INTERVAL,
                batch: DEFAULT_BATCH,
            });
        };
        let events = self.age(value.events.as_ref(), file, "events", DEFAULT_EVENTS);
        let attempts = self.age(value.attempts.as_ref(), file, "attempts", DEFAULT_ATTEMPTS);
        let dead = self.age(value.dead.as_ref(), file, "dead", DEFAULT_DEAD);
        let interval = self.age(value.interval.as_ref(), file, "interval", DEFAULT_INTERVAL);
        let max_store_size = match &value.max_store_size {
            Some(size) => match parse_size(size.get_ref()) {
                Ok(bytes) => Some(Some(bytes)),
                Err(why) => {
                    self.error(
                        format!("invalid max_store_size `{}`: {why}", size.get_ref()),
                        at(file, size.span()),
                    );
                    None
                }
            },
            None => Some(None),
        };
        let batch = match &value.batch {
            Some(n) if !(1..=100_000).contains(n.get_ref()) => {
                self.error("batch must be between 1 and 100000", at(file, n.span()));
                None
            }
            Some(n) => Some(*n.get_ref()),
            None => Some(DEFAULT_BATCH),
        };
        Some(RetentionConfig {
            events: events?,
            attempts: attempts?,
            dead: dead?,
            max_store_size: max_store_size?,
            interval: interval?,
            batch: batch?,
        })
    }

    /// A positive duration such as `"30d"`, or `default` when absent.
    fn age(
        &mut self,
        value: Option<&Spanned<String>>,
        file: usize,
        name: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        match self.duration(value, file, name)? {
            d if d.is_zero() => {
                self.error(
                    format!("{name} must be longer than 0 (write e.g. \"30d\")"),
                    at(file, value.span()),
                );
                None
            }
            d => Some(d),
        }
    }
}

/// Bytes from `"10GiB"`, `"500MB"`, `"1048576"`: decimal (kB, MB, GB, TB) and binary (KiB,
/// MiB, GiB, TiB) units, case-insensitive; a bare number is bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| "expected a whole number followed by a unit, e.g. \"10GiB\"".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ));
        }
    };
    match number.checked_mul(factor) {
        Some(0) => Err("must be larger than 0".into()),
        Some(bytes) => Ok(bytes),
        None => Err("too large".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::load::testing::{BASE, Files, SUB, check};

    fn retention(section: &str) -> crate::RetentionConfig {
        let files = Files::new(&[("herald.toml", &format!("{BASE}{SUB}{section}"))]);
        let outcome = files.load();
        outcome
            .config
            .unwrap_or_else(|| panic!("{}", files.short()))
            .retention
    }

    #[test]
    fn defaults_are_bounded() {
        let r = retention("");
        assert_eq!(r.events, Duration::from_secs(30 * 86_400));
        assert_eq!(r.attempts, Duration::from_secs(7 * 86_400));
        assert_eq!(r.dead, Duration::from_secs(90 * 86_400));
        assert_eq!(r.max_store_size, None);
        assert_eq!(r.batch, 100);
    }

    #[test]
    fn every_setting_is_read() {
        let r = retention(
            "[retention]\nevents = \"2d\"\nattempts = \"12h\"\ndead = \"1w\"\nmax_store_size = \"10GiB\"\ninterval = \"5s\"\nbatch = 50\n",
        );
        assert_eq!(r.events, Duration::from_secs(2 * 86_400));
        assert_eq!(r.attempts, Duration::from_secs(12 * 3600));
        assert_eq!(r.dead, Duration::from_secs(7 * 86_400));
        assert_eq!(r.max_store_size, Some(10 << 30));
        assert_eq!(r.interval, Duration::from_secs(5));
        assert_eq!(r.batch, 50);
        // Absent settings keep their defaults.
        assert_eq!(
            retention("[retention]\nevents = \"1d\"\n").dead,
            Duration::from_secs(90 * 86_400)
        );
    }

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        for (text, bytes) in [
            ("1048576", 1_048_576),
            ("500MB", 500_000_000),
            ("2 kib", 2048),
            ("1TB", 1_000_000_000_000),
        ] {
            assert_eq!(super::parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn bad_durations_and_sizes_name_their_place() {
        check(
            &format!(
                "{SUB}[retention]\nevents = \"30 days please\"\nattempts = \"0s\"\nmax_store_size = \"10 parsecs\"\n"
            ),
            "herald.toml:22:10: error: invalid events `30 days please`: expected number at 8 (write e.g. \"5s\", \"30m\", \"2h\")\nherald.toml:23:12: error: attempts must be longer than 0 (write e.g. \"30d\")\nherald.toml:24:18: error: invalid max_store_size `10 parsecs`: unknown unit `parsecs` (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)",
        );
        check(
            &format!("{SUB}[retention]\nmax_store_size = \"0GiB\"\nbatch = 0\nkeep = true\n"),
            "herald.toml:22:18: error: invalid max_store_size `0GiB`: must be larger than 0\nherald.toml:23:9: error: batch must be between 1 and 100000\nherald.toml:24:1: error: unknown field `keep`, expected one of `events`, `attempts`, `dead`, `max_store_size`, `interval`, `batch`",
        );
    }
}
