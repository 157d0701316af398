//! The configuration as written: serde shapes that keep the spans of the values that
//! later checks need to point at. Unknown keys are rejected by `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::model::ParseMode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub admin_token: Option<Spanned<String>>,
    pub max_body_bytes: Option<Spanned<u64>>,
    #[serde(default)]
    pub metrics_public: bool,
    pub header_timeout: Option<Spanned<String>>,
    pub body_timeout: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_streams: Option<Spanned<u64>>,
    pub max_streams_per_key: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub backend: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub min_free_bytes: Option<Spanned<u64>>,
    pub url: Option<Spanned<String>>,
    pub pool_size: Option<Spanned<u32>>,
    pub schema: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetention {
    pub events: Option<Spanned<String>>,
    pub attempts: Option<Spanned<String>>,
    pub dead: Option<Spanned<String>>,
    pub max_store_size: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub batch: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelivery {
    pub retry_schedule: Option<Spanned<Vec<Spanned<String>>>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub allow_private_networks: bool,
    pub concurrency_per_channel: Option<Spanned<u32>>,
    pub max_concurrency_per_channel: Option<Spanned<u32>>,
    pub workers: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelegram {
    pub bot_token: Spanned<String>,
    pub api_url: Option<Spanned<String>>,
    #[serde(default)]
    pub commands: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmail {
    pub smtp_url: Spanned<String>,
    pub from: Spanned<String>,
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEventType {
    pub name: Spanned<String>,
    #[serde(default)]
    pub transient: bool,
    #[serde(default)]
    #[allow(dead_code)] // documentation for people reading the config; herald ignores it
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubscription {
    pub name: Option<Spanned<String>>,
    pub channel: Spanned<String>,
    pub events: Spanned<Vec<Spanned<String>>>,
    pub outcome: Option<herald_core::Outcome>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default = "yes")]
    pub active: bool,
    pub formatter: Option<Spanned<String>>,
    pub formatter_settings: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    /// Repeat suppression: how long after a sent message the same key is suppressed.
    pub dedup_window: Option<Spanned<String>>,
    /// The fields that make two events the same (`event`, `resource.id`, `metadata.K`, …).
    pub dedup_key: Option<Spanned<Vec<Spanned<String>>>>,
    /// Grouping into digests: the fields whose values make a group (any of the four
    /// `group_*`/`max_group_size` keys turns grouping on).
    pub group_by: Option<Spanned<Vec<Spanned<String>>>>,
    pub group_wait: Option<Spanned<String>>,
    pub group_interval: Option<Spanned<String>>,
    /// Signed so that `0` and `-1` get our range message rather than serde's.
    pub max_group_size: Option<Spanned<i64>>,
    /// `COUNT/DURATION`: at most COUNT single messages per DURATION, the rest folded.
    pub throttle: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

/// `[plugins.NAME]`: a WASM formatter plugin.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub path: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    /// Bytes as an integer, or a string such as "16MiB".
    pub memory_limit: Option<Spanned<toml::Value>>,
    #[serde(default)]
    pub settings: BTreeMap<String, Spanned<toml::Value>>,
}

// Channel kinds. Each carries `type` so the table can be handed over whole, keeping the
// spans of its keys for unknown-key errors.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub url: Spanned<String>,
    pub secret: Option<Spanned<String>>,
    /// Several secrets while receivers rotate: every one signs (instead of `secret`).
    pub secrets: Option<Spanned<Vec<Spanned<String>>>>,
    #[allow(dead_code)] // `throttle = "10/1m"`: read in `channels()` before dispatching
    pub throttle: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelegramChannel {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub chat_id: i64,
    pub message_thread_id: Option<i32>,
    #[serde(default = "html")]
    pub parse_mode: ParseMode,
    #[serde(default)]
    pub disable_notification: bool,
    #[allow(dead_code)] // `throttle = "10/1m"`: read in `channels()` before dispatching
    pub throttle: Option<serde::de::IgnoredAny>,
}

fn html() -> ParseMode {
    ParseMode::Html
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEmailChannel {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub to: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub cc: Vec<Spanned<String>>,
    pub subject_prefix: Option<String>,
    #[allow(dead_code)] // `throttle = "10/1m"`: read in `channels()` before dispatching
    pub throttle: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFileChannel {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[allow(dead_code)] // `throttle = "10/1m"`: read in `channels()` before dispatching
    pub throttle: Option<serde::de::IgnoredAny>,
}

// Sources (`[[sources]]`), tagged by `type` like channels.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedisStreamSource {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<Spanned<String>>,
    // Required, but optional here so that a missing one does not hide the other
    // problems of the entry (the loader reports it).
    pub url: Option<Spanned<String>>,
    pub stream: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub consumer: Option<Spanned<String>>,
    pub field: Option<Spanned<String>>,
    pub team_from: Option<Spanned<String>>,
    pub team: Option<Spanned<String>>,
    pub claim_idle: Option<Spanned<String>>,
    pub max_deliveries: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedisPubSubSource {
    #[allow(dead_code)] // read before dispatching on it
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub channel: Option<Spanned<String>>,
    pub team_from: Option<Spanned<String>>,
    pub team: Option<Spanned<String>>,
}

/// `[cluster]`: what several herald nodes share besides the store.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub live_bus: Option<Spanned<String>>,
    pub channel_prefix: Option<Spanned<String>>,
    pub node_id: Option<Spanned<String>>,
}
