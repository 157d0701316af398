//! Subscriptions: which of a team's events go to which of its channels.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::event::{Event, Outcome};
use crate::pattern::Pattern;
use crate::reason::Reason;
use crate::team::TeamId;

/// Where a subscription is declared: its team and its position in the team's list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SubscriptionId {
    pub team: TeamId,
    pub index: usize,
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.subscriptions[{}]", self.team, self.index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: SubscriptionId,
    /// An optional human name (`name = "…"` in the config).
    pub name: Option<String>,
    /// The name of a channel of the same team.
    pub channel: String,
    pub patterns: Vec<Pattern>,
    /// When set, only events with this outcome match (events without one do not).
    pub outcome: Option<Outcome>,
    /// Every listed key must be present in the event's metadata with this value.
    pub metadata: BTreeMap<String, String>,
    pub active: bool,
    /// The formatter plugin that renders this subscription's messages, if any.
    pub formatter: Option<String>,
    /// Repeat suppression (`dedup_window`, `dedup_key`), if any. Not part of
    /// [`Subscription::key`]: changing it keeps the deliveries' subscription.
    pub dedup: Option<crate::dedup::Dedup>,
    /// Grouping into digests (`group_by`, `group_wait`, `group_interval`,
    /// `max_group_size`), if any. Not part of [`Subscription::key`].
    pub group: Option<crate::group::Grouping>,
    /// `throttle` on the subscription, or inherited from its channel (then the scope is
    /// the channel). Ignored when `group` is set. Not part of [`Subscription::key`].
    pub throttle: Option<(crate::group::Throttle, crate::group::ThrottleScope)>,
}

impl Subscription {
    /// A subscription of `team` at `index` that matches `patterns` and nothing else filtered.
    pub fn new(
        team: TeamId,
        index: usize,
        channel: impl Into<String>,
        patterns: Vec<Pattern>,
    ) -> Self {
        Subscription {
            id: SubscriptionId { team, index },
            name: None,
            channel: channel.into(),
            patterns,
            outcome: None,
            metadata: BTreeMap::new(),
            active: true,
            formatter: None,
            dedup: None,
            group: None,
            throttle: None,
        }
    }

    /// The stable name deliveries record to find their subscription again after a reload:
    /// the configured `name`, else `h_` and a hash of what the subscription is (channel,
    /// patterns, outcome, metadata filter, formatter), so that inserting, removing or
    /// reordering other subscriptions never changes it.
    pub fn key(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        // FNV-1a (64 bit): stable across Rust versions and builds, unlike std's hasher;
        // each field is followed by a separator byte that no field contains.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |text: &str| {
            for byte in text.bytes().chain([0x1f]) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        feed(&self.channel);
        feed(&self.patterns.len().to_string());
        for pattern in &self.patterns {
            feed(&pattern.to_string());
        }
        feed(self.outcome.map_or("", Outcome::as_str));
        feed(&self.metadata.len().to_string());
        for (key, value) in &self.metadata {
            feed(key);
            feed(value);
        }
        feed(self.formatter.as_deref().unwrap_or(""));
        format!("h_{hash:016x}")
    }

    /// What a digest of `event` for this subscription would be: its group's (with the
    /// event's labels) when the subscription groups, else its throttle's; `None` when it
    /// does neither.
    pub fn digest_kind(&self, event: &Event) -> Option<crate::digest::DigestKind> {
        use crate::digest::DigestKind;
        if let Some(group) = &self.group {
            return Some(DigestKind::Group {
                labels: group.labels_for(event),
            });
        }
        let (throttle, _) = self.throttle.as_ref()?;
        Some(DigestKind::Throttle {
            limit: throttle.limit,
            per_seconds: throttle.per.as_secs(),
        })
    }

    /// Every reason this subscription does not take `event`; empty means it matches.
    ///
    /// This is the reference semantics: the indexed [`crate::Matcher`] must agree with it
    /// (property-tested).
    pub fn reasons_against(&self, event: &Event) -> Vec<Reason> {
        let mut reasons = Vec::new();
        if self.id.team != event.team_id {
            reasons.push(Reason::OtherTeam);
            return reasons;
        }
        if !self.active {
            reasons.push(Reason::Inactive);
        }
        if !self.patterns.iter().any(|p| p.matches(&event.event)) {
            reasons.push(Reason::EventType {
                patterns: self.patterns.iter().map(ToString::to_string).collect(),
            });
        }
        if let Some(wanted) = self.outcome
            && event.outcome != Some(wanted)
        {
            reasons.push(Reason::Outcome {
                wanted,
                got: event.outcome,
            });
        }
        for (key, wanted) in &self.metadata {
            match event.metadata.get(key) {
                None => reasons.push(Reason::MetadataMissing {
                    key: key.clone(),
                    wanted: wanted.clone(),
                }),
                Some(got) if got != wanted => reasons.push(Reason::MetadataMismatch {
                    key: key.clone(),
                    wanted: wanted.clone(),
                    got: got.clone(),
                }),
                Some(_) => {}
            }
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(index: usize, channel: &str, patterns: &[&str]) -> Subscription {
        let team = TeamId::parse("acme").unwrap();
        let patterns = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        Subscription::new(team, index, channel, patterns)
    }

    #[test]
    fn the_key_is_the_name_or_a_hash_of_the_content_never_the_position() {
        let first = sub(0, "hook", &["capsule.*"]);
        // The same subscription further down the list keeps its key.
        assert_eq!(first.key(), sub(3, "hook", &["capsule.*"]).key());
        assert!(first.key().starts_with("h_"), "{}", first.key());
        // Any change of content is another subscription.
        let mut changed = vec![
            sub(0, "mail", &["capsule.*"]),
            sub(0, "hook", &["capsule.*", "host.down"]),
        ];
        let mut with_outcome = first.clone();
        with_outcome.outcome = Some(Outcome::Error);
        let mut with_metadata = first.clone();
        with_metadata.metadata.insert("region".into(), "eu".into());
        let mut with_formatter = first.clone();
        with_formatter.formatter = Some("slack".into());
        changed.extend([with_outcome, with_metadata, with_formatter]);
        for other in &changed {
            assert_ne!(first.key(), other.key(), "{other:?}");
        }
        let mut named = first.clone();
        named.name = Some("ops".into());
        assert_eq!(named.key(), "ops");
    }
}
