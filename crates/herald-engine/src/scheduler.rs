//! The dispatcher's memory: one lane per channel holding the deliveries ready to send, the
//! attempts in flight and the channel's concurrency limit, and a round-robin ring of the
//! lanes that can start an attempt. No IO and no clock of its own: the dispatcher drives it.
//!
//! New deliveries enter a lane straight from ingest (after their commit); the store is
//! read only at start-up and when retries fall due. A lane holds at most
//! [`LANE_CAPACITY`] waiting deliveries: beyond that they stay in the store only (not
//! held) and the lane is marked *spilled*, to be refilled from the store when it drains.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::{Event, TeamId, Timestamp};
use herald_store::{Claimed, DeliveryRecord, LeaseToken};

use crate::concurrency::{Limiter, Policy, Signal};

/// A channel of a team.
pub(crate) type ChannelKey = (TeamId, String);

/// Most deliveries a lane keeps in memory; the rest wait in the store.
pub(crate) const LANE_CAPACITY: usize = 10_000;

/// A delivery ready to be attempted, held under `lease`.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub delivery: DeliveryRecord,
    pub event: Arc<Event>,
    pub lease: LeaseToken,
    /// When the lease runs out (a shared store's claim); `None` for a hold, which never
    /// does. A job whose lease is nearly over is not attempted (another node may take it).
    pub lease_until: Option<Timestamp>,
}

impl From<Claimed> for Job {
    fn from(c: Claimed) -> Job {
        Job {
            delivery: c.delivery,
            event: Arc::new(c.event),
            lease: c.lease,
            lease_until: Some(c.lease_until),
        }
    }
}

impl Job {
    pub fn key(&self) -> ChannelKey {
        (self.delivery.team.clone(), self.delivery.channel.clone())
    }
}

#[derive(Debug)]
struct Lane {
    waiting: VecDeque<Job>,
    in_flight: usize,
    limiter: Limiter,
    /// In the ring (or about to be looked at by it).
    in_ring: bool,
    /// Deliveries of this channel were left in the store for want of room here.
    spilled: bool,
}

/// What `/v1/channels` and `/metrics` show of a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LaneStatus {
    /// Attempts allowed in flight now.
    pub limit: usize,
    /// Whether the limit is learnt (true) or pinned by `concurrency_per_channel`.
    pub adaptive: bool,
    pub in_flight: usize,
    /// Deliveries waiting in memory for a slot.
    pub queued: usize,
}

/// Every lane, and which may start an attempt.
#[derive(Debug)]
pub(crate) struct Scheduler {
    lanes: HashMap<ChannelKey, Lane>,
    ring: VecDeque<ChannelKey>,
    disabled: HashSet<ChannelKey>,
    policy: Policy,
    in_flight: usize,
    /// A lane that spilled has room again: the store holds deliveries to read back.
    refill_wanted: bool,
}

impl Scheduler {
    pub fn new(policy: Policy, disabled: HashSet<ChannelKey>) -> Scheduler {
        Scheduler {
            lanes: HashMap::new(),
            ring: VecDeque::new(),
            disabled,
            policy,
            in_flight: 0,
            refill_wanted: false,
        }
    }

    fn lane(&mut self, key: &ChannelKey) -> &mut Lane {
        let policy = self.policy;
        self.lanes.entry(key.clone()).or_insert_with(|| Lane {
            waiting: VecDeque::new(),
            in_flight: 0,
            limiter: Limiter::new(policy),
            in_ring: false,
            spilled: false,
        })
    }

    /// Puts `key` in the ring if its lane can start an attempt and is not there yet.
    fn refresh(&mut self, key: &ChannelKey) {
        let disabled = self.disabled.contains(key);
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        let ready = !disabled && !lane.waiting.is_empty() && lane.in_flight < lane.limiter.limit();
        if ready && !lane.in_ring {
            lane.in_ring = true;
            self.ring.push_back(key.clone());
        }
    }

    /// Whether a new delivery of `key` may be held in memory (else it stays in the store).
    pub fn has_room(&self, key: &ChannelKey) -> bool {
        self.lanes
            .get(key)
            .is_none_or(|lane| lane.waiting.len() < LANE_CAPACITY)
    }

    /// Notes that a delivery of `key` was left in the store.
    pub fn spilled(&mut self, key: &ChannelKey) {
        self.lane(key).spilled = true;
    }

    pub fn push(&mut self, job: Job) {
        let key = job.key();
        self.lane(&key).waiting.push_back(job);
        self.refresh(&key);
    }

    /// The next delivery to attempt, round-robin over the channels that have room, while
    /// fewer than `workers` attempts are in flight overall. Counts it as in flight.
    pub fn next(&mut self, workers: usize, now: Instant) -> Option<Job> {
        if self.in_flight >= workers {
            return None;
        }
        while let Some(key) = self.ring.pop_front() {
            let disabled = self.disabled.contains(&key);
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            lane.in_ring = false;
            if disabled || lane.in_flight >= lane.limiter.limit() {
                continue;
            }
            let Some(job) = lane.waiting.pop_front() else {
                continue;
            };
            lane.in_flight += 1;
            lane.limiter.on_start(lane.in_flight, now);
            if lane.spilled && lane.waiting.len() < LANE_CAPACITY / 2 {
                lane.spilled = false;
                self.refill_wanted = true;
            }
            self.in_flight += 1;
            self.refresh(&key);
            return Some(job);
        }
        None
    }

    /// An attempt of `key` ended. Returns the lane's new limit when it changed.
    pub fn done(
        &mut self,
        key: &ChannelKey,
        rtt: Duration,
        signal: Signal,
        now: Instant,
    ) -> Option<usize> {
        self.in_flight = self.in_flight.saturating_sub(1);
        let lane = self.lanes.get_mut(key)?;
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let changed = lane.limiter.on_end(rtt, signal, now);
        let limit = lane.limiter.limit();
        self.refresh(key);
        changed.then_some(limit)
    }

    /// Whether the channel is disabled (its deliveries wait).
    pub fn is_disabled(&self, key: &ChannelKey) -> bool {
        self.disabled.contains(key)
    }

    pub fn set_disabled(&mut self, key: &ChannelKey, disabled: bool) {
        if disabled {
            self.disabled.insert(key.clone());
        } else if self.disabled.remove(key) {
            self.refresh(key);
        }
    }

    /// Re-enables every disabled channel; returns them.
    pub fn enable_all(&mut self) -> Vec<ChannelKey> {
        let keys: Vec<_> = self.disabled.drain().collect();
        for key in &keys {
            self.refresh(key);
        }
        keys
    }

    /// A reload changed `concurrency_per_channel` or its ceiling.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        let keys: Vec<_> = self.lanes.keys().cloned().collect();
        for key in keys {
            self.lane(&key).limiter.set_policy(policy);
            self.refresh(&key);
        }
    }

    /// Channels a read of the store must leave alone: disabled ones, and lanes with no
    /// room (those are marked spilled, to be read again once they drain).
    pub fn exclusions(&mut self) -> Vec<ChannelKey> {
        let mut out: Vec<ChannelKey> = self.disabled.iter().cloned().collect();
        for (key, lane) in &mut self.lanes {
            if lane.waiting.len() >= LANE_CAPACITY {
                lane.spilled = true;
                out.push(key.clone());
            }
        }
        out
    }

    /// Attempts in flight and deliveries waiting in memory, over every lane: what a shared
    /// store's claim leaves room for.
    pub fn busy(&self) -> usize {
        self.in_flight
            + self
                .lanes
                .values()
                .map(|lane| lane.waiting.len())
                .sum::<usize>()
    }

    /// True once after a spilled lane drained: deliveries wait in the store.
    pub fn take_refill_wanted(&mut self) -> bool {
        std::mem::take(&mut self.refill_wanted)
    }

    pub fn status(&self, key: &ChannelKey) -> LaneStatus {
        match self.lanes.get(key) {
            Some(lane) => LaneStatus {
                limit: lane.limiter.limit(),
                adaptive: lane.limiter.is_adaptive(),
                in_flight: lane.in_flight,
                queued: lane.waiting.len(),
            },
            None => {
                let fresh = Limiter::new(self.policy);
                LaneStatus {
                    limit: fresh.limit(),
                    adaptive: fresh.is_adaptive(),
                    in_flight: 0,
                    queued: 0,
                }
            }
        }
    }

    /// Every job waiting in memory, taken out (shutdown of a shared store releases them).
    pub fn take_waiting(&mut self) -> Vec<Job> {
        self.ring.clear();
        self.lanes
            .values_mut()
            .flat_map(|lane| {
                lane.in_ring = false;
                lane.waiting.drain(..)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Timestamp;
    use herald_store::DeliveryStatus;

    fn job(team: &str, channel: &str, n: usize) -> Job {
        let team = TeamId::parse(team).unwrap();
        let at = Timestamp::from_unix_nanos(0);
        Job {
            delivery: DeliveryRecord {
                id: format!("dlv_{channel}_{n}"),
                event_id: format!("evt_{n}"),
                team: team.clone(),
                channel: channel.into(),
                subscription: 0,
                subscription_name: None,
                event_type: "capsule.create".into(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                budget_start: 0,
                next_attempt_at: Some(at),
                last_error: None,
                last_status_code: None,
                created_at: at,
                updated_at: at,
                silence_id: None,
                duplicate_of: None,
                digest_id: None,
                digest: None,
            },
            event: Arc::new(herald_core::Event {
                id: format!("evt_{n}"),
                event: "capsule.create".into(),
                outcome: None,
                timestamp: at,
                team_id: team,
                actor: None,
                resource: None,
                metadata: Default::default(),
                error: None,
            }),
            lease: LeaseToken::from_string("holder".into()),
            lease_until: None,
        }
    }

    fn key(team: &str, channel: &str) -> ChannelKey {
        (TeamId::parse(team).unwrap(), channel.into())
    }

    fn drain_ids(s: &mut Scheduler, workers: usize) -> Vec<String> {
        let now = Instant::now();
        std::iter::from_fn(|| s.next(workers, now).map(|j| j.delivery.id)).collect()
    }

    #[test]
    fn lanes_take_turns_and_respect_their_limits() {
        let mut s = Scheduler::new(Policy::Pinned(2), HashSet::new());
        for n in 0..3 {
            s.push(job("acme", "slow", n));
            s.push(job("acme", "fast", n));
        }
        assert_eq!(
            drain_ids(&mut s, 100),
            ["dlv_slow_0", "dlv_fast_0", "dlv_slow_1", "dlv_fast_1"],
            "round-robin, two in flight per channel"
        );
        // One attempt of `fast` ends: its third delivery goes, `slow` stays capped.
        let now = Instant::now();
        s.done(
            &key("acme", "fast"),
            Duration::from_millis(1),
            Signal::Answered,
            now,
        );
        assert_eq!(drain_ids(&mut s, 100), ["dlv_fast_2"]);
        assert_eq!(s.status(&key("acme", "slow")).queued, 1);
        assert_eq!(s.status(&key("acme", "slow")).in_flight, 2);
    }

    #[test]
    fn the_worker_limit_caps_all_lanes_together() {
        let mut s = Scheduler::new(Policy::Pinned(10), HashSet::new());
        for n in 0..5 {
            s.push(job("acme", "a", n));
            s.push(job("beta", "a", n));
        }
        assert_eq!(drain_ids(&mut s, 3).len(), 3);
        s.done(
            &key("acme", "a"),
            Duration::ZERO,
            Signal::Neutral,
            Instant::now(),
        );
        assert_eq!(drain_ids(&mut s, 3).len(), 1);
    }

    #[test]
    fn a_disabled_channel_holds_its_deliveries_until_enabled() {
        let mut s = Scheduler::new(Policy::Pinned(4), HashSet::from([key("acme", "gone")]));
        s.push(job("acme", "gone", 0));
        s.push(job("acme", "ok", 0));
        assert_eq!(drain_ids(&mut s, 100), ["dlv_ok_0"]);
        assert_eq!(s.exclusions(), vec![key("acme", "gone")]);
        assert_eq!(s.enable_all(), vec![key("acme", "gone")]);
        assert_eq!(drain_ids(&mut s, 100), ["dlv_gone_0"]);
        s.set_disabled(&key("acme", "gone"), true);
        s.push(job("acme", "gone", 1));
        assert!(
            drain_ids(&mut s, 100).is_empty(),
            "disabled again: nothing goes"
        );
        s.set_disabled(&key("acme", "gone"), false);
        assert_eq!(drain_ids(&mut s, 100), ["dlv_gone_1"]);
    }

    #[test]
    fn a_full_lane_spills_to_the_store_and_asks_for_a_refill_when_it_drains() {
        let mut s = Scheduler::new(Policy::Pinned(1), HashSet::new());
        let k = key("acme", "hook");
        for n in 0..LANE_CAPACITY {
            assert!(s.has_room(&k));
            s.push(job("acme", "hook", n));
        }
        assert!(!s.has_room(&k));
        s.spilled(&k);
        assert_eq!(s.exclusions(), vec![k.clone()]);
        let mut sent = 0;
        while !s.take_refill_wanted() {
            let job = s.next(100, Instant::now()).expect("a job");
            assert_eq!(
                job.delivery.id,
                format!("dlv_hook_{sent}"),
                "first in, first out"
            );
            s.done(&k, Duration::ZERO, Signal::Answered, Instant::now());
            sent += 1;
        }
        assert_eq!(sent, LANE_CAPACITY / 2 + 1);
        assert!(s.has_room(&k));
    }

    #[test]
    fn the_status_shows_the_limit_of_a_channel_not_seen_yet() {
        let s = Scheduler::new(
            Policy::Adaptive {
                initial: 4,
                max: 64,
            },
            HashSet::new(),
        );
        let status = s.status(&key("acme", "new"));
        assert_eq!((status.limit, status.adaptive, status.queued), (4, true, 0));
    }
}
