//! What a bot must not forget at a restart: the chats it was told had migrated, and how
//! far each split delivery got. herald-channels does not depend on herald-store, so this
//! is a small trait, [`BotState`], that whoever builds the bot provides: the engine
//! implements it over its store; [`MemoryState`] (the default) keeps everything for the
//! process's life only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use sha2::{Digest as _, Sha256};

/// What a [`BotState`] method returns.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StateError>> + Send + 'a>>;

/// A [`BotState`] could not read or write. The bot carries on (a lost migration is
/// learnt again from the next send; lost progress repeats parts, which at-least-once
/// delivery allows) and logs it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// How far a delivery split into several messages got: `delivered` of `parts` are in the
/// chat. A retry resumes at the next part if the message still has `parts` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub parts: u32,
    pub delivered: u32,
}

/// Where a [`super::TelegramBot`] keeps what must outlive the process.
///
/// `bot` is [`super::TelegramBot::id`], the bot's public id (never its token). Migrations
/// are read once, by [`super::TelegramBot::restore`], and written as they are learnt;
/// progress is read at the start of each send of a message of several parts, written
/// after each part but the last, and cleared once the last part is delivered. A message
/// of one part touches none of it.
pub trait BotState: Send + Sync + 'static {
    /// Every migration recorded for `bot`, as `(from, to)` chat ids.
    fn migrations<'a>(&'a self, bot: &'a str) -> StateFuture<'a, Vec<(i64, i64)>>;

    /// Records that chat `from` became `to` for `bot`.
    fn save_migration<'a>(&'a self, bot: &'a str, from: i64, to: i64) -> StateFuture<'a, ()>;

    /// The recorded progress of a delivery, if any.
    fn progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, Option<Progress>>;

    /// Records (or replaces) the progress of a delivery.
    fn save_progress<'a>(&'a self, delivery_id: &'a str, progress: Progress)
    -> StateFuture<'a, ()>;

    /// Forgets the progress of a delivery whose last part was delivered.
    fn clear_progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, ()>;
}

/// Most progress entries [`MemoryState`] keeps; beyond it the oldest knowledge goes (a
/// retried delivery then repeats its earlier parts, which is still at least once).
const MAX_PROGRESS: usize = 4096;

/// A [`BotState`] in memory: what a bot learns is kept for the process's life.
#[derive(Debug, Default)]
pub struct MemoryState {
    migrations: Mutex<HashMap<(String, i64), i64>>,
    progress: Mutex<HashMap<String, Progress>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl BotState for MemoryState {
    fn migrations<'a>(&'a self, bot: &'a str) -> StateFuture<'a, Vec<(i64, i64)>> {
        let found = lock(&self.migrations)
            .iter()
            .filter(|((b, _), _)| b == bot)
            .map(|((_, from), to)| (*from, *to))
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save_migration<'a>(&'a self, bot: &'a str, from: i64, to: i64) -> StateFuture<'a, ()> {
        lock(&self.migrations).insert((bot.to_string(), from), to);
        Box::pin(std::future::ready(Ok(())))
    }

    fn progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, Option<Progress>> {
        let found = lock(&self.progress).get(delivery_id).copied();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: Progress,
    ) -> StateFuture<'a, ()> {
        let mut all = lock(&self.progress);
        if all.len() >= MAX_PROGRESS && !all.contains_key(delivery_id) {
            all.clear();
        }
        all.insert(delivery_id.to_string(), progress);
        Box::pin(std::future::ready(Ok(())))
    }

    fn clear_progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, ()> {
        lock(&self.progress).remove(delivery_id);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A bot's public identity, under which its state is kept: the numeric bot id that starts
/// a token (`123456:ABC…` → `123456`), which Telegram shows to anyone who talks to the
/// bot. A token of another shape is identified by a hash of it (`sha256:` and 16 hex
/// digits), which does not reveal it.
pub(super) fn bot_id(token: &str) -> String {
    match token.split_once(':') {
        Some((id, _)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => id.to_string(),
        _ => {
            let digest = Sha256::digest(token.as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bot_is_known_by_its_public_id_never_its_token() {
        assert_eq!(
            bot_id("4242424242:AAHerald-testkit_double-token"),
            "4242424242"
        );
        let odd = "not-a-real-token-shape";
        let id = bot_id(odd);
        assert!(id.starts_with("sha256:") && id.len() == 7 + 16, "{id}");
        assert!(!id.contains(odd));
        assert_ne!(bot_id("other-shape"), id);
        assert_eq!(bot_id(":secret"), bot_id(":secret"));
        assert!(bot_id(":secret").starts_with("sha256:"));
    }
}
