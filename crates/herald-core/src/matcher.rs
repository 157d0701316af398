//! The indexed matcher: from an event to the subscriptions that take it.
//!
//! At build time every active subscription is expanded against the registry into
//! `team → event type → candidate subscriptions`. Matching an event is then two hash
//! look-ups and a filter over the candidates, whose cost does not depend on the number of
//! teams or of subscriptions that do not match the event's type.

use std::collections::HashMap;

use crate::event::Event;
use crate::explain::{Explanation, Reason, Verdict};
use crate::registry::{EventKind, EventTypeRegistry};
use crate::subscription::Subscription;
use crate::team::TeamId;

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    registry: EventTypeRegistry,
    subscriptions: Vec<Subscription>,
    /// Indices into `subscriptions` of each team's subscriptions, in declaration order.
    by_team: HashMap<TeamId, Vec<u32>>,
    /// team → durable event type → active subscriptions whose patterns match the type.
    index: HashMap<TeamId, HashMap<Box<str>, Box<[u32]>>>,
}

impl Matcher {
    /// Builds the index. Patterns that match no declared durable type simply contribute
    /// nothing; the configuration layer reports them as errors before this is called.
    pub fn new(registry: EventTypeRegistry, subscriptions: Vec<Subscription>) -> Matcher {
        let mut by_team: HashMap<TeamId, Vec<u32>> = HashMap::new();
        let mut building: HashMap<TeamId, HashMap<Box<str>, Vec<u32>>> = HashMap::new();
        for (i, sub) in subscriptions.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 subscriptions");
            by_team.entry(sub.id.team.clone()).or_default().push(i);
            if !sub.active {
                continue;
            }
            let team = building.entry(sub.id.team.clone()).or_default();
            for pattern in &sub.patterns {
                for event_type in registry.durable_matches(pattern) {
                    let list = team.entry(Box::from(event_type)).or_default();
                    // Two patterns of one subscription may cover the same type.
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        let index = building
            .into_iter()
            .map(|(team, types)| {
                let types = types
                    .into_iter()
                    .map(|(t, subs)| (t, subs.into_boxed_slice()))
                    .collect();
                (team, types)
            })
            .collect();
        Matcher {
            registry,
            subscriptions,
            by_team,
            index,
        }
    }

    pub fn registry(&self) -> &EventTypeRegistry {
        &self.registry
    }

    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Calls `f` with every active subscription that takes `event`, in declaration order.
    /// Transient and undeclared types match nothing.
    pub fn for_each_match<'a>(&'a self, event: &Event, mut f: impl FnMut(&'a Subscription)) {
        let Some(candidates) = self
            .index
            .get(event.team_id.as_str())
            .and_then(|types| types.get(event.event.as_str()))
        else {
            return;
        };
        for &i in candidates.iter() {
            let sub = &self.subscriptions[i as usize];
            if sub.filters_accept(event) {
                f(sub);
            }
        }
    }

    /// The active subscriptions that take `event`, in declaration order.
    pub fn matches(&self, event: &Event) -> Vec<&Subscription> {
        let mut out = Vec::new();
        self.for_each_match(event, |s| out.push(s));
        out
    }

    /// A verdict, with every reason, for each subscription of the event's team.
    pub fn explain(&self, event: &Event) -> Explanation {
        let kind = self.registry.kind(&event.event);
        let team_subs = self
            .by_team
            .get(event.team_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let verdicts = team_subs
            .iter()
            .map(|&i| {
                let sub = &self.subscriptions[i as usize];
                let mut reasons = match kind {
                    None => vec![Reason::UndeclaredType],
                    Some(EventKind::Transient) => vec![Reason::TransientType],
                    Some(EventKind::Durable) => Vec::new(),
                };
                reasons.extend(sub.reasons_against(event));
                Verdict {
                    subscription: sub.id.to_string(),
                    id: sub.id.clone(),
                    name: sub.name.clone(),
                    channel: sub.channel.clone(),
                    matched: reasons.is_empty(),
                    reasons,
                }
            })
            .collect();
        Explanation {
            event_type: event.event.clone(),
            team: event.team_id.clone(),
            kind,
            verdicts,
        }
    }
}

#[cfg(test)]
mod tests;
