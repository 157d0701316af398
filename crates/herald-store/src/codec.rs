//! How every backend encodes what it stores: times as Unix nanoseconds, events as their
//! JSON, pagination cursors, page limits. Shared so that the backends agree exactly.

use std::time::Duration;

use herald_core::{DigestKind, Event, RawEvent, Timestamp};

use crate::error::StoreError;
use crate::model::MAX_PAGE_SIZE;

/// Cursors look like `c1_<seq>`; the version prefix lets the format change later.
const CURSOR_PREFIX: &str = "c1_";

/// Times are stored as Unix nanoseconds (good from 1677 to 2262; clamped beyond).
pub(crate) fn nanos(t: Timestamp) -> i64 {
    let n = t.unix_nanos();
    i64::try_from(n).unwrap_or(if n < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn timestamp(n: i64) -> Timestamp {
    Timestamp::from_unix_nanos(i128::from(n))
}

pub(crate) fn duration_nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A page size clamped to `1..=MAX_PAGE_SIZE`.
pub(crate) fn clamp_limit(limit: usize) -> i64 {
    i64::try_from(limit.clamp(1, MAX_PAGE_SIZE)).unwrap_or(1)
}

/// Reads a stored event back. Stored events are complete, so nothing is filled in.
pub(crate) fn decode_event(body: &str, accepted_at: Timestamp) -> Result<Event, StoreError> {
    RawEvent::from_json(body.as_bytes())
        .and_then(|raw| raw.into_event(None, accepted_at, String::new))
        .map_err(|err| StoreError::Corrupt {
            what: "event".into(),
            message: err.to_string(),
        })
}

/// An event as stored: its JSON, made by the caller (off any writer thread).
pub(crate) fn encode_event(event: &Event) -> Result<String, StoreError> {
    serde_json::to_string(event)
        .map_err(|_| StoreError::Internal("an event could not be encoded as JSON"))
}

pub(crate) fn encode_cursor(seq: i64) -> String {
    format!("{CURSOR_PREFIX}{seq}")
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<i64, StoreError> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|&n| n > 0)
        .ok_or(StoreError::InvalidCursor)
}

/// A digest's kind as stored (JSON, as `herald_core::DigestKind` serialises).
pub(crate) fn encode_digest_kind(kind: &DigestKind) -> Result<String, StoreError> {
    serde_json::to_string(kind)
        .map_err(|_| StoreError::Internal("a digest kind could not be encoded as JSON"))
}

pub(crate) fn decode_digest_kind(text: &str) -> Result<DigestKind, String> {
    serde_json::from_str(text).map_err(|e| format!("digest kind `{text}`: {e}"))
}
