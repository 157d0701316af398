//! Silences: an operator's "send nothing that matches this, between these times". What a
//! silence matches and when it is in force is decided here, purely; the store keeps them
//! and the engine applies them at ingest and again before each attempt.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{Event, Outcome, Timestamp};
use crate::pattern::Pattern;
use crate::team::TeamId;

/// Longest `comment` and `created_by`, in characters.
pub const MAX_SILENCE_TEXT_LEN: usize = 1024;
/// Most metadata matchers on one silence.
pub const MAX_SILENCE_METADATA: usize = 32;

/// What a silence matches. Every matcher given must hold; at least one is given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SilenceMatchers {
    /// The event type, as a subscription pattern (`capsule.*`, `host.down`, `*`).
    pub event: Option<Pattern>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// Every key present in the event's metadata with this value.
    pub metadata: BTreeMap<String, String>,
    /// Only deliveries to this channel of the team.
    pub channel: Option<String>,
}

impl SilenceMatchers {
    /// Whether no matcher is set (refused: it would silence the whole team by accident;
    /// `event = "*"` says so on purpose).
    pub fn is_empty(&self) -> bool {
        self.event.is_none()
            && self.outcome.is_none()
            && self.metadata.is_empty()
            && self.channel.is_none()
    }

    /// Whether a delivery of `event` to `channel` matches.
    pub fn matches(&self, event: &Event, channel: &str) -> bool {
        self.event.as_ref().is_none_or(|p| p.matches(&event.event))
            && self.outcome.is_none_or(|o| event.outcome == Some(o))
            && self
                .metadata
                .iter()
                .all(|(k, v)| event.metadata.get(k) == Some(v))
            && self.channel.as_deref().is_none_or(|c| c == channel)
    }
}

impl Serialize for SilenceMatchers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            event: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            outcome: Option<Outcome>,
            #[serde(skip_serializing_if = "BTreeMap::is_empty")]
            metadata: &'a BTreeMap<String, String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a str>,
        }
        Wire {
            event: self.event.as_ref().map(ToString::to_string),
            outcome: self.outcome,
            metadata: &self.metadata,
            channel: self.channel.as_deref(),
        }
        .serialize(s)
    }
}

/// Where a silence stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SilenceState {
    /// `starts_at` is still ahead.
    Pending,
    Active,
    /// `ends_at` has passed (or it was expired early, which moves `ends_at` to then).
    Expired,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            SilenceState::Pending => "pending",
            SilenceState::Active => "active",
            SilenceState::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<SilenceState, String> {
        match s {
            "pending" => Ok(SilenceState::Pending),
            "active" => Ok(SilenceState::Active),
            "expired" => Ok(SilenceState::Expired),
            other => Err(format!(
                "unknown silence state `{other}`; expected pending, active or expired"
            )),
        }
    }
}

/// One silence of one team. In force from `starts_at` (inclusive) to `ends_at`
/// (exclusive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Silence {
    /// `sil_` followed by a UUID v7.
    pub id: String,
    pub team: TeamId,
    pub matchers: SilenceMatchers,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub comment: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

impl Silence {
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    /// Whether this silence stops a delivery of `event` to `channel` at `now`: same team,
    /// in force, and every matcher holds.
    pub fn silences(&self, event: &Event, channel: &str, now: Timestamp) -> bool {
        self.team == event.team_id
            && self.state(now) == SilenceState::Active
            && self.matchers.matches(event, channel)
    }
}

/// The first of `silences` that stops a delivery of `event` to `channel` at `now`.
pub fn silencing<'a>(
    silences: &'a [Silence],
    event: &Event,
    channel: &str,
    now: Timestamp,
) -> Option<&'a Silence> {
    silences.iter().find(|s| s.silences(event, channel, now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i128) -> Timestamp {
        Timestamp::from_unix_nanos(secs * 1_000_000_000)
    }

    fn event(team: &str, ty: &str, outcome: Option<Outcome>, meta: &[(&str, &str)]) -> Event {
        Event {
            id: "e1".into(),
            event: ty.into(),
            outcome,
            timestamp: at(0),
            team_id: TeamId::parse(team).unwrap(),
            actor: None,
            resource: None,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            error: None,
        }
    }

    fn silence(matchers: SilenceMatchers) -> Silence {
        Silence {
            id: "sil_1".into(),
            team: TeamId::parse("acme").unwrap(),
            matchers,
            starts_at: at(100),
            ends_at: at(200),
            comment: "maintenance".into(),
            created_by: "ops".into(),
            created_at: at(50),
        }
    }

    #[test]
    fn in_force_from_start_inclusive_to_end_exclusive() {
        let s = silence(SilenceMatchers {
            event: Some(Pattern::All),
            ..SilenceMatchers::default()
        });
        let e = event("acme", "host.down", None, &[]);
        let states: Vec<_> = [99, 100, 199, 200]
            .into_iter()
            .map(|t| (s.state(at(t)).as_str(), s.silences(&e, "hook", at(t))))
            .collect();
        assert_eq!(
            states,
            [
                ("pending", false),
                ("active", true),
                ("active", true),
                ("expired", false)
            ]
        );
    }

    #[test]
    fn every_matcher_must_hold_and_only_for_its_own_team() {
        let s = silence(SilenceMatchers {
            event: Some(Pattern::parse("capsule.*").unwrap()),
            outcome: Some(Outcome::Error),
            metadata: BTreeMap::from([("region".into(), "eu".into())]),
            channel: Some("oncall".into()),
        });
        let now = at(150);
        let hit = event(
            "acme",
            "capsule.create",
            Some(Outcome::Error),
            &[("region", "eu")],
        );
        assert!(s.silences(&hit, "oncall", now));
        let misses = [
            (
                event(
                    "globex",
                    "capsule.create",
                    Some(Outcome::Error),
                    &[("region", "eu")],
                ),
                "oncall",
            ),
            (
                event(
                    "acme",
                    "host.down",
                    Some(Outcome::Error),
                    &[("region", "eu")],
                ),
                "oncall",
            ),
            (
                event(
                    "acme",
                    "capsule.create",
                    Some(Outcome::Success),
                    &[("region", "eu")],
                ),
                "oncall",
            ),
            (
                event("acme", "capsule.create", None, &[("region", "eu")]),
                "oncall",
            ),
            (
                event(
                    "acme",
                    "capsule.create",
                    Some(Outcome::Error),
                    &[("region", "us")],
                ),
                "oncall",
            ),
            (
                event("acme", "capsule.create", Some(Outcome::Error), &[]),
                "oncall",
            ),
            (hit.clone(), "audit"),
        ];
        for (e, channel) in &misses {
            assert!(!s.silences(e, channel, now), "{e:?} to {channel}");
        }
        let slot = [s];
        assert_eq!(
            silencing(&slot, &hit, "oncall", now).map(|s| s.id.as_str()),
            Some("sil_1")
        );
        assert!(silencing(&slot, &hit, "audit", now).is_none());
    }

    #[test]
    fn matchers_serialise_without_the_unset_ones() {
        let m = SilenceMatchers {
            event: Some(Pattern::parse("capsule.*").unwrap()),
            channel: Some("oncall".into()),
            ..SilenceMatchers::default()
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"event": "capsule.*", "channel": "oncall"})
        );
        assert!(SilenceMatchers::default().is_empty());
        assert!(!m.is_empty());
    }
}
