//! Who is calling: `Authorization: Bearer <team key | admin token>`.

use axum::http::{HeaderMap, StatusCode, header};
use herald_config::Config;
use herald_core::TeamId;
use herald_engine::Caller;

use crate::error::ApiError;

pub fn caller(config: &Config, headers: &HeaderMap) -> Result<Caller, ApiError> {
    caller_from(config, headers, None)
}

/// Like [`caller`], also accepting a token from the query string (`access_token`), which
/// is all a browser's EventSource or WebSocket can send. The header wins when both exist.
pub fn caller_from(
    config: &Config,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Caller, ApiError> {
    let token = bearer_token(headers, query_token)?;
    if config
        .server
        .admin_token
        .as_ref()
        .is_some_and(|admin| admin.constant_time_eq(token))
    {
        return Ok(Caller::Admin);
    }
    config
        .team_for_key(token)
        .map(|team| Caller::Team(team.clone()))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))
}

/// The token a request carries: `Authorization: Bearer <token>`, else the query's
/// `access_token`.
pub fn bearer_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<&'a str, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    match headers.get(header::AUTHORIZATION) {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| {
                // The scheme name is case-insensitive (RFC 9110 §11.1).
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <API key>`")),
        None => query_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("missing `Authorization: Bearer <API key>` header")),
    }
}

pub fn admin_only(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Team(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route needs the admin token",
        )),
    }
}

/// The team a read is limited to: the caller's own, or for the admin the optional `team`.
pub fn scope(caller: &Caller, team: Option<&str>) -> Result<Option<TeamId>, ApiError> {
    match (caller, team) {
        (Caller::Team(t), Some(asked)) if asked != t.as_str() => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this API key belongs to team `{t}`; only the admin token may ask for another team"
            ),
        )),
        (Caller::Team(t), _) => Ok(Some(t.clone())),
        (Caller::Admin, Some(t)) => TeamId::parse(t).map(Some).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("team: {e}"),
            )
        }),
        (Caller::Admin, None) => Ok(None),
    }
}
