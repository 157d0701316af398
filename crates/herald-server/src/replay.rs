//! `Last-Event-ID` resume, read from the store one page at a time as the client takes
//! the events (`Store::events_after`, a cursor on the `(team_id, seq)` index), so a long
//! gap costs one page of memory, not the whole gap. And the ids of recently replayed
//! events, so that the live stream that follows does not send one of them twice.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use herald_core::{Event, TeamId};
use herald_engine::BUS_CAPACITY;
use herald_store::{Store, StoreError};

/// Events read from the store at a time.
pub(crate) const PAGE: usize = 500;
// A page shorter than PAGE means "caught up": the store must not clamp below it.
const _: () = assert!(PAGE <= herald_store::MAX_PAGE_SIZE);

/// Where a replay stands: the last event read, in the caller's scope.
#[derive(Debug)]
pub(crate) struct Replay {
    team: Option<TeamId>,
    after: String,
}

/// One read of the replay.
pub(crate) enum Page {
    /// The next events, in order; fewer than [`PAGE`] means the replay has caught up.
    Events(Vec<Event>),
    /// The `Last-Event-ID` is not an event of the caller's scope (or was pruned).
    Unknown(String),
    /// The store failed (logged).
    Failed,
}

impl Replay {
    pub(crate) fn new(team: Option<TeamId>, after: String) -> Replay {
        Replay { team, after }
    }

    pub(crate) async fn next(&mut self, store: &dyn Store) -> Page {
        metrics::counter!("herald_stream_replay_pages_total").increment(1);
        match store
            .events_after(self.team.as_ref(), &self.after, PAGE)
            .await
        {
            Ok(events) => {
                if let Some(last) = events.last() {
                    self.after.clone_from(&last.id);
                }
                Page::Events(events)
            }
            Err(StoreError::NotFound) => Page::Unknown(self.after.clone()),
            Err(e) => {
                tracing::error!(error = %e, "replaying events for a stream failed");
                Page::Failed
            }
        }
    }
}

/// The ids (hashed) of the last events replayed. A durable event committed before the
/// stream subscribed to the live bus but published on it after can arrive twice; such an
/// event is among the last ones replayed, and it reaches the subscriber within the bus's
/// capacity of messages. So the set holds the last `2 × BUS_CAPACITY` replayed ids and is
/// dropped after `2 × BUS_CAPACITY` live messages: bounded memory per stream.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    live_seen: usize,
}

const RECENT: usize = 2 * BUS_CAPACITY;

impl Recent {
    pub(crate) fn replayed(&mut self, id: &str) {
        let h = hash(id);
        if self.set.insert(h) {
            self.order.push_back(h);
        }
        if self.order.len() > RECENT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
    }

    /// Whether a live durable event was already replayed.
    pub(crate) fn seen(&mut self, id: &str) -> bool {
        if self.set.is_empty() {
            return false;
        }
        self.live_seen += 1;
        if self.live_seen > RECENT {
            *self = Recent::default();
            return false;
        }
        self.set.contains(&hash(id))
    }
}

fn hash(id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_are_bounded_and_forgotten_after_enough_live_events() {
        let mut recent = Recent::default();
        assert!(!recent.seen("evt_1"), "nothing replayed, nothing seen");
        for i in 0..RECENT + 10 {
            recent.replayed(&format!("evt_{i}"));
        }
        assert_eq!(recent.set.len(), RECENT);
        assert_eq!(recent.order.len(), RECENT);
        assert!(!recent.seen("evt_0"), "the oldest ids were dropped");
        assert!(recent.seen(&format!("evt_{}", RECENT + 9)));
        for _ in 0..RECENT {
            recent.seen("evt_live");
        }
        assert!(
            !recent.seen(&format!("evt_{}", RECENT + 9)),
            "forgotten after 2 × the bus capacity of live events"
        );
        assert!(recent.set.is_empty());
    }
}
