//! What a chat channel learnt that must outlive the process, on PostgreSQL: chat
//! migrations per bot and the progress of split deliveries (migration 2). Single
//! statements, so they run outside a transaction.

use deadpool_postgres::GenericClient;
use herald_core::Timestamp;

use super::queries::{execute, rows, small};
use crate::codec::nanos;
use crate::error::StoreError;
use crate::model::{ChatMigration, SplitProgress};

pub(super) async fn chat_migrations(
    c: &impl GenericClient,
    bot: &str,
) -> Result<Vec<ChatMigration>, StoreError> {
    rows(
        c,
        "SELECT from_chat, to_chat FROM chat_migrations WHERE bot = $1",
        &[&bot],
    )
    .await?
    .iter()
    .map(|row| {
        Ok(ChatMigration {
            from: row.try_get(0)?,
            to: row.try_get(1)?,
        })
    })
    .collect()
}

pub(super) async fn record_chat_migration(
    c: &impl GenericClient,
    bot: &str,
    migration: ChatMigration,
    now: Timestamp,
) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO chat_migrations (bot, from_chat, to_chat, migrated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (bot, from_chat) DO UPDATE SET
             to_chat = excluded.to_chat, migrated_at = excluded.migrated_at",
        &[&bot, &migration.from, &migration.to, &nanos(now)],
    )
    .await?;
    Ok(())
}

pub(super) async fn split_progress(
    c: &impl GenericClient,
    delivery_id: &str,
) -> Result<Option<SplitProgress>, StoreError> {
    let found = rows(
        c,
        "SELECT parts, delivered FROM split_progress WHERE delivery_id = $1",
        &[&delivery_id],
    )
    .await?;
    found
        .first()
        .map(|row| {
            Ok(SplitProgress {
                parts: small("split parts", row.try_get(0)?)?,
                delivered: small("split delivered", row.try_get(1)?)?,
            })
        })
        .transpose()
}

pub(super) async fn set_split_progress(
    c: &impl GenericClient,
    delivery_id: &str,
    progress: SplitProgress,
    now: Timestamp,
) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO split_progress (delivery_id, parts, delivered, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (delivery_id) DO UPDATE SET
             parts = excluded.parts, delivered = excluded.delivered,
             updated_at = excluded.updated_at",
        &[
            &delivery_id,
            &i64::from(progress.parts),
            &i64::from(progress.delivered),
            &nanos(now),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn clear_split_progress(
    c: &impl GenericClient,
    delivery_id: &str,
) -> Result<bool, StoreError> {
    let removed = execute(
        c,
        "DELETE FROM split_progress WHERE delivery_id = $1",
        &[&delivery_id],
    )
    .await?;
    Ok(removed > 0)
}
