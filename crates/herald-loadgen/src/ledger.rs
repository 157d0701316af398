//! Bookkeeping of an end-to-end run: which (event, receiver) pairs arrived when, which
//! deliveries came twice (same `webhook-id`), which never came.

use std::collections::HashSet;

use serde::Serialize;

use crate::payload::RunIds;
use crate::receiver::Arrival;
use crate::stats::{Latencies, LatencySummary};

/// What one arrival turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first delivery of this event to this receiver.
    First,
    /// A `webhook-id` seen before with this event: herald delivered the same delivery again
    /// (at least once). A digest carries several events under one `webhook-id`.
    Duplicate,
    /// A new `webhook-id` for an (event, receiver) pair that already arrived: two deliveries
    /// where herald promises one per (event, channel).
    RepeatedPair,
    /// Not an event of this run, or a receiver this run does not have.
    Unexpected,
}

/// Every arrival of a run, against what was published.
#[derive(Debug)]
pub struct Ledger {
    ids: RunIds,
    events: u64,
    receivers: usize,
    /// Unix nanoseconds of the first arrival of each (event, receiver), `event * receivers + receiver`.
    first: Vec<Option<u64>>,
    /// (`webhook-id`, slot) pairs seen.
    webhook_ids: HashSet<(String, usize)>,
    /// Which events the server accepted; known once publishing is over.
    accepted: Option<Vec<bool>>,
    /// Accepted pairs that have not arrived yet.
    outstanding: u64,
    delivered: u64,
    duplicates: u64,
    repeated_pairs: u64,
    unexpected: u64,
    latencies: Latencies,
    last_received_ns: Option<u64>,
}

/// A run's deliveries in figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LedgerSummary {
    /// Accepted events × receivers.
    pub expected: u64,
    /// Distinct (event, receiver) pairs that arrived.
    pub delivered: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub repeated_pairs: u64,
    pub unexpected: u64,
    /// Publish → first arrival, per pair that carried `sent_at_ns`.
    pub latency: LatencySummary,
}

impl Ledger {
    /// A ledger for events `ids.id(0..events)`, each expected at every one of `receivers`.
    pub fn new(ids: RunIds, events: u64, receivers: usize) -> Ledger {
        let slots = usize::try_from(events)
            .unwrap_or(usize::MAX)
            .saturating_mul(receivers);
        Ledger {
            ids,
            events,
            receivers,
            first: vec![None; slots],
            webhook_ids: HashSet::new(),
            accepted: None,
            outstanding: 0,
            delivered: 0,
            duplicates: 0,
            repeated_pairs: 0,
            unexpected: 0,
            latencies: Latencies::default(),
            last_received_ns: None,
        }
    }

    pub fn record(&mut self, arrival: &Arrival) -> Recorded {
        let Some(slot) = self.slot(arrival) else {
            self.unexpected += 1;
            return Recorded::Unexpected;
        };
        if let Some(id) = &arrival.webhook_id
            && !self.webhook_ids.insert((id.clone(), slot))
        {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        if self.first[slot].is_some() {
            self.repeated_pairs += 1;
            return Recorded::RepeatedPair;
        }
        self.first[slot] = Some(arrival.received_at_ns);
        self.delivered += 1;
        if let Some(sent) = arrival.sent_at_ns {
            let nanos = arrival.received_at_ns.saturating_sub(sent);
            self.latencies.record_micros(nanos / 1_000);
        }
        self.last_received_ns = self.last_received_ns.max(Some(arrival.received_at_ns));
        if let Some(accepted) = &self.accepted
            && accepted[slot / self.receivers]
        {
            self.outstanding -= 1;
        }
        Recorded::First
    }

    /// Declares which events the server accepted (`accepted[i]` for event `i`); only those
    /// count as expected and missing.
    pub fn set_accepted(&mut self, accepted: Vec<bool>) {
        self.outstanding = accepted
            .iter()
            .enumerate()
            .filter(|(_, ok)| **ok)
            .map(|(event, _)| {
                let pairs = &self.first[event * self.receivers..(event + 1) * self.receivers];
                pairs.iter().filter(|t| t.is_none()).count() as u64
            })
            .sum();
        self.accepted = Some(accepted);
    }

    /// Every accepted event arrived at every receiver.
    pub fn is_complete(&self) -> bool {
        self.accepted.is_some() && self.outstanding == 0
    }

    /// Unix nanoseconds of the last first-arrival.
    pub fn last_received_ns(&self) -> Option<u64> {
        self.last_received_ns
    }

    pub fn summary(&self) -> LedgerSummary {
        let accepted = self
            .accepted
            .as_ref()
            .map_or(0, |a| a.iter().filter(|ok| **ok).count() as u64);
        LedgerSummary {
            expected: accepted * self.receivers as u64,
            delivered: self.delivered,
            missing: self.outstanding,
            duplicates: self.duplicates,
            repeated_pairs: self.repeated_pairs,
            unexpected: self.unexpected,
            latency: self.latencies.summary(),
        }
    }

    fn slot(&self, arrival: &Arrival) -> Option<usize> {
        let event = self.ids.index_of(arrival.event_id.as_deref()?)?;
        if event >= self.events || arrival.receiver >= self.receivers {
            return None;
        }
        Some(usize::try_from(event).ok()? * self.receivers + arrival.receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival(event: &str, receiver: usize, webhook_id: &str, at_ms: u64) -> Arrival {
        Arrival {
            receiver,
            webhook_id: Some(webhook_id.to_string()),
            event_id: Some(event.to_string()),
            sent_at_ns: Some(0),
            received_at_ns: at_ms * 1_000_000,
        }
    }

    /// Records `arrivals` into a ledger of 3 events × 2 receivers of run `r`, then accepts
    /// `accepted`; checks each verdict and the summary.
    fn check(
        arrivals: &[(Arrival, Recorded)],
        accepted: [bool; 3],
        expect: (LedgerSummaryCounts, bool),
    ) {
        let mut ledger = Ledger::new(RunIds::new("r"), 3, 2);
        for (a, want) in arrivals {
            assert_eq!(ledger.record(a), *want, "{a:?}");
        }
        ledger.set_accepted(accepted.to_vec());
        let s = ledger.summary();
        let got = LedgerSummaryCounts {
            expected: s.expected,
            delivered: s.delivered,
            missing: s.missing,
            duplicates: s.duplicates,
            repeated_pairs: s.repeated_pairs,
            unexpected: s.unexpected,
        };
        assert_eq!((got, ledger.is_complete()), expect);
    }

    #[derive(Debug, PartialEq, Eq)]
    struct LedgerSummaryCounts {
        expected: u64,
        delivered: u64,
        missing: u64,
        duplicates: u64,
        repeated_pairs: u64,
        unexpected: u64,
    }

    fn counts(e: u64, d: u64, m: u64, dup: u64, rep: u64, un: u64) -> LedgerSummaryCounts {
        LedgerSummaryCounts {
            expected: e,
            delivered: d,
            missing: m,
            duplicates: dup,
            repeated_pairs: rep,
            unexpected: un,
        }
    }

    #[test]
    fn all_delivered_once_is_complete() {
        let mut arrivals = Vec::new();
        for event in 0..3 {
            for receiver in 0..2 {
                let a = arrival(
                    &format!("r-{event}"),
                    receiver,
                    &format!("d{event}{receiver}"),
                    5,
                );
                arrivals.push((a, Recorded::First));
            }
        }
        check(&arrivals, [true; 3], (counts(6, 6, 0, 0, 0, 0), true));
    }

    #[test]
    fn a_redelivery_with_the_same_webhook_id_is_a_duplicate() {
        let arrivals = [
            (arrival("r-0", 0, "d1", 1), Recorded::First),
            (arrival("r-0", 0, "d1", 2), Recorded::Duplicate),
            (arrival("r-0", 0, "d1", 3), Recorded::Duplicate),
        ];
        check(&arrivals, [true; 3], (counts(6, 1, 5, 2, 0, 0), false));
    }

    #[test]
    fn a_digest_carries_several_events_under_one_webhook_id() {
        let arrivals = [
            (arrival("r-0", 0, "digest", 1), Recorded::First),
            (arrival("r-1", 0, "digest", 1), Recorded::First),
            (arrival("r-2", 0, "digest", 1), Recorded::First),
            // The digest resent: every event it lists is a duplicate.
            (arrival("r-1", 0, "digest", 2), Recorded::Duplicate),
        ];
        // Receiver 1 got nothing: three pairs missing.
        check(&arrivals, [true; 3], (counts(6, 3, 3, 1, 0, 0), false));
    }

    #[test]
    fn two_webhook_ids_for_one_pair_are_a_repeated_pair() {
        let arrivals = [
            (arrival("r-1", 1, "d1", 1), Recorded::First),
            (arrival("r-1", 1, "d2", 2), Recorded::RepeatedPair),
            // Same event at the other receiver is a different pair.
            (arrival("r-1", 0, "d3", 2), Recorded::First),
        ];
        check(
            &arrivals,
            [false, true, false],
            (counts(2, 2, 0, 0, 1, 0), true),
        );
    }

    #[test]
    fn foreign_events_and_receivers_are_unexpected() {
        let arrivals = [
            (arrival("other-0", 0, "d1", 1), Recorded::Unexpected),
            (arrival("r-3", 0, "d2", 1), Recorded::Unexpected),
            (arrival("r-0", 2, "d3", 1), Recorded::Unexpected),
            (arrival("r-x", 0, "d4", 1), Recorded::Unexpected),
        ];
        check(
            &arrivals,
            [true, false, false],
            (counts(2, 0, 2, 0, 0, 4), false),
        );
    }

    #[test]
    fn only_accepted_events_can_be_missing() {
        let arrivals = [(arrival("r-2", 0, "d1", 1), Recorded::First)];
        check(
            &arrivals,
            [false, false, true],
            (counts(2, 1, 1, 0, 0, 0), false),
        );
    }

    #[test]
    fn arrivals_after_acceptance_complete_the_run() {
        let mut ledger = Ledger::new(RunIds::new("r"), 1, 2);
        ledger.record(&arrival("r-0", 0, "a", 1));
        ledger.set_accepted(vec![true]);
        assert!(!ledger.is_complete());
        assert_eq!(ledger.record(&arrival("r-0", 1, "b", 9)), Recorded::First);
        assert!(ledger.is_complete());
        assert_eq!(ledger.last_received_ns(), Some(9_000_000));
    }

    #[test]
    fn latency_is_publish_to_first_arrival() {
        let mut ledger = Ledger::new(RunIds::new("r"), 2, 1);
        let mut a = arrival("r-0", 0, "a", 0);
        a.sent_at_ns = Some(1_000_000_000);
        a.received_at_ns = 1_004_000_000; // 4 ms later
        ledger.record(&a);
        // A duplicate arriving much later does not count towards latency.
        a.received_at_ns = 9_000_000_000;
        ledger.record(&a);
        let s = ledger.summary().latency;
        assert_eq!((s.count, s.max_us), (1, 4_000));
    }
}
