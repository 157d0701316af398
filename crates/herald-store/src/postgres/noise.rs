//! The SQL of noise control on PostgreSQL: dedup windows (decided inside `accept`'s
//! transaction) and silences.
//!
//! With several nodes accepting at once, one key must still be sent once. The decision is
//! one `INSERT … ON CONFLICT DO UPDATE … WHERE` on the window's row: the insert of a new
//! key waits on the unique index for a concurrent transaction inserting the same key and
//! then sees its row; an existing row is locked whether or not the condition (the window
//! has closed) lets it be updated. So two transactions deciding one key are serialised by
//! that row, and the second sees what the first decided.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use herald_core::{Outcome, Pattern, Silence, SilenceMatchers, SilenceState, TeamId, Timestamp};
use tokio_postgres::Row;

use super::queries::{corrupt, execute, row_opt, rows};
use crate::codec::{duration_nanos, nanos, timestamp};
use crate::error::StoreError;
use crate::model::{DedupClaim, MAX_PAGE_SIZE, SilenceFilter};

/// Decides a deduplicated delivery at `now`: `None` if it is sent (it opened, or reopened,
/// the window of its key), or the delivery that opened the window it falls in.
pub(super) async fn claim_window(
    tx: &impl GenericClient,
    team: &str,
    subscription: &str,
    claim: &DedupClaim,
    delivery_id: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    // A window opened at or before this is over: `opened_at + window <= now`.
    let closed_by = now.saturating_sub(duration_nanos(claim.window));
    let opened = row_opt(
        tx,
        "INSERT INTO dedup_windows AS w (team_id, subscription, key, delivery_id, opened_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (team_id, subscription, key) DO UPDATE SET
             delivery_id = excluded.delivery_id, opened_at = excluded.opened_at
          WHERE w.opened_at <= $6
         RETURNING 1",
        &[
            &team,
            &subscription,
            &claim.key,
            &delivery_id,
            &now,
            &closed_by,
        ],
    )
    .await?;
    if opened.is_some() {
        return Ok(None);
    }
    // The row is open and locked by this transaction: read who opened it (a new
    // statement sees the latest committed version).
    let original = row_opt(
        tx,
        "SELECT delivery_id FROM dedup_windows
          WHERE team_id = $1 AND subscription = $2 AND key = $3",
        &[&team, &subscription, &claim.key],
    )
    .await?
    .ok_or(StoreError::Internal("a dedup window vanished while locked"))?;
    Ok(Some(original.try_get(0)?))
}

/// Forgets up to `batch` windows opened before `cutoff`; returns how many.
pub(super) async fn prune_windows(
    tx: &impl GenericClient,
    cutoff: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    execute(
        tx,
        "DELETE FROM dedup_windows WHERE (team_id, subscription, key) IN
           (SELECT team_id, subscription, key FROM dedup_windows
             WHERE opened_at < $1 ORDER BY opened_at LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        &[&cutoff, &batch],
    )
    .await
}

/// Removes up to `batch` silences that ended before `cutoff`; returns how many.
pub(super) async fn prune_silences(
    tx: &impl GenericClient,
    cutoff: i64,
    batch: i64,
) -> Result<u64, StoreError> {
    execute(
        tx,
        "DELETE FROM silences WHERE seq IN
           (SELECT seq FROM silences WHERE ends_at < $1 ORDER BY ends_at LIMIT $2
             FOR UPDATE SKIP LOCKED)",
        &[&cutoff, &batch],
    )
    .await
}

const SILENCE_COLUMNS: &str = "id, team_id, event_pattern, outcome, metadata, channel, \
     starts_at, ends_at, comment, created_by, created_at";

fn silence_from_row(row: &Row) -> Result<Silence, StoreError> {
    let team: String = row.try_get(1)?;
    let pattern: Option<String> = row.try_get(2)?;
    let outcome: Option<String> = row.try_get(3)?;
    let metadata: String = row.try_get(4)?;
    Ok(Silence {
        id: row.try_get(0)?,
        team: TeamId::parse(&team).map_err(|m| corrupt("silence team", m))?,
        matchers: SilenceMatchers {
            event: pattern
                .map(|p| Pattern::parse(&p).map_err(|e| corrupt("silence event", e.to_string())))
                .transpose()?,
            outcome: match outcome.as_deref() {
                None => None,
                Some("success") => Some(Outcome::Success),
                Some("error") => Some(Outcome::Error),
                Some(other) => {
                    return Err(corrupt("silence outcome", format!("unknown `{other}`")));
                }
            },
            metadata: serde_json::from_str::<BTreeMap<String, String>>(&metadata)
                .map_err(|e| corrupt("silence metadata", e.to_string()))?,
            channel: row.try_get(5)?,
        },
        starts_at: timestamp(row.try_get(6)?),
        ends_at: timestamp(row.try_get(7)?),
        comment: row.try_get(8)?,
        created_by: row.try_get(9)?,
        created_at: timestamp(row.try_get(10)?),
    })
}

pub(super) async fn create_silence(c: &impl GenericClient, s: &Silence) -> Result<(), StoreError> {
    let metadata = serde_json::to_string(&s.matchers.metadata)
        .map_err(|_| StoreError::Internal("silence metadata could not be encoded"))?;
    execute(
        c,
        "INSERT INTO silences (id, team_id, event_pattern, outcome, metadata, channel,
             starts_at, ends_at, comment, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &s.id,
            &s.team.as_str(),
            &s.matchers.event.as_ref().map(ToString::to_string),
            &s.matchers.outcome.map(Outcome::as_str),
            &metadata,
            &s.matchers.channel,
            &nanos(s.starts_at),
            &nanos(s.ends_at),
            &s.comment,
            &s.created_by,
            &nanos(s.created_at),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn list_silences(
    c: &impl GenericClient,
    filter: &SilenceFilter,
) -> Result<Vec<Silence>, StoreError> {
    // $2 = now; each state is a condition on the times.
    let state = match filter.state {
        None => "$2::int8 IS NOT NULL",
        Some(SilenceState::Pending) => "starts_at > $2",
        Some(SilenceState::Active) => "starts_at <= $2 AND ends_at > $2",
        Some(SilenceState::Expired) => "ends_at <= $2",
    };
    let limit = i64::try_from(MAX_PAGE_SIZE).unwrap_or(i64::MAX);
    rows(
        c,
        &format!(
            "SELECT {SILENCE_COLUMNS} FROM silences
              WHERE ($1::text IS NULL OR team_id = $1) AND {state}
              ORDER BY seq DESC LIMIT $3"
        ),
        &[
            &filter.team.as_ref().map(TeamId::as_str),
            &nanos(filter.now),
            &limit,
        ],
    )
    .await?
    .iter()
    .map(silence_from_row)
    .collect()
}

pub(super) async fn get_silence(
    c: &impl GenericClient,
    team: Option<&TeamId>,
    id: &str,
) -> Result<Option<Silence>, StoreError> {
    row_opt(
        c,
        &format!(
            "SELECT {SILENCE_COLUMNS} FROM silences
              WHERE id = $1 AND ($2::text IS NULL OR team_id = $2)"
        ),
        &[&id, &team.map(TeamId::as_str)],
    )
    .await?
    .as_ref()
    .map(silence_from_row)
    .transpose()
}

pub(super) async fn expire_silence(
    tx: &impl GenericClient,
    team: Option<&TeamId>,
    id: &str,
    now: Timestamp,
) -> Result<Silence, StoreError> {
    execute(
        tx,
        "UPDATE silences SET ends_at = $3, starts_at = least(starts_at, $3)
          WHERE id = $1 AND ($2::text IS NULL OR team_id = $2) AND ends_at > $3",
        &[&id, &team.map(TeamId::as_str), &nanos(now)],
    )
    .await?;
    get_silence(tx, team, id).await?.ok_or(StoreError::NotFound)
}

pub(super) async fn live_silences(
    c: &impl GenericClient,
    now: Timestamp,
) -> Result<Vec<Silence>, StoreError> {
    rows(
        c,
        &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE ends_at > $1 ORDER BY seq"),
        &[&nanos(now)],
    )
    .await?
    .iter()
    .map(silence_from_row)
    .collect()
}
