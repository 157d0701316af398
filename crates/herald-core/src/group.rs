//! Grouping and throttling: which events of a subscription share one digest message, and
//! how many single messages a subscription (or channel) may send before the rest are
//! folded into one. Pure: the store keeps the open groups and throttle windows and
//! decides, inside its write transaction, where each delivery goes.
//!
//! Semantics (the store implements them; `ARCHITECTURE.md` has the pipeline):
//! - **Grouping.** A subscription with [`Grouping`] never sends an event on its own. Each
//!   delivery joins the *open digest* of its group (team, subscription, [`Grouping::key_for`])
//!   if there is one; otherwise it opens one, due `wait` after now — or, if a digest of the
//!   group fell due less than `interval` ago, due at that digest's due time + `interval`.
//!   A digest is *open* until an attempt of it first starts (the store seals it in the
//!   claim), so its members never change once something may have been sent.
//! - **Throttle.** A subscription (or channel) with [`Throttle`] sends at most `limit`
//!   single messages per fixed window of `per`, the window starting with the first message
//!   after the previous one ended. Beyond the limit, deliveries are folded into the
//!   window's digest, due when the window ends, which says how many were folded.
//!   A grouped subscription is not throttled (its `group_interval` already limits it).

use std::fmt;
use std::time::Duration;

use crate::dedup::DedupField;
use crate::event::Event;

/// Defaults a subscription gets when it sets some grouping keys and not others.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_GROUP_SIZE: u32 = 100;
/// Bounds a configuration may set.
pub const MAX_GROUP_WAIT: Duration = Duration::from_secs(24 * 3600);
pub const MAX_GROUP_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_MAX_GROUP_SIZE: u32 = 1000;
pub const MAX_THROTTLE_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// The fields `group_by` may name: those of a dedup key (`actor.id` included).
pub type GroupField = DedupField;

/// A subscription's grouping (`group_by`, `group_wait`, `group_interval`,
/// `max_group_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// May be empty: then the subscription has one group.
    pub by: Vec<GroupField>,
    pub wait: Duration,
    /// Never shorter than `wait` (the configuration refuses it).
    pub interval: Duration,
    /// A digest lists at most this many events, then says how many more it holds.
    pub max_size: u32,
}

impl Grouping {
    /// The group of `event`: a JSON array of the `by` fields' values in order, `null` for
    /// an absent one (`[]` when `by` is empty). Two events share a group exactly when they
    /// agree on every field.
    pub fn key_for(&self, event: &Event) -> String {
        let values: Vec<Option<&str>> = self.by.iter().map(|f| f.value(event)).collect();
        serde_json::to_string(&values).unwrap_or_default()
    }

    /// The group's labels, `field = value` pairs in `by` order (absent values left out),
    /// for a digest's heading.
    pub fn labels_for(&self, event: &Event) -> Vec<(String, String)> {
        self.by
            .iter()
            .filter_map(|f| f.value(event).map(|v| (f.to_string(), v.to_string())))
            .collect()
    }

    pub fn field_names(&self) -> Vec<String> {
        self.by.iter().map(ToString::to_string).collect()
    }
}

/// `throttle = "10/1m"`: at most `limit` single messages per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// At least 1.
    pub limit: u32,
    /// Non-zero.
    pub per: Duration,
}

impl Throttle {
    /// Parses `N/DURATION` (`10/1m`, `100/1h`, `1/30s`); durations as elsewhere in the
    /// configuration (`humantime`: `s`, `m`, `h`, `d`, combinations like `1h30m`).
    pub fn parse(text: &str) -> Result<Throttle, String> {
        let (limit, per) = text.split_once('/').ok_or_else(|| {
            format!("malformed throttle `{text}`; expected COUNT/DURATION, as in `10/1m`")
        })?;
        let limit: u32 = limit.trim().parse().map_err(|_| {
            format!("malformed throttle `{text}`: `{limit}` is not a whole number of messages")
        })?;
        if limit == 0 {
            return Err(format!(
                "throttle `{text}` allows no message at all; use a silence to mute a channel"
            ));
        }
        let per = humantime::parse_duration(per.trim())
            .map_err(|e| format!("malformed throttle `{text}`: `{per}` is not a duration ({e})"))?;
        if per.is_zero() {
            return Err(format!("throttle `{text}` has a zero period"));
        }
        if per > MAX_THROTTLE_PERIOD {
            return Err(format!("throttle `{text}`: the period may be at most 7d"));
        }
        Ok(Throttle { limit, per })
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, humantime::format_duration(self.per))
    }
}

/// Where a throttle counts: one subscription's messages, or every ungrouped subscription
/// of a channel together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleScope {
    /// `throttle` on the subscription: its stable key ([`crate::Subscription::key`]).
    Subscription(String),
    /// `throttle` on the channel.
    Channel(String),
}

impl ThrottleScope {
    /// The scope as the store keys its windows: `sub:KEY` or `channel:NAME` (per team).
    pub fn store_key(&self) -> String {
        match self {
            ThrottleScope::Subscription(key) => format!("sub:{key}"),
            ThrottleScope::Channel(name) => format!("channel:{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_parses_count_and_period() {
        assert_eq!(
            Throttle::parse("10/1m"),
            Ok(Throttle {
                limit: 10,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(Throttle::parse("10/1m").unwrap().to_string(), "10/1m");
    }

    #[test]
    fn malformed_throttles_say_what_is_wrong() {
        for (text, needle) in [
            ("10", "expected COUNT/DURATION"),
            ("ten/1m", "`ten` is not a whole number"),
            ("0/1m", "allows no message"),
            ("10/soon", "`soon` is not a duration"),
            ("10/0s", "zero period"),
            ("10/30d", "at most 7d"),
        ] {
            let err = Throttle::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
