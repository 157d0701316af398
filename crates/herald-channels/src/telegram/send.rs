//! One Telegram delivery: prepare the parts, send each under the flood control, follow
//! migrations, wait out 429s, and turn teloxide's errors into a [`SendOutcome`].

use std::time::Duration;

use herald_core::{Format, Rendered};
use teloxide::payloads::SendMessageSetters as _;
use teloxide::requests::{Request as _, Requester as _};
use teloxide::types::{ChatId, LinkPreviewOptions, MessageId, ThreadId};
use teloxide::{ApiError, RequestError};

use super::markup::{parse_html, parse_markdown_v2};
use super::render::{MAX_MESSAGE_LEN, Styled, split, telegram_len, write};
use super::{ParseMode, Progress, TelegramBot, TelegramChannel};
use crate::{Outgoing, SendOutcome};

/// Most migrations followed for one message (a group becomes a supergroup once).
const MAX_MIGRATIONS: usize = 2;

pub(super) async fn send(channel: &TelegramChannel, msg: &Outgoing<'_>) -> SendOutcome {
    let inner = &channel.inner;
    let parts = match prepare(msg, inner.parse_mode) {
        Ok(parts) => parts,
        Err(error) => {
            return SendOutcome::Permanent {
                status: None,
                error,
                response: None,
            };
        }
    };
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    let split = parts.len() > 1;
    let first = if split {
        resume_at(&inner.bot, msg.delivery_id, count).await
    } else {
        0
    };
    let mut sent = Vec::new();
    for (index, (text, mode)) in parts.iter().enumerate().skip(first) {
        let part = Part {
            chat: channel.current_chat_id(),
            thread: inner.message_thread_id,
            text,
            mode: *mode,
            disable_notification: inner.disable_notification,
        };
        match send_part(&inner.bot, part).await {
            Ok(id) => {
                sent.push(id);
                if index + 1 < parts.len() {
                    let progress = Progress {
                        parts: count,
                        delivered: u32::try_from(index + 1).unwrap_or(u32::MAX),
                    };
                    if let Err(error) = inner
                        .bot
                        .state()
                        .save_progress(msg.delivery_id, progress)
                        .await
                    {
                        tracing::warn!(delivery = msg.delivery_id, %error, "cannot record how far a split telegram message got; a retry may repeat parts");
                    }
                }
            }
            // Telegram refused the formatter's markup: the engine resends with the built-in
            // rendering, which herald escapes itself.
            Err(SendOutcome::Permanent {
                status,
                error,
                response,
            }) if msg.rendered.is_some() && error.contains("can't parse entities") => {
                return SendOutcome::RenderingRefused {
                    status,
                    error,
                    response,
                };
            }
            Err(outcome) => return outcome,
        }
    }
    if split && let Err(error) = inner.bot.state().clear_progress(msg.delivery_id).await {
        tracing::warn!(delivery = msg.delivery_id, %error, "cannot forget the progress of a delivered split telegram message");
    }
    let ids: Vec<String> = sent.iter().map(i32::to_string).collect();
    let response = match ids.len() {
        0 => format!("all {} parts were delivered before", parts.len()),
        1 => format!("message {} in chat {}", ids[0], channel.current_chat_id()),
        _ => format!(
            "messages {} in chat {}",
            ids.join(", "),
            channel.current_chat_id()
        ),
    };
    SendOutcome::Delivered {
        status: Some(200),
        response: Some(response),
    }
}

/// The first part still to send of a delivery of `parts` parts: after the parts an
/// earlier attempt delivered, if it split the message the same way.
async fn resume_at(bot: &TelegramBot, delivery_id: &str, parts: u32) -> usize {
    match bot.state().progress(delivery_id).await {
        Ok(Some(p)) if p.parts == parts => usize::try_from(p.delivered).unwrap_or(0),
        Ok(_) => 0,
        Err(error) => {
            tracing::warn!(delivery = delivery_id, %error, "cannot read how far a split telegram message got; sending every part");
            0
        }
    }
}

/// The texts to send, in order, each with its parse mode.
pub(super) fn prepare(
    msg: &Outgoing<'_>,
    mode: ParseMode,
) -> Result<Vec<(String, ParseMode)>, String> {
    let texts = match (msg.rendered, msg.digest) {
        (Some(rendered), _) => return prepare_rendered(rendered),
        (None, Some(digest)) => super::render_digest(digest, mode),
        (None, None) => super::render(msg.event, mode),
    };
    Ok(texts.into_iter().map(|text| (text, mode)).collect())
}

/// A formatter's output: as given when it fits, else split (and written as HTML).
fn prepare_rendered(rendered: &Rendered) -> Result<Vec<(String, ParseMode)>, String> {
    let body = &rendered.body;
    let (parsed, mode) = match rendered.format {
        Format::Text | Format::Json => (Ok(Styled::plain(body)), ParseMode::Plain),
        Format::Html => (parse_html(body), ParseMode::Html),
        Format::Markdown => (parse_markdown_v2(body), ParseMode::MarkdownV2),
    };
    match parsed {
        Ok(styled) if styled.len() <= MAX_MESSAGE_LEN => {
            let text = if mode == ParseMode::Plain {
                styled.text
            } else {
                body.clone()
            };
            Ok(vec![(text, mode)])
        }
        Ok(styled) => {
            let mode = if mode == ParseMode::Plain {
                ParseMode::Plain
            } else {
                ParseMode::Html
            };
            Ok(split(&styled)
                .iter()
                .map(|p| (write(p, mode), mode))
                .collect())
        }
        // Telegram has the last word on markup that fits in one message.
        Err(_) if telegram_len(body) <= MAX_MESSAGE_LEN => Ok(vec![(body.clone(), mode)]),
        Err(reason) => Err(format!(
            "the formatter's {} output is longer than one Telegram message and cannot be split: {reason}",
            match rendered.format {
                Format::Html => "HTML",
                _ => "MarkdownV2",
            }
        )),
    }
}

pub(super) struct Part<'a> {
    pub(super) chat: i64,
    pub(super) thread: Option<i32>,
    pub(super) text: &'a str,
    pub(super) mode: ParseMode,
    pub(super) disable_notification: bool,
}

/// Sends one message; its id, or the outcome that ends the delivery.
pub(super) async fn send_part(bot: &TelegramBot, part: Part<'_>) -> Result<i32, SendOutcome> {
    let inner = &bot.inner;
    let options = &inner.options;
    let mut chat = part.chat;
    let mut migrations = 0;
    let mut waited = Duration::ZERO;
    loop {
        let permit = match tokio::time::timeout(options.max_queue_wait, inner.limiter.acquire(chat))
            .await
        {
            Ok(permit) => permit,
            Err(_) => {
                return Err(SendOutcome::Retry {
                    after: None,
                    status: None,
                    error: format!(
                        "waited {} for a turn under Telegram's rate limits for chat {chat}; too many messages queued",
                        crate::fmt_duration(options.max_queue_wait)
                    ),
                    response: None,
                });
            }
        };
        let mut request = inner
            .bot
            .send_message(ChatId(chat), part.text)
            .link_preview_options(LinkPreviewOptions {
                is_disabled: true,
                url: None,
                prefer_small_media: false,
                prefer_large_media: false,
                show_above_text: false,
            });
        match part.mode {
            ParseMode::Html => request = request.parse_mode(teloxide::types::ParseMode::Html),
            ParseMode::MarkdownV2 => {
                request = request.parse_mode(teloxide::types::ParseMode::MarkdownV2);
            }
            ParseMode::Plain => {}
        }
        if let Some(thread) = part.thread {
            request = request.message_thread_id(ThreadId(MessageId(thread)));
        }
        if part.disable_notification {
            request = request.disable_notification(true);
        }
        let result = request.send().await;
        inner.limiter.complete(permit);
        match result {
            Ok(message) => return Ok(message.id.0),
            Err(RequestError::RetryAfter(seconds)) => {
                let after = seconds.duration();
                inner.limiter.hold(chat, after);
                if waited + after > options.max_retry_wait {
                    return Err(SendOutcome::Retry {
                        after: Some(after),
                        status: Some(429),
                        error: format!(
                            "Too Many Requests: retry after {} (chat {chat})",
                            seconds.seconds()
                        ),
                        response: None,
                    });
                }
                waited += after;
                tracing::debug!(
                    chat,
                    after_secs = seconds.seconds(),
                    "telegram 429; waiting"
                );
            }
            Err(RequestError::MigrateToChatId(to)) => {
                migrations += 1;
                if migrations > MAX_MIGRATIONS {
                    return Err(SendOutcome::Permanent {
                        status: Some(400),
                        error: format!("chat {chat} keeps migrating (last to {})", to.0),
                        response: None,
                    });
                }
                tracing::warn!(
                    from = chat,
                    to = to.0,
                    "telegram group was upgraded to a supergroup; update chat_id in the config"
                );
                bot.record_migration(chat, to.0).await;
                chat = to.0;
            }
            Err(error) => return Err(classify(bot, error)),
        }
    }
}

/// The outcome of a request that failed for a reason other than a 429 or a migration.
pub(super) fn classify(bot: &TelegramBot, error: RequestError) -> SendOutcome {
    match error {
        RequestError::Api(ApiError::InvalidToken) => SendOutcome::ChannelFailure {
            after: None,
            status: Some(401),
            error: "Unauthorized: Telegram refused the bot token (bad bot token); check [telegram] bot_token"
                .to_string(),
            response: None,
        },
        RequestError::Api(api) => {
            let description = match api {
                ApiError::Unknown(text) => text,
                other => other.to_string(),
            };
            let description = bot.scrub(&description);
            let status = status_of(&description);
            match status {
                // A refused token (401, or 404 for a token the API does not route) and a
                // 429 without `retry_after` refuse every message of the bot alike.
                Some(401 | 404 | 429) => SendOutcome::ChannelFailure {
                    after: None,
                    status,
                    error: description,
                    response: None,
                },
                Some(400..=499) => SendOutcome::Permanent {
                    status,
                    error: description,
                    response: None,
                },
                _ => SendOutcome::Retry {
                    after: None,
                    status,
                    error: description,
                    response: None,
                },
            }
        }
        RequestError::Network(error) => {
            let mut text = format!("cannot reach the Bot API: {error}");
            let mut source = std::error::Error::source(&*error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            SendOutcome::Retry {
                after: None,
                status: error.status().map(|s| s.as_u16()),
                error: bot.scrub(&text),
                response: None,
            }
        }
        RequestError::InvalidJson { raw, .. } => {
            let snippet: String = raw.chars().take(200).collect();
            SendOutcome::Retry {
                after: None,
                status: None,
                error: bot.scrub(&format!("the Bot API answered something other than its JSON envelope: {snippet}")),
                response: None,
            }
        }
        other => SendOutcome::Retry {
            after: None,
            status: None,
            error: bot.scrub(&other.to_string()),
            response: None,
        },
    }
}

/// The HTTP status a Bot API description implies: Telegram starts each with its status
/// phrase (`Bad Request: …`, `Forbidden: …`). teloxide keeps the description but drops
/// `error_code`, so this is how a 4xx (permanent) is told from a 5xx (transient).
fn status_of(description: &str) -> Option<u16> {
    const PHRASES: &[(&str, u16)] = &[
        ("Bad Request", 400),
        ("Unauthorized", 401),
        ("Forbidden", 403),
        ("Not Found", 404),
        ("Conflict", 409),
        ("Request Entity Too Large", 413),
        ("Too Many Requests", 429),
        ("Internal Server Error", 500),
        ("Bad Gateway", 502),
        ("Service Unavailable", 503),
        ("Gateway Timeout", 504),
    ];
    PHRASES
        .iter()
        .find(|(phrase, _)| description.starts_with(phrase))
        .map(|&(_, status)| status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_map_to_statuses() {
        assert_eq!(status_of("Bad Request: chat not found"), Some(400));
        assert_eq!(
            status_of("Forbidden: bot was blocked by the user"),
            Some(403)
        );
        assert_eq!(status_of("Internal Server Error"), Some(500));
        assert_eq!(status_of("Gateway Timeout"), Some(504));
        assert_eq!(status_of("something else"), None);
    }
}
