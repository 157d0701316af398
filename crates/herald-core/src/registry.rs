//! The event-type registry: which types exist, and whether each is durable or transient.

use std::collections::BTreeMap;

use crate::pattern::Pattern;

/// Durable types are stored and delivered; transient ones go to the live stream only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Durable,
    Transient,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventTypeRegistry {
    types: BTreeMap<String, EventKind>,
}

impl EventTypeRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a type. Returns the earlier kind if the name was already declared.
    pub fn declare(&mut self, name: impl Into<String>, kind: EventKind) -> Option<EventKind> {
        self.types.insert(name.into(), kind)
    }

    pub fn kind(&self, name: &str) -> Option<EventKind> {
        self.types.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, EventKind)> {
        self.types.iter().map(|(name, kind)| (name.as_str(), *kind))
    }

    /// The durable types `pattern` matches, in name order. Prefix patterns use a range
    /// scan of the ordered map, so the cost follows the number of types matched.
    pub fn durable_matches<'a>(
        &'a self,
        pattern: &'a Pattern,
    ) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let durable = |(name, kind): (&'a String, &'a EventKind)| {
            (*kind == EventKind::Durable).then_some(name.as_str())
        };
        match pattern {
            Pattern::All => Box::new(self.types.iter().filter_map(durable)),
            Pattern::Prefix(prefix) => Box::new(
                self.types
                    .range::<str, _>((
                        std::ops::Bound::Included(prefix.as_str()),
                        std::ops::Bound::Unbounded,
                    ))
                    .take_while(move |(name, _)| name.starts_with(prefix.as_str()))
                    .filter_map(durable),
            ),
            Pattern::Exact(name) => Box::new(
                self.types
                    .get_key_value(name.as_str())
                    .and_then(durable)
                    .into_iter(),
            ),
        }
    }

    /// Why a subscription may not use `pattern`, if it may not.
    pub fn check_subscribable(&self, pattern: &Pattern) -> Result<(), String> {
        match pattern {
            Pattern::Exact(name) => match self.kind(name) {
                None => Err(format!(
                    "event type `{name}` is not declared; add it under [[event_types]]"
                )),
                Some(EventKind::Transient) => Err(format!(
                    "event type `{name}` is transient: it goes to the live stream only and cannot be subscribed to"
                )),
                Some(EventKind::Durable) => Ok(()),
            },
            _ if self.durable_matches(pattern).next().is_none() => Err(format!(
                "pattern `{pattern}` matches no declared durable event type"
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> EventTypeRegistry {
        let mut r = EventTypeRegistry::new();
        r.declare("capsule.create", EventKind::Durable);
        r.declare("capsule.destroy", EventKind::Durable);
        r.declare("capsule.state.changed", EventKind::Transient);
        r.declare("capsules.x", EventKind::Durable);
        r.declare("host.down", EventKind::Durable);
        r.declare("ui.blip", EventKind::Transient);
        r
    }

    fn check(pattern: &str, expect: &str) {
        let r = registry();
        let p = Pattern::parse(pattern).unwrap();
        let got = match r.check_subscribable(&p) {
            Ok(()) => r.durable_matches(&p).collect::<Vec<_>>().join(" "),
            Err(e) => e,
        };
        assert_eq!(got, expect, "{pattern}");
    }

    #[test]
    fn subscribable_patterns() {
        check("*", "capsule.create capsule.destroy capsules.x host.down");
        check("capsule.*", "capsule.create capsule.destroy");
        check("host.down", "host.down");
        check(
            "host.up",
            "event type `host.up` is not declared; add it under [[event_types]]",
        );
        check(
            "capsule.state.changed",
            "event type `capsule.state.changed` is transient: it goes to the live stream only and cannot be subscribed to",
        );
        check(
            "ui.*",
            "pattern `ui.*` matches no declared durable event type",
        );
        check(
            "nothing.*",
            "pattern `nothing.*` matches no declared durable event type",
        );
    }
}
