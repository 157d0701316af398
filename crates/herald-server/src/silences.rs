//! `/v1/silences`: create, list, read and expire silences (see docs/api.md). A team key
//! manages only its own team's silences; another team's ids answer 404, so they do not
//! leak. The admin manages every team's.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::silence::{MAX_SILENCE_METADATA, MAX_SILENCE_TEXT_LEN};
use herald_core::{Outcome, Pattern, Silence, SilenceMatchers, SilenceState, TeamId, Timestamp};
use herald_engine::Caller;
use herald_store::{SilenceFilter, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{caller, scope};
use crate::error::ApiError;
use crate::extract::ApiQuery;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/silences", post(create).get(list))
        .route("/v1/silences/{id}", get(read).delete(expire))
        .route("/v1/silences/{id}/expire", post(expire))
}

/// A silence as the API shows it: its fields and its state now.
fn shown(silence: &Silence, now: Timestamp) -> Value {
    let mut value = serde_json::to_value(silence).unwrap_or(Value::Null);
    value["state"] = silence.state(now).as_str().into();
    value
}

fn not_found() -> ApiError {
    ApiError::not_found("silence")
}

/// A 422 `invalid_silence` naming the field at fault.
fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_silence",
        message.into(),
    );
    error.field = Some(field.to_string());
    error
}

fn text<'a>(body: &'a Value, path: &str, field: &str) -> Result<Option<&'a str>, ApiError> {
    match &body[field] {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(invalid(path, format!("`{path}` must be a string"))),
    }
}

fn unknown_fields(body: &Value, prefix: &str, known: &[&str]) -> Result<(), ApiError> {
    let Some(object) = body.as_object() else {
        let path = if prefix.is_empty() { "(body)" } else { prefix };
        return Err(invalid(path, format!("`{path}` must be a JSON object")));
    };
    match object.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => {
            let path = format!("{prefix}{unknown}");
            Err(invalid(
                &path,
                format!(
                    "unknown field `{path}`; expected one of {}",
                    known.join(", ")
                ),
            ))
        }
        None => Ok(()),
    }
}

fn time(body: &Value, field: &str) -> Result<Option<Timestamp>, ApiError> {
    text(body, field, field)?
        .map(|t| {
            Timestamp::parse(t)
                .map_err(|e| invalid(field, format!("`{field}` must be an RFC 3339 time: {e}")))
        })
        .transpose()
}

fn bounded(body: &Value, field: &str) -> Result<String, ApiError> {
    let value = text(body, field, field)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(field, format!("`{field}` is required (a non-empty string)")))?;
    if value.chars().count() > MAX_SILENCE_TEXT_LEN {
        return Err(invalid(
            field,
            format!("`{field}` is longer than {MAX_SILENCE_TEXT_LEN} characters"),
        ));
    }
    Ok(value.to_string())
}

/// The matchers of a create request, checked against the team's configuration.
fn matchers(
    body: &Value,
    config: &herald_config::Config,
    team: &TeamId,
) -> Result<SilenceMatchers, ApiError> {
    let m = &body["matchers"];
    if m.is_null() {
        return Err(invalid(
            "matchers",
            "`matchers` is required: an object with at least one of event, outcome, metadata, channel",
        ));
    }
    unknown_fields(m, "matchers.", &["event", "outcome", "metadata", "channel"])?;
    let event = text(m, "matchers.event", "event")?
        .map(|p| {
            let pattern =
                Pattern::parse(p).map_err(|e| invalid("matchers.event", e.to_string()))?;
            config
                .matcher
                .registry()
                .check_subscribable(&pattern)
                .map_err(|e| invalid("matchers.event", e))?;
            Ok::<_, ApiError>(pattern)
        })
        .transpose()?;
    let outcome = match text(m, "matchers.outcome", "outcome")? {
        None => None,
        Some("success") => Some(Outcome::Success),
        Some("error") => Some(Outcome::Error),
        Some(other) => {
            return Err(invalid(
                "matchers.outcome",
                format!("`matchers.outcome` is `{other}`; expected success or error"),
            ));
        }
    };
    let metadata: BTreeMap<String, String> = match &m["metadata"] {
        Value::Null => BTreeMap::new(),
        Value::Object(entries) => {
            let mut metadata = BTreeMap::new();
            for (key, value) in entries {
                let path = format!("matchers.metadata.{key}");
                let Value::String(value) = value else {
                    return Err(invalid(&path, format!("`{path}` must be a string")));
                };
                metadata.insert(key.clone(), value.clone());
            }
            metadata
        }
        _ => {
            return Err(invalid(
                "matchers.metadata",
                "`matchers.metadata` must be an object of string values",
            ));
        }
    };
    if metadata.len() > MAX_SILENCE_METADATA {
        return Err(invalid(
            "matchers.metadata",
            format!("at most {MAX_SILENCE_METADATA} metadata matchers are allowed"),
        ));
    }
    let channel = text(m, "matchers.channel", "channel")?.map(str::to_string);
    if let Some(channel) = &channel
        && config.channel(team, channel).is_none()
    {
        return Err(invalid(
            "matchers.channel",
            format!("team `{team}` has no channel `{channel}`"),
        ));
    }
    let matchers = SilenceMatchers {
        event,
        outcome,
        metadata,
        channel,
    };
    if matchers.is_empty() {
        return Err(invalid(
            "matchers",
            "a silence needs at least one matcher; to silence everything of the team say so with \"event\": \"*\"",
        ));
    }
    Ok(matchers)
}

/// `POST /v1/silences`.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let config = state.engine.config();
    let caller = caller(&config, &headers)?;
    let body = crate::error::read_json(body, "a silence").await?;
    unknown_fields(
        &body,
        "",
        &[
            "team",
            "matchers",
            "starts_at",
            "ends_at",
            "comment",
            "created_by",
        ],
    )?;
    let team = match (&caller, text(&body, "team", "team")?) {
        (Caller::Team(own), None) => own.clone(),
        (Caller::Team(own), Some(asked)) if asked == own.as_str() => own.clone(),
        (Caller::Team(own), Some(_)) => {
            let mut error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("this API key belongs to team `{own}`; it can silence only its own team"),
            );
            error.field = Some("team".into());
            return Err(error);
        }
        (Caller::Admin, None) => {
            return Err(invalid("team", "`team` is required with the admin token"));
        }
        (Caller::Admin, Some(t)) => {
            TeamId::parse(t).map_err(|e| invalid("team", format!("team: {e}")))?
        }
    };
    if !config.teams.contains_key(&team) {
        return Err(invalid("team", format!("no team `{team}` is configured")));
    }
    let matchers = matchers(&body, &config, &team)?;
    let now = herald_engine::now();
    let starts_at = time(&body, "starts_at")?.unwrap_or(now);
    let ends_at = time(&body, "ends_at")?
        .ok_or_else(|| invalid("ends_at", "`ends_at` is required (an RFC 3339 time)"))?;
    if ends_at <= starts_at {
        return Err(invalid(
            "ends_at",
            "`ends_at` must be later than `starts_at`",
        ));
    }
    if ends_at <= now {
        return Err(invalid("ends_at", "`ends_at` is in the past"));
    }
    let comment = bounded(&body, "comment")?;
    let created_by = bounded(&body, "created_by")?;
    let silence = state
        .engine
        .create_silence(Silence {
            id: String::new(),
            team,
            matchers,
            starts_at,
            ends_at,
            comment,
            created_by,
            created_at: now,
        })
        .await?;
    tracing::info!(silence = %silence.id, team = %silence.team, created_by = %silence.created_by, "silence created");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "silence": shown(&silence, now) })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    team: Option<String>,
    state: Option<String>,
}

/// `GET /v1/silences`: newest first, the caller's team's (admin: every team's or `team`'s).
async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let caller = caller(&state.engine.config(), &headers)?;
    let team = scope(&caller, q.team.as_deref())?;
    let wanted = match q.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s) => Some(SilenceState::parse(s).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("state: {e}"),
            )
        })?),
    };
    let now = herald_engine::now();
    let silences = state
        .engine
        .store()
        .list_silences(&SilenceFilter {
            team,
            state: wanted,
            now,
        })
        .await?;
    let shown: Vec<Value> = silences.iter().map(|s| shown(s, now)).collect();
    Ok(Json(json!({ "silences": shown })).into_response())
}

/// `GET /v1/silences/{id}`.
async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state.engine.config(), &headers)?;
    match state
        .engine
        .store()
        .get_silence(caller.scope(), &id)
        .await?
    {
        Some(silence) => {
            Ok(Json(json!({ "silence": shown(&silence, herald_engine::now()) })).into_response())
        }
        None => Err(not_found()),
    }
}

/// `DELETE /v1/silences/{id}` and `POST /v1/silences/{id}/expire`: ends it now.
async fn expire(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = caller(&state.engine.config(), &headers)?;
    match state.engine.expire_silence(&caller, &id).await {
        Ok(silence) => {
            tracing::info!(silence = %silence.id, team = %silence.team, "silence expired");
            Ok(Json(json!({ "silence": shown(&silence, herald_engine::now()) })).into_response())
        }
        Err(StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}
