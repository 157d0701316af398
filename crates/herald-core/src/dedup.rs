//! Repeat suppression: which fields make two events "the same" for a subscription's
//! `dedup_window`, and the key computed from them. Pure: the store keeps the windows and
//! decides, inside its write transaction, whether a key is still inside one.

use std::fmt;
use std::time::Duration;

use crate::event::{ActorType, Event};

/// The key used when a subscription sets `dedup_window` without `dedup_key`: the same
/// kind of event, with the same outcome, about the same resource.
pub const DEFAULT_DEDUP_KEY: &[&str] = &["event", "outcome", "resource.type", "resource.id"];

/// Longest `dedup_window` a configuration may set.
pub const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// One field of an event that a dedup key is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DedupField {
    Event,
    Outcome,
    ResourceType,
    ResourceId,
    ActorType,
    ActorId,
    /// `metadata.K`: the value of metadata key `K`.
    Metadata(String),
}

impl DedupField {
    /// The field names a configuration may list, for error messages.
    pub const NAMES: &'static str =
        "event, outcome, resource.type, resource.id, actor.type, actor.id, metadata.KEY";

    pub fn parse(name: &str) -> Result<DedupField, String> {
        Ok(match name {
            "event" => DedupField::Event,
            "outcome" => DedupField::Outcome,
            "resource.type" => DedupField::ResourceType,
            "resource.id" => DedupField::ResourceId,
            "actor.type" => DedupField::ActorType,
            "actor.id" => DedupField::ActorId,
            other => match other.strip_prefix("metadata.") {
                Some(key) if !key.is_empty() => DedupField::Metadata(key.to_string()),
                Some(_) => {
                    return Err("`metadata.` needs a key, as in `metadata.region`".to_string());
                }
                None => {
                    return Err(format!(
                        "unknown dedup key field `{other}`; expected one of {}",
                        DedupField::NAMES
                    ));
                }
            },
        })
    }

    /// The event's value of this field; `None` when the event has none.
    pub fn value<'e>(&self, event: &'e Event) -> Option<&'e str> {
        match self {
            DedupField::Event => Some(&event.event),
            DedupField::Outcome => event.outcome.map(|o| o.as_str()),
            DedupField::ResourceType => event.resource.as_ref().map(|r| r.kind.as_str()),
            DedupField::ResourceId => event.resource.as_ref().map(|r| r.id.as_str()),
            DedupField::ActorType => event.actor.as_ref().map(|a| match a.kind {
                ActorType::User => "user",
                ActorType::ApiKey => "api_key",
                ActorType::System => "system",
            }),
            DedupField::ActorId => event.actor.as_ref().and_then(|a| a.id.as_deref()),
            DedupField::Metadata(key) => event.metadata.get(key).map(String::as_str),
        }
    }
}

impl fmt::Display for DedupField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DedupField::Event => f.write_str("event"),
            DedupField::Outcome => f.write_str("outcome"),
            DedupField::ResourceType => f.write_str("resource.type"),
            DedupField::ResourceId => f.write_str("resource.id"),
            DedupField::ActorType => f.write_str("actor.type"),
            DedupField::ActorId => f.write_str("actor.id"),
            DedupField::Metadata(key) => write!(f, "metadata.{key}"),
        }
    }
}

/// A subscription's repeat suppression: events with the same key as one sent less than
/// `window` ago are recorded as suppressed instead of sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    pub window: Duration,
    /// Never empty.
    pub fields: Vec<DedupField>,
}

impl Dedup {
    /// The key of `event`: a JSON array of the fields' values in order, `null` for an
    /// absent one. JSON's escaping makes it unambiguous: two events share a key exactly
    /// when they agree on every field (absent and empty differ).
    pub fn key_for(&self, event: &Event) -> String {
        let values: Vec<Option<&str>> = self.fields.iter().map(|f| f.value(event)).collect();
        // Serialising strings and nulls cannot fail.
        serde_json::to_string(&values).unwrap_or_default()
    }

    /// The field names, as the configuration lists them.
    pub fn field_names(&self) -> Vec<String> {
        self.fields.iter().map(ToString::to_string).collect()
    }
}

#[cfg(test)]
mod tests;
