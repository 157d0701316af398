//! Telegram channel tests against the Bot API double on 127.0.0.1 (real HTTP), plus a
//! property test of the rendering against the double's independent entity parser.
//!
//! Why this file is long (~830 lines): many small data-driven cases against the Bot API
//! double (formats, splitting, flood limits, migrations, errors) plus a property test; they
//! share the helpers at the top.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use herald_core::{
    Actor, ActorType, Event, Format, Outcome, Rendered, Resource, Secret, TeamId, Timestamp,
};
use herald_testkit::telegram::{
    self as double, ChatBehaviour, DoubleOptions, RateLimits, TelegramDouble,
};
use proptest::prelude::*;

use super::*;
use crate::SendOutcome;

/// A bounded wait for background work (commands); never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);
const SUPERGROUP: i64 = -1_001_234_567_890;

fn event() -> Event {
    Event {
        id: "evt_1".into(),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        team_id: TeamId::parse("acme").unwrap(),
        actor: Some(Actor {
            kind: ActorType::User,
            id: Some("u_1".into()),
            name: Some("Alice <ops>".into()),
        }),
        resource: Some(Resource {
            id: "sb_42".into(),
            kind: "capsule".into(),
        }),
        metadata: BTreeMap::from([
            ("reason".to_string(), "oom (exit 137)".to_string()),
            ("region".to_string(), "eu-west-1".to_string()),
        ]),
        error: Some("out of memory: 2.5 GiB > 2 GiB limit & <no swap>".into()),
    }
}

/// A double without flood control, for tests about something else.
async fn double_unlimited() -> TelegramDouble {
    TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits::off(),
        ..DoubleOptions::default()
    })
    .await
}

fn options() -> TelegramOptions {
    TelegramOptions {
        limits: Limits::unlimited(),
        ..TelegramOptions::default()
    }
}

fn bot_with(double: &TelegramDouble, options: TelegramOptions) -> TelegramBot {
    TelegramBot::with_options(&Secret::new(double.token()), &double.api_url(), options).unwrap()
}

fn bot(double: &TelegramDouble) -> TelegramBot {
    bot_with(double, options())
}

fn channel(bot: &TelegramBot, chat: i64, mode: ParseMode) -> TelegramChannel {
    TelegramChannel::new(bot.clone(), chat, None, mode, false)
}

async fn send(channel: &TelegramChannel, delivery_id: &str, event: &Event) -> SendOutcome {
    send_rendered(channel, delivery_id, event, None).await
}

async fn send_rendered(
    channel: &TelegramChannel,
    delivery_id: &str,
    event: &Event,
    rendered: Option<&Rendered>,
) -> SendOutcome {
    let outcome = channel
        .send(&Outgoing {
            delivery_id,
            event,
            attempt: 1,
            rendered,
            digest: None,
        })
        .await;
    assert_no_token(&outcome);
    outcome
}

/// No text of `outcome` holds the bot token or its secret half.
fn assert_no_token(outcome: &SendOutcome) {
    let secret = double::DEFAULT_TOKEN.split_once(':').unwrap().1;
    let text = format!("{outcome:?} {outcome}");
    assert!(
        !text.contains(double::DEFAULT_TOKEN) && !text.contains(secret),
        "token leaked: {text}"
    );
}

fn assert_delivered(outcome: &SendOutcome) {
    assert!(
        matches!(outcome, SendOutcome::Delivered { .. }),
        "{outcome}"
    );
}

fn rendered(format: Format, body: &str) -> Rendered {
    Rendered {
        format,
        subject: None,
        body: body.to_string(),
        text_alternative: None,
    }
}

#[tokio::test]
async fn delivers_in_every_parse_mode() {
    let double = double_unlimited().await;
    let bot = bot(&double);
    let cases = [
        (1, ParseMode::Html, double::ParseMode::Html),
        (2, ParseMode::MarkdownV2, double::ParseMode::MarkdownV2),
        (3, ParseMode::Plain, double::ParseMode::Plain),
    ];
    for (chat, mode, expected) in cases {
        let channel = channel(&bot, chat, mode);
        assert_eq!(channel.kind(), "telegram");
        assert_eq!(channel.notice(), None);
        let outcome = send(&channel, "dlv_1", &event()).await;
        assert_delivered(&outcome);
        assert_eq!(outcome.status(), Some(200));

        let messages = double.messages(chat);
        assert_eq!(messages.len(), 1, "{mode:?}");
        let message = &messages[0];
        assert_eq!(message.parse_mode, expected);
        assert_eq!(message.message_thread_id, None);
        assert!(!message.disable_notification);
        assert_eq!(
            message.visible_text,
            "FAILED capsule.create\n\
             Resource: capsule sb_42\n\
             Actor: Alice <ops> (user u_1)\n\
             Team: acme\n\
             Time: 2026-11-25T12:00:00Z\n\
             Event: evt_1\n\
             \n\
             reason: oom (exit 137)\n\
             region: eu-west-1\n\
             \n\
             Error:\n\
             out of memory: 2.5 GiB > 2 GiB limit & <no swap>",
            "{mode:?}"
        );
        assert_eq!(
            outcome.response(),
            Some(format!("message {} in chat {chat}", message.message_id).as_str())
        );
    }
    let html = &double.messages(1)[0].text;
    assert!(
        html.starts_with("<b>FAILED</b> <b>capsule.create</b>\n"),
        "{html}"
    );
    assert!(
        html.contains("Alice &lt;ops&gt; (user <code>u_1</code>)"),
        "{html}"
    );
    assert!(
        html.contains("<pre>out of memory: 2.5 GiB &gt; 2 GiB limit &amp; &lt;no swap&gt;</pre>"),
        "{html}"
    );
    let markdown = &double.messages(2)[0].text;
    assert!(
        markdown.starts_with("*FAILED* *capsule\\.create*\n"),
        "{markdown}"
    );
    assert!(
        markdown.contains("*reason*: oom \\(exit 137\\)"),
        "{markdown}"
    );
    assert!(
        markdown.contains("```\nout of memory: 2.5 GiB > 2 GiB"),
        "{markdown}"
    );
}

#[tokio::test]
async fn thread_id_and_silence_are_passed_through() {
    let double = double_unlimited().await;
    let channel = TelegramChannel::new(bot(&double), SUPERGROUP, Some(7), ParseMode::Html, true);
    assert_delivered(&send(&channel, "dlv_1", &event()).await);
    let message = &double.messages(SUPERGROUP)[0];
    assert_eq!(message.message_thread_id, Some(7));
    assert!(message.disable_notification);
}

#[tokio::test]
async fn a_formatters_output_goes_with_the_parse_mode_of_its_format() {
    let double = double_unlimited().await;
    // The channel's own parse mode does not matter for a formatter's output.
    let channel = channel(&bot(&double), 5, ParseMode::Plain);
    let cases = [
        (
            Format::Html,
            "<b>capsule</b> &amp; co",
            double::ParseMode::Html,
            "capsule & co",
        ),
        (
            Format::Markdown,
            "*capsule* \\& co\\.",
            double::ParseMode::MarkdownV2,
            "capsule & co.",
        ),
        (
            Format::Text,
            "<b>as is</b> *x*",
            double::ParseMode::Plain,
            "<b>as is</b> *x*",
        ),
    ];
    for (i, (format, body, mode, visible)) in cases.into_iter().enumerate() {
        let outcome = send_rendered(
            &channel,
            &format!("dlv_{i}"),
            &event(),
            Some(&rendered(format, body)),
        )
        .await;
        assert_delivered(&outcome);
        let message = double.messages(5).pop().unwrap();
        assert_eq!(message.text, body, "sent as given");
        assert_eq!(message.parse_mode, mode);
        assert_eq!(message.visible_text, visible);
    }
}

#[tokio::test]
async fn long_messages_are_split_into_ordered_parts() {
    let double = double_unlimited().await;
    let channel = channel(&bot(&double), 5, ParseMode::MarkdownV2);
    let line = "stack frame at capsule::run (src/run.rs:42) <escaped> & *starred*.\n";
    let mut event = event();
    event.error = Some(line.repeat(150));
    let outcome = send(&channel, "dlv_long", &event).await;
    assert_delivered(&outcome);

    let messages = double.messages(5);
    assert_eq!(messages.len(), 3, "{} characters", 150 * line.len());
    for (i, message) in messages.iter().enumerate() {
        assert!(
            message.visible_text.starts_with(&format!("({}/3) ", i + 1)),
            "{}",
            &message.visible_text[..20]
        );
        assert!(double::telegram_len(&message.visible_text) <= MAX_MESSAGE_LEN);
    }
    // Cut at line breaks, so every line of the error arrives whole, in order.
    let joined: String = messages
        .iter()
        .map(|m| m.visible_text.split_once(' ').unwrap().1.to_string() + "\n")
        .collect();
    assert_eq!(joined.matches(line).count(), 150);
    assert!(joined.starts_with("FAILED capsule.create\n"));
    assert_eq!(
        outcome.response(),
        Some(
            format!(
                "messages {}, {}, {} in chat 5",
                messages[0].message_id, messages[1].message_id, messages[2].message_id
            )
            .as_str()
        )
    );
}

#[test]
fn beyond_max_parts_the_text_is_truncated_with_a_marker() {
    let mut event = event();
    event.metadata = (0..64)
        .map(|i| (format!("key{i:02}"), format!("{i} ").repeat(600)))
        .collect();
    for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
        let parts = render(&event, mode);
        assert_eq!(parts.len(), MAX_PARTS, "{mode:?}");
        let last = double::parse_entities(parts.last().unwrap(), double_mode(mode)).unwrap();
        assert!(
            last.starts_with(&format!("({MAX_PARTS}/{MAX_PARTS}) ")),
            "{mode:?}"
        );
        let marker_at = last.rfind("\n[… truncated: ").expect("marker");
        assert!(
            last[marker_at..].ends_with(" more characters not shown]"),
            "{last}"
        );
        for part in &parts {
            let visible = double::parse_entities(part, double_mode(mode)).unwrap();
            assert!(double::telegram_len(&visible) <= MAX_MESSAGE_LEN);
        }
    }
}

#[tokio::test]
async fn a_formatters_long_markup_is_split_into_html_parts() {
    let double = double_unlimited().await;
    let channel = channel(&bot(&double), 6, ParseMode::Html);
    let body = "*bold line* with `code` and [a link](https://example.com/x\\)y)\\.\n".repeat(150);
    let outcome = send_rendered(
        &channel,
        "dlv_md",
        &event(),
        Some(&rendered(Format::Markdown, &body)),
    )
    .await;
    assert_delivered(&outcome);
    let messages = double.messages(6);
    assert!(messages.len() >= 2, "{}", messages.len());
    for message in &messages {
        assert_eq!(message.parse_mode, double::ParseMode::Html);
        assert!(
            message
                .text
                .contains("<b>bold line</b> with <code>code</code>")
        );
        assert!(
            message
                .text
                .contains("<a href=\"https://example.com/x)y\">a link</a>.")
        );
    }
    let total: usize = messages
        .iter()
        .map(|m| {
            m.visible_text
                .matches("bold line with code and a link.")
                .count()
        })
        .sum();
    assert_eq!(total, 150);

    // Invalid markup too long for one message cannot be split: a permanent failure that
    // says why, without calling Telegram.
    let before = double.requests().len();
    let outcome = send_rendered(
        &channel,
        "dlv_bad",
        &event(),
        Some(&rendered(Format::Html, &"<b>unclosed ".repeat(1000))),
    )
    .await;
    assert_eq!(outcome.kind(), "permanent", "{outcome}");
    assert!(
        outcome.error().unwrap().contains("cannot be split"),
        "{outcome}"
    );
    assert_eq!(double.requests().len(), before);
}

#[tokio::test]
async fn a_migrated_group_is_followed_and_reported() {
    let double = double_unlimited().await;
    let group = -4242;
    double.set_chat_behaviour(group, ChatBehaviour::MigratedTo(SUPERGROUP));
    let channel = channel(&bot(&double), group, ParseMode::Html);

    let outcome = send(&channel, "dlv_1", &event()).await;
    assert_delivered(&outcome);
    assert_eq!(double.messages(SUPERGROUP).len(), 1);
    assert_eq!(channel.chat_id(), group);
    assert_eq!(channel.current_chat_id(), SUPERGROUP);
    let notice = channel.notice().expect("a notice");
    assert!(
        notice.starts_with(&format!(
            "chat {group} was upgraded to a supergroup {SUPERGROUP}; update chat_id in the config"
        )),
        "{notice}"
    );

    // Later sends go to the supergroup directly.
    assert_delivered(&send(&channel, "dlv_2", &event()).await);
    assert_eq!(double.messages(SUPERGROUP).len(), 2);
    let to_old_chat = double
        .requests()
        .iter()
        .filter(|r| r.chat_id == Some(group))
        .count();
    assert_eq!(to_old_chat, 1);
    // Another channel on the same bot and chat knows too.
    let sibling = self::channel(&channel.inner.bot, group, ParseMode::Plain);
    assert_eq!(sibling.current_chat_id(), SUPERGROUP);
    assert!(sibling.notice().is_some());
}

#[tokio::test]
async fn blocked_kicked_and_missing_chats_fail_permanently() {
    let double = double_unlimited().await;
    let bot = bot(&double);
    let cases = [
        (
            11,
            ChatBehaviour::Blocked,
            403,
            "Forbidden: bot was blocked by the user",
        ),
        (
            SUPERGROUP,
            ChatBehaviour::Kicked,
            403,
            "Forbidden: bot was kicked from the supergroup chat",
        ),
        (
            -12,
            ChatBehaviour::Kicked,
            403,
            "Forbidden: bot was kicked from the group chat",
        ),
        (
            13,
            ChatBehaviour::NotFound,
            400,
            "Bad Request: chat not found",
        ),
    ];
    for (chat, behaviour, status, description) in cases {
        double.set_chat_behaviour(chat, behaviour);
        let outcome = send(&channel(&bot, chat, ParseMode::Html), "dlv_1", &event()).await;
        assert_eq!(
            outcome,
            SendOutcome::Permanent {
                status: Some(status),
                error: description.to_string(),
                response: None
            }
        );
    }
}

#[tokio::test]
async fn markup_telegram_refuses_in_a_formatters_output_is_a_refused_rendering() {
    let double = double_unlimited().await;
    let channel = channel(&bot(&double), 5, ParseMode::MarkdownV2);
    let outcome = send_rendered(
        &channel,
        "dlv_1",
        &event(),
        Some(&rendered(Format::Markdown, "Deploy done.")),
    )
    .await;
    // A formatter's markup: the engine resends with the built-in rendering.
    assert_eq!(outcome.kind(), "rendering_refused", "{outcome}");
    assert_eq!(outcome.status(), Some(400));
    assert_eq!(
        outcome.error(),
        Some(
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        )
    );
}

#[tokio::test]
async fn a_bad_token_is_a_channel_failure_and_never_printed() {
    let double = double_unlimited().await;
    let wrong = "4242424242:AAWrong-token-that-is-long-enough-123456";
    let bot = TelegramBot::with_options(&Secret::new(wrong), &double.api_url(), options()).unwrap();
    let outcome = send(&channel(&bot, 5, ParseMode::Html), "dlv_1", &event()).await;
    assert_eq!(outcome.kind(), "channel_failure");
    assert_eq!(outcome.status(), Some(401));
    let text = format!("{outcome:?} {outcome} {bot:?}");
    assert!(text.contains("bad bot token"), "{text}");
    assert!(!text.contains(wrong) && !text.contains("AAWrong"), "{text}");
}

#[tokio::test]
async fn a_429_without_retry_after_is_a_channel_failure() {
    let double = double_unlimited().await;
    double.set_chat_behaviour(5, ChatBehaviour::Throttled { times: 1 });
    let channel = channel(&bot(&double), 5, ParseMode::Html);
    let outcome = send(&channel, "dlv_1", &event()).await;
    assert_eq!(outcome.kind(), "channel_failure", "{outcome}");
    assert_eq!(outcome.status(), Some(429));
    // The throttle passed: the next attempt goes out.
    assert_eq!(send(&channel, "dlv_1", &event()).await.kind(), "delivered");
}

#[tokio::test]
async fn server_errors_are_retried_later() {
    let double = double_unlimited().await;
    double.set_chat_behaviour(
        5,
        ChatBehaviour::ServerError {
            status: 500,
            times: 1,
        },
    );
    let channel = channel(&bot(&double), 5, ParseMode::Html);
    // teloxide pauses 10 s after any 5xx before returning it.
    let outcome = send(&channel, "dlv_1", &event()).await;
    assert_eq!(
        outcome,
        SendOutcome::Retry {
            after: None,
            status: Some(500),
            error: "Internal Server Error".to_string(),
            response: None
        }
    );
    assert_delivered(&send(&channel, "dlv_1", &event()).await);
}

#[tokio::test]
async fn network_errors_are_retried_and_scrubbed() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let bot =
        TelegramBot::with_options(&Secret::new(double::DEFAULT_TOKEN), &url, options()).unwrap();
    let outcome = send(&channel(&bot, 5, ParseMode::Html), "dlv_1", &event()).await;
    assert_eq!(outcome.kind(), "retry", "{outcome}");
    assert!(
        outcome
            .error()
            .unwrap()
            .starts_with("cannot reach the Bot API"),
        "{outcome}"
    );
}

#[tokio::test]
async fn a_429_is_waited_out_and_is_not_a_failed_attempt() {
    // herald's flood control off, so that the double's (one message per second, no
    // burst) has to refuse the second message.
    let double = TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits {
            per_chat_burst: 1,
            ..RateLimits::telegram()
        },
        ..DoubleOptions::default()
    })
    .await;
    let channel = channel(&bot(&double), 5, ParseMode::Html);
    assert_delivered(&send(&channel, "dlv_1", &event()).await);
    assert_delivered(&send(&channel, "dlv_2", &event()).await);
    assert_eq!(double.too_many_requests_sent(), 1);
    assert_eq!(double.messages(5).len(), 2);

    // A wait beyond the cap goes back to the engine, with Telegram's `retry_after`.
    let impatient = TelegramChannel::new(
        bot_with(
            &double,
            TelegramOptions {
                max_retry_wait: Duration::ZERO,
                ..options()
            },
        ),
        5,
        None,
        ParseMode::Html,
        false,
    );
    let outcome = send(&impatient, "dlv_3", &event()).await;
    assert_eq!(
        outcome,
        SendOutcome::Retry {
            after: Some(Duration::from_secs(1)),
            status: Some(429),
            error: "Too Many Requests: retry after 1 (chat 5)".to_string(),
            response: None
        }
    );
}

#[tokio::test]
async fn herald_keeps_within_the_limits_without_a_single_429() {
    // Telegram's limits 50 times faster, on both sides.
    let limits = RateLimits::telegram().scaled(50.0);
    let double = TelegramDouble::start_with(DoubleOptions {
        limits,
        ..DoubleOptions::default()
    })
    .await;
    let bot = bot_with(
        &double,
        TelegramOptions {
            limits: Limits::TELEGRAM.scaled(50.0),
            ..TelegramOptions::default()
        },
    );
    let event = Arc::new(event());
    let mut tasks = Vec::new();
    for i in 0..24 {
        // Twelve messages each to a private chat and to a group, concurrently.
        let chat = if i % 2 == 0 { 5 } else { -6 };
        let channel = channel(&bot, chat, ParseMode::Plain);
        let event = Arc::clone(&event);
        tasks.push(tokio::spawn(async move {
            send(&channel, &format!("dlv_{i}"), &event).await
        }));
    }
    for task in tasks {
        assert_delivered(&task.await.unwrap());
    }
    assert_eq!(double.messages(5).len(), 12);
    assert_eq!(double.messages(-6).len(), 12);
    assert_eq!(double.too_many_requests_sent(), 0);
}

#[tokio::test]
async fn a_retried_split_delivery_resumes_at_the_missing_part() {
    // The double takes one message per second per chat and herald sends without waiting
    // (no flood control, no patience for 429s): the first part goes through and the next
    // comes back as `Retry`, leaving the delivery half done.
    let double = TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits {
            per_chat_burst: 1,
            ..RateLimits::telegram()
        },
        ..DoubleOptions::default()
    })
    .await;
    let bot = bot_with(
        &double,
        TelegramOptions {
            max_retry_wait: Duration::ZERO,
            ..options()
        },
    );
    let channel = channel(&bot, 5, ParseMode::Html);
    let mut event = event();
    event.error = Some("line of a long error\n".repeat(400));
    let parts = render(&event, ParseMode::Html).len();
    assert_eq!(parts, 3);

    let outcome = send(&channel, "dlv_split", &event).await;
    assert_eq!(outcome.kind(), "retry", "{outcome}");
    assert_eq!(double.messages(5).len(), 1);

    // The engine retries the delivery (here at once; the bot holds the chat until
    // Telegram's `retry_after` has passed) until it is delivered.
    let mut attempts = 1;
    while send(&channel, "dlv_split", &event).await.kind() == "retry" {
        attempts += 1;
        assert!(attempts <= parts, "no progress after {attempts} attempts");
    }
    let messages = double.messages(5);
    assert_eq!(messages.len(), parts, "no part was sent twice");
    for (i, message) in messages.iter().enumerate() {
        assert!(
            message
                .visible_text
                .starts_with(&format!("({}/{parts}) ", i + 1))
        );
    }
}

/// A bot that keeps its state in `state`, as the engine's bots keep theirs in the store:
/// a new bot on the same state is herald after a restart.
async fn restarted_bot(double: &TelegramDouble, state: &Arc<MemoryState>) -> TelegramBot {
    let bot = TelegramBot::with_state(
        &Secret::new(double.token()),
        &double.api_url(),
        options(),
        Arc::clone(state) as Arc<dyn BotState>,
    )
    .unwrap();
    bot.restore().await.unwrap();
    bot
}

#[tokio::test]
async fn a_migration_recorded_in_the_bot_state_outlives_the_bot() {
    let double = double_unlimited().await;
    let group = -4242;
    double.set_chat_behaviour(group, ChatBehaviour::MigratedTo(SUPERGROUP));
    let state = Arc::new(MemoryState::default());
    let first = restarted_bot(&double, &state).await;
    assert_eq!(first.id(), double::BOT_ID.to_string());
    assert_delivered(&send(&channel(&first, group, ParseMode::Html), "dlv_1", &event()).await);
    assert_eq!(
        state.migrations(first.id()).await.unwrap(),
        [(group, SUPERGROUP)]
    );
    drop(first);

    // The next process: its first message goes to the supergroup, not the dead group.
    let second = restarted_bot(&double, &state).await;
    let channel = channel(&second, group, ParseMode::Html);
    assert_eq!(channel.current_chat_id(), SUPERGROUP);
    assert!(channel.notice().is_some());
    assert_delivered(&send(&channel, "dlv_2", &event()).await);
    let to_old_chat = double
        .requests()
        .iter()
        .filter(|r| r.chat_id == Some(group))
        .count();
    assert_eq!(to_old_chat, 1, "the old chat id was used again");
    assert_eq!(double.messages(SUPERGROUP).len(), 2);
    // Another bot's state is its own.
    assert!(state.migrations("1").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_split_delivery_resumes_on_a_new_bot_and_its_progress_is_cleared() {
    // As in `a_retried_split_delivery_resumes_at_the_missing_part`: the second part meets
    // a 429 the bot does not wait out, so the delivery is left half done.
    let double = TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits {
            per_chat_burst: 1,
            ..RateLimits::telegram()
        },
        ..DoubleOptions::default()
    })
    .await;
    let state = Arc::new(MemoryState::default());
    let impatient = TelegramBot::with_state(
        &Secret::new(double.token()),
        &double.api_url(),
        TelegramOptions {
            max_retry_wait: Duration::ZERO,
            ..options()
        },
        Arc::clone(&state) as Arc<dyn BotState>,
    )
    .unwrap();
    let mut event = event();
    event.error = Some("line of a long error\n".repeat(400));
    let outcome = send(
        &channel(&impatient, 5, ParseMode::Html),
        "dlv_split",
        &event,
    )
    .await;
    assert_eq!(outcome.kind(), "retry", "{outcome}");
    assert_eq!(double.messages(5).len(), 1);
    assert_eq!(
        state.progress("dlv_split").await.unwrap(),
        Some(Progress {
            parts: 3,
            delivered: 1
        })
    );
    drop(impatient);

    // A new bot (herald restarted) waits out the 429s and sends parts 2 and 3 only.
    let patient = restarted_bot(&double, &state).await;
    assert_delivered(&send(&channel(&patient, 5, ParseMode::Html), "dlv_split", &event).await);
    let messages: Vec<String> = double
        .messages(5)
        .iter()
        .map(|m| m.visible_text.chars().take(6).collect())
        .collect();
    assert_eq!(messages, ["(1/3) ", "(2/3) ", "(3/3) "]);
    assert_eq!(state.progress("dlv_split").await.unwrap(), None);
}

#[tokio::test]
async fn commands_answer_start_and_status_while_sending_goes_on() {
    let double = double_unlimited().await;
    let bot = bot(&double);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let status: StatusFn = Arc::new(|chat, thread| {
        format!("chat {chat} topic {thread:?}: subscribed to capsule.* via acme/oncall")
    });
    let commands = tokio::spawn(run_commands(bot.clone(), status, stop_rx));

    double.inject_text(SUPERGROUP, Some(3), "/start@herald_test_bot");
    let replies = double.wait_for_messages(SUPERGROUP, 1, PATIENCE).await;
    assert_eq!(replies.len(), 1, "no answer to /start");
    let reply = &replies[0];
    assert_eq!(reply.message_thread_id, Some(3));
    assert_eq!(reply.text, start_reply(SUPERGROUP, Some(3)));
    assert!(
        reply
            .visible_text
            .contains(&format!("This chat's id is {SUPERGROUP}"))
    );
    assert!(reply.visible_text.contains(&format!(
        "[teams.YOURTEAM.channels.NAME]\ntype = \"telegram\"\nchat_id = {SUPERGROUP}\nmessage_thread_id = 3\n"
    )));
    assert!(
        reply
            .visible_text
            .contains("[[teams.YOURTEAM.subscriptions]]\nchannel = \"NAME\"\nevents = [\"*\"]")
    );

    // A send while the poll is waiting goes through.
    assert_delivered(&send(&channel(&bot, 77, ParseMode::Html), "dlv_1", &event()).await);
    assert_eq!(double.messages(77).len(), 1);

    double.inject_text(99, None, "/status");
    double.inject_text(99, None, "/start@someone_else_bot");
    double.inject_text(99, None, "just chatting");
    let replies = double.wait_for_messages(99, 1, PATIENCE).await;
    assert_eq!(
        replies[0].visible_text,
        "chat 99 topic None: subscribed to capsule.* via acme/oncall"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(PATIENCE, commands)
        .await
        .expect("run_commands stops when told")
        .unwrap();
    // Only the /status got an answer in chat 99.
    assert_eq!(double.messages(99).len(), 1);
    let polls = double
        .requests()
        .iter()
        .filter(|r| r.method == "getupdates")
        .count();
    assert!(polls >= 2, "{polls}");
}

#[test]
fn construction_checks_the_token_and_url() {
    let token = Secret::new(double::DEFAULT_TOKEN);
    assert!(matches!(
        TelegramBot::new(&Secret::new(""), DEFAULT_API_URL),
        Err(ConfigError::EmptyToken)
    ));
    assert!(matches!(
        TelegramBot::new(&Secret::new("12:ab/cd"), DEFAULT_API_URL),
        Err(ConfigError::TokenShape)
    ));
    for url in ["ftp://x", "not a url", "http://h/?q=1", "mailto:a@b"] {
        let error = TelegramBot::new(&token, url).unwrap_err();
        assert!(matches!(error, ConfigError::ApiUrl(_)), "{url}: {error}");
    }
    let bot = TelegramBot::new(&token, "https://tg.example/self-hosted/").unwrap();
    assert_eq!(bot.api_url().as_str(), "https://tg.example/self-hosted");
    let debug = format!("{bot:?}");
    assert!(!debug.contains(double::DEFAULT_TOKEN), "{debug}");
    assert!(scrub_token("u/bot1:abcdefgh/x", "1:abcdefgh") == "u/bot[redacted]/x");
}

fn double_mode(mode: ParseMode) -> double::ParseMode {
    match mode {
        ParseMode::Html => double::ParseMode::Html,
        ParseMode::MarkdownV2 => double::ParseMode::MarkdownV2,
        ParseMode::Plain => double::ParseMode::Plain,
    }
}

/// Text that stresses escaping: any Unicode at all, or a soup of markup characters.
fn text(max: usize) -> BoxedStrategy<String> {
    const TRICKY: &str = "_*[]()~`>#+-=|{}.!\\<>&;\"' \n\tab&lt;&#1;é😀\u{0}\r\u{200d}";
    let tricky: Vec<char> = TRICKY.chars().collect();
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..max)
            .prop_map(|v| v.into_iter().collect::<String>()),
        proptest::collection::vec(proptest::sample::select(tricky), 0..max)
            .prop_map(|v| v.into_iter().collect::<String>()),
    ]
    .boxed()
}

fn arb_event() -> impl Strategy<Value = Event> {
    let metadata = prop_oneof![
        proptest::collection::btree_map(text(20), text(200), 0..6),
        // Long metadata: up to the envelope's limits, far beyond one message.
        proptest::collection::btree_map(text(128), text(2048), 20..64),
    ];
    (
        text(60),
        proptest::option::of(prop_oneof![Just(Outcome::Success), Just(Outcome::Error)]),
        proptest::option::of((text(40), text(40))),
        proptest::option::of((
            prop_oneof![
                Just(ActorType::User),
                Just(ActorType::ApiKey),
                Just(ActorType::System)
            ],
            proptest::option::of(text(40)),
            proptest::option::of(text(40)),
        )),
        metadata,
        proptest::option::of(text(9000)),
    )
        .prop_map(|(kind, outcome, resource, actor, metadata, error)| {
            let mut event = event();
            event.event = kind;
            event.outcome = outcome;
            event.resource = resource.map(|(kind, id)| Resource { id, kind });
            event.actor = actor.map(|(kind, id, name)| Actor { kind, id, name });
            event.metadata = metadata;
            event.error = error;
            event
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever the event holds, every part parses as Telegram would parse it (so our
    /// rendering never triggers "can't parse entities"), is 1–4096 characters after
    /// entity parsing, and shows the same text in every parse mode.
    #[test]
    fn any_event_renders_to_text_telegram_accepts(event in arb_event()) {
        let plain = render(&event, ParseMode::Plain);
        prop_assert!(!plain.is_empty() && plain.len() <= MAX_PARTS);
        for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
            let parts = render(&event, mode);
            prop_assert_eq!(parts.len(), plain.len());
            for (part, plain_part) in parts.iter().zip(&plain) {
                let visible = double::parse_entities(part, double_mode(mode));
                prop_assert!(visible.is_ok(), "{:?}: {:?} in {:?}", mode, visible, part);
                let visible = visible.unwrap();
                prop_assert!(!visible.trim().is_empty());
                prop_assert!(double::telegram_len(&visible) <= MAX_MESSAGE_LEN);
                prop_assert_eq!(&visible, plain_part);
            }
        }
    }
}

/// One runtime and one double for the property test that goes over HTTP.
static HTTP_FIXTURE: LazyLock<(tokio::runtime::Runtime, TelegramDouble)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let double = runtime.block_on(double_unlimited());
    (runtime, double)
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same through the double's HTTP API and teloxide, in every parse mode.
    #[test]
    fn any_event_is_delivered_by_the_double(event in arb_event()) {
        let (runtime, double) = &*HTTP_FIXTURE;
        let bot = bot(double);
        runtime.block_on(async {
            for (chat, mode) in [(21, ParseMode::Html), (22, ParseMode::MarkdownV2), (23, ParseMode::Plain)] {
                let outcome = send(&channel(&bot, chat, mode), "dlv_prop", &event).await;
                prop_assert!(matches!(outcome, SendOutcome::Delivered { .. }), "{:?}: {}", mode, outcome);
            }
            Ok(())
        })?;
    }
}

async fn send_digest(channel: &TelegramChannel, digest: &herald_core::Digest) -> SendOutcome {
    let outcome = channel
        .send(&Outgoing {
            delivery_id: &digest.id,
            event: &digest.events[0],
            attempt: 1,
            rendered: None,
            digest: Some(digest),
        })
        .await;
    assert_no_token(&outcome);
    outcome
}

#[tokio::test]
async fn a_digest_is_one_readable_message_in_every_parse_mode() {
    let double = double_unlimited().await;
    let bot = bot(&double);
    let mut digest = crate::digest_fixture::digest(3, 5);
    // Markup characters in what the chat shows are escaped like any event's.
    digest.events[1].error = Some("limit <2 GiB> & *no* swap_space".into());
    let mut visible = Vec::new();
    for (chat, mode) in [
        (31, ParseMode::Html),
        (32, ParseMode::MarkdownV2),
        (33, ParseMode::Plain),
    ] {
        assert_delivered(&send_digest(&channel(&bot, chat, mode), &digest).await);
        let messages = double.messages(chat);
        assert_eq!(messages.len(), 1, "{mode:?}");
        visible.push(messages[0].visible_text.clone());
    }
    // The same text in every mode: only the markup differs.
    assert_eq!(visible[0], visible[1]);
    assert_eq!(visible[0], visible[2]);
    insta::assert_snapshot!(visible[0], @r"
    DIGEST 5 × capsule.create (metadata.region = eu)
    Team: acme
    First: 2026-11-25T12:00:00.5Z
    Last: 2026-11-25T12:00:30Z

    • 12:00:00Z FAILED capsule.create sb_0: out of memory
    • 12:00:01Z FAILED capsule.create sb_1: limit <2 GiB> & *no* swap_space
    • 12:00:02Z FAILED capsule.create sb_2: out of memory
    … and 2 more
    ");
    let html = &double.messages(31)[0].text;
    assert!(
        html.starts_with("<b>DIGEST</b> <b>5 × capsule.create (metadata.region = eu)</b>\n"),
        "{html}"
    );
    assert!(
        html.contains("limit &lt;2 GiB&gt; &amp; *no* swap_space"),
        "{html}"
    );
    let markdown = &double.messages(32)[0].text;
    assert!(
        markdown.contains("limit <2 GiB\\> & \\*no\\* swap\\_space"),
        "{markdown}"
    );
}

#[test]
fn a_digest_lists_what_fits_in_one_message_and_counts_the_rest() {
    // A thousand listed events of ten thousand: as many lines as fit, then the rest counted.
    let digest = crate::digest_fixture::digest(1000, 10_000);
    for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
        let parts = render_digest(&digest, mode);
        assert_eq!(parts.len(), 1, "{mode:?}");
        let visible = double::parse_entities(&parts[0], double_mode(mode)).unwrap();
        assert!(double::telegram_len(&visible) <= MAX_MESSAGE_LEN);
        let listed = visible.lines().filter(|l| l.starts_with("• ")).count();
        assert!(listed > 20, "{listed} lines: {visible}");
        let last = visible.lines().last().unwrap();
        assert_eq!(last, format!("… and {} more", 10_000 - listed), "{mode:?}");
        // Listed in order, none skipped.
        for (i, line) in visible.lines().filter(|l| l.starts_with("• ")).enumerate() {
            assert!(line.contains(&format!(" sb_{i}:")), "{i}: {line}");
        }
    }
    // All listed and nothing more: no `and N more` line.
    let small = crate::digest_fixture::digest(4, 4);
    let visible = render_digest(&small, ParseMode::Plain).remove(0);
    assert!(!visible.contains("more"), "{visible}");
    assert_eq!(visible.lines().filter(|l| l.starts_with("• ")).count(), 4);
}

fn arb_digest() -> impl Strategy<Value = herald_core::Digest> {
    (
        proptest::collection::vec(arb_event(), 1..12),
        0u64..100_000,
        proptest::collection::vec((text(40), text(200)), 0..4),
    )
        .prop_map(|(events, extra, labels)| {
            let mut digest = crate::digest_fixture::digest(0, 0);
            digest.total = events.len() as u64 + extra;
            digest.events = events;
            digest.kind = herald_core::DigestKind::Group { labels };
            digest
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the digest holds, every part parses as Telegram would parse it, is
    /// 1–4096 characters, shows the same text in every parse mode, and counts every
    /// event: listed lines plus `and N more` make the total.
    #[test]
    fn any_digest_renders_to_text_telegram_accepts(digest in arb_digest()) {
        let plain = render_digest(&digest, ParseMode::Plain);
        prop_assert!(!plain.is_empty() && plain.len() <= MAX_PARTS);
        for mode in [ParseMode::Html, ParseMode::MarkdownV2, ParseMode::Plain] {
            let parts = render_digest(&digest, mode);
            prop_assert_eq!(parts.len(), plain.len());
            for (part, plain_part) in parts.iter().zip(&plain) {
                let visible = double::parse_entities(part, double_mode(mode));
                prop_assert!(visible.is_ok(), "{:?}: {:?} in {:?}", mode, visible, part);
                let visible = visible.unwrap();
                prop_assert!(double::telegram_len(&visible) <= MAX_MESSAGE_LEN);
                prop_assert_eq!(&visible, plain_part);
            }
        }
        if plain.len() == 1 {
            let text = &plain[0];
            let listed = text.lines().filter(|l| l.starts_with("• ")).count() as u64;
            let more = text
                .lines()
                .last()
                .and_then(|l| l.strip_prefix("… and "))
                .and_then(|l| l.strip_suffix(" more"))
                .map_or(0, |n| n.parse::<u64>().unwrap());
            prop_assert!(listed >= 1);
            prop_assert_eq!(listed + more, digest.total);
        }
    }
}
