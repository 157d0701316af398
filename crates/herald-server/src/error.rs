//! The one API error type: a JSON body `{"error": {"code", "message", "field"?}}` with a
//! precise 4xx for the caller's mistakes and an opaque 500 (details logged) for ours.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_engine::IngestError;
use herald_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// Our fault: log the details, tell the caller only that it happened.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl ApiError {
    /// The store cannot be reached (its database is down or restarting): nothing was
    /// stored or changed, and the same request may be sent again. 503, so publishers and
    /// load balancers retry; the detail (which server, why) goes to the log only.
    pub fn store_unavailable(context: &str, err: &dyn std::fmt::Display) -> ApiError {
        tracing::warn!(error = %err, "{context}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the database is unreachable, so nothing was stored; send the same request again later (event ids make it safe)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = field.into();
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        let field = e.field().map(str::to_string);
        let (status, code) = match &e {
            IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed_json"),
            IngestError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event"),
            IngestError::UnknownType { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unknown_event_type")
            }
            IngestError::WrongTeam { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            IngestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            IngestError::Store(inner) if inner.is_unavailable() => {
                return ApiError::store_unavailable("storing events failed", inner);
            }
            IngestError::Store(inner) => return ApiError::internal("storing events failed", inner),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
            field,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::NotFound => ApiError::not_found("delivery"),
            StoreError::NotRetryable { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_retryable", e.to_string())
            }
            StoreError::Orphaned { .. } => {
                ApiError::new(StatusCode::CONFLICT, "orphaned", e.to_string())
            }
            StoreError::InvalidCursor => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
            }
            _ if e.is_unavailable() => ApiError::store_unavailable("store operation failed", &e),
            _ => ApiError::internal("store operation failed", &e),
        }
    }
}

/// Reads the JSON body of a small request (`what`, e.g. "a replay request"): 413 past
/// 64 KiB, 400 `malformed_json` when it is not JSON.
pub(crate) async fn read_json(
    body: axum::body::Body,
    what: &str,
) -> Result<serde_json::Value, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{what} is at most 64 KiB"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {e}"),
        )
    })
}
