//! Between herald's types and the WIT worlds': the event (or digest) going in, the
//! message coming out (with the output caps enforced here).

use herald_core::{Digest, DigestKind, Event, Format, Rendered};

use crate::error::PluginError;
use crate::limits::{MAX_BODY_BYTES, MAX_SUBJECT_BYTES, MAX_TEXT_ALTERNATIVE_BYTES};

/// The conversions of one WIT version (the worlds' types are distinct Rust types with the
/// same shape): `$module` names both the bindings module and the module made here.
macro_rules! between {
    ($module:ident) => {
        pub(crate) mod $module {
            use herald_core::{ActorType, Event, Format, Outcome, Rendered};

            use crate::bindings::$module::herald::formatter::types as wit;
            use crate::error::PluginError;
            use crate::limits::{MAX_REASON_BYTES, cut};
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

            /// Checks a plugin's answer to `format` against the output caps and turns it
            /// into herald's types.
            pub(crate) fn output(rendered: wit::Rendered) -> Result<PluginOutput, PluginError> {
                match rendered {
                    wit::Rendered::Skip(reason) => Ok(PluginOutput::Skip(
                        cut(&reason, MAX_REASON_BYTES).to_string(),
                    )),
                    wit::Rendered::Message(m) => {
                        super::check(message(m), "return skip(reason) to send nothing")
                            .map(PluginOutput::Rendered)
                    }
                }
            }

            /// The message as it came, unchecked: see [`super::check`].
            pub(crate) fn message(m: wit::Message) -> Rendered {
                Rendered {
                    format: match m.format {
                        wit::Format::Text => Format::Text,
                        wit::Format::Markdown => Format::Markdown,
                        wit::Format::Html => Format::Html,
                        wit::Format::Json => Format::Json,
                    },
                    subject: m.subject,
                    body: m.body,
                    text_alternative: m.text_alternative,
                }
            }
        }
    };
}

between!(v0_1);
between!(v0_2);

/// `digest` for a 0.2.0 plugin.
pub(crate) fn digest(d: &Digest) -> crate::bindings::v0_2::herald::formatter::types::Digest {
    use crate::bindings::v0_2::herald::formatter::types as wit;
    wit::Digest {
        id: d.id.clone(),
        team_id: d.team.as_str().to_string(),
        subscription: d.subscription.clone(),
        channel: d.channel.clone(),
        kind: match &d.kind {
            DigestKind::Group { labels } => wit::DigestKind::Group(labels.clone()),
            DigestKind::Throttle { limit, per_seconds } => {
                wit::DigestKind::Throttle(wit::Throttle {
                    limit: *limit,
                    per_seconds: *per_seconds,
                })
            }
        },
        events: d.events.iter().map(v0_2::event).collect(),
        total: d.total,
        first_at: d.first_at.to_string(),
        first_unix_seconds: d.first_at.unix_seconds(),
        last_at: d.last_at.to_string(),
        last_unix_seconds: d.last_at.unix_seconds(),
    }
}

/// Checks a plugin's message against the output caps: sizes, a one-line subject, a
/// non-empty body (`empty_hint` says what to do instead), JSON that parses.
pub(crate) fn check(message: Rendered, empty_hint: &str) -> Result<Rendered, PluginError> {
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
        return Err(PluginError::InvalidOutput(format!(
            "the body is empty ({empty_hint})"
        )));
    }
    if message.format == Format::Json
        && let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&message.body)
    {
        return Err(PluginError::InvalidJson(e.to_string()));
    }
    Ok(message)
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

/// The digest a 0.2.0 plugin renders when it is loaded: a group of three events with
/// labels, two of them listed ([`sample_event`] and a second one), so a plugin that reads
/// any field is exercised.
pub fn sample_digest() -> Digest {
    let first = sample_event();
    let mut second = first.clone();
    second.id = "evt_sample_2".to_string();
    second.timestamp = herald_core::Timestamp::from_unix_nanos(1_767_225_660_000_000_000);
    second.metadata.insert("region".into(), "eu-2".into());
    Digest {
        id: "dlv_sample".to_string(),
        team: first.team_id.clone(),
        subscription: "sample-alerts".to_string(),
        channel: "sample".to_string(),
        kind: DigestKind::Group {
            labels: vec![("event".to_string(), first.event.clone())],
        },
        first_at: first.timestamp,
        last_at: herald_core::Timestamp::from_unix_nanos(1_767_225_720_000_000_000),
        events: vec![first, second],
        total: 3,
    }
}
