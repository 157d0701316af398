//! The indexed matcher: from an event to the subscriptions that take it.
//!
//! At build time every active subscription is expanded against the registry into
//! `team → event type → candidate subscriptions`. Matching an event is then two hash
//! look-ups and a filter over the candidates, whose cost does not depend on the number of
//! teams or of subscriptions that do not match the event's type.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap;

use crate::event::{Event, Outcome};
use crate::explain::{Explanation, Verdict};
use crate::reason::Reason;
use crate::registry::{EventKind, EventTypeRegistry};
use crate::subscription::Subscription;
use crate::team::{MAX_TEAM_ID_LEN, TeamId};

/// A team id stored inline, so finding a team's slot does not chase a pointer to its name.
#[derive(Clone, PartialEq, Eq)]
struct InlineTeam {
    len: u8,
    bytes: [u8; MAX_TEAM_ID_LEN],
}

impl InlineTeam {
    fn new(team: &TeamId) -> InlineTeam {
        let mut bytes = [0; MAX_TEAM_ID_LEN];
        let s = team.as_str().as_bytes();
        bytes[..s.len()].copy_from_slice(s);
        InlineTeam {
            len: u8::try_from(s.len()).expect("team ids are at most 64 bytes"),
            bytes,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

// Hash and Borrow agree with `[u8]`, so a lookup takes the event's `&[u8]` directly.
impl Hash for InlineTeam {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for InlineTeam {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// One candidate subscription for a (team, event type), with its filters copied in so
/// that most events are decided without touching the `Subscription` itself.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    subscription: u32,
    /// Range into `Matcher::metadata_filters`.
    metadata_start: u32,
    metadata_len: u32,
    outcome: Option<Outcome>,
}

#[derive(Debug, Clone, Default)]
pub struct Matcher {
    registry: EventTypeRegistry,
    subscriptions: Vec<Subscription>,
    /// Indices into `subscriptions` of each team's subscriptions, in declaration order.
    by_team: HashMap<TeamId, Vec<u32>>,
    /// Durable event type → dense type number.
    type_numbers: FxHashMap<Box<str>, u32>,
    /// Team → dense team number.
    team_numbers: FxHashMap<InlineTeam, u32>,
    /// `offsets[team * stride + type]..offsets[team * stride + type + 1]` is the range of
    /// `candidates` for that team and type; `stride` is the number of durable types.
    stride: usize,
    offsets: Vec<u32>,
    candidates: Vec<Candidate>,
    metadata_filters: Vec<(Box<str>, Box<str>)>,
}

impl std::fmt::Debug for InlineTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl Matcher {
    /// Builds the index. Patterns that match no declared durable type simply contribute
    /// nothing; the configuration layer reports them as errors before this is called.
    pub fn new(registry: EventTypeRegistry, subscriptions: Vec<Subscription>) -> Matcher {
        let type_numbers: FxHashMap<Box<str>, u32> = registry
            .iter()
            .filter(|(_, kind)| *kind == EventKind::Durable)
            .enumerate()
            .map(|(n, (name, _))| (Box::from(name), n as u32))
            .collect();
        let types = type_numbers.len();
        let mut by_team: HashMap<TeamId, Vec<u32>> = HashMap::new();
        for (i, sub) in subscriptions.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 subscriptions");
            by_team.entry(sub.id.team.clone()).or_default().push(i);
        }
        let mut teams: Vec<&TeamId> = by_team.keys().collect();
        teams.sort();
        let mut team_numbers = FxHashMap::default();
        let mut offsets = Vec::with_capacity(teams.len() * (types + 1) + 1);
        let mut candidates = Vec::new();
        let mut metadata_filters = Vec::new();
        for (team_number, team) in teams.iter().enumerate() {
            team_numbers.insert(InlineTeam::new(team), team_number as u32);
            // Per type, the team's active subscriptions matching it, in declaration order.
            let mut per_type: Vec<Vec<u32>> = vec![Vec::new(); types];
            for &i in &by_team[*team] {
                let sub = &subscriptions[i as usize];
                if !sub.active {
                    continue;
                }
                for pattern in &sub.patterns {
                    for event_type in registry.durable_matches(pattern) {
                        let list = &mut per_type[type_numbers[event_type] as usize];
                        // Two patterns of one subscription may cover the same type.
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                }
            }
            for list in per_type {
                offsets.push(u32::try_from(candidates.len()).expect("index fits in u32"));
                for i in list {
                    let sub = &subscriptions[i as usize];
                    let metadata_start = metadata_filters.len() as u32;
                    metadata_filters.extend(
                        sub.metadata
                            .iter()
                            .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str()))),
                    );
                    candidates.push(Candidate {
                        subscription: i,
                        metadata_start,
                        metadata_len: sub.metadata.len() as u32,
                        outcome: sub.outcome,
                    });
                }
            }
        }
        // The end of the last range; every other range ends where the next one starts.
        offsets.push(u32::try_from(candidates.len()).expect("index fits in u32"));
        Matcher {
            registry,
            subscriptions,
            by_team,
            type_numbers,
            team_numbers,
            stride: types,
            offsets,
            candidates,
            metadata_filters,
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
        let (Some(&team), Some(&ty)) = (
            self.team_numbers.get(event.team_id.as_str().as_bytes()),
            self.type_numbers.get(event.event.as_str()),
        ) else {
            return;
        };
        let slot = team as usize * self.stride + ty as usize;
        let range = self.offsets[slot] as usize..self.offsets[slot + 1] as usize;
        for c in &self.candidates[range] {
            if let Some(wanted) = c.outcome
                && event.outcome != Some(wanted)
            {
                continue;
            }
            let filters = &self.metadata_filters
                [c.metadata_start as usize..(c.metadata_start + c.metadata_len) as usize];
            if filters
                .iter()
                .all(|(k, v)| event.metadata.get(&**k).map(String::as_str) == Some(&**v))
            {
                f(&self.subscriptions[c.subscription as usize]);
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
