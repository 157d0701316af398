//! The event envelope: what publishers send, how it is validated, and its limits.
//!
//! The wire shape is the one the control planes herald serves already publish:
//! `{"id","event","outcome","timestamp","team_id","actor":{"type","id","name"},
//! "resource":{"id","type"},"metadata":{string:string},"error"}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::team::TeamId;

/// Longest event id (the idempotency key), in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest event type name, in bytes.
pub const MAX_TYPE_LEN: usize = 128;
/// Longest `actor.id`, `actor.name`, `resource.id` and `resource.type`, in characters.
pub const MAX_REF_LEN: usize = 256;
/// Most metadata entries in one event.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_LEN: usize = 128;
/// Longest metadata value, in characters.
pub const MAX_METADATA_VALUE_LEN: usize = 2048;
/// Longest `error` text, in characters.
pub const MAX_ERROR_LEN: usize = 8192;

/// The result an event reports; absent for state events such as `host.down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    User,
    ApiKey,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What the event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// An instant in UTC, written as RFC 3339 with a `Z` suffix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Parses RFC 3339 with any offset and normalises it to UTC.
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Timestamp(t.to_offset(time::UtcOffset::UTC)))
            .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
    }

    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        Timestamp(
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        )
    }

    pub fn unix_nanos(self) -> i128 {
        self.0.unix_timestamp_nanos()
    }

    pub fn unix_seconds(self) -> i64 {
        self.0.unix_timestamp()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatting a UTC instant between years 0 and 9999 as RFC 3339 cannot fail;
        // instants outside that range are rejected by `parse`.
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("invalid-timestamp"),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An event as a publisher sends it: `id`, `timestamp` and `team_id` may be absent.
///
/// `Serialize` writes the same wire shape (absent fields left out), so a publisher in
/// Rust (herald-client) sends exactly what the server parses; build one with
/// [`RawEvent::builder`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "an event object")]
pub struct RawEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A complete, validated event: every field is within its limits and `id`,
/// `timestamp` and `team_id` are set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    pub timestamp: Timestamp,
    pub team_id: TeamId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Resource>,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a body could not become events. Both variants name where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body is not JSON at all (HTTP 400).
    #[error("malformed JSON at line {line} column {column}: {message}")]
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    /// The JSON is well-formed but a field is wrong (HTTP 422). `field` is a path such
    /// as `actor.type`, `metadata.reason` or `[3].event` inside a batch.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl EventError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> EventError {
        EventError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, with its field path put under `prefix` (e.g. `[3]`).
    pub fn within(self, prefix: &str) -> EventError {
        match self {
            EventError::Invalid { field, message } => EventError::Invalid {
                field: if field.starts_with('[') {
                    format!("{prefix}{field}")
                } else {
                    format!("{prefix}.{field}")
                },
                message,
            },
            other => other,
        }
    }
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> EventError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." {
                "(body)".to_string()
            } else {
                path
            };
            EventError::invalid(field, inner.to_string())
        }
        // serde_json appends " at line L column C"; keep only the cause.
        _ => json_error_plain(inner),
    }
}

/// Parses `bytes` as exactly one JSON value: anything after it (a second object, stray
/// text) is malformed, never silently dropped.
///
/// A well-formed body is parsed once, by serde_json alone; only a body that fails is
/// parsed again with `serde_path_to_error`, whose path tracking costs on every value and
/// is needed only to name the field at fault (the second parse fails the same way).
fn parse_whole<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, EventError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(value) = T::deserialize(&mut de)
        && de.end().is_ok()
    {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error_plain)?;
    Ok(value)
}

fn json_error_plain(inner: serde_json::Error) -> EventError {
    let full = inner.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    EventError::Malformed {
        line: inner.line(),
        column: inner.column(),
        message,
    }
}

/// One event, or a batch: what `POST /v1/events` accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    One(Box<RawEvent>),
    Many(Vec<RawEvent>),
}

impl RawEvent {
    /// Parses one event from JSON, naming the offending field on error.
    pub fn from_json(bytes: &[u8]) -> Result<RawEvent, EventError> {
        parse_whole(bytes)
    }

    /// Parses a body that is either one event object or an array of them.
    pub fn body_from_json(bytes: &[u8]) -> Result<Body, EventError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            parse_whole(bytes).map(Body::Many)
        } else {
            RawEvent::from_json(bytes).map(|e| Body::One(Box::new(e)))
        }
    }

    /// Validates every field and fills what the publisher may omit: `id` from
    /// `new_id`, `timestamp` from `now`, `team_id` from `default_team`.
    pub fn into_event(
        self,
        default_team: Option<&TeamId>,
        now: Timestamp,
        new_id: impl FnOnce() -> String,
    ) -> Result<Event, EventError> {
        let id = match self.id {
            Some(id) => {
                check_id(&id)?;
                id
            }
            None => new_id(),
        };
        check_event_type(&self.event).map_err(|m| EventError::invalid("event", m))?;
        let timestamp = match self.timestamp {
            Some(ts) => Timestamp::parse(&ts).map_err(|m| EventError::invalid("timestamp", m))?,
            None => now,
        };
        let team_id = match (self.team_id, default_team) {
            (Some(t), _) => TeamId::parse(&t).map_err(|m| EventError::invalid("team_id", m))?,
            (None, Some(t)) => t.clone(),
            (None, None) => return Err(EventError::invalid("team_id", "missing")),
        };
        if let Some(actor) = &self.actor {
            check_len("actor.id", actor.id.as_deref(), MAX_REF_LEN)?;
            check_len("actor.name", actor.name.as_deref(), MAX_REF_LEN)?;
        }
        if let Some(resource) = &self.resource {
            check_len("resource.id", Some(&resource.id), MAX_REF_LEN)?;
            check_len("resource.type", Some(&resource.kind), MAX_REF_LEN)?;
        }
        if self.metadata.len() > MAX_METADATA_ENTRIES {
            return Err(EventError::invalid(
                "metadata",
                format!(
                    "has {} entries; at most {MAX_METADATA_ENTRIES} are allowed",
                    self.metadata.len()
                ),
            ));
        }
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(EventError::invalid("metadata", "a key is empty"));
            }
            if key.chars().count() > MAX_METADATA_KEY_LEN {
                return Err(EventError::invalid(
                    "metadata",
                    format!(
                        "key `{}…` is longer than {MAX_METADATA_KEY_LEN} characters",
                        prefix(key)
                    ),
                ));
            }
            check_len(
                &format!("metadata.{key}"),
                Some(value),
                MAX_METADATA_VALUE_LEN,
            )?;
        }
        check_len("error", self.error.as_deref(), MAX_ERROR_LEN)?;
        Ok(Event {
            id,
            event: self.event,
            outcome: self.outcome,
            timestamp,
            team_id,
            actor: self.actor,
            resource: self.resource,
            metadata: self.metadata,
            error: self.error,
        })
    }
}

fn prefix(s: &str) -> String {
    s.chars().take(16).collect()
}

fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), EventError> {
    match value {
        Some(v) if v.chars().count() > max => Err(EventError::invalid(
            field,
            format!("is longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}

fn check_id(id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        return Err(EventError::invalid("id", "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(EventError::invalid(
            "id",
            format!("is longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(EventError::invalid(
            "id",
            format!("contains {c:?}; use printable ASCII without spaces"),
        ));
    }
    Ok(())
}

/// Checks an event type name: dot-separated segments of `A-Z a-z 0-9 _ -`, at most
/// [`MAX_TYPE_LEN`] bytes, e.g. `capsule.create`.
pub fn check_event_type(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("event type must not be empty".into());
    }
    if name.len() > MAX_TYPE_LEN {
        return Err(format!("event type is longer than {MAX_TYPE_LEN} bytes"));
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(format!("event type `{name}` has an empty segment"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "event type `{name}` contains {c:?}; use letters, digits, `_`, `-` and `.`"
            ));
        }
    }
    Ok(())
}

mod builder;
pub use builder::EventBuilder;

#[cfg(test)]
mod tests;
