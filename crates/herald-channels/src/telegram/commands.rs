//! The chat side of the bot: `/start` tells a chat how to subscribe it, `/status` what
//! it is subscribed to. Long polling (`getUpdates`) in a task of its own.
//!
//! Polling never holds up sending: it has its own HTTP client (a long poll occupies a
//! connection for up to [`POLL_TIMEOUT`]) and replies are sent from tasks of their own,
//! through the bot that sends the notifications, so they take their turn under the same
//! flood control (give `run_commands` that bot, not another one for the same token).
//!
//! At most [`MAX_ANSWERS_IN_FLIGHT`] answers are being sent at a time. A command that
//! arrives while that many are still waiting for their turn is dropped, with a warning in
//! the log: answers are a courtesy and notifications the work, so a chat flooding the bot
//! with commands queues nothing in front of them (the user can ask again).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use teloxide::payloads::GetUpdatesSetters as _;
use teloxide::requests::{Request as _, Requester as _};
use teloxide::types::{AllowedUpdate, UpdateKind};
use tokio::sync::watch;

use super::render::{Style, Styled, split, write};
use super::{ParseMode, TelegramBot};

/// How long one `getUpdates` waits for updates (Telegram's long polling `timeout`).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most command answers being sent at once; see the module's documentation.
pub const MAX_ANSWERS_IN_FLIGHT: usize = 4;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The function behind `/status`: the text to answer for a chat and topic.
pub type StatusFn = Arc<dyn Fn(i64, Option<i32>) -> String + Send + Sync>;

/// Answers `/start` and `/status` (also `/start@thisbot`) until `stop` turns true or its
/// sender is dropped, through `bot`: the bot that sends the notifications, whose flood
/// control the answers share. Errors are logged and retried with exponential backoff (1 s
/// to 60 s); the token never appears in logs.
pub async fn run_commands(
    bot: TelegramBot,
    status: Arc<dyn Fn(i64, Option<i32>) -> String + Send + Sync>,
    mut stop: watch::Receiver<bool>,
) {
    let poller = match bot.polling_bot(POLL_TIMEOUT) {
        Ok(poller) => poller,
        Err(e) => {
            tracing::error!(error = %e, "telegram commands disabled: cannot build the HTTP client");
            return;
        }
    };
    let answers = Answers::new(bot.clone(), MAX_ANSWERS_IN_FLIGHT);
    let mut username: Option<String> = None;
    let mut offset: i32 = 0;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        if username.is_none() {
            // Known once: lets `/start@otherbot` in a group be left to the other bot.
            tokio::select! {
                me = poller.get_me().send() => {
                    if let Ok(me) = me {
                        username = me.user.username.clone();
                    }
                }
                () = stopped(&mut stop) => return,
            }
        }
        let request = poller
            .get_updates()
            .offset(offset)
            .timeout(u32::try_from(POLL_TIMEOUT.as_secs()).unwrap_or(10))
            .allowed_updates([AllowedUpdate::Message]);
        let result = tokio::select! {
            result = request.send() => result,
            () = stopped(&mut stop) => return,
        };
        match result {
            Ok(updates) => {
                backoff = FIRST_BACKOFF;
                let mut dropped = 0_usize;
                for update in updates {
                    let next = i32::try_from(update.id.0)
                        .unwrap_or(i32::MAX)
                        .saturating_add(1);
                    offset = offset.max(next);
                    if let UpdateKind::Message(message) = update.kind {
                        let thread = message
                            .is_topic_message
                            .then_some(message.thread_id)
                            .flatten()
                            .map(|t| t.0.0);
                        let chat = message.chat.id.0;
                        let reply = message.text().and_then(|text| {
                            reply(&status, username.as_deref(), chat, thread, text)
                        });
                        if let Some(reply) = reply
                            && !answers.start(chat, thread, reply)
                        {
                            dropped += 1;
                        }
                    }
                }
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        in_flight = MAX_ANSWERS_IN_FLIGHT,
                        "telegram commands left unanswered: as many answers as allowed are still waiting for their turn"
                    );
                }
            }
            Err(error) => {
                let error = bot.scrub(&error.to_string());
                tracing::warn!(%error, retry_in = ?backoff, "telegram getUpdates failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Resolves once `stop` holds `true` or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The command in `text` (`/start`, `/start@bot args`) when it is addressed to us.
fn command<'t>(text: &'t str, username: Option<&str>) -> Option<&'t str> {
    let word = text.strip_prefix('/')?.split_whitespace().next()?;
    match word.split_once('@') {
        Some((command, target)) => {
            let ours = username.is_none_or(|name| name.eq_ignore_ascii_case(target));
            ours.then_some(command)
        }
        None => Some(word),
    }
}

/// The answer to `text` in `chat`, if it is a command of ours.
fn reply(
    status: &StatusFn,
    username: Option<&str>,
    chat: i64,
    thread: Option<i32>,
    text: &str,
) -> Option<Styled> {
    match command(text, username) {
        Some(c) if c.eq_ignore_ascii_case("start") => Some(start_message(chat, thread)),
        Some(c) if c.eq_ignore_ascii_case("status") => Some(Styled::plain(&status(chat, thread))),
        _ => None,
    }
}

/// The answers being sent, at most a bound at a time.
struct Answers {
    bot: TelegramBot,
    permits: Arc<Semaphore>,
}

impl Answers {
    fn new(bot: TelegramBot, bound: usize) -> Answers {
        Answers {
            bot,
            permits: Arc::new(Semaphore::new(bound)),
        }
    }

    /// Starts sending `reply` to `chat` (in a task of its own, under the bot's flood
    /// control); `false`, and nothing is sent, when the bound is reached.
    fn start(&self, chat: i64, thread: Option<i32>, reply: Styled) -> bool {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            return false;
        };
        let bot = self.bot.clone();
        tokio::spawn(async move {
            // Held until the last part is answered (or the answer failed).
            let _permit = permit;
            for part in split(&reply) {
                let text = write(&part, ParseMode::Html);
                let part = super::send::Part {
                    chat,
                    thread,
                    text: &text,
                    mode: ParseMode::Html,
                    disable_notification: false,
                };
                if let Err(outcome) = super::send::send_part(&bot, part).await {
                    tracing::warn!(chat, %outcome, "cannot answer a telegram command");
                    return;
                }
            }
        });
        true
    }
}

/// What `/start` answers in `chat` (and topic `thread`), as HTML: the ids and the TOML
/// that declares a channel for this chat and subscribes it.
pub fn start_reply(chat: i64, thread: Option<i32>) -> String {
    write(&start_message(chat, thread), ParseMode::Html)
}

fn start_message(chat: i64, thread: Option<i32>) -> Styled {
    let mut m = Styled::default();
    m.push("This chat's id is ");
    m.push_styled(Style::Code, &chat.to_string());
    if let Some(thread) = thread {
        m.push(", this topic's id is ");
        m.push_styled(Style::Code, &thread.to_string());
    }
    m.push(".\n\nTo send herald notifications here, add this to herald's configuration:\n");
    let mut toml =
        format!("[teams.YOURTEAM.channels.NAME]\ntype = \"telegram\"\nchat_id = {chat}\n");
    if let Some(thread) = thread {
        toml.push_str(&format!("message_thread_id = {thread}\n"));
    }
    toml.push_str("\n[[teams.YOURTEAM.subscriptions]]\nchannel = \"NAME\"\nevents = [\"*\"]");
    m.push_styled(Style::Pre(Some("toml".to_string())), &toml);
    m.push("\nReplace YOURTEAM with your team and NAME with a channel name, narrow ");
    m.push_styled(Style::Code, "events");
    m.push(" to what this chat should see, then reload herald. ");
    m.push_styled(Style::Code, "/status");
    m.push(" shows what this chat receives.");
    m
}

#[cfg(test)]
mod tests {
    use herald_core::Secret;
    use herald_testkit::telegram::{DoubleOptions, RateLimits, TelegramDouble};

    use super::*;
    use crate::telegram::{Limits, TelegramOptions};

    async fn double() -> TelegramDouble {
        TelegramDouble::start_with(DoubleOptions {
            limits: RateLimits::off(),
            ..DoubleOptions::default()
        })
        .await
    }

    fn bot(double: &TelegramDouble, limits: Limits) -> TelegramBot {
        let options = TelegramOptions {
            limits,
            max_queue_wait: Duration::from_secs(3600),
            ..TelegramOptions::default()
        };
        TelegramBot::with_options(&Secret::new(double.token()), &double.api_url(), options).unwrap()
    }

    #[tokio::test]
    async fn answers_beyond_the_bound_are_dropped() {
        let double = double().await;
        // No message may leave (an overall limit of zero): every answer started waits for
        // its turn, holding its place in the bound.
        let stuck = bot(
            &double,
            Limits {
                overall: 0,
                ..Limits::unlimited()
            },
        );
        let answers = Answers::new(stuck, 2);
        assert!(answers.start(1, None, Styled::plain("one")));
        assert!(answers.start(2, None, Styled::plain("two")));
        assert!(!answers.start(3, None, Styled::plain("three")));
        assert_eq!(answers.permits.available_permits(), 0);
        assert!(double.all_messages().is_empty());
    }

    #[tokio::test]
    async fn a_sent_answer_frees_its_place() {
        let double = double().await;
        let answers = Answers::new(bot(&double, Limits::unlimited()), 1);
        assert!(answers.start(5, None, Styled::plain("first")));
        let sent = double
            .wait_for_messages(5, 1, Duration::from_secs(30))
            .await;
        assert_eq!(sent.len(), 1);
        // The permit goes back when the task ends, just after the reply arrived.
        let permit = tokio::time::timeout(Duration::from_secs(30), answers.permits.acquire())
            .await
            .expect("the answer's place is freed");
        drop(permit);
        assert!(answers.start(5, None, Styled::plain("second")));
        let sent = double
            .wait_for_messages(5, 2, Duration::from_secs(30))
            .await;
        assert_eq!(sent[1].visible_text, "second");
    }

    #[test]
    fn commands_addressed_to_us() {
        assert_eq!(command("/start", None), Some("start"));
        assert_eq!(
            command("/start@herald_bot", Some("herald_bot")),
            Some("start")
        );
        assert_eq!(
            command("/start@Herald_Bot now", Some("herald_bot")),
            Some("start")
        );
        assert_eq!(command("/start@other_bot", Some("herald_bot")), None);
        assert_eq!(
            command("/status extra words", Some("herald_bot")),
            Some("status")
        );
        assert_eq!(command("hello /start", None), None);
        assert_eq!(command("/", None), None);
    }

    #[test]
    fn the_start_reply_holds_a_snippet_for_this_chat() {
        let reply = start_reply(-1001234, Some(7));
        assert!(reply.contains("<code>-1001234</code>"), "{reply}");
        assert!(
            reply.contains("chat_id = -1001234\nmessage_thread_id = 7\n"),
            "{reply}"
        );
        assert!(
            reply.contains("[teams.YOURTEAM.channels.NAME]\ntype = \"telegram\""),
            "{reply}"
        );
        assert!(
            reply.contains("[[teams.YOURTEAM.subscriptions]]\nchannel = \"NAME\""),
            "{reply}"
        );
        let private = start_reply(42, None);
        assert!(!private.contains("message_thread_id"), "{private}");
    }
}
