//! The Telegram channel: messages to a chat (or forum topic) through a bot, via teloxide.
//!
//! One [`TelegramBot`] per bot token, shared by every [`TelegramChannel`] of the process
//! and by the command answers ([`run_commands`]): it holds the HTTP client, the flood
//! control and what it learnt about migrated chats. The engine keeps the bot across
//! configuration reloads while its token and API URL stay the same
//! ([`TelegramBot::serves`]; new timeouts give a [`TelegramBot::reconfigured`] bot that
//! shares the flood control and migrations), so a reload forgets neither. A channel is a
//! chat id, an optional topic, a parse mode and `disable_notification`.
//!
//! **State that outlives the process.** Chat migrations and split-delivery progress go
//! through a [`BotState`] the builder provides (the engine's is its store; the default,
//! [`MemoryState`], lasts as long as the process). Migrations are keyed by the bot's
//! public id ([`TelegramBot::id`]), never its token, and read back by
//! [`TelegramBot::restore`].
//!
//! **Rendering.** Without a formatter, an event becomes [`render`]'s message, escaped for
//! the channel's parse mode; a digest becomes [`render_digest`]'s single message (as many
//! events as fit, then `… and N more`). A formatter's output is sent with the parse mode its format
//! implies (`html` → HTML, `markdown` → MarkdownV2 as given, `text`/`json` → plain).
//!
//! **Long messages are split, then truncated.** Telegram takes at most 4,096 characters
//! after entity parsing ([`MAX_MESSAGE_LEN`], counted in UTF-16 units). A longer message
//! is split into ordered parts labelled `(1/3) `, `(2/3) `…, cut at a line break near the
//! limit where there is one; the cut is made in the visible text, before escaping, so it
//! never falls inside an escape or a tag, and a style cut in two is closed and reopened.
//! At most [`MAX_PARTS`] parts are sent: beyond that the text is cut and the last part
//! ends with `[… truncated: N more characters not shown]`, because a chat flooded with
//! dozens of parts (taking a minute of the chat's rate limit) helps nobody. A formatter's
//! HTML or MarkdownV2 that does not fit is split the same way and sent as HTML parts.
//! Parts already delivered are recorded per delivery id in the bot's [`BotState`], so a
//! retried delivery resumes at the first missing part instead of repeating the others,
//! after a restart too; the record is cleared when the last part is delivered.
//!
//! **Limits.** Sends wait for Telegram's limits in herald's own flood control (see the
//! `limiter` module for why teloxide's `Throttle` adaptor is not used), so the Bot API
//! never has to refuse. A `429` with `retry_after` is waited out inside the send and the
//! message sent again: not a failed attempt. A wait longer than
//! [`TelegramOptions::max_retry_wait`] returns [`SendOutcome::Retry`] with `after`.
//!
//! **Errors.** `migrate_to_chat_id`: the message goes to the new chat at once, later sends
//! go there directly (after a restart too: the migration is recorded in the
//! [`BotState`]), and [`Channel::notice`] tells the operator to update `chat_id`.
//! 4xx answers (blocked, kicked, chat not found, can't parse entities, message too long)
//! are [`SendOutcome::Permanent`] with Telegram's description; a refused bot token (401,
//! or 404 for a token the API does not route) and a 429 without `retry_after` are
//! [`SendOutcome::ChannelFailure`] (every message of the bot meets them); "can't parse
//! entities" on a formatter's output is [`SendOutcome::RenderingRefused`], so the engine
//! resends with the built-in rendering; 5xx, network errors and unreadable replies are
//! [`SendOutcome::Retry`]. No error text contains the
//! bot token: teloxide puts it in every URL, so every text is scrubbed.
//!
//! **Commands.** [`run_commands`] long-polls for `/start` and `/status` in chats the bot is
//! in, independently of sending; the answers go through the same bot, so they take their
//! turn under the same flood control, at most [`MAX_ANSWERS_IN_FLIGHT`] at a time.

mod commands;
mod digest;
mod limiter;
mod markup;
mod render;
mod send;
mod state;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use herald_core::Secret;
use reqwest::Url;
use reqwest::redirect::Policy;

use crate::{Channel, Outgoing, SendFuture};

pub use commands::{MAX_ANSWERS_IN_FLIGHT, POLL_TIMEOUT, StatusFn, run_commands, start_reply};
pub use digest::render_digest;
pub use limiter::Limits;
pub use render::{
    MARKDOWN_V2_RESERVED, MAX_MESSAGE_LEN, MAX_PARTS, escape_html, escape_markdown_v2,
    escape_markdown_v2_code, render, telegram_len, truncation_marker,
};
pub use state::{BotState, MemoryState, Progress, StateError, StateFuture};

/// Telegram's Bot API.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// How a channel's messages are marked up (`parse_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ParseMode {
    #[default]
    Html,
    MarkdownV2,
    /// No `parse_mode`: the text is shown as is.
    Plain,
}

/// Options of a [`TelegramBot`]; the defaults suit Telegram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelegramOptions {
    /// The flood control applied before each message leaves.
    pub limits: Limits,
    /// Longest a send waits out Telegram's `retry_after` (all 429s of the send together);
    /// beyond it the send returns `Retry { after }` for the engine to schedule.
    pub max_retry_wait: Duration,
    /// Longest a send waits for its turn under [`Limits`] before giving up with `Retry`.
    pub max_queue_wait: Duration,
    /// One Bot API request, connect to last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for TelegramOptions {
    fn default() -> Self {
        TelegramOptions {
            limits: Limits::TELEGRAM,
            max_retry_wait: Duration::from_secs(60),
            max_queue_wait: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a bot cannot be built. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the telegram bot_token is empty")]
    EmptyToken,
    #[error(
        "the telegram bot_token contains whitespace, `/`, `?` or `#`; a token looks like `123456:ABC-DEF…`"
    )]
    TokenShape,
    #[error("the telegram api_url is not an http(s) URL with a host: {0}")]
    ApiUrl(String),
    #[error("{what} must be greater than zero")]
    ZeroTimeout { what: &'static str },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// One Telegram bot: the teloxide client for one token, its flood control and what it
/// learnt about migrated chats. Cheap to clone; share one among all channels of a token
/// and the command answers.
#[derive(Clone)]
pub struct TelegramBot {
    inner: Arc<BotInner>,
}

struct BotInner {
    bot: teloxide::Bot,
    token: Secret,
    api_url: Url,
    options: TelegramOptions,
    /// Shared with the bots [`TelegramBot::reconfigured`] makes of this one.
    limiter: Arc<limiter::Limiter>,
    /// The bot's public id ([`TelegramBot::id`]).
    id: String,
    /// Group id → the supergroup it became (`migrate_to_chat_id`): what `state` holds,
    /// read by [`TelegramBot::restore`], and what this process learnt since. Shared like
    /// the limiter.
    migrations: Arc<Mutex<HashMap<i64, i64>>>,
    state: Arc<dyn BotState>,
}

/// Shows the API's origin only: never the token.
impl fmt::Debug for TelegramBot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramBot")
            .field("id", &self.inner.id)
            .field("api", &self.inner.api_url.origin().ascii_serialization())
            .finish_non_exhaustive()
    }
}

impl TelegramBot {
    /// A bot with Telegram's limits and default timeouts. Checks the token's shape and
    /// the URL; touches no network.
    pub fn new(token: &Secret, api_url: &str) -> Result<TelegramBot, ConfigError> {
        TelegramBot::with_options(token, api_url, TelegramOptions::default())
    }

    /// A bot that remembers what it learns for the process's life ([`MemoryState`]).
    pub fn with_options(
        token: &Secret,
        api_url: &str,
        options: TelegramOptions,
    ) -> Result<TelegramBot, ConfigError> {
        TelegramBot::with_state(token, api_url, options, Arc::new(MemoryState::default()))
    }

    /// A bot that keeps chat migrations and split-delivery progress in `state`; call
    /// [`TelegramBot::restore`] before it sends, to learn what an earlier process
    /// recorded.
    pub fn with_state(
        token: &Secret,
        api_url: &str,
        options: TelegramOptions,
        state: Arc<dyn BotState>,
    ) -> Result<TelegramBot, ConfigError> {
        let raw = token.expose();
        if raw.is_empty() {
            return Err(ConfigError::EmptyToken);
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#'))
        {
            return Err(ConfigError::TokenShape);
        }
        let api_url = parse_api_url(api_url)?;
        check_options(&options)?;
        let client = http_client(&options, options.timeout)?;
        let bot = teloxide::Bot::with_client(raw, client).set_api_url(api_url.clone());
        Ok(TelegramBot {
            inner: Arc::new(BotInner {
                bot,
                token: token.clone(),
                api_url,
                limiter: Arc::new(limiter::Limiter::new(options.limits)),
                options,
                id: state::bot_id(raw),
                migrations: Arc::new(Mutex::new(HashMap::new())),
                state,
            }),
        })
    }

    /// This bot with other options (new timeouts after a reload): a new HTTP client,
    /// sharing this bot's flood control (unless `options.limits` differ), the migrations
    /// it learnt and its [`BotState`]. Itself when the options are the same.
    pub fn reconfigured(&self, options: TelegramOptions) -> Result<TelegramBot, ConfigError> {
        let inner = &self.inner;
        if options == inner.options {
            return Ok(self.clone());
        }
        check_options(&options)?;
        let client = http_client(&options, options.timeout)?;
        let bot = teloxide::Bot::with_client(inner.token.expose(), client)
            .set_api_url(inner.api_url.clone());
        let limiter = if options.limits == inner.options.limits {
            Arc::clone(&inner.limiter)
        } else {
            Arc::new(limiter::Limiter::new(options.limits))
        };
        Ok(TelegramBot {
            inner: Arc::new(BotInner {
                bot,
                token: inner.token.clone(),
                api_url: inner.api_url.clone(),
                options,
                limiter,
                id: inner.id.clone(),
                migrations: Arc::clone(&inner.migrations),
                state: Arc::clone(&inner.state),
            }),
        })
    }

    /// The bot's public id, under which its state is kept: the numeric id a token starts
    /// with (Telegram shows it to anyone talking to the bot), or a hash of an
    /// unusually shaped token. Never the token.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether this bot talks to `api_url` with `token`: then a reload keeps it (or a
    /// [`TelegramBot::reconfigured`] one), with its flood control and what it learnt.
    pub fn serves(&self, token: &Secret, api_url: &str) -> bool {
        token.expose() == self.inner.token.expose()
            && parse_api_url(api_url).is_ok_and(|url| url == self.inner.api_url)
    }

    /// Whether `other` shares this bot's flood control and the migrations it learnt (a
    /// clone, or a [`TelegramBot::reconfigured`] one); two bots built from the same token
    /// do not.
    pub fn shares_state_with(&self, other: &TelegramBot) -> bool {
        Arc::ptr_eq(&self.inner.limiter, &other.inner.limiter)
            && Arc::ptr_eq(&self.inner.migrations, &other.inner.migrations)
    }

    /// Reads the migrations an earlier process recorded in the bot's [`BotState`] (added
    /// to what this one knows); how many there are.
    pub async fn restore(&self) -> Result<usize, StateError> {
        let known = self.inner.state.migrations(&self.inner.id).await?;
        let count = known.len();
        let mut migrations = self.migrations();
        for (from, to) in known {
            if from != to {
                migrations.entry(from).or_insert(to);
            }
        }
        Ok(count)
    }

    pub(crate) fn state(&self) -> &dyn BotState {
        &*self.inner.state
    }

    /// The Bot API base URL in use.
    pub fn api_url(&self) -> &Url {
        &self.inner.api_url
    }

    pub fn options(&self) -> &TelegramOptions {
        &self.inner.options
    }

    /// The supergroup `chat` was migrated to, if a send to it was told so (followed to
    /// the end of a chain of migrations).
    pub fn migrated_to(&self, chat: i64) -> Option<i64> {
        let migrations = self.migrations();
        let mut current = *migrations.get(&chat)?;
        // A chain longer than the map would be a cycle; stop there.
        for _ in 0..migrations.len() {
            match migrations.get(&current) {
                Some(&next) if next != chat => current = next,
                _ => break,
            }
        }
        Some(current)
    }

    fn migrations(&self) -> MutexGuard<'_, HashMap<i64, i64>> {
        self.inner
            .migrations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers that `from` became `to`, in memory and in the bot's [`BotState`].
    async fn record_migration(&self, from: i64, to: i64) {
        if from == to {
            return;
        }
        self.migrations().insert(from, to);
        if let Err(error) = self
            .inner
            .state
            .save_migration(&self.inner.id, from, to)
            .await
        {
            tracing::warn!(from, to, %error, "cannot record a telegram chat migration; it holds until herald restarts");
        }
    }

    /// A teloxide bot for long polling: its requests may last `poll` plus the timeout.
    fn polling_bot(&self, poll: Duration) -> Result<teloxide::Bot, ConfigError> {
        let client = http_client(&self.inner.options, poll + self.inner.options.timeout)?;
        Ok(
            teloxide::Bot::with_client(self.inner.token.expose(), client)
                .set_api_url(self.inner.api_url.clone()),
        )
    }

    /// Removes the token from `text` (teloxide's URLs carry it), in every spelling a URL
    /// or error message might use.
    fn scrub(&self, text: &str) -> String {
        scrub_token(text, self.inner.token.expose())
    }
}

fn check_options(options: &TelegramOptions) -> Result<(), ConfigError> {
    if options.timeout.is_zero() {
        return Err(ConfigError::ZeroTimeout { what: "timeout" });
    }
    if options.connect_timeout.is_zero() {
        return Err(ConfigError::ZeroTimeout {
            what: "connect timeout",
        });
    }
    Ok(())
}

fn parse_api_url(api_url: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(api_url.trim()).map_err(|e| ConfigError::ApiUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::ApiUrl(format!(
            "scheme `{}` is not supported",
            url.scheme()
        )));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(ConfigError::ApiUrl("no host".to_string()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::ApiUrl(
            "a query or fragment cannot be part of it".to_string(),
        ));
    }
    // teloxide appends `bot<token>/<method>` as path segments: drop a trailing slash so
    // a self-hosted `https://host/tg/` does not become `/tg//bot…`.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty();
    }
    Ok(url)
}

fn http_client(
    options: &TelegramOptions,
    timeout: Duration,
) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(Policy::none())
        .timeout(timeout)
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .user_agent(crate::webhook::DEFAULT_USER_AGENT)
        .build()
        .map_err(ConfigError::Client)
}

pub(crate) fn scrub_token(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    let mut out = text.replace(token, "[redacted]");
    let encoded = token.replace(':', "%3A");
    out = out.replace(&encoded, "[redacted]");
    if let Some((_, secret)) = token.split_once(':')
        && secret.len() >= 8
    {
        out = out.replace(secret, "[redacted]");
    }
    out
}

/// One chat (or forum topic) that receives messages through a [`TelegramBot`].
#[derive(Debug, Clone)]
pub struct TelegramChannel {
    inner: Arc<ChannelInner>,
}

#[derive(Debug)]
struct ChannelInner {
    bot: TelegramBot,
    chat_id: i64,
    message_thread_id: Option<i32>,
    parse_mode: ParseMode,
    disable_notification: bool,
}

impl TelegramChannel {
    pub fn new(
        bot: TelegramBot,
        chat_id: i64,
        message_thread_id: Option<i32>,
        parse_mode: ParseMode,
        disable_notification: bool,
    ) -> TelegramChannel {
        TelegramChannel {
            inner: Arc::new(ChannelInner {
                bot,
                chat_id,
                message_thread_id,
                parse_mode,
                disable_notification,
            }),
        }
    }

    /// The chat id from the configuration.
    pub fn chat_id(&self) -> i64 {
        self.inner.chat_id
    }

    /// Where messages go now: the configured chat, or the supergroup it was migrated to.
    pub fn current_chat_id(&self) -> i64 {
        self.inner
            .bot
            .migrated_to(self.inner.chat_id)
            .unwrap_or(self.inner.chat_id)
    }

    pub fn message_thread_id(&self) -> Option<i32> {
        self.inner.message_thread_id
    }

    pub fn parse_mode(&self) -> ParseMode {
        self.inner.parse_mode
    }
}

impl Channel for TelegramChannel {
    fn kind(&self) -> &'static str {
        "telegram"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(send::send(self, msg))
    }

    fn notice(&self) -> Option<String> {
        let from = self.inner.chat_id;
        let to = self.inner.bot.migrated_to(from)?;
        Some(format!(
            "chat {from} was upgraded to a supergroup {to}; update chat_id in the config (messages go to {to} until then)"
        ))
    }
}
