//! The Telegram bots' memory, kept in the store: herald-channels' `BotState` (which knows
//! no store) implemented over `Store`, so chat migrations and split-delivery progress
//! survive a restart.

use std::sync::Arc;

use herald_channels::telegram::{BotState, Progress, StateError, StateFuture};
use herald_store::{ChatMigration, SplitProgress, Store, StoreError};

/// A [`BotState`] over the engine's store.
pub(crate) struct StoreBotState(pub Arc<dyn Store>);

fn state_error(e: StoreError) -> StateError {
    StateError(e.to_string())
}

impl BotState for StoreBotState {
    fn migrations<'a>(&'a self, bot: &'a str) -> StateFuture<'a, Vec<(i64, i64)>> {
        Box::pin(async move {
            let found = self.0.chat_migrations(bot).await.map_err(state_error)?;
            Ok(found.into_iter().map(|m| (m.from, m.to)).collect())
        })
    }

    fn save_migration<'a>(&'a self, bot: &'a str, from: i64, to: i64) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .record_chat_migration(bot, ChatMigration { from, to }, crate::now())
                .await
                .map_err(state_error)
        })
    }

    fn progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, Option<Progress>> {
        Box::pin(async move {
            let found = self
                .0
                .split_progress(delivery_id)
                .await
                .map_err(state_error)?;
            Ok(found.map(|p| Progress {
                parts: p.parts,
                delivered: p.delivered,
            }))
        })
    }

    fn save_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: Progress,
    ) -> StateFuture<'a, ()> {
        let progress = SplitProgress {
            parts: progress.parts,
            delivered: progress.delivered,
        };
        Box::pin(async move {
            self.0
                .set_split_progress(delivery_id, progress, crate::now())
                .await
                .map_err(state_error)
        })
    }

    fn clear_progress<'a>(&'a self, delivery_id: &'a str) -> StateFuture<'a, ()> {
        Box::pin(async move {
            self.0
                .clear_split_progress(delivery_id)
                .await
                .map(|_| ())
                .map_err(state_error)
        })
    }
}
