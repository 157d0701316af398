//! The SQL of noise control: dedup windows (decided inside `accept`'s transaction on the
//! writer thread) and silences.

use std::collections::BTreeMap;

use herald_core::{Outcome, Pattern, Silence, SilenceMatchers, SilenceState, TeamId, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries::{duration_nanos, nanos, timestamp};
use crate::error::StoreError;
use crate::model::{DedupClaim, MAX_PAGE_SIZE, SilenceFilter};

/// The delivery that opened a window for `claim.key` that is still open at `now` (opened
/// less than the claim's window ago), if one is.
pub(super) fn open_window(
    conn: &Connection,
    team: &TeamId,
    subscription: &str,
    claim: &DedupClaim,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let row: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT delivery_id, opened_at FROM dedup_windows
             WHERE team_id = ?1 AND subscription = ?2 AND key = ?3",
        )?
        .query_row(params![team.as_str(), subscription, claim.key], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    Ok(row.and_then(|(delivery, opened_at)| {
        (opened_at.saturating_add(duration_nanos(claim.window)) > now).then_some(delivery)
    }))
}

/// Opens (or reopens) the window of `key` at `now`, by `delivery_id`, which is sent.
pub(super) fn record_window(
    conn: &Connection,
    team: &TeamId,
    subscription: &str,
    key: &str,
    delivery_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO dedup_windows (team_id, subscription, key, delivery_id, opened_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (team_id, subscription, key) DO UPDATE SET
             delivery_id = excluded.delivery_id, opened_at = excluded.opened_at",
    )?
    .execute(params![team.as_str(), subscription, key, delivery_id, now])?;
    Ok(())
}

/// Forgets up to `batch` windows opened before `cutoff`; returns how many.
pub(super) fn prune_windows(conn: &Connection, cutoff: i64, batch: i64) -> Result<u64, StoreError> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM dedup_windows WHERE (team_id, subscription, key) IN
               (SELECT team_id, subscription, key FROM dedup_windows INDEXED BY dedup_windows_opened
                 WHERE opened_at < ?1 ORDER BY opened_at LIMIT ?2)",
        )?
        .execute(params![cutoff, batch])?;
    Ok(removed as u64)
}

/// Removes up to `batch` silences that ended before `cutoff`; returns how many.
pub(super) fn prune_silences(
    conn: &Connection,
    cutoff: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    let removed = conn
        .prepare_cached(
            "DELETE FROM silences WHERE seq IN
               (SELECT seq FROM silences INDEXED BY silences_ends
                 WHERE ends_at < ?1 ORDER BY ends_at LIMIT ?2)",
        )?
        .execute(params![cutoff, batch])?;
    Ok(removed as u64)
}

const SILENCE_COLUMNS: &str = "id, team_id, event_pattern, outcome, metadata, channel, \
     starts_at, ends_at, comment, created_by, created_at";

fn corrupt(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        Box::from(message),
    )
}

fn silence_from_row(row: &Row<'_>) -> rusqlite::Result<Silence> {
    let team: String = row.get(1)?;
    let pattern: Option<String> = row.get(2)?;
    let outcome: Option<String> = row.get(3)?;
    let metadata: String = row.get(4)?;
    Ok(Silence {
        id: row.get(0)?,
        team: TeamId::parse(&team).map_err(|m| corrupt(1, m))?,
        matchers: SilenceMatchers {
            event: pattern
                .map(|p| Pattern::parse(&p).map_err(|e| corrupt(2, e.to_string())))
                .transpose()?,
            outcome: match outcome.as_deref() {
                None => None,
                Some("success") => Some(Outcome::Success),
                Some("error") => Some(Outcome::Error),
                Some(other) => return Err(corrupt(3, format!("unknown outcome `{other}`"))),
            },
            metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata)
                .map_err(|e| corrupt(4, e.to_string()))?,
            channel: row.get(5)?,
        },
        starts_at: timestamp(row.get(6)?),
        ends_at: timestamp(row.get(7)?),
        comment: row.get(8)?,
        created_by: row.get(9)?,
        created_at: timestamp(row.get(10)?),
    })
}

pub(crate) fn create_silence(conn: &Connection, s: &Silence) -> Result<(), StoreError> {
    let metadata = serde_json::to_string(&s.matchers.metadata)
        .map_err(|_| StoreError::Internal("silence metadata could not be encoded"))?;
    conn.prepare_cached(
        "INSERT INTO silences (id, team_id, event_pattern, outcome, metadata, channel,
             starts_at, ends_at, comment, created_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        s.id,
        s.team.as_str(),
        s.matchers.event.as_ref().map(ToString::to_string),
        s.matchers.outcome.map(Outcome::as_str),
        metadata,
        s.matchers.channel,
        nanos(s.starts_at),
        nanos(s.ends_at),
        s.comment,
        s.created_by,
        nanos(s.created_at),
    ])?;
    Ok(())
}

pub(crate) fn list_silences(
    conn: &Connection,
    filter: &SilenceFilter,
) -> Result<Vec<Silence>, StoreError> {
    // ?2 = now; each state is a condition on the times.
    let state = match filter.state {
        None => "1 = 1",
        Some(SilenceState::Pending) => "starts_at > ?2",
        Some(SilenceState::Active) => "starts_at <= ?2 AND ends_at > ?2",
        Some(SilenceState::Expired) => "ends_at <= ?2",
    };
    let sql = format!(
        "SELECT {SILENCE_COLUMNS} FROM silences
         WHERE (?1 IS NULL OR team_id = ?1) AND ?2 IS NOT NULL AND {state}
         ORDER BY seq DESC LIMIT ?3"
    );
    let silences = conn
        .prepare_cached(&sql)?
        .query_map(
            params![
                filter.team.as_ref().map(TeamId::as_str),
                nanos(filter.now),
                MAX_PAGE_SIZE as i64
            ],
            silence_from_row,
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(silences)
}

pub(crate) fn get_silence(
    conn: &Connection,
    team: Option<&TeamId>,
    id: &str,
) -> Result<Option<Silence>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1 AND (?2 IS NULL OR team_id = ?2)"
        ))?
        .query_row(params![id, team.map(TeamId::as_str)], silence_from_row)
        .optional()?)
}

pub(crate) fn expire_silence(
    conn: &Connection,
    team: Option<&TeamId>,
    id: &str,
    now: Timestamp,
) -> Result<Silence, StoreError> {
    conn.prepare_cached(
        "UPDATE silences SET ends_at = ?3, starts_at = min(starts_at, ?3)
         WHERE id = ?1 AND (?2 IS NULL OR team_id = ?2) AND ends_at > ?3",
    )?
    .execute(params![id, team.map(TeamId::as_str), nanos(now)])?;
    get_silence(conn, team, id)?.ok_or(StoreError::NotFound)
}

pub(crate) fn live_silences(conn: &Connection, now: Timestamp) -> Result<Vec<Silence>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences INDEXED BY silences_ends
             WHERE ends_at > ?1 ORDER BY seq"
        ))?
        .query_map(params![nanos(now)], silence_from_row)?
        .collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests;
