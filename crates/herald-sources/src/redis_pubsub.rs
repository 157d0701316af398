//! `type = "redis_pubsub"`: a Pub/Sub channel whose messages go to the live stream only,
//! exactly like transient events posted over HTTP: validated the same way (team, type,
//! fields), never stored, matched or delivered. An event of a durable type is shown live
//! too (`"durable": false`: herald did not store it), because Pub/Sub is at most once and
//! the stream is the durable path. An invalid message is logged with its reason and
//! counted (`herald_source_invalid_total`); there is nothing to acknowledge.

use std::time::Duration;

use futures_util::StreamExt as _;
use herald_config::RedisPubSubConfig;
use herald_engine::{Caller, Engine, next_backoff};
use tokio::sync::watch;

use crate::{client, reason, sleep_or_stop};

const KIND: &str = "redis_pubsub";

pub struct PubSubSource {
    name: String,
    channel: String,
    caller: Caller,
    engine: Engine,
    client: redis::Client,
}

impl PubSubSource {
    pub fn new(
        name: &str,
        config: &RedisPubSubConfig,
        caller: Caller,
        engine: Engine,
    ) -> Result<PubSubSource, String> {
        Ok(PubSubSource {
            name: name.to_string(),
            channel: config.channel.clone(),
            client: client(name, &config.url)?,
            caller,
            engine,
        })
    }

    fn set_state(&self, problem: Option<String>) {
        self.engine.components().set(&self.name, KIND, problem);
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::ZERO;
        self.set_state(Some("connecting".into()));
        loop {
            if *stop.borrow() {
                return;
            }
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let outcome = tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(5), subscribed) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match outcome {
                Ok(Ok(mut pubsub)) => {
                    self.set_state(None);
                    backoff = Duration::ZERO;
                    tracing::info!(source = %self.name, channel = %self.channel, "redis pubsub source subscribed");
                    let mut messages = pubsub.on_message();
                    loop {
                        let msg = tokio::select! {
                            m = messages.next() => m,
                            _ = stop.wait_for(|s| *s) => return,
                        };
                        let Some(msg) = msg else {
                            break;
                        };
                        self.handle(msg.get_payload_bytes());
                    }
                    self.set_state(Some("disconnected from Redis; reconnecting".into()));
                    tracing::warn!(source = %self.name, "redis pubsub source disconnected; reconnecting");
                }
                Ok(Err(e)) => {
                    tracing::warn!(source = %self.name, error = %e, "redis pubsub source cannot subscribe; retrying");
                    self.set_state(Some(format!("cannot subscribe: {e}")));
                }
                Err(_) => self.set_state(Some("cannot subscribe: timed out".into())),
            }
            backoff = next_backoff(backoff);
            if sleep_or_stop(backoff, &mut stop).await {
                return;
            }
        }
    }

    fn handle(&self, payload: &[u8]) {
        match self.engine.publish_live(&self.caller, payload) {
            Ok(n) => {
                metrics::counter!("herald_source_events_total", "source" => self.name.clone(), "outcome" => "live")
                    .increment(n as u64);
            }
            Err(e) => {
                metrics::counter!("herald_source_invalid_total", "source" => self.name.clone())
                    .increment(1);
                tracing::warn!(source = %self.name, reason = %reason::of(&e), "pubsub message is not a valid event; skipped");
            }
        }
    }
}
