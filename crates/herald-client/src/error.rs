//! The one error type of the client: herald's own refusals keep their `code`, `field` and
//! `message`; everything else says what failed without ever quoting the API key.

use herald_core::{EventKind, RawEvent};

/// Everything that can go wrong talking to herald.
///
/// ```
/// use herald_client::Error;
///
/// fn report(e: &Error) -> String {
///     match e {
///         Error::Api { code, field: Some(field), .. } => format!("{code} at {field}"),
///         Error::QueueFull { .. } => "slow down".to_string(),
///         other if other.is_retryable() => "try again later".to_string(),
///         other => other.to_string(),
///     }
/// }
/// # let _ = report;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// herald answered with an error body `{"error": {"code", "message", "field"?}}`.
    #[error("herald refused the request (HTTP {status} {code}{}): {message}", field.as_deref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Api {
        /// The HTTP status, e.g. 422.
        status: u16,
        /// herald's error code, e.g. `invalid_event` (see docs/api.md).
        code: String,
        /// herald's explanation, e.g. `metadata.reason: is longer than 2048 characters`.
        message: String,
        /// The field at fault, e.g. `[3].event` inside a batch.
        field: Option<String>,
    },
    /// The request did not get an answer: connection refused, reset, timed out.
    #[error("could not reach herald: {0}")]
    Transport(#[source] reqwest::Error),
    /// herald answered something this client does not understand.
    #[error("unexpected reply from herald (HTTP {status}): {detail}")]
    Protocol {
        /// The HTTP status of the reply.
        status: u16,
        /// What did not fit (the start of the body, or the parse error).
        detail: String,
    },
    /// The event breaks a rule of the envelope; checked before anything is sent.
    #[error("invalid event: {field}: {message}")]
    InvalidEvent {
        /// The field at fault, e.g. `metadata.reason` or `[3].event` in a batch.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The publisher's catalogue declares this type with another kind, or not at all.
    #[error("event type `{event_type}`: {problem}")]
    Catalogue {
        /// The event's type.
        event_type: String,
        /// What the catalogue says, e.g. "declared transient; use `publish_transient`".
        problem: String,
        /// The declared kind, `None` when the type is not in the catalogue.
        declared: Option<EventKind>,
    },
    /// A batch outside 1..=1,000 events.
    #[error("a batch holds 1 to {max} events; got {got}")]
    BatchSize {
        /// How many events the batch held.
        got: usize,
        /// The most herald takes (1,000).
        max: usize,
    },
    /// A type pattern that herald would refuse (`caps*`, `a.*.b`, …).
    #[error("{0}")]
    Pattern(#[from] herald_core::PatternError),
    /// The base URL cannot be used.
    #[error("invalid herald URL `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The background queue is full. Nothing was dropped: the event is handed back.
    #[error("the background queue is full ({capacity} events waiting); the event was not queued")]
    QueueFull {
        /// The queue's capacity, in events.
        capacity: usize,
        /// The event that did not fit, to retry or put elsewhere.
        event: Box<RawEvent>,
    },
    /// The background publisher (or bus) was closed. The event, if any, is handed back.
    #[error("the publisher is closed; the event was not queued")]
    Closed {
        /// The event that was not queued, when there was one.
        event: Option<Box<RawEvent>>,
    },
}

impl Error {
    /// Whether sending the same request again may succeed: network errors, timeouts, and
    /// herald's 5xx (e.g. `unavailable` while it shuts down) or 429. Re-sending is safe for
    /// durable events because their ids make ingest idempotent.
    ///
    /// ```
    /// let e = herald_client::Error::Api {
    ///     status: 503, code: "unavailable".into(), message: "shutting down".into(), field: None,
    /// };
    /// assert!(e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } | Error::Protocol { status, .. } => {
                *status >= 500 || *status == 429 || *status == 408
            }
            Error::Transport(_) => true,
            _ => false,
        }
    }

    /// herald's error code (`invalid_event`, `unauthorized`, …) when herald refused.
    ///
    /// ```
    /// let e = herald_client::Error::Api {
    ///     status: 401, code: "unauthorized".into(), message: "unknown token".into(), field: None,
    /// };
    /// assert_eq!(e.code(), Some("unauthorized"));
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The field at fault, from herald's reply or the local check.
    ///
    /// ```
    /// let e = herald_client::Error::InvalidEvent { field: "metadata.k".into(), message: "too long".into() };
    /// assert_eq!(e.field(), Some("metadata.k"));
    /// ```
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Api { field, .. } => field.as_deref(),
            Error::InvalidEvent { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Turns a non-2xx reply into an [`Error::Api`] when it has herald's error shape.
pub(crate) fn from_reply(status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
        field: Option<String>,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => Error::Api {
            status,
            code: error.code,
            message: error.message,
            field: error.field,
        },
        Err(_) => Error::Protocol {
            status,
            detail: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_code_field_and_message() {
        let e = from_reply(
            422,
            br#"{"error":{"code":"invalid_event","message":"[3].event: missing","field":"[3].event"}}"#,
        );
        assert_eq!(e.code(), Some("invalid_event"));
        assert_eq!(e.field(), Some("[3].event"));
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "herald refused the request (HTTP 422 invalid_event, field `[3].event`): [3].event: missing"
        );
        let proxy = from_reply(502, b"<html>bad gateway</html>");
        assert!(proxy.is_retryable(), "{proxy}");
        assert_eq!(
            proxy.to_string(),
            "unexpected reply from herald (HTTP 502): <html>bad gateway</html>"
        );
    }
}
