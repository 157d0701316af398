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
        }
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
