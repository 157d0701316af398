//! Between herald's types and the WIT world's: the event going in, the message coming
//! out (with the output caps enforced here).

use herald_core::{ActorType, Event, Format, Outcome, Rendered};

use crate::bindings::herald::formatter::types as wit;
use crate::error::PluginError;
use crate::limits::{
    MAX_BODY_BYTES, MAX_REASON_BYTES, MAX_SUBJECT_BYTES, MAX_TEXT_ALTERNATIVE_BYTES, cut,
};
use crate::output::PluginOutput;

pub(crate) fn event(e: &Event) -> wit::Event {
    wit::Event {
        id: e.id.clone(),
        event_type: e.event.clone(),
        outcome: e.outcome.map(|o| match o {
            Outcome::Success => wit::Outcome::Success,
            Outcome::Error => wit::Outcome::Error,
        }),
        timestamp: e.timestamp.to_string(),
        unix_seconds: e.timestamp.unix_seconds(),
        team_id: e.team_id.as_str().to_string(),
        actor: e.actor.as_ref().map(|a| wit::Actor {
            kind: match a.kind {
                ActorType::User => wit::ActorKind::User,
                ActorType::ApiKey => wit::ActorKind::ApiKey,
                ActorType::System => wit::ActorKind::System,
            },
            id: a.id.clone(),
            name: a.name.clone(),
        }),
        resource: e.resource.as_ref().map(|r| wit::Resource {
            id: r.id.clone(),
            kind: r.kind.clone(),
        }),
        // A BTreeMap: already sorted, keys unique, as the WIT promises.
        metadata: e
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        error_message: e.error.clone(),
    }
}

/// Checks a plugin's answer against the output caps and turns it into herald's types.
pub(crate) fn output(rendered: wit::Rendered) -> Result<PluginOutput, PluginError> {
    let message = match rendered {
        wit::Rendered::Skip(reason) => {
            return Ok(PluginOutput::Skip(
                cut(&reason, MAX_REASON_BYTES).to_string(),
            ));
        }
        wit::Rendered::Message(m) => m,
    };
    let size = |field: &'static str, size: usize, limit: usize| {
        if size > limit {
            Err(PluginError::OutputTooLarge { field, size, limit })
        } else {
            Ok(())
        }
    };
    size("body", message.body.len(), MAX_BODY_BYTES)?;
    if let Some(subject) = &message.subject {
        size("subject", subject.len(), MAX_SUBJECT_BYTES)?;
        if subject.contains(['\r', '\n']) {
            return Err(PluginError::InvalidOutput(
                "the subject contains a line break".into(),
            ));
        }
    }
    if let Some(text) = &message.text_alternative {
        size("text-alternative", text.len(), MAX_TEXT_ALTERNATIVE_BYTES)?;
    }
    if message.body.trim().is_empty() {
        return Err(PluginError::InvalidOutput(
            "the body is empty (return skip(reason) to send nothing)".into(),
        ));
    }
    let format = match message.format {
        wit::Format::Text => Format::Text,
        wit::Format::Markdown => Format::Markdown,
        wit::Format::Html => Format::Html,
        wit::Format::Json => {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&message.body) {
                return Err(PluginError::InvalidJson(e.to_string()));
            }
            Format::Json
        }
    };
    Ok(PluginOutput::Rendered(Rendered {
        format,
        subject: message.subject,
        body: message.body,
        text_alternative: message.text_alternative,
    }))
}

/// The event a plugin renders when it is loaded: every field set, so a plugin that
/// reads any of them is exercised.
pub fn sample_event() -> Event {
    let raw = serde_json::json!({
        "id": "evt_sample",
        "event": "herald.sample",
        "outcome": "error",
        "timestamp": "2026-01-01T00:00:00Z",
        "team_id": "sample",
        "actor": {"type": "user", "id": "usr_1", "name": "Sample <User> & \"co\""},
        "resource": {"id": "res_1", "type": "capsule"},
        "metadata": {"region": "eu-1", "note": "*not* _markup_ [x](y) <b>"},
        "error": "sample failure: quota exceeded (limit=1)",
    });
    let raw = herald_core::RawEvent::from_json(raw.to_string().as_bytes())
        .unwrap_or_else(|e| unreachable!("the sample event is valid: {e}"));
    raw.into_event(
        None,
        herald_core::Timestamp::from_unix_nanos(0),
        String::new,
    )
    .unwrap_or_else(|e| unreachable!("the sample event is valid: {e}"))
}
