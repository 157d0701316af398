//! The events a load run publishes: unique ids per run, and a body of realistic size
//! (about [`TARGET_BYTES`], with actor, resource and metadata like a real publisher's).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::json;

use crate::receiver::unix_nanos;

/// The size an event body is padded to, in bytes.
pub const TARGET_BYTES: usize = 500;

const FILLER: &str = "padding that brings this benchmark event to a realistic size; ";

/// The ids of one run: `PREFIX-0`, `PREFIX-1`, … A fresh prefix per run keeps herald's
/// per-team idempotency from treating a second run's events as duplicates of the first's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunIds {
    prefix: String,
}

impl RunIds {
    pub fn new(prefix: impl Into<String>) -> RunIds {
        RunIds {
            prefix: prefix.into(),
        }
    }

    /// A prefix made from the clock: `load-<unix microseconds>`.
    pub fn fresh(now: SystemTime) -> RunIds {
        RunIds::new(format!("load-{}", unix_nanos(now) / 1_000))
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Ids of a sub-sequence, e.g. one per client: `PREFIX-NAME-0`, …
    pub fn child(&self, name: &str) -> RunIds {
        RunIds::new(format!("{}-{name}", self.prefix))
    }

    pub fn id(&self, index: u64) -> String {
        format!("{}-{index}", self.prefix)
    }

    /// The index of an id made by [`RunIds::id`]; `None` for any other id.
    pub fn index_of(&self, id: &str) -> Option<u64> {
        let digits = id.strip_prefix(self.prefix.as_str())?.strip_prefix('-')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }
}

/// What every event of a run has in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTemplate {
    /// A type declared in the server's `[[event_types]]`.
    pub event_type: String,
    /// `team_id`; `None` lets the server take the API key's team.
    pub team: Option<String>,
}

impl EventTemplate {
    /// The JSON body of one event, padded to about [`TARGET_BYTES`]. `metadata` is added
    /// to the event's own (`source`, `region`, `host`).
    pub fn body(&self, id: &str, metadata: &[(&str, String)]) -> Vec<u8> {
        let mut meta: BTreeMap<&str, String> = BTreeMap::from([
            ("source", "herald-load".to_string()),
            ("region", "bench-local".to_string()),
            ("host", "127.0.0.1".to_string()),
            ("note", String::new()),
        ]);
        meta.extend(metadata.iter().map(|(k, v)| (*k, v.clone())));
        let mut event = json!({
            "id": id,
            "event": self.event_type,
            "outcome": "success",
            "actor": {"type": "system", "id": "herald-load", "name": "herald load generator"},
            "resource": {"id": format!("res-{id}"), "type": "benchmark"},
            "metadata": meta,
        });
        if let Some(team) = &self.team {
            event["team_id"] = json!(team);
        }
        let unpadded = event.to_string().len();
        if unpadded < TARGET_BYTES {
            let note: String = FILLER
                .chars()
                .cycle()
                .take(TARGET_BYTES - unpadded)
                .collect();
            event["metadata"]["note"] = json!(note);
        }
        event.to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_others() {
        let ids = RunIds::new("load-17");
        assert_eq!(ids.id(42), "load-17-42");
        let cases = [
            ("load-17-42", Some(42)),
            ("load-17-0", Some(0)),
            ("load-17-", None),
            ("load-17-+4", None),
            ("load-17-4x", None),
            ("load-170-4", None),
            ("load-18-4", None),
            ("load-17", None),
        ];
        for (id, want) in cases {
            assert_eq!(ids.index_of(id), want, "{id}");
        }
        assert_eq!(ids.child("c3").id(7), "load-17-c3-7");
    }

    #[test]
    fn fresh_prefixes_differ_by_clock() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_764_000_000_123_456);
        assert_eq!(RunIds::fresh(t).prefix(), "load-1764000000123456");
    }

    #[test]
    fn bodies_are_valid_events_of_the_target_size() {
        let template = EventTemplate {
            event_type: "bench.ping".to_string(),
            team: Some("bench".to_string()),
        };
        let body = template.body(
            "load-1-7",
            &[("sent_at_ns", "1764000000123456789".to_string())],
        );
        assert_eq!(body.len(), TARGET_BYTES);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "load-1-7");
        assert_eq!(v["event"], "bench.ping");
        assert_eq!(v["team_id"], "bench");
        assert_eq!(v["metadata"]["sent_at_ns"], "1764000000123456789");
        assert!(
            v["metadata"]
                .as_object()
                .unwrap()
                .values()
                .all(|m| m.is_string())
        );

        let anonymous = EventTemplate {
            team: None,
            ..template
        };
        let v: serde_json::Value = serde_json::from_slice(&anonymous.body("x", &[])).unwrap();
        assert!(v.get("team_id").is_none());
    }
}
