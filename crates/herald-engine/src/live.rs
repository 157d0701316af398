//! The live bus: every accepted event (durable ones after their commit, transient ones at
//! once) and every delivery or channel state change, broadcast in process to the live
//! stream's subscribers. Publishing with nobody listening is normal and costs a check.
//!
//! In a cluster (`[cluster] live_bus`), the bus also hands each message to a relay
//! (`cluster_bus.rs`) that publishes it for the other nodes, and what the relay receives
//! from them enters this node's hub through [`LiveBus::deliver_local`], never relayed
//! again.

use std::sync::Arc;

use herald_core::{Event, TeamId};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

/// How many messages the bus holds for a slow subscriber before it lags.
pub const BUS_CAPACITY: usize = 1024;

/// One message on the bus. Serialised flat, tagged by `kind`, as the WebSocket sends it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveMessage {
    /// An accepted event. `durable = false` for transient types (never stored).
    Event { durable: bool, event: Arc<Event> },
    /// A delivery attempt ended (`status`: succeeded, retrying, dead, disabled, skipped), or
    /// noise control stopped a delivery (`suppressed` at ingest, `silenced` at ingest or
    /// before an attempt; `attempt` is then the attempts made so far, 0 at ingest).
    Delivery {
        team: TeamId,
        delivery_id: String,
        event_id: String,
        event_type: String,
        channel: String,
        status: &'static str,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A channel changed state (`state`: disabled, failing, ok).
    Channel {
        team: TeamId,
        channel: String,
        state: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl LiveMessage {
    pub fn team(&self) -> &TeamId {
        match self {
            LiveMessage::Event { event, .. } => &event.team_id,
            LiveMessage::Delivery { team, .. } | LiveMessage::Channel { team, .. } => team,
        }
    }

    /// The event type this message is about, for stream filters (none for channel changes).
    pub fn event_type(&self) -> Option<&str> {
        match self {
            LiveMessage::Event { event, .. } => Some(&event.event),
            LiveMessage::Delivery { event_type, .. } => Some(event_type),
            LiveMessage::Channel { .. } => None,
        }
    }
}

/// A message as it travels on the bus: serialised once at publish time, so a thousand
/// subscribers share one JSON text instead of each encoding it again.
#[derive(Debug)]
pub struct BusMessage {
    pub message: LiveMessage,
    /// `message` as the flat JSON object both streams send.
    pub json: String,
}

impl BusMessage {
    pub fn new(message: LiveMessage) -> BusMessage {
        let json = serde_json::to_string(&message).unwrap_or_else(|_| "{}".to_string());
        BusMessage { message, json }
    }
}

#[derive(Debug, Clone)]
pub struct LiveBus {
    tx: broadcast::Sender<Arc<BusMessage>>,
    /// To the other nodes (the cluster live bus), when there is one.
    relay: Option<mpsc::Sender<Arc<BusMessage>>>,
}

impl Default for LiveBus {
    fn default() -> Self {
        LiveBus::new(BUS_CAPACITY)
    }
}

impl LiveBus {
    pub fn new(capacity: usize) -> LiveBus {
        let (tx, _) = broadcast::channel(capacity);
        LiveBus { tx, relay: None }
    }

    /// The same hub, also handing every message published to `relay` (for other nodes).
    pub(crate) fn with_relay(mut self, relay: mpsc::Sender<Arc<BusMessage>>) -> LiveBus {
        self.relay = Some(relay);
        self
    }

    pub fn publish(&self, message: LiveMessage) {
        let local = self.tx.receiver_count() > 0;
        if !local && self.relay.is_none() {
            return;
        }
        let message = Arc::new(BusMessage::new(message));
        if let Some(relay) = &self.relay {
            // Never wait for the other nodes: a full relay (Redis down or slow) drops,
            // as a lagging subscriber would.
            if relay.try_send(message.clone()).is_err() {
                metrics::counter!("herald_live_bus_dropped_total").increment(1);
            }
        }
        if local {
            // An error only means every receiver went away in between: nothing to do.
            let _ = self.tx.send(message);
        }
    }

    /// Shows `message` to this node's subscribers only, never relayed: for what every
    /// node receives by itself (a Pub/Sub source each node subscribes to).
    pub fn publish_local(&self, message: LiveMessage) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(BusMessage::new(message)));
        }
    }

    /// Hands a message another node published to this node's subscribers only.
    pub fn deliver_local(&self, message: Arc<BusMessage>) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(message);
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusMessage>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_with_nobody_listening_is_fine_and_lag_is_reported() {
        let bus = LiveBus::new(2);
        let channel = |n: usize| LiveMessage::Channel {
            team: TeamId::parse("acme").unwrap(),
            channel: format!("c{n}"),
            state: "ok",
            reason: None,
        };
        bus.publish(channel(0));
        let mut rx = bus.subscribe();
        for n in 1..=4 {
            bus.publish(channel(n));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 2),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = rx.try_recv().unwrap();
        assert!(matches!(&next.message, LiveMessage::Channel { channel, .. } if channel == "c3"));
        let json: serde_json::Value = serde_json::from_str(&next.json).unwrap();
        assert_eq!(json["kind"], "channel");
        assert_eq!(json["team"], "acme");
    }
}
