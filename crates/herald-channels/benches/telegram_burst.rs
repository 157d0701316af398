//! Telegram burst benchmark: 200 messages to one chat, and 200 spread over 50 chats,
//! through herald's Telegram channel to the Bot API double enforcing Telegram's limits.
//!
//! `cargo bench -p herald-channels --bench telegram_burst -- [--scale F] [--only one|spread]`
//!
//! Both sides use Telegram's limits (1 message/s per chat with bursts of 3, 20/min per
//! group, 30/s overall) with every time span divided by `--scale` (default 10), so the
//! single-chat burst takes ~20 s instead of ~200 s. It reports the total time, the minimum
//! the limits allow, and how many 429s the double had to send (the target is 0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_channels::telegram::{Limits, ParseMode, TelegramBot, TelegramOptions};
use herald_channels::{Channel, Outgoing, SendOutcome, TelegramChannel};
use herald_core::{Event, RawEvent, Secret, TeamId, Timestamp};
use herald_testkit::telegram::{DoubleOptions, RateLimits, TelegramDouble};

const MESSAGES: usize = 200;

fn event() -> Event {
    RawEvent::from_json(
        br#"{"id": "evt_1", "event": "capsule.create", "outcome": "error",
             "actor": {"type": "user", "id": "u_1", "name": "Alice"},
             "resource": {"id": "sb_42", "type": "capsule"},
             "metadata": {"reason": "oom", "region": "eu-west-1"},
             "error": "out of memory"}"#,
    )
    .expect("valid event")
    .into_event(
        Some(&TeamId::parse("acme").expect("team")),
        Timestamp::parse("2026-11-25T12:00:00Z").expect("time"),
        || unreachable!(),
    )
    .expect("complete event")
}

struct Run {
    elapsed: Duration,
    too_many_requests: u64,
    failed: usize,
}

async fn burst(scale: f64, chats: &[i64]) -> Run {
    let double = TelegramDouble::start_with(DoubleOptions {
        limits: RateLimits::telegram().scaled(scale),
        ..DoubleOptions::default()
    })
    .await;
    let bot = TelegramBot::with_options(
        &Secret::new(double.token()),
        &double.api_url(),
        TelegramOptions {
            limits: Limits::TELEGRAM.scaled(scale),
            max_queue_wait: Duration::from_secs(3600),
            ..TelegramOptions::default()
        },
    )
    .expect("bot");
    let event = Arc::new(event());
    let started = Instant::now();
    let tasks: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let chat = chats[i % chats.len()];
            let channel = TelegramChannel::new(bot.clone(), chat, None, ParseMode::Html, false);
            let event = Arc::clone(&event);
            tokio::spawn(async move {
                let delivery_id = format!("dlv_{i}");
                channel
                    .send(&Outgoing {
                        delivery_id: &delivery_id,
                        event: &event,
                        attempt: 1,
                        rendered: None,
                        digest: None,
                    })
                    .await
            })
        })
        .collect();
    let mut failed = 0;
    for task in tasks {
        if !matches!(task.await, Ok(SendOutcome::Delivered { .. })) {
            failed += 1;
        }
    }
    Run {
        elapsed: started.elapsed(),
        too_many_requests: double.too_many_requests_sent(),
        failed,
    }
}

/// The least time the limits allow for `per_chat` messages to each of `chats` chats
/// (none of them a group receiving more than 20): the per-chat bucket after its burst,
/// and the overall window.
fn minimum(limits: &Limits, chats: usize, per_chat: usize) -> Duration {
    let burst = limits.per_chat_burst as usize;
    let chat_bound = limits
        .per_chat_interval
        .mul_f64(per_chat.saturating_sub(burst) as f64);
    let total = chats * per_chat;
    let overall = limits.overall as usize;
    let windows = total.div_ceil(overall).saturating_sub(1);
    let overall_bound = limits.overall_window.mul_f64(windows as f64);
    chat_bound.max(overall_bound)
}

fn report(name: &str, scale: f64, run: &Run, min: Duration) {
    println!(
        "{name:<28} total {:>8.2} s (x{scale} = {:>7.1} s real)   minimum {:>7.2} s (x{scale} = {:>6.1} s)   overhead {:>5.1} %   429s {}   failed {}",
        run.elapsed.as_secs_f64(),
        run.elapsed.as_secs_f64() * scale,
        min.as_secs_f64(),
        min.as_secs_f64() * scale,
        (run.elapsed.as_secs_f64() / min.as_secs_f64() - 1.0) * 100.0,
        run.too_many_requests,
        run.failed,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let scale: f64 = value("--scale")
        .map(|s| s.parse().expect("--scale takes a number"))
        .unwrap_or(10.0);
    let only = value("--only");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let limits = Limits::TELEGRAM.scaled(scale);
    println!(
        "Telegram limits / {scale}: {:?} per chat (burst {}), {} per {:?} per group, {} per {:?} overall",
        limits.per_chat_interval,
        limits.per_chat_burst,
        limits.per_group,
        limits.group_window,
        limits.overall,
        limits.overall_window
    );
    if only.as_deref() != Some("spread") {
        let run = runtime.block_on(burst(scale, &[4242]));
        report(
            "200 to one private chat",
            scale,
            &run,
            minimum(&limits, 1, MESSAGES),
        );
    }
    if only.as_deref() != Some("one") {
        // 25 private chats and 25 groups, four messages each.
        let chats: Vec<i64> = (1..=25)
            .chain((1..=25).map(|i| -1_000_000_000_000 - i))
            .collect();
        let run = runtime.block_on(burst(scale, &chats));
        report(
            "200 over 50 chats",
            scale,
            &run,
            minimum(&limits, chats.len(), MESSAGES / chats.len()),
        );
    }
}
