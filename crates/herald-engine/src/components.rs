//! The state of the connections herald keeps besides its store — each `[[sources]]`
//! entry and the cluster live bus — as their tasks last saw it, for `/readyz` and the
//! API. The tasks write, readers take a copy; nothing here does IO.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One connection's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// The source's name, or `live_bus`.
    pub name: String,
    /// `redis_stream`, `redis_pubsub` or `live_bus`.
    pub kind: &'static str,
    pub connected: bool,
    /// Why it is not connected (never a URL or password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Every connection's state, by name.
#[derive(Debug, Default)]
pub struct Components {
    states: Mutex<BTreeMap<String, ComponentStatus>>,
}

impl Components {
    /// Records that `name` is connected (`detail` None) or not (with the reason).
    pub fn set(&self, name: &str, kind: &'static str, detail: Option<String>) {
        let status = ComponentStatus {
            name: name.to_string(),
            kind,
            connected: detail.is_none(),
            detail,
        };
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), status);
    }

    /// Every component, by name.
    pub fn all(&self) -> Vec<ComponentStatus> {
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_state_wins_and_reads_are_sorted() {
        let c = Components::default();
        c.set("wrenn", "redis_stream", Some("connection refused".into()));
        c.set("live", "redis_pubsub", None);
        c.set("wrenn", "redis_stream", None);
        let all = c.all();
        assert_eq!(
            all.iter()
                .map(|s| (s.name.as_str(), s.connected))
                .collect::<Vec<_>>(),
            [("live", true), ("wrenn", true)]
        );
        c.set("live", "redis_pubsub", Some("gone".into()));
        assert_eq!(c.all()[0].detail.as_deref(), Some("gone"));
    }
}
