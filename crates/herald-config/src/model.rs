//! The validated configuration: what the rest of herald reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald_core::{Matcher, Secret, Subscription, SubscriptionId, TeamId};

use crate::diagnostic::Location;

/// The whole, validated configuration. Relative paths are already resolved against the
/// directory of the main configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main configuration file.
    pub source: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub retention: RetentionConfig,
    pub delivery: DeliveryConfig,
    pub telegram: Option<TelegramConfig>,
    pub email: Option<EmailConfig>,
    pub teams: BTreeMap<TeamId, TeamConfig>,
    /// The event-type registry and every team's subscriptions, indexed.
    pub matcher: Matcher,
    /// WASM formatter plugins (`[plugins.NAME]`), by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Each subscription's own `formatter_settings`, when it has some.
    pub formatter_settings: BTreeMap<SubscriptionId, BTreeMap<String, String>>,
    /// Where events come from besides `POST /v1/events` (`[[sources]]`), in file order.
    pub sources: Vec<SourceConfig>,
    /// `[cluster]`: the live bus several nodes share.
    pub cluster: ClusterConfig,
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

    /// The plugin that renders `sub`'s messages, if it names one, and the settings to
    /// give it: the plugin's `settings` overlaid with the subscription's
    /// `formatter_settings`.
    pub fn formatter(
        &self,
        sub: &Subscription,
    ) -> Option<(&PluginConfig, BTreeMap<String, String>)> {
        let plugin = self.plugins.get(sub.formatter.as_deref()?)?;
        let mut settings = plugin.settings.clone();
        if let Some(own) = self.formatter_settings.get(&sub.id) {
            settings.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Some((plugin, settings))
    }
}

/// Default `[plugins.NAME] timeout`.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(50);
/// Default `[plugins.NAME] memory_limit`, in bytes.
pub const DEFAULT_PLUGIN_MEMORY_LIMIT: u64 = 16 * 1024 * 1024;

/// A WASM formatter plugin (`[plugins.NAME]`).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    /// The component file, resolved against the main configuration file's directory.
    pub path: PathBuf,
    /// Longest one render may take.
    pub timeout: Duration,
    /// Most linear memory one render may use, in bytes.
    pub memory_limit: u64,
    /// Given to every render of this plugin; subscriptions may add or override keys.
    pub settings: BTreeMap<String, String>,
    /// Where `path` is written: problems with the plugin file are reported there.
    pub location: Location,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_token: Option<Secret>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    pub max_body_bytes: usize,
    /// Serve `/metrics` without the admin token (it names every team and channel, so it
    /// is admin-only unless an operator opts in, e.g. for a scraper on a private network).
    pub metrics_public: bool,
    /// How long a client may take to send a request's head (and how long a kept-alive
    /// connection may sit idle) before the connection is closed (default 10 s).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's whole body (default 30 s).
    pub body_timeout: Duration,
    /// How long a stop waits for open connections (requests in flight, streams) before
    /// closing them (default 10 s).
    pub shutdown_grace: Duration,
    /// Most open HTTP connections; a connection beyond it is answered `503` and closed.
    pub max_connections: usize,
    /// Most open live streams (SSE and WebSocket together), in total and per API key or
    /// admin token; a stream beyond either is refused with `429`.
    pub max_streams: usize,
    pub max_streams_per_key: usize,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The data directory of the embedded store (unused with PostgreSQL).
    pub path: PathBuf,
    /// Free space the store's filesystem must keep for `/readyz` to pass; `None` for the
    /// store's default.
    pub min_free_bytes: Option<u64>,
    /// `backend = "postgres"`: the shared store several nodes use; `None` for the
    /// embedded (SQLite) store.
    pub postgres: Option<PostgresConfig>,
}

/// `[store] backend = "postgres"`: where the shared store is.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The connection string (`postgres://user:password@host:port/db` or key=value
    /// form); a secret, since it may hold a password.
    pub url: Secret,
    /// Most connections one node opens.
    pub pool_size: usize,
    /// The schema herald's tables live in (a plain lower-case identifier).
    pub schema: String,
}

/// `[retention]`: how long finished records are kept. Pending deliveries (and their
/// events) are never removed, whatever their age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Events whose deliveries all succeeded or were skipped are removed (with those
    /// deliveries and their attempts) this long after they were accepted.
    pub events: Duration,
    /// Attempt records of succeeded or skipped deliveries are removed this long after
    /// the delivery finished.
    pub attempts: Duration,
    /// Dead letters (with their attempts) are removed this long after they died.
    pub dead: Duration,
    /// Above this many bytes of live data, the oldest finished events go first,
    /// whatever their age.
    pub max_store_size: Option<u64>,
    /// How often a pruning round starts.
    pub interval: Duration,
    /// Most rows of each kind removed in one write, so ingest is never held up for long.
    pub batch: u32,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Delay before each retry; its length + 1 is the maximum number of attempts.
    pub retry_schedule: Vec<Duration>,
    /// Total time one attempt may take (connect, send, read the response).
    pub timeout: Duration,
    pub allow_private_networks: bool,
    /// Attempts in flight at once per channel, pinned; `None` (the default) learns each
    /// channel's limit from its latency and errors, up to `max_concurrency_per_channel`.
    pub concurrency_per_channel: Option<usize>,
    /// The ceiling of a learnt per-channel limit.
    pub max_concurrency_per_channel: usize,
    /// Most attempts in flight at once overall.
    pub workers: usize,
}

/// The default ceiling of a channel's learnt concurrency limit.
pub const DEFAULT_MAX_CONCURRENCY_PER_CHANNEL: usize = 64;
/// The default limit on attempts in flight overall: room for four channels at their
/// ceiling, so one slow endpoint at its ceiling never takes every slot.
pub const DEFAULT_WORKERS: usize = 256;

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
    /// The channel of this team that owner alerts (a channel disabled or failing) go to.
    pub alerts: Option<String>,
    /// Alert when a channel of this team has at least this many dead deliveries.
    pub alert_dead_letters: Option<u64>,
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
    /// Standard Webhooks secrets (`whsec_…`), from `secret` or `secrets`; each signs every
    /// request (several while receivers rotate); unsigned when empty.
    pub secrets: Vec<Secret>,
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

/// A source of events besides the HTTP API (`[[sources]]`).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique among the sources; labels the source's metrics and `/readyz` entry.
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    RedisStream(RedisStreamConfig),
    RedisPubSub(RedisPubSubConfig),
}

impl SourceKind {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceKind::RedisStream(_) => "redis_stream",
            SourceKind::RedisPubSub(_) => "redis_pubsub",
        }
    }
}

/// Whose events a source carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceTeam {
    /// Each event names its team in `team_id`; the team must be configured.
    Payload,
    /// Every event belongs to this team (an event naming another team is refused).
    Fixed(TeamId),
}

/// Default `claim_idle` of a Redis stream source.
pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);
/// Default `max_deliveries` of a Redis stream source.
pub const DEFAULT_MAX_DELIVERIES: u32 = 10;

/// `type = "redis_stream"`: a consumer group on a Redis stream.
#[derive(Debug, Clone)]
pub struct RedisStreamConfig {
    /// `redis://[user:password@]host[:port][/db]`; a secret (it may hold a password).
    pub url: Secret,
    pub stream: String,
    pub group: String,
    /// `None`: `<hostname>-<pid>`, decided when the source starts.
    pub consumer: Option<String>,
    /// The entry field holding the event JSON.
    pub field: String,
    pub team: SourceTeam,
    /// Entries pending this long with another consumer are taken over (XAUTOCLAIM).
    pub claim_idle: Duration,
    /// An entry delivered more often than this goes to the dead-letter stream.
    pub max_deliveries: u32,
}

impl RedisStreamConfig {
    /// Where entries that are not valid events are copied, with their reason.
    pub fn dead_stream(&self) -> String {
        format!("{}:herald-dead", self.stream)
    }
}

/// `type = "redis_pubsub"`: a Pub/Sub channel whose messages go to the live stream only.
#[derive(Debug, Clone)]
pub struct RedisPubSubConfig {
    pub url: Secret,
    pub channel: String,
    pub team: SourceTeam,
}

/// Default `[cluster] channel_prefix`.
pub const DEFAULT_CHANNEL_PREFIX: &str = "herald";

/// `[cluster]`.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// `redis://…`: the Pub/Sub server carrying the live stream between nodes; `None`
    /// keeps the live stream in process.
    pub live_bus: Option<Secret>,
    /// Prefix of the bus's Pub/Sub channel (`<prefix>:live`), so several herald
    /// clusters can share one Redis.
    pub channel_prefix: String,
    /// This node's name on the bus; `None`: `<hostname>-<pid>-<random>` at start.
    pub node_id: Option<String>,
}
