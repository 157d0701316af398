//! What a chat channel learnt that must outlive the process: chat migrations per bot and
//! the progress of split deliveries (migration 7).

use herald_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::queries::nanos;
use crate::error::StoreError;
use crate::model::{ChatMigration, SplitProgress};

pub(crate) fn chat_migrations(
    conn: &Connection,
    bot: &str,
) -> Result<Vec<ChatMigration>, StoreError> {
    let migrations = conn
        .prepare_cached("SELECT from_chat, to_chat FROM chat_migrations WHERE bot = ?1")?
        .query_map([bot], |row| {
            Ok(ChatMigration {
                from: row.get(0)?,
                to: row.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(migrations)
}

pub(crate) fn record_chat_migration(
    conn: &Connection,
    bot: &str,
    migration: ChatMigration,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO chat_migrations (bot, from_chat, to_chat, migrated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (bot, from_chat) DO UPDATE SET
             to_chat = excluded.to_chat, migrated_at = excluded.migrated_at",
    )?
    .execute(params![bot, migration.from, migration.to, nanos(now)])?;
    Ok(())
}

pub(crate) fn split_progress(
    conn: &Connection,
    delivery_id: &str,
) -> Result<Option<SplitProgress>, StoreError> {
    let progress = conn
        .prepare_cached("SELECT parts, delivered FROM split_progress WHERE delivery_id = ?1")?
        .query_row([delivery_id], |row| {
            Ok(SplitProgress {
                parts: row.get(0)?,
                delivered: row.get(1)?,
            })
        })
        .optional()?;
    Ok(progress)
}

pub(crate) fn set_split_progress(
    conn: &Connection,
    delivery_id: &str,
    progress: SplitProgress,
    now: Timestamp,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO split_progress (delivery_id, parts, delivered, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (delivery_id) DO UPDATE SET
             parts = excluded.parts, delivered = excluded.delivered,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        delivery_id,
        progress.parts,
        progress.delivered,
        nanos(now)
    ])?;
    Ok(())
}

pub(crate) fn clear_split_progress(
    conn: &Connection,
    delivery_id: &str,
) -> Result<bool, StoreError> {
    let removed = conn
        .prepare_cached("DELETE FROM split_progress WHERE delivery_id = ?1")?
        .execute([delivery_id])?;
    Ok(removed > 0)
}
