//! herald-channels: the [`Channel`] trait and the channels that deliver notifications.
//!
//! One module per channel (`webhook`, `telegram`, `email`, `file`). A channel
//! turns one [`Outgoing`] message into one [`SendOutcome`]; it never retries, sleeps or
//! records anything itself: the engine decides how many attempts to make and when. One
//! exception: the Telegram channel waits for its turn under Telegram's flood limits and
//! waits out a `429 retry_after` (bounded), since those are pacing, not failures.
//!
//! Each channel has a built-in rendering of a single event and of a digest (one message
//! for many events: `herald_core::Digest`), both pure and public so that `herald explain`
//! shows exactly what would be sent.
//!
//! Architecture invariant: a channel's errors name their cause precisely and never contain
//! a secret (signing secrets, tokens, URL paths that may carry tokens).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use herald_core::Rendered;

#[cfg(test)]
mod digest_fixture;
pub mod email;
mod error_chain;
pub mod file;
pub mod telegram;
pub mod webhook;

pub use email::{EmailChannel, Mailer, MailerOptions};
pub use file::FileChannel;
pub use telegram::{TelegramBot, TelegramChannel};
pub use webhook::{HttpOptions, WebhookChannel, WebhookClient};

/// How much of a response body an outcome keeps, in bytes.
pub const RESPONSE_SNIPPET_LIMIT: usize = 4096;

/// One attempt at delivering one event (or one digest of events) through one channel.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Stable across retries of the same delivery; the webhook `webhook-id`.
    pub delivery_id: &'a str,
    /// The event; for a digest, its first event.
    pub event: &'a herald_core::Event,
    /// 1-based.
    pub attempt: u32,
    /// A formatter's output; `None` means the channel's built-in rendering (of the
    /// digest when there is one, else of the event).
    pub rendered: Option<&'a Rendered>,
    /// Set when this message stands for many events (grouping or throttle): without a
    /// formatter's output, the channel renders the digest instead of `event`.
    pub digest: Option<&'a herald_core::Digest>,
}

/// What became of one attempt.
///
/// `response` is the first [`RESPONSE_SNIPPET_LIMIT`] bytes of the response body, cut on a
/// character boundary, or `None` when there was no (non-empty) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Delivered {
        status: Option<u16>,
        response: Option<String>,
    },
    /// A transient failure. `after` is the server's `Retry-After`, if it sent one; the
    /// engine clamps it to its own schedule.
    Retry {
        after: Option<Duration>,
        status: Option<u16>,
        error: String,
        response: Option<String>,
    },
    /// Retrying will not help (a configuration problem such as an address refused by the
    /// SSRF guard).
    Permanent {
        status: Option<u16>,
        error: String,
        response: Option<String>,
    },
    /// The receiver asked never to be called again (HTTP 410 Gone): disable the channel.
    Disable {
        status: Option<u16>,
        error: String,
        response: Option<String>,
    },
    /// The channel as a whole cannot send now, whatever the message: refused credentials
    /// (SMTP 535, a bad bot token), a throttle without a hint (429 without `Retry-After`),
    /// an address the SSRF guard refuses in a DNS answer. The engine marks the channel
    /// failing and the delivery waits for its next turn on the schedule without using its
    /// retry budget. `after` is a hint when the remote gave one.
    ChannelFailure {
        after: Option<Duration>,
        status: Option<u16>,
        error: String,
        response: Option<String>,
    },
    /// The receiver refused the formatter's output as malformed (Telegram's "can't parse
    /// entities" on a plugin's markup): the engine sends the same message again, in the same
    /// attempt, with the built-in rendering. Only returned when `Outgoing::rendered` was
    /// given.
    RenderingRefused {
        status: Option<u16>,
        error: String,
        response: Option<String>,
    },
}

impl SendOutcome {
    /// `delivered`, `retry`, `permanent` or `disable`: for logs, metrics and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            SendOutcome::Delivered { .. } => "delivered",
            SendOutcome::Retry { .. } => "retry",
            SendOutcome::Permanent { .. } => "permanent",
            SendOutcome::Disable { .. } => "disable",
            SendOutcome::ChannelFailure { .. } => "channel_failure",
            SendOutcome::RenderingRefused { .. } => "rendering_refused",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            SendOutcome::Delivered { status, .. }
            | SendOutcome::Retry { status, .. }
            | SendOutcome::Permanent { status, .. }
            | SendOutcome::Disable { status, .. }
            | SendOutcome::ChannelFailure { status, .. }
            | SendOutcome::RenderingRefused { status, .. } => *status,
        }
    }

    /// The error text; `None` for `Delivered`.
    pub fn error(&self) -> Option<&str> {
        match self {
            SendOutcome::Delivered { .. } => None,
            SendOutcome::Retry { error, .. }
            | SendOutcome::Permanent { error, .. }
            | SendOutcome::Disable { error, .. }
            | SendOutcome::ChannelFailure { error, .. }
            | SendOutcome::RenderingRefused { error, .. } => Some(error),
        }
    }

    pub fn response(&self) -> Option<&str> {
        match self {
            SendOutcome::Delivered { response, .. }
            | SendOutcome::Retry { response, .. }
            | SendOutcome::Permanent { response, .. }
            | SendOutcome::Disable { response, .. }
            | SendOutcome::ChannelFailure { response, .. }
            | SendOutcome::RenderingRefused { response, .. } => response.as_deref(),
        }
    }
}

impl fmt::Display for SendOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendOutcome::Delivered {
                status: Some(s), ..
            } => write!(f, "delivered (HTTP {s})"),
            SendOutcome::Delivered { status: None, .. } => f.write_str("delivered"),
            SendOutcome::Retry {
                after: Some(after),
                error,
                ..
            } => write!(f, "retry after {}: {error}", fmt_duration(*after)),
            SendOutcome::Retry { error, .. } => write!(f, "retry: {error}"),
            SendOutcome::Permanent { error, .. } => write!(f, "permanent failure: {error}"),
            SendOutcome::Disable { error, .. } => write!(f, "disable the channel: {error}"),
            SendOutcome::ChannelFailure { error, .. } => write!(f, "channel failing: {error}"),
            SendOutcome::RenderingRefused { error, .. } => {
                write!(f, "formatter output refused: {error}")
            }
        }
    }
}

/// The future a [`Channel::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = SendOutcome> + Send + 'a>>;

/// A way of delivering a notification. Object-safe: the engine holds `Arc<dyn Channel>`.
pub trait Channel: Send + Sync + 'static {
    /// `"webhook"`, `"file"`, …
    fn kind(&self) -> &'static str;

    /// Makes one attempt. Never panics on a receiver's misbehaviour and never retries.
    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a>;

    /// Something an operator should act on, shown by the API next to the channel (the
    /// Telegram channel: "chat X was upgraded to a supergroup Y; update chat_id in the
    /// config"). `None` when all is well.
    fn notice(&self) -> Option<String> {
        None
    }
}

/// `15s`, `300ms`, `1500ms`: how durations appear in error messages.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
