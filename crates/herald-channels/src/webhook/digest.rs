//! The built-in webhook body of a digest: one JSON document that says why the events
//! share a message, how many there are, and lists the first ones as full envelopes.
//! Signed like any webhook, with the digest delivery's id as `webhook-id`.

use herald_core::{Digest, DigestKind, Event, TeamId, Timestamp};
use serde::Serialize;

/// The value of the body's `type`, telling a digest from a single event's envelope.
pub const DIGEST_TYPE: &str = "herald.digest";

/// The body's shape. `kind` is flattened: `"kind": "group", "labels": [["k", "v"], …]` or
/// `"kind": "throttle", "limit": 10, "per_seconds": 60`.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    id: &'a str,
    team: &'a TeamId,
    subscription: &'a str,
    channel: &'a str,
    #[serde(flatten)]
    kind: &'a DigestKind,
    /// How many events the digest stands for.
    total: u64,
    /// How many of them `events` lists.
    listed: usize,
    /// `total - listed`.
    more: u64,
    first_at: Timestamp,
    last_at: Timestamp,
    events: &'a [Event],
}

/// The JSON body a webhook receives for `digest` when no formatter rendered it:
/// `{"type": "herald.digest", "id", "team", "subscription", "channel", "kind", …,
/// "total", "listed", "more", "first_at", "last_at", "events": [envelopes]}`. Pure:
/// `herald explain` shows it.
pub fn digest_body(digest: &Digest) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&body(digest))
}

/// [`digest_body`] indented for people to read (`herald explain`): the same fields in the
/// same order.
pub fn digest_body_pretty(digest: &Digest) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&body(digest))
}

fn body(digest: &Digest) -> Body<'_> {
    Body {
        type_: DIGEST_TYPE,
        id: &digest.id,
        team: &digest.team,
        subscription: &digest.subscription,
        channel: &digest.channel,
        kind: &digest.kind,
        total: digest.total,
        listed: digest.events.len(),
        more: digest.more(),
        first_at: digest.first_at,
        last_at: digest.last_at,
        events: &digest.events,
    }
}
