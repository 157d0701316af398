//! The validated configuration: what the rest of herald reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::{Matcher, Secret, TeamId};

/// The whole, validated configuration. Relative paths are already resolved against the
/// directory of the main configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main configuration file.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub telegram: Option<TelegramConfig>,
    pub email: Option<EmailConfig>,
    pub teams: BTreeMap<TeamId, TeamConfig>,
    /// The event-type registry and every team's subscriptions, indexed.
    pub matcher: Matcher,
}

impl Config {
    /// The team an API key belongs to. Compares in constant time per key.
    pub fn team_for_key(&self, key: &str) -> Option<&TeamId> {
        let mut found = None;
        for team in self.teams.values() {
            for k in &team.api_keys {
                if k.constant_time_eq(key) {
                    found = Some(&team.id);
                }
            }
        }
        found
    }

    pub fn channel(&self, team: &TeamId, name: &str) -> Option<&ChannelConfig> {
        self.teams.get(team)?.channels.get(name)
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory of the embedded store.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delay before each retry; its length + 1 is the maximum number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// Total time one attempt may take (connect, send, read the response).
    pub timeout: Duration,
    pub allow_private_networks: bool,
    /// Most attempts in flight at once per channel.
    pub concurrency_per_channel: usize,
    /// Most attempts in flight at once overall.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub bot_token: Secret,
    pub api_url: String,
    pub commands: bool,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub smtp_url: String,
    pub from: String,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TeamConfig {
    pub id: TeamId,
    pub api_keys: Vec<Secret>,
    pub channels: BTreeMap<String, ChannelConfig>,
}

/// A channel, closed over the kinds herald ships.
#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Webhook(WebhookChannelConfig),
    Telegram(TelegramChannelConfig),
    Email(EmailChannelConfig),
    File(FileChannelConfig),
}

impl ChannelConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook(_) => "webhook",
            ChannelConfig::Telegram(_) => "telegram",
            ChannelConfig::Email(_) => "email",
            ChannelConfig::File(_) => "file",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookChannelConfig {
    pub url: url::Url,
    /// A Standard Webhooks secret (`whsec_…`); unsigned when absent.
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParseMode {
    Html,
    MarkdownV2,
    Plain,
}

#[derive(Debug, Clone)]
pub struct TelegramChannelConfig {
    pub chat_id: i64,
    pub message_thread_id: Option<i32>,
    pub parse_mode: ParseMode,
    pub disable_notification: bool,
}

#[derive(Debug, Clone)]
pub struct EmailChannelConfig {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FileChannelConfig {
    pub path: PathBuf,
}
