//! A builder for the envelope as published ([`RawEvent`]), so publishers in Rust never
//! assemble the JSON by hand. Pure like the rest of this crate: it generates no id and reads
//! no clock (herald-client fills the id in; the server fills the timestamp).

use std::collections::BTreeMap;

use super::{Actor, ActorType, Outcome, RawEvent, Resource};

/// Builds a [`RawEvent`] field by field; start with [`RawEvent::builder`].
///
/// Nothing is validated here: the limits of `docs/events.md` are checked where the event
/// is published, with an error naming the field.
///
/// ```
/// use herald_core::{Outcome, RawEvent};
///
/// let event = RawEvent::builder("capsule.create")
///     .outcome(Outcome::Error)
///     .resource("sandbox", "sb_42")
///     .actor_system()
///     .metadata("region", "eu")
///     .error("out of memory")
///     .build();
/// assert_eq!(event.event, "capsule.create");
/// assert_eq!(event.metadata["region"], "eu");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EventBuilder {
    event: RawEvent,
}

impl RawEvent {
    /// Starts an event of type `event_type` (e.g. `capsule.create`) with every optional
    /// field absent.
    pub fn builder(event_type: impl Into<String>) -> EventBuilder {
        EventBuilder {
            event: RawEvent {
                id: None,
                event: event_type.into(),
                outcome: None,
                timestamp: None,
                team_id: None,
                actor: None,
                resource: None,
                metadata: BTreeMap::new(),
                error: None,
            },
        }
    }
}

impl EventBuilder {
    /// The idempotency key. Leave it out and the publisher generates a UUIDv7.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.event.id = Some(id.into());
        self
    }

    /// `success` or `error`; leave it out for state events such as `host.down`.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.event.outcome = Some(outcome);
        self
    }

    /// An RFC 3339 timestamp; the server's clock is used when absent.
    pub fn timestamp(mut self, rfc3339: impl Into<String>) -> Self {
        self.event.timestamp = Some(rfc3339.into());
        self
    }

    /// The team; taken from the API key when absent (another team's id is refused).
    pub fn team(mut self, team_id: impl Into<String>) -> Self {
        self.event.team_id = Some(team_id.into());
        self
    }

    /// Who caused the event, in full.
    pub fn actor(mut self, kind: ActorType, id: Option<String>, name: Option<String>) -> Self {
        self.event.actor = Some(Actor { kind, id, name });
        self
    }

    /// A user caused the event.
    pub fn actor_user(self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.actor(ActorType::User, Some(id.into()), Some(name.into()))
    }

    /// An API key caused the event.
    pub fn actor_api_key(self, id: impl Into<String>) -> Self {
        self.actor(ActorType::ApiKey, Some(id.into()), None)
    }

    /// The system itself caused the event.
    pub fn actor_system(self) -> Self {
        self.actor(ActorType::System, None, None)
    }

    /// What the event is about: its type (`sandbox`) and id (`sb_42`).
    pub fn resource(mut self, kind: impl Into<String>, id: impl Into<String>) -> Self {
        self.event.resource = Some(Resource {
            id: id.into(),
            kind: kind.into(),
        });
        self
    }

    /// Adds one metadata entry (a later value for the same key replaces the earlier).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.event.metadata.insert(key.into(), value.into());
        self
    }

    /// The reason, for an event whose outcome is `error`.
    pub fn error(mut self, message: impl Into<String>) -> Self {
        self.event.error = Some(message.into());
        self
    }

    pub fn build(self) -> RawEvent {
        self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_to_the_wire_shape_and_parses_back() {
        let event = RawEvent::builder("capsule.create")
            .id("evt_1")
            .outcome(Outcome::Error)
            .resource("sandbox", "sb_42")
            .actor_user("u_1", "Ada")
            .metadata("region", "eu")
            .error("oom")
            .build();
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"id":"evt_1","event":"capsule.create","outcome":"error","actor":{"type":"user","id":"u_1","name":"Ada"},"resource":{"id":"sb_42","type":"sandbox"},"metadata":{"region":"eu"},"error":"oom"}"#
        );
        assert_eq!(RawEvent::from_json(json.as_bytes()).unwrap(), event);
        // Absent fields are left out, not sent as null.
        let bare = serde_json::to_string(&RawEvent::builder("host.down").build()).unwrap();
        assert_eq!(bare, r#"{"event":"host.down"}"#);
    }
}
