//! The routes of the API (see docs/api.md), one small handler each.

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::{TeamId, Timestamp};
use herald_engine::{Caller, IngestReply};
use herald_store::{
    DeliveryFilter, DeliveryStatus, MoveFilter, MoveStatus, ReplayFilter, ReplayStatus,
};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{admin_only, caller, scope};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::{AppState, reload};

/// The OpenAPI document, kept next to the routes it describes.
const OPENAPI: &str = include_str!("openapi.json");

/// The dashboard: one page of HTML and plain JavaScript over this API.
const DASHBOARD: &str = include_str!("dashboard.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(ingest))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/move", post(move_deliveries))
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/retry", post(retry))
        .route("/v1/replay", post(replay))
        .route("/v1/channels", get(channels))
        .route("/v1/channels/{team}/{channel}/enable", post(enable_channel))
        .route("/v1/plugins", get(plugins))
        .merge(crate::silences::routes())
        .route("/v1/admin/reload", post(admin_reload))
        .route("/", get(|| async { axum::response::Html(DASHBOARD) }))
        .route("/v1/stream", get(crate::stream::sse))
        .route("/v1/ws", get(crate::stream::ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no route for {method} {}", uri.path()),
                )
            },
        )
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} does not accept {method}", uri.path()),
                )
            },
        )
}

fn who(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    caller(&state.engine.config(), headers)
}

async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        let got = if content_type.is_empty() {
            "none".to_string()
        } else {
            format!("`{content_type}`")
        };
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content-type must be application/json, got {got}"),
        ));
    }
    let limit = state.engine.config().server.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes ([server] max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = to_bytes(body, limit).await.map_err(|_| too_large())?;
    let reply = state.engine.ingest(&caller, &bytes).await?;
    Ok(match reply {
        IngestReply::One {
            id,
            duplicate: false,
        } => (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response(),
        IngestReply::One {
            id,
            duplicate: true,
        } => (StatusCode::OK, Json(json!({ "id": id, "duplicate": true }))).into_response(),
        IngestReply::Many { ids, duplicates } => {
            let status = if duplicates.len() == ids.len() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (
                status,
                Json(json!({ "ids": ids, "duplicates": duplicates })),
            )
                .into_response()
        }
    })
}

#[derive(Debug, Deserialize)]
struct TeamQuery {
    team: Option<String>,
}

async fn get_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TeamQuery>,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let team = scope(&caller, q.team.as_deref())?;
    match state.engine.store().get_event(team.as_ref(), &id).await? {
        Some((event, deliveries)) => {
            Ok(Json(json!({ "event": event, "deliveries": deliveries })).into_response())
        }
        None => Err(ApiError::not_found("event")),
    }
}

#[derive(Debug, Deserialize)]
struct DeliveryQuery {
    status: Option<String>,
    channel: Option<String>,
    event_type: Option<String>,
    event_id: Option<String>,
    team: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<DeliveryStatus>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("status: `{s}` is not one of {}", DeliveryStatus::NAMES),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(herald_store::DEFAULT_PAGE_SIZE);
    if limit == 0 || limit > herald_store::MAX_PAGE_SIZE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "limit: must be between 1 and {}",
                herald_store::MAX_PAGE_SIZE
            ),
        ));
    }
    let filter = DeliveryFilter {
        team: scope(&caller, q.team.as_deref())?,
        status,
        channel: q.channel,
        event_type: q.event_type,
        event_id: q.event_id,
        limit,
        cursor: q.cursor,
    };
    let page = state.engine.store().list_deliveries(&filter).await?;
    Ok(Json(page).into_response())
}

async fn get_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    match state
        .engine
        .store()
        .get_delivery(caller.scope(), &id)
        .await?
    {
        Some((delivery, attempts)) => {
            Ok(Json(json!({ "delivery": delivery, "attempts": attempts })).into_response())
        }
        None => Err(ApiError::not_found("delivery")),
    }
}

async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let delivery = state.engine.retry(&caller, &id).await?;
    Ok(Json(json!({ "delivery": delivery })).into_response())
}

/// A 422 `invalid_replay` naming the field at fault.
fn invalid_replay(field: &str, message: impl Into<String>) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_replay",
        message.into(),
    );
    error.field = Some(field.to_string());
    error
}

/// An optional string field of the replay body; present but not a string is an error.
fn replay_text<'a>(body: &'a serde_json::Value, field: &str) -> Result<Option<&'a str>, ApiError> {
    match &body[field] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        _ => Err(invalid_replay(field, format!("`{field}` must be a string"))),
    }
}

fn replay_time(body: &serde_json::Value, field: &str) -> Result<Option<Timestamp>, ApiError> {
    replay_text(body, field)?
        .map(|t| {
            Timestamp::parse(t).map_err(|e| {
                invalid_replay(field, format!("`{field}` must be an RFC 3339 time: {e}"))
            })
        })
        .transpose()
}

/// `POST /v1/replay`: re-queues a team's dead or failed (or all) deliveries of a time
/// window, with their original delivery ids; see docs/api.md.
async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let body = crate::error::read_json(body, "a replay request").await?;
    if !body.is_object() {
        return Err(invalid_replay("", "the body must be a JSON object"));
    }
    let known = ["team", "channel", "since", "until", "status", "dry_run"];
    if let Some(unknown) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Err(invalid_replay(
            unknown,
            format!(
                "unknown field `{unknown}`; expected one of {}",
                known.join(", ")
            ),
        ));
    }
    let team =
        replay_text(&body, "team")?.ok_or_else(|| invalid_replay("team", "`team` is required"))?;
    let team = TeamId::parse(team).map_err(|e| invalid_replay("team", format!("team: {e}")))?;
    own_team_only(&caller, &team, "replay")?;
    let config = state.engine.config();
    if !config.teams.contains_key(&team) {
        return Err(invalid_replay(
            "team",
            format!("no team `{team}` is configured"),
        ));
    }
    let channel = replay_text(&body, "channel")?.map(str::to_string);
    if let Some(channel) = &channel
        && config.channel(&team, channel).is_none()
    {
        return Err(invalid_replay(
            "channel",
            format!("team `{team}` has no channel `{channel}`"),
        ));
    }
    let since = replay_time(&body, "since")?
        .ok_or_else(|| invalid_replay("since", "`since` is required (an RFC 3339 time)"))?;
    let until = replay_time(&body, "until")?;
    if until.is_some_and(|u| u <= since) {
        return Err(invalid_replay(
            "until",
            "`until` must be later than `since`",
        ));
    }
    let status = match replay_text(&body, "status")? {
        None => ReplayStatus::Failed,
        Some(s) => s
            .parse::<ReplayStatus>()
            .map_err(|e| invalid_replay("status", e))?,
    };
    let dry_run = match &body["dry_run"] {
        serde_json::Value::Null => false,
        serde_json::Value::Bool(b) => *b,
        _ => return Err(invalid_replay("dry_run", "`dry_run` must be true or false")),
    };
    let filter = ReplayFilter {
        team,
        channel,
        since,
        until,
        status,
    };
    let count = state.engine.replay(&caller, &filter, dry_run).await?;
    Ok(Json(json!({ "count": count, "dry_run": dry_run })).into_response())
}

/// A 422 `invalid_move` naming the field at fault.
fn invalid_move(field: &str, message: impl Into<String>) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_move",
        message.into(),
    );
    error.field = Some(field.to_string());
    error
}

/// `POST /v1/deliveries/move`: re-points a team's orphaned (or dead) deliveries of one
/// channel name to another of its channels and queues them; see docs/api.md.
async fn move_deliveries(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let body = crate::error::read_json(body, "a move request").await?;
    let Some(object) = body.as_object() else {
        return Err(invalid_move("", "the body must be a JSON object"));
    };
    let known = ["team", "from_channel", "to_channel", "status"];
    if let Some(unknown) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid_move(
            unknown,
            format!(
                "unknown field `{unknown}`; expected one of {}",
                known.join(", ")
            ),
        ));
    }
    let text = |field: &str| match &body[field] {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        _ => Err(invalid_move(field, format!("`{field}` must be a string"))),
    };
    let team = match (&caller, text("team")?) {
        (Caller::Team(own), None) => own.clone(),
        (_, Some(team)) => {
            TeamId::parse(&team).map_err(|e| invalid_move("team", format!("team: {e}")))?
        }
        (Caller::Admin, None) => {
            return Err(invalid_move(
                "team",
                "`team` is required with the admin token",
            ));
        }
    };
    own_team_only(&caller, &team, "move")?;
    let config = state.engine.config();
    if !config.teams.contains_key(&team) {
        return Err(invalid_move(
            "team",
            format!("no team `{team}` is configured"),
        ));
    }
    let from_channel = text("from_channel")?
        .ok_or_else(|| invalid_move("from_channel", "`from_channel` is required"))?;
    let to_channel = text("to_channel")?
        .ok_or_else(|| invalid_move("to_channel", "`to_channel` is required"))?;
    if config.channel(&team, &to_channel).is_none() {
        return Err(invalid_move(
            "to_channel",
            format!("team `{team}` has no channel `{to_channel}`"),
        ));
    }
    if from_channel == to_channel {
        return Err(invalid_move(
            "to_channel",
            "`to_channel` must differ from `from_channel`",
        ));
    }
    let status = match text("status")? {
        None => MoveStatus::Orphaned,
        Some(s) => s
            .parse::<MoveStatus>()
            .map_err(|e| invalid_move("status", e))?,
    };
    let filter = MoveFilter {
        team,
        from_channel,
        to_channel,
        status,
    };
    let moved = state.engine.move_deliveries(&caller, &filter).await?;
    Ok(Json(json!({ "moved": moved })).into_response())
}

async fn channels(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let channels = state.engine.channels(&caller).await?;
    Ok(Json(json!({ "channels": channels })).into_response())
}

async fn enable_channel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((team, channel)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let team = TeamId::parse(&team).map_err(|_| ApiError::not_found("channel"))?;
    let visible = caller.scope().is_none_or(|t| *t == team);
    if !visible || state.engine.config().channel(&team, &channel).is_none() {
        return Err(ApiError::not_found("channel"));
    }
    let was_disabled = state.engine.enable_channel(&team, &channel).await?;
    Ok(Json(
        json!({ "team": team, "channel": channel, "state": "ok", "was_disabled": was_disabled }),
    )
    .into_response())
}

async fn plugins(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = who(&state, &headers)?;
    let mut plugins = state.engine.plugins(caller.scope());
    // Plugins are global configuration: a team sees only those its subscriptions use.
    if let Caller::Team(team) = &caller {
        let config = state.engine.config();
        let used: std::collections::BTreeSet<&str> = config
            .matcher
            .subscriptions()
            .iter()
            .filter(|s| s.id.team == *team)
            .filter_map(|s| s.formatter.as_deref())
            .collect();
        plugins.retain(|p| used.contains(p.name.as_str()));
    }
    Ok(Json(json!({ "plugins": plugins })).into_response())
}

async fn admin_reload(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin_only(&who(&state, &headers)?)?;
    match reload(&state).await {
        Ok(()) => {
            tracing::info!("configuration reloaded");
            Ok(Json(json!({ "reloaded": true })).into_response())
        }
        Err(problems) => {
            tracing::error!("reload refused; the running configuration stays:\n{problems}");
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                problems,
            ))
        }
    }
}

/// How long `/readyz` waits for the store's health check: a writer that does not answer
/// an empty request within this is as good as dead to a load balancer.
const READY_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |why: &str| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why).into_response()
    };
    if !state.engine.is_ready() {
        return not_ready("shutting down: delivery workers are stopping");
    }
    let health = tokio::time::timeout(READY_STORE_TIMEOUT, state.engine.store().health()).await;
    // The probe is unauthenticated: the reason names the fault, the log has the detail.
    let why = match health {
        Ok(Ok(())) => return ready_with_components(&state),
        Ok(Err(herald_store::StoreError::DiskFull {
            available, needed, ..
        })) => format!(
            "the store's disk is full: {available} bytes free, at least {needed} needed ([store] min_free_bytes)"
        ),
        Ok(Err(herald_store::StoreError::Closed)) => "the store's writer has stopped".to_string(),
        Ok(Err(e @ herald_store::StoreError::Unavailable { .. })) => {
            tracing::error!(error = %e, "store health check failed");
            "the database (PostgreSQL) is unreachable or read-only; see the server log".to_string()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store health check failed");
            "the store is not healthy; see the server log".to_string()
        }
        Err(_) => format!(
            "the store's writer did not answer within {}s",
            READY_STORE_TIMEOUT.as_secs()
        ),
    };
    tracing::warn!(reason = %why, "/readyz: not ready");
    not_ready(&why)
}

/// `ready`, then one line per source and the cluster live bus with its connection state.
/// A disconnected source does not make the node unready: HTTP ingest and delivery still
/// work, and what the source did not read waits in Redis (docs/operations.md).
fn ready_with_components(state: &AppState) -> Response {
    let mut body = String::from("ready\n");
    for c in state.engine.components().all() {
        match &c.detail {
            None => body.push_str(&format!("{} ({}): connected\n", c.name, c.kind)),
            Some(why) => body.push_str(&format!("{} ({}): not connected: {why}\n", c.name, c.kind)),
        }
    }
    body.into_response()
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Metrics carry every team's and channel's name and volume.
    if !state.engine.config().server.metrics_public
        && let Err(e) = who(&state, &headers).and_then(|c| admin_only(&c))
    {
        return e.into_response();
    }
    match state.engine.store().queue_depth().await {
        Ok(depth) => metrics::gauge!("herald_queue_depth").set(depth as f64),
        Err(e) => tracing::warn!(error = %e, "reading the queue depth for /metrics failed"),
    }
    match state.engine.channels(&Caller::Admin).await {
        Ok(channels) => {
            for c in channels {
                let labels = [("team", c.team.to_string()), ("channel", c.channel)];
                let lane = c.concurrency;
                metrics::gauge!("herald_channel_concurrency_limit", &labels).set(lane.limit as f64);
                metrics::gauge!("herald_channel_in_flight", &labels).set(lane.in_flight as f64);
                metrics::gauge!("herald_channel_queued", &labels).set(lane.queued as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading channel states for /metrics failed"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// 403 (`field: team`) when a team key names another team for a bulk operation on
/// deliveries (`verb`: replay, move); the admin token may name any team.
fn own_team_only(caller: &Caller, team: &TeamId, verb: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Team(own) if own != team => {
            let mut error = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this API key belongs to team `{own}`; it cannot {verb} team `{team}`'s deliveries"
                ),
            );
            error.field = Some("team".into());
            Err(error)
        }
        _ => Ok(()),
    }
}
