//! Building the channel adapters a configuration declares.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use herald_channels::webhook::DEFAULT_USER_AGENT;
use herald_channels::{
    Channel, FileChannel, HttpOptions, Outgoing, SendOutcome, WebhookChannel, WebhookClient,
};
use herald_config::{ChannelConfig, Config};
use herald_core::TeamId;

/// Every channel of every team, keyed by (team, channel name).
pub type Channels = HashMap<(TeamId, String), Arc<dyn Channel>>;

/// Builds one adapter per configured channel, sharing one HTTP client.
pub fn build_channels(config: &Config) -> Result<Channels, String> {
    let timeout = config.delivery.timeout;
    let client = WebhookClient::new(HttpOptions {
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(5)),
        allow_private_networks: config.delivery.allow_private_networks,
        user_agent: DEFAULT_USER_AGENT.to_string(),
    })
    .map_err(|e| format!("building the HTTP client: {e}"))?;
    let mut channels: Channels = HashMap::new();
    for (team, team_config) in &config.teams {
        for (name, channel) in &team_config.channels {
            let adapter: Arc<dyn Channel> = match channel {
                ChannelConfig::Webhook(w) => Arc::new(
                    WebhookChannel::new(w.url.clone(), w.secret.clone(), client.clone())
                        .map_err(|e| format!("channel `{name}` of team `{team}`: {e}"))?,
                ),
                ChannelConfig::File(f) => Arc::new(FileChannel::new(f.path.clone())),
                ChannelConfig::Telegram(_) | ChannelConfig::Email(_) => {
                    Arc::new(Unsupported(channel.kind()))
                }
            };
            channels.insert((team.clone(), name.clone()), adapter);
        }
    }
    Ok(channels)
}

/// A channel kind this build cannot send through yet: every attempt fails permanently
/// with a message saying so, so its deliveries are dead letters that can be retried later.
struct Unsupported(&'static str);

impl Channel for Unsupported {
    fn kind(&self) -> &'static str {
        self.0
    }

    fn send<'a>(
        &'a self,
        _msg: &'a Outgoing<'a>,
    ) -> Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>> {
        let kind = self.0;
        Box::pin(async move {
            SendOutcome::Permanent {
                status: None,
                error: format!("the {kind} channel is not available in this build of herald"),
                response: None,
            }
        })
    }
}
