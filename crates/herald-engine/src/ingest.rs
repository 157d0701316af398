//! Ingest: from a request body to validated events and their fan-out deliveries.

use std::collections::HashSet;
use std::sync::Arc;

use herald_config::Config;
use herald_core::event::Body;
use herald_core::{
    Event, EventError, EventKind, RawEvent, Silence, Subscription, TeamId, Timestamp,
};
use herald_store::{DedupClaim, FoldClaim, NewDelivery};

use crate::state::Caller;

/// The most events one request may carry.
pub const MAX_BATCH: usize = 1000;

/// Why a body was refused. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Not JSON (400).
    #[error("{0}")]
    Malformed(EventError),
    /// A field is wrong (422).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The event type is not declared (422).
    #[error("{field}: event type `{name}` is not declared in [[event_types]]")]
    UnknownType { field: String, name: String },
    /// A team key publishing for another team (403).
    #[error(
        "{field}: this API key belongs to team `{caller}` and cannot publish for team `{team}`"
    )]
    WrongTeam {
        field: String,
        caller: TeamId,
        team: String,
    },
    /// The store failed (500; details are logged, not returned).
    #[error("storing the events failed")]
    Store(#[from] herald_store::StoreError),
    /// The engine is shutting down (503).
    #[error("herald is shutting down")]
    ShuttingDown,
}

impl IngestError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> IngestError {
        IngestError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field at fault, if one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            IngestError::Invalid { field, .. }
            | IngestError::UnknownType { field, .. }
            | IngestError::WrongTeam { field, .. } => Some(field),
            IngestError::Malformed(_) | IngestError::Store(_) | IngestError::ShuttingDown => None,
        }
    }
}

/// What the publisher is told: the ids in request order, and which were seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestReply {
    One {
        id: String,
        duplicate: bool,
    },
    Many {
        ids: Vec<String>,
        duplicates: Vec<usize>,
    },
}

/// A validated request: durable events with their deliveries, and transient ones.
pub(crate) struct Plan {
    pub batch: bool,
    /// In request order: the event, and its deliveries when it is durable.
    pub events: Vec<(Arc<Event>, Option<Vec<NewDelivery>>)>,
}

/// Parses and validates `body` for `caller`, matching every durable event. Each delivery
/// is planned through the first two noise-control steps: a silence in force at `now`
/// marks it silenced; otherwise its subscription's dedup key goes with it, for the store
/// to decide in the accepting transaction.
pub(crate) fn plan(
    config: &Config,
    caller: &Caller,
    body: &[u8],
    now: Timestamp,
    silences: &[Silence],
) -> Result<Plan, IngestError> {
    let (raws, batch) = match RawEvent::body_from_json(body).map_err(classify)? {
        Body::One(raw) => (vec![*raw], false),
        Body::Many(raws) => (raws, true),
    };
    if raws.is_empty() {
        return Err(IngestError::invalid("(body)", "the batch is empty"));
    }
    if raws.len() > MAX_BATCH {
        return Err(IngestError::invalid(
            "(body)",
            format!(
                "the batch holds {} events; at most {MAX_BATCH} are allowed",
                raws.len()
            ),
        ));
    }
    let mut events = Vec::with_capacity(raws.len());
    for (i, raw) in raws.into_iter().enumerate() {
        let field = |name: &str| {
            if batch {
                format!("[{i}].{name}")
            } else {
                name.to_string()
            }
        };
        let default_team = match caller {
            Caller::Team(t) => Some(t),
            Caller::Admin => None,
        };
        let event = raw
            .into_event(default_team, now, || uuid::Uuid::now_v7().to_string())
            .map_err(|e| match e {
                EventError::Invalid { field: f, message }
                    if f == "team_id" && message == "missing" =>
                {
                    IngestError::invalid(
                        field("team_id"),
                        "missing: the admin token publishes for any team, so name it",
                    )
                }
                other => {
                    let other = if batch {
                        other.within(&format!("[{i}]"))
                    } else {
                        other
                    };
                    classify(other)
                }
            })?;
        if let Caller::Team(t) = caller
            && *t != event.team_id
        {
            return Err(IngestError::WrongTeam {
                field: field("team_id"),
                caller: t.clone(),
                team: event.team_id.to_string(),
            });
        }
        if !config.teams.contains_key(&event.team_id) {
            return Err(IngestError::invalid(
                field("team_id"),
                format!("team `{}` is not configured", event.team_id),
            ));
        }
        match config.matcher.registry().kind(&event.event) {
            None => {
                return Err(IngestError::UnknownType {
                    field: field("event"),
                    name: event.event.clone(),
                });
            }
            Some(EventKind::Transient) => events.push((Arc::new(event), None)),
            Some(EventKind::Durable) => {
                let deliveries = fan_out(config, &event, silences, now);
                events.push((Arc::new(event), Some(deliveries)));
            }
        }
    }
    Ok(Plan { batch, events })
}

/// One delivery per channel that at least one matching subscription points at; the first
/// matching subscription (in declaration order) is the one recorded, and its formatter,
/// dedup, grouping and throttle settings apply. Pipeline order: match → silence → dedup
/// (the store) → fold (the store: grouping, else throttle) → deliver; a silenced delivery
/// carries neither a dedup key nor a fold claim, so it opens no window and joins no digest.
fn fan_out(
    config: &Config,
    event: &Event,
    silences: &[Silence],
    now: Timestamp,
) -> Vec<NewDelivery> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::new();
    config.matcher.for_each_match(event, |sub| {
        if seen.insert(sub.channel.as_str()) {
            let silence = herald_core::silence::silencing(silences, event, &sub.channel, now)
                .map(|s| s.id.clone());
            let dedup = match (&silence, &sub.dedup) {
                (None, Some(d)) => Some(DedupClaim {
                    key: d.key_for(event),
                    window: d.window,
                }),
                _ => None,
            };
            let fold = match silence {
                None => fold_claim(sub, event),
                Some(_) => None,
            };
            out.push(NewDelivery {
                id: format!("dlv_{}", uuid::Uuid::now_v7().simple()),
                channel: sub.channel.clone(),
                subscription: sub.id.index as u32,
                subscription_name: Some(sub.key()),
                // The engine decides, once it knows whether a lane has room.
                held: false,
                silence,
                dedup,
                fold,
            });
        }
    });
    out
}

/// Where the store may fold a delivery of `event` planned for `sub`: its group when the
/// subscription groups, else its throttle window (the subscription's or its channel's),
/// else nowhere. The digest id is made here, like every delivery id, and used only if
/// this delivery opens a digest.
pub(crate) fn fold_claim(sub: &Subscription, event: &Event) -> Option<FoldClaim> {
    let kind = sub.digest_kind(event)?;
    let digest_id = format!("dlv_{}", uuid::Uuid::now_v7().simple());
    if let Some(group) = &sub.group {
        return Some(FoldClaim::Group {
            key: group.key_for(event),
            kind,
            wait: group.wait,
            interval: group.interval,
            digest_id,
        });
    }
    let (throttle, scope) = sub.throttle.as_ref()?;
    Some(FoldClaim::Throttle {
        scope: scope.store_key(),
        kind,
        limit: throttle.limit,
        per: throttle.per,
        digest_id,
    })
}

fn classify(e: EventError) -> IngestError {
    match e {
        EventError::Malformed { .. } => IngestError::Malformed(e),
        EventError::Invalid { field, message } => IngestError::Invalid { field, message },
    }
}

#[cfg(test)]
mod tests;
