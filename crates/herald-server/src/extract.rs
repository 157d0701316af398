//! Request extractors shared by the routes and the live stream, with their rejections
//! rendered as [`ApiError`]s like every other error of the API.

use axum::extract::Query;
use axum::http::StatusCode;

use crate::error::ApiError;

/// `Query`, with a malformed query string reported as a JSON `invalid_query` error.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
    }
}
