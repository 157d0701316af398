//! herald-config: the TOML configuration, from files to validated core types.
//!
//! Loading reads the main file and its `include`s, resolves `env:` secrets, and checks
//! everything in one pass. Every problem is reported with the file, line and column it
//! comes from; loading never stops at the first problem.

mod diagnostic;
mod load;
mod model;
mod raw;
mod redact;

pub use diagnostic::{Diagnostic, Diagnostics, Location, Severity, SourceMap};
pub use load::{Env, LoadOutcome, load, load_with_env};
pub use model::{
    ChannelConfig, ClusterConfig, Config, DEFAULT_CHANNEL_PREFIX, DEFAULT_CLAIM_IDLE,
    DEFAULT_MAX_CONCURRENCY_PER_CHANNEL, DEFAULT_MAX_DELIVERIES, DEFAULT_PLUGIN_MEMORY_LIMIT,
    DEFAULT_PLUGIN_TIMEOUT, DEFAULT_WORKERS, DeliveryConfig, EmailChannelConfig, EmailConfig,
    FileChannelConfig, ParseMode, PluginConfig, PostgresConfig, RedisPubSubConfig,
    RedisStreamConfig, RetentionConfig, ServerConfig, SourceConfig, SourceKind, SourceTeam,
    StoreConfig, TeamConfig, TelegramChannelConfig, TelegramConfig, WebhookChannelConfig,
};
