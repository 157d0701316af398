//! The digest model: what one message standing for many events carries, for the built-in
//! formatters and for formatter plugins (`herald:formatter@0.2.0`, `format-digest`).
//! Pure data; the engine builds it from what the store kept of the digest's members.

use serde::{Deserialize, Serialize};

use crate::event::{Event, Timestamp};
use crate::team::TeamId;

/// Why these events share a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DigestKind {
    /// A subscription's `group_by` group: `labels` are its `field = value` pairs (empty
    /// for a subscription with one group).
    Group { labels: Vec<(String, String)> },
    /// Events beyond a `throttle` (`limit` messages per `per_seconds`), folded instead of
    /// sent one by one.
    Throttle { limit: u32, per_seconds: u64 },
}

/// One digest message: the first events of a group (or throttle window) and how many
/// there are in all.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Digest {
    /// The digest delivery's id: the `webhook-id` of a webhook digest, stable across
    /// retries.
    pub id: String,
    pub team: TeamId,
    /// The subscription's stable key.
    pub subscription: String,
    pub channel: String,
    pub kind: DigestKind,
    /// The first events, oldest first: at most the subscription's `max_group_size`.
    pub events: Vec<Event>,
    /// How many events the digest stands for (`events.len()` included); never less than
    /// `events.len()`.
    pub total: u64,
    /// When the first and the last of all `total` events were accepted.
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

impl Digest {
    /// How many events the digest holds but does not list ("and N more").
    pub fn more(&self) -> u64 {
        self.total.saturating_sub(self.events.len() as u64)
    }

    /// A one-line summary shared by the built-in formatters, e.g.
    /// `12 × capsule.create error (region = eu)` or
    /// `7 events folded by throttle 10/1m`.
    pub fn headline(&self) -> String {
        match &self.kind {
            DigestKind::Throttle { limit, per_seconds } => format!(
                "{} event{} folded by throttle {limit}/{}",
                self.total,
                if self.total == 1 { "" } else { "s" },
                humantime::format_duration(std::time::Duration::from_secs(*per_seconds))
            ),
            DigestKind::Group { labels } => {
                let mut types: Vec<&str> = self.events.iter().map(|e| e.event.as_str()).collect();
                types.sort_unstable();
                types.dedup();
                let what = match types.as_slice() {
                    [one] => (*one).to_string(),
                    _ => "events".to_string(),
                };
                let mut line = format!("{} × {what}", self.total);
                if !labels.is_empty() {
                    let labels: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                    line.push_str(&format!(" ({})", labels.join(", ")));
                }
                line
            }
        }
    }
}
