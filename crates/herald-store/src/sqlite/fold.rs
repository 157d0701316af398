//! The SQL of grouping and throttling on the embedded store: where a delivery with a
//! [`FoldClaim`] goes (decided inside `accept`'s transaction on the writer thread, so
//! batches are decided one after another), what a digest carries, and forgetting groups
//! and windows that no longer matter. The timing rules are `crate::fold`'s.

use herald_core::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::queries::timestamp;
use crate::codec::decode_event;
use crate::error::StoreError;
use crate::fold::{GroupRow, Step, WindowRow, group_step, throttle_step};
use crate::model::{DigestMembers, FoldClaim};

/// Where one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Folded {
    /// Stored as usual.
    Alone,
    /// Folded into the digest `digest_id`; `opened` is its due time when this delivery
    /// opened it (the caller inserts the digest's row).
    Into {
        digest_id: String,
        opened: Option<i64>,
    },
}

/// SQL for "the digest whose id is in `column` is open": pending and not yet claimed.
fn open_digest(column: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.id = {column} AND d.status = 'pending' AND d.sealed = 0)"
    )
}

/// Decides a delivery of `team` (planned for `subscription`) with `claim` at `now`, and
/// updates its group or window.
pub(super) fn fold(
    conn: &Connection,
    team: &str,
    subscription: &str,
    claim: &FoldClaim,
    now: i64,
) -> Result<Folded, StoreError> {
    match claim {
        FoldClaim::Group {
            key,
            wait,
            interval,
            digest_id,
            ..
        } => {
            let row: Option<(String, i64, bool)> = conn
                .prepare_cached(&format!(
                    "SELECT g.digest_id, g.last_due, {} FROM digest_groups g
                      WHERE g.team_id = ?1 AND g.subscription = ?2 AND g.key = ?3",
                    open_digest("g.digest_id")
                ))?
                .query_row(params![team, subscription, key], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            let current = row.as_ref().map(|(_, last_due, open)| GroupRow {
                last_due: *last_due,
                open: *open,
            });
            match group_step(current, *wait, *interval, now) {
                Step::Join => Ok(Folded::Into {
                    digest_id: row
                        .map(|(id, _, _)| id)
                        .ok_or(StoreError::Internal("joined a group without a row"))?,
                    opened: None,
                }),
                Step::Open { due, expires_at } => {
                    conn.prepare_cached(
                        "INSERT INTO digest_groups (team_id, subscription, key, digest_id,
                             last_due, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (team_id, subscription, key) DO UPDATE SET
                             digest_id = excluded.digest_id, last_due = excluded.last_due,
                             expires_at = excluded.expires_at",
                    )?
                    .execute(params![
                        team,
                        subscription,
                        key,
                        digest_id,
                        due,
                        expires_at
                    ])?;
                    Ok(Folded::Into {
                        digest_id: digest_id.clone(),
                        opened: Some(due),
                    })
                }
                Step::Alone { .. } => Err(StoreError::Internal("a group sent a delivery alone")),
            }
        }
        FoldClaim::Throttle {
            scope,
            limit,
            per,
            digest_id,
            ..
        } => {
            let row: Option<(i64, u32, Option<String>, bool)> = conn
                .prepare_cached(&format!(
                    "SELECT w.started_at, w.count, w.digest_id, {} FROM throttle_windows w
                      WHERE w.team_id = ?1 AND w.scope = ?2",
                    open_digest("w.digest_id")
                ))?
                .query_row(params![team, scope], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            let current = row.as_ref().map(|(started_at, count, _, open)| WindowRow {
                started_at: *started_at,
                count: *count,
                open: *open,
            });
            let per_nanos = crate::codec::duration_nanos(*per);
            match throttle_step(current, *limit, *per, now) {
                Step::Alone { started_at, count } => {
                    conn.prepare_cached(
                        "INSERT INTO throttle_windows (team_id, scope, started_at, ends_at, count,
                             digest_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, NULL)
                         ON CONFLICT (team_id, scope) DO UPDATE SET
                             digest_id = CASE WHEN excluded.started_at = started_at
                                              THEN digest_id END,
                             started_at = excluded.started_at, ends_at = excluded.ends_at,
                             count = excluded.count",
                    )?
                    .execute(params![
                        team,
                        scope,
                        started_at,
                        started_at.saturating_add(per_nanos),
                        count
                    ])?;
                    Ok(Folded::Alone)
                }
                Step::Join => Ok(Folded::Into {
                    digest_id: row
                        .and_then(|(_, _, id, _)| id)
                        .ok_or(StoreError::Internal("joined a window without a digest"))?,
                    opened: None,
                }),
                Step::Open { due, .. } => {
                    conn.prepare_cached(
                        "UPDATE throttle_windows SET digest_id = ?3
                          WHERE team_id = ?1 AND scope = ?2",
                    )?
                    .execute(params![team, scope, digest_id])?;
                    Ok(Folded::Into {
                        digest_id: digest_id.clone(),
                        opened: Some(due),
                    })
                }
            }
        }
    }
}

/// The members of the digest `digest_id`: the first `limit` in fold order, how many in all.
pub(crate) fn digest_members(
    conn: &Connection,
    digest_id: &str,
    limit: usize,
) -> Result<Option<DigestMembers>, StoreError> {
    // One read transaction: the count and the listed members are one snapshot.
    let tx = conn.unchecked_transaction()?;
    let created: Option<i64> = tx
        .prepare_cached(
            "SELECT created_at FROM deliveries
              WHERE id = ?1 AND digest_kind IS NOT NULL AND digest_id IS NULL",
        )?
        .query_row(params![digest_id], |row| row.get(0))
        .optional()?;
    let Some(created) = created else {
        return Ok(None);
    };
    let (total, first, last): (i64, Option<i64>, Option<i64>) = tx
        .prepare_cached(
            "SELECT count(*), min(created_at), max(created_at) FROM deliveries
              WHERE digest_id = ?1",
        )?
        .query_row(params![digest_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .prepare_cached(
            "SELECT e.body, e.accepted_at FROM deliveries d JOIN events e ON e.seq = d.event_seq
              WHERE d.digest_id = ?1 ORDER BY d.seq LIMIT ?2",
        )?
        .query_map(params![digest_id, limit], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let events = rows
        .iter()
        .map(|(body, accepted_at)| decode_event(body, timestamp(*accepted_at)))
        .collect::<Result<Vec<_>, _>>()?;
    let at = |t: Option<i64>| -> Timestamp { timestamp(t.unwrap_or(created)) };
    Ok(Some(DigestMembers {
        events,
        total: u64::try_from(total).unwrap_or(0),
        first_at: at(first),
        last_at: at(last),
    }))
}

/// Forgets up to `batch` groups and up to `batch` windows whose interval (or period)
/// ended before `now` and that have no open digest; returns how many of each.
pub(super) fn prune(conn: &Connection, now: i64, batch: i64) -> Result<(u64, u64), StoreError> {
    let groups = conn
        .prepare_cached(&format!(
            "DELETE FROM digest_groups WHERE (team_id, subscription, key) IN
               (SELECT g.team_id, g.subscription, g.key
                  FROM digest_groups g INDEXED BY digest_groups_expires
                 WHERE g.expires_at < ?1 AND NOT {}
                 ORDER BY g.expires_at LIMIT ?2)",
            open_digest("g.digest_id")
        ))?
        .execute(params![now, batch])?;
    let windows = conn
        .prepare_cached(&format!(
            "DELETE FROM throttle_windows WHERE (team_id, scope) IN
               (SELECT w.team_id, w.scope FROM throttle_windows w INDEXED BY throttle_windows_ends
                 WHERE w.ends_at < ?1 AND NOT {}
                 ORDER BY w.ends_at LIMIT ?2)",
            open_digest("w.digest_id")
        ))?
        .execute(params![now, batch])?;
    Ok((groups as u64, windows as u64))
}

#[cfg(test)]
mod tests;
