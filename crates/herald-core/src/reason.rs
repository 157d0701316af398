//! Why a subscription does not take an event: the vocabulary shared by the reference
//! semantics (`Subscription::reasons_against`) and `explain`, in its own module so that
//! neither depends on the other for it.

use serde::Serialize;

use crate::event::Outcome;

/// One reason a subscription does not take an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The subscription belongs to another team (never shown for the event's own team).
    OtherTeam,
    /// `active = false`.
    Inactive,
    /// None of the subscription's patterns matches the event type.
    EventType { patterns: Vec<String> },
    /// The outcome filter wants another outcome.
    Outcome {
        wanted: Outcome,
        got: Option<Outcome>,
    },
    /// A metadata filter key is absent from the event.
    MetadataMissing { key: String, wanted: String },
    /// A metadata filter key has another value in the event.
    MetadataMismatch {
        key: String,
        wanted: String,
        got: String,
    },
    /// The event type is transient: live stream only, never delivered.
    TransientType,
    /// The event type is not declared in the registry.
    UndeclaredType,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::OtherTeam => f.write_str("belongs to another team"),
            Reason::Inactive => f.write_str("inactive (active = false)"),
            Reason::EventType { patterns } => {
                write!(f, "event type not in [{}]", patterns.join(", "))
            }
            Reason::Outcome {
                wanted,
                got: Some(got),
            } => {
                write!(f, "outcome is `{got}`, wants `{wanted}`")
            }
            Reason::Outcome { wanted, got: None } => {
                write!(f, "event has no outcome, wants `{wanted}`")
            }
            Reason::MetadataMissing { key, wanted } => {
                write!(f, "metadata `{key}` is absent, wants `{wanted}`")
            }
            Reason::MetadataMismatch { key, wanted, got } => {
                write!(f, "metadata `{key}` is `{got}`, wants `{wanted}`")
            }
            Reason::TransientType => {
                f.write_str("event type is transient: live stream only, never delivered")
            }
            Reason::UndeclaredType => f.write_str("event type is not declared"),
        }
    }
}
