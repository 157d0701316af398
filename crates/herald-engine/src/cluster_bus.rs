//! The cluster live bus: one live stream across herald nodes over Redis Pub/Sub
//! (`[cluster] live_bus`). Each node publishes every message of its own hub (accepted
//! events after their commit, transient events, delivery and channel changes) on the
//! channel `<channel_prefix>:live`, wrapped with its node id, and feeds what other nodes
//! publish into its hub; its own messages come back from Redis and are skipped by node id.
//!
//! Pub/Sub is at most once: a message published while a node is disconnected is not seen
//! there live. Durable events are in the store, so an SSE client resumes them with
//! `Last-Event-ID` (across nodes only when they share the store, i.e. PostgreSQL).
//! Both halves reconnect on their own, with a backoff capped at [`MAX_BACKOFF`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use herald_core::{RawEvent, TeamId};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::components::Components;
use crate::live::{BusMessage, LiveBus, LiveMessage};

/// How many messages wait for the publisher before new ones are dropped (and counted).
const RELAY_QUEUE: usize = 4096;
/// The longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The name under which the bus reports in `/readyz`.
pub const COMPONENT: &str = "live_bus";

/// The next wait after `current` (doubling, capped).
pub fn next_backoff(current: Duration) -> Duration {
    (current * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF)
}

/// Starts the publisher and the subscriber; returns the relay the local bus hands its
/// messages to. `hub` must be the local bus without a relay.
pub(crate) fn start(
    hub: LiveBus,
    url: &herald_core::Secret,
    channel_prefix: &str,
    node: String,
    components: Arc<Components>,
) -> Result<mpsc::Sender<Arc<BusMessage>>, String> {
    // The URL was validated by the configuration; an error here names no part of it.
    let client = redis::Client::open(url.expose())
        .map_err(|e| format!("[cluster] live_bus: {}", e.kind_name()))?;
    let channel = format!("{channel_prefix}:live");
    let (tx, rx) = mpsc::channel(RELAY_QUEUE);
    components.set(COMPONENT, "live_bus", Some("connecting".into()));
    tokio::spawn(publish(client.clone(), channel.clone(), node.clone(), rx));
    tokio::spawn(subscribe(client, channel, node, hub, components));
    Ok(tx)
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    /// The error without its detail, which may quote the URL.
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
    }
}

/// `{"node": NODE, "message": MESSAGE}` without serialising the message again.
fn envelope(node: &str, message: &BusMessage) -> String {
    let node = serde_json::to_string(node).unwrap_or_else(|_| "\"\"".into());
    format!("{{\"node\":{node},\"message\":{}}}", message.json)
}

async fn publish(
    client: redis::Client,
    channel: String,
    node: String,
    mut rx: mpsc::Receiver<Arc<BusMessage>>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    let mut backoff = FIRST_BACKOFF;
    while let Some(message) = rx.recv().await {
        let text = envelope(&node, &message);
        // One message is tried until it is published or the queue has moved on: a
        // reconnect loses nothing queued.
        loop {
            let conn = match &mut connection {
                Some(c) => c,
                None => match client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                {
                    Ok(c) => {
                        backoff = FIRST_BACKOFF;
                        connection.insert(c)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e.kind_name(), "live bus: cannot connect to publish; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = next_backoff(backoff);
                        continue;
                    }
                },
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(&text)
                .query_async(conn)
                .await;
            match sent {
                Ok(_) => {
                    metrics::counter!("herald_live_bus_published_total").increment(1);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e.kind_name(), "live bus: publishing failed; reconnecting");
                    connection = None;
                    tokio::time::sleep(backoff).await;
                    backoff = next_backoff(backoff);
                    if rx.len() >= RELAY_QUEUE / 2 {
                        // Redis is away and messages pile up: give this one up.
                        metrics::counter!("herald_live_bus_dropped_total").increment(1);
                        break;
                    }
                }
            }
        }
    }
}

async fn subscribe(
    client: redis::Client,
    channel: String,
    node: String,
    hub: LiveBus,
    components: Arc<Components>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let pubsub = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(Duration::from_secs(5), pubsub).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                components.set(
                    COMPONENT,
                    "live_bus",
                    Some(format!("cannot subscribe: {}", e.kind_name())),
                );
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
                continue;
            }
            Err(_) => {
                components.set(
                    COMPONENT,
                    "live_bus",
                    Some("cannot subscribe: timed out".into()),
                );
                tokio::time::sleep(backoff).await;
                backoff = next_backoff(backoff);
                continue;
            }
        };
        components.set(COMPONENT, "live_bus", None);
        tracing::info!(%channel, %node, "live bus: subscribed");
        backoff = FIRST_BACKOFF;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            match from_other_node(&text, &node) {
                Ok(Some(message)) => {
                    metrics::counter!("herald_live_bus_received_total").increment(1);
                    hub.deliver_local(Arc::new(message));
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("herald_live_bus_invalid_total").increment(1);
                    tracing::warn!(error = %e, "live bus: a message from another node was not understood; skipped");
                }
            }
        }
        components.set(
            COMPONENT,
            "live_bus",
            Some("disconnected from Redis; reconnecting".into()),
        );
        tracing::warn!("live bus: disconnected; reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

#[derive(Deserialize)]
struct Envelope {
    node: String,
    message: Box<serde_json::value::RawValue>,
}

/// A live message as another node serialised it.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Wire {
    Event {
        durable: bool,
        event: RawEvent,
    },
    Delivery {
        team: TeamId,
        delivery_id: String,
        event_id: String,
        event_type: String,
        channel: String,
        status: String,
        attempt: u32,
        error: Option<String>,
    },
    Channel {
        team: TeamId,
        channel: String,
        state: String,
        reason: Option<String>,
    },
}

const DELIVERY_STATUSES: [&str; 5] = ["succeeded", "retrying", "dead", "disabled", "skipped"];
const CHANNEL_STATES: [&str; 3] = ["disabled", "failing", "ok"];

fn known(value: &str, among: &[&'static str]) -> Result<&'static str, String> {
    among
        .iter()
        .find(|s| **s == value)
        .copied()
        .ok_or_else(|| format!("unknown state `{value}`"))
}

/// The message in `text` unless `node` (this one) published it. The event is validated
/// again, as if published here: another node's bug cannot put a malformed event on the
/// stream.
pub(crate) fn from_other_node(text: &str, node: &str) -> Result<Option<BusMessage>, String> {
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if envelope.node == node {
        return Ok(None);
    }
    let wire: Wire = serde_json::from_str(envelope.message.get()).map_err(|e| e.to_string())?;
    let message = match wire {
        Wire::Event { durable, event } => {
            let event = event
                .into_event(None, crate::now(), String::new)
                .map_err(|e| e.to_string())?;
            LiveMessage::Event {
                durable,
                event: Arc::new(event),
            }
        }
        Wire::Delivery {
            team,
            delivery_id,
            event_id,
            event_type,
            channel,
            status,
            attempt,
            error,
        } => LiveMessage::Delivery {
            team,
            delivery_id,
            event_id,
            event_type,
            channel,
            status: known(&status, &DELIVERY_STATUSES)?,
            attempt,
            error,
        },
        Wire::Channel {
            team,
            channel,
            state,
            reason,
        } => LiveMessage::Channel {
            team,
            channel,
            state: known(&state, &CHANNEL_STATES)?,
            reason,
        },
    };
    // Keep the other node's text: it is what this node would have serialised.
    Ok(Some(BusMessage {
        message,
        json: envelope.message.get().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_message() -> BusMessage {
        let raw: RawEvent = serde_json::from_str(
            r#"{"id":"e1","event":"host.down","team_id":"acme","timestamp":"2026-12-01T00:00:00Z","metadata":{"k":"v"}}"#,
        )
        .unwrap();
        let event = raw.into_event(None, crate::now(), String::new).unwrap();
        BusMessage::new(LiveMessage::Event {
            durable: true,
            event: Arc::new(event),
        })
    }

    #[test]
    fn a_message_crosses_the_wire_unchanged_and_own_messages_are_skipped() {
        let sent = event_message();
        let text = envelope("node-a", &sent);
        assert!(from_other_node(&text, "node-a").unwrap().is_none());
        let got = from_other_node(&text, "node-b").unwrap().unwrap();
        assert_eq!(got.json, sent.json);
        assert_eq!(got.message.team().as_str(), "acme");
        assert_eq!(got.message.event_type(), Some("host.down"));

        for message in [
            LiveMessage::Delivery {
                team: TeamId::parse("acme").unwrap(),
                delivery_id: "dlv_1".into(),
                event_id: "e1".into(),
                event_type: "host.down".into(),
                channel: "hook".into(),
                status: "dead",
                attempt: 3,
                error: Some("HTTP 500".into()),
            },
            LiveMessage::Channel {
                team: TeamId::parse("globex").unwrap(),
                channel: "ops".into(),
                state: "failing",
                reason: None,
            },
        ] {
            let sent = BusMessage::new(message);
            let got = from_other_node(&envelope("a", &sent), "b")
                .unwrap()
                .unwrap();
            assert_eq!(got.json, sent.json);
            assert_eq!(
                serde_json::to_string(&got.message).unwrap(),
                sent.json,
                "parsed back to the same message"
            );
        }
    }

    #[test]
    fn what_is_not_understood_is_an_error() {
        let cases = [
            ("not json", "expected ident"),
            (
                r#"{"node":"a","message":{"kind":"nope"}}"#,
                "unknown variant `nope`",
            ),
            (
                r#"{"node":"a","message":{"kind":"channel","team":"acme","channel":"c","state":"melted"}}"#,
                "unknown state `melted`",
            ),
            (
                r#"{"node":"a","message":{"kind":"event","durable":true,"event":{"event":"x"}}}"#,
                "team_id",
            ),
        ];
        for (text, want) in cases {
            let err = from_other_node(text, "b").err().unwrap_or_default();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = FIRST_BACKOFF;
        let mut seen = vec![b];
        for _ in 0..8 {
            b = next_backoff(b);
            seen.push(b);
        }
        assert_eq!(seen[1], Duration::from_millis(200));
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
    }
}
