//! The SQL behind each store operation, as plain functions of a connection. Write
//! operations run on the writer thread inside its group transaction; reads run on a
//! read-only connection.
//!
//! Over 600 lines on purpose: every SQL statement of the embedded store is here, next to
//! the row decoding it shares, so a schema change is reviewed in one file. When it grows
//! further, split the reads (`get_*`, `list_*`, `events_after`, `next_due`) into their own
//! module.

use std::time::Duration;

use herald_core::{Event, TeamId, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::codec::{
    clamp_limit, decode_cursor, decode_digest_kind, decode_event, encode_cursor,
    encode_digest_kind, encode_event,
};
pub(super) use crate::codec::{duration_nanos, nanos, timestamp};
use crate::error::StoreError;
use crate::model::{
    Accepted, AttemptRecord, ChannelState, Claimed, DeliveryFilter, DeliveryPage, DeliveryRecord,
    DeliveryStatus, Finish, LeaseToken, MAX_PAGE_SIZE, MoveFilter, NewAttempt, NewDelivery, Next,
    OpenedDigest, ReplayFilter, ReplayStatus,
};

/// The columns [`delivery_from_row`] reads, in its order, as a literal (so `concat!` can
/// build whole statements from it); select them first.
macro_rules! delivery_columns {
    () => {
        "d.id, d.event_id, d.team_id, d.channel, d.subscription, \
         d.event_type, d.status, d.attempts, d.next_attempt_at, d.last_error, \
         d.last_status_code, d.created_at, d.updated_at, d.budget_start, d.subscription_name, \
         d.silence_id, d.duplicate_of, d.digest_id, d.digest_kind"
    };
}
/// The columns [`delivery_from_row`] reads, in its order; select them first.
const DELIVERY_COLUMNS: &str = delivery_columns!();
/// How many columns [`DELIVERY_COLUMNS`] names.
const DELIVERY_COLUMN_COUNT: usize = 19;

fn conversion_error(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        Box::from(message),
    )
}

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let team: String = row.get(2)?;
    let status: String = row.get(6)?;
    let digest: Option<String> = row.get(18)?;
    Ok(DeliveryRecord {
        id: row.get(0)?,
        event_id: row.get(1)?,
        team: TeamId::parse(&team).map_err(|m| conversion_error(2, m))?,
        channel: row.get(3)?,
        subscription: row.get(4)?,
        event_type: row.get(5)?,
        status: status.parse().map_err(|m| conversion_error(6, m))?,
        attempts: row.get(7)?,
        next_attempt_at: row.get::<_, Option<i64>>(8)?.map(timestamp),
        last_error: row.get(9)?,
        last_status_code: row.get(10)?,
        created_at: timestamp(row.get(11)?),
        updated_at: timestamp(row.get(12)?),
        budget_start: row.get(13)?,
        subscription_name: row.get(14)?,
        silence_id: row.get(15)?,
        duplicate_of: row.get(16)?,
        digest_id: row.get(17)?,
        digest: digest
            .map(|kind| decode_digest_kind(&kind).map_err(|m| conversion_error(18, m)))
            .transpose()?,
    })
}

fn attempt_from_row(row: &Row<'_>) -> rusqlite::Result<AttemptRecord> {
    Ok(AttemptRecord {
        number: row.get(0)?,
        started_at: timestamp(row.get(1)?),
        duration_ms: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
        status_code: row.get(3)?,
        error: row.get(4)?,
        response: row.get(5)?,
        manual: row.get(6)?,
    })
}

fn channel_state_from_row(row: &Row<'_>) -> rusqlite::Result<ChannelState> {
    let team: String = row.get(0)?;
    Ok(ChannelState {
        team: TeamId::parse(&team).map_err(|m| conversion_error(0, m))?,
        channel: row.get(1)?,
        disabled: row.get(2)?,
        paused_until: row.get::<_, Option<i64>>(3)?.map(timestamp),
        reason: row.get(4)?,
        since: timestamp(row.get(5)?),
    })
}

/// An event ready for the writer: serialised by the caller, off the writer thread.
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    id: String,
    team: TeamId,
    event_type: String,
    body: String,
    deliveries: Vec<NewDelivery>,
    /// Per delivery, its fold claim's digest kind as stored (JSON), if it has a claim.
    digest_kinds: Vec<Option<String>>,
}

impl PreparedEvent {
    pub(crate) fn new(
        (event, deliveries): (Event, Vec<NewDelivery>),
    ) -> Result<PreparedEvent, StoreError> {
        let body = encode_event(&event)?;
        let digest_kinds = deliveries
            .iter()
            .map(|d| {
                d.fold
                    .as_ref()
                    .map(|f| encode_digest_kind(f.kind()))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(PreparedEvent {
            id: event.id,
            team: event.team_id,
            event_type: event.event,
            body,
            deliveries,
            digest_kinds,
        })
    }
}

/// A held delivery's `lease_until`: it never runs out (see [`crate::Store::holder`]).
const HELD_UNTIL: i64 = i64::MAX;

pub(crate) fn accept(
    conn: &Connection,
    events: &[PreparedEvent],
    now: Timestamp,
    holder: &LeaseToken,
) -> Result<Vec<Accepted>, StoreError> {
    let now = nanos(now);
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (id, team_id, event_type, body, accepted_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id, team_id) DO NOTHING
         RETURNING seq",
    )?;
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
             subscription, status, attempts, next_attempt_at, due_at, created_at, updated_at,
             subscription_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?8, ?8, ?9)",
    )?;
    // A delivery finished at ingest (silenced, or suppressed as a repeat): never due.
    let mut insert_finished = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
             subscription, status, attempts, next_attempt_at, due_at, created_at, updated_at,
             subscription_name, silence_id, duplicate_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, NULL, NULL, ?9, ?9, ?10, ?11, ?12)",
    )?;
    // A held delivery is in the caller's memory queue: leased to the holder, never due.
    let mut insert_held = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
             subscription, status, attempts, next_attempt_at, due_at, lease_token, lease_until,
             created_at, updated_at, subscription_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, NULL, ?9, ?10, ?8, ?8, ?11)",
    )?;
    // A digest: pending, due at its flush time, never held; marked by its kind.
    let mut insert_digest = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
             subscription, status, attempts, next_attempt_at, due_at, created_at, updated_at,
             subscription_name, digest_kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', 0, ?8, ?8, ?9, ?9, ?10, ?11)",
    )?;
    // A member of a digest: finished at ingest, never due, carried by its digest.
    let mut insert_grouped = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
             subscription, status, attempts, next_attempt_at, due_at, created_at, updated_at,
             subscription_name, digest_id, digest_kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'grouped', 0, NULL, NULL, ?8, ?8, ?9, ?10, ?11)",
    )?;
    let mut results = Vec::with_capacity(events.len());
    for event in events {
        let seq: Option<i64> = insert_event
            .query_row(
                params![
                    event.id,
                    event.team.as_str(),
                    event.event_type,
                    event.body,
                    now
                ],
                |row| row.get(0),
            )
            .optional()?;
        let Some(seq) = seq else {
            results.push(Accepted::Duplicate {
                id: event.id.clone(),
            });
            continue;
        };
        let mut suppressed = Vec::new();
        let mut folded = Vec::new();
        let mut opened = Vec::new();
        for (delivery, digest_kind) in event.deliveries.iter().zip(&event.digest_kinds) {
            let finished = match (&delivery.silence, &delivery.dedup) {
                (Some(silence), _) => Some((DeliveryStatus::Silenced, Some(silence), None)),
                (None, Some(claim)) => {
                    let subscription = delivery.subscription_name.as_deref().unwrap_or("");
                    let open =
                        super::noise::open_window(conn, &event.team, subscription, claim, now)?;
                    match open {
                        Some(original) => {
                            suppressed.push(delivery.id.clone());
                            Some((DeliveryStatus::Suppressed, None, Some(original)))
                        }
                        None => {
                            super::noise::record_window(
                                conn,
                                &event.team,
                                subscription,
                                &claim.key,
                                &delivery.id,
                                now,
                            )?;
                            None
                        }
                    }
                }
                (None, None) => None,
            };
            // Neither silenced nor suppressed: the delivery may be folded into a digest.
            let into = match (&finished, &delivery.fold) {
                (None, Some(claim)) => {
                    let subscription = delivery.subscription_name.as_deref().unwrap_or("");
                    match super::fold::fold(conn, event.team.as_str(), subscription, claim, now)? {
                        super::fold::Folded::Alone => None,
                        super::fold::Folded::Into {
                            digest_id,
                            opened: due,
                        } => Some((digest_id, due)),
                    }
                }
                _ => None,
            };
            if let Some((digest_id, due)) = into {
                if let Some(due) = due {
                    insert_digest.execute(params![
                        digest_id,
                        seq,
                        event.team.as_str(),
                        event.id,
                        event.event_type,
                        delivery.channel,
                        delivery.subscription,
                        due,
                        now,
                        delivery.subscription_name,
                        digest_kind,
                    ])?;
                    opened.push(OpenedDigest {
                        id: digest_id.clone(),
                        channel: delivery.channel.clone(),
                        due: timestamp(due),
                    });
                }
                insert_grouped.execute(params![
                    delivery.id,
                    seq,
                    event.team.as_str(),
                    event.id,
                    event.event_type,
                    delivery.channel,
                    delivery.subscription,
                    now,
                    delivery.subscription_name,
                    digest_id,
                    digest_kind,
                ])?;
                folded.push(delivery.id.clone());
            } else if let Some((status, silence, original)) = finished {
                insert_finished.execute(params![
                    delivery.id,
                    seq,
                    event.team.as_str(),
                    event.id,
                    event.event_type,
                    delivery.channel,
                    delivery.subscription,
                    status.as_str(),
                    now,
                    delivery.subscription_name,
                    silence,
                    original,
                ])?;
            } else if delivery.held {
                insert_held.execute(params![
                    delivery.id,
                    seq,
                    event.team.as_str(),
                    event.id,
                    event.event_type,
                    delivery.channel,
                    delivery.subscription,
                    now,
                    holder.as_str(),
                    HELD_UNTIL,
                    delivery.subscription_name,
                ])?;
            } else {
                insert_delivery.execute(params![
                    delivery.id,
                    seq,
                    event.team.as_str(),
                    event.id,
                    event.event_type,
                    delivery.channel,
                    delivery.subscription,
                    now,
                    delivery.subscription_name,
                ])?;
            }
        }
        results.push(Accepted::New {
            id: event.id.clone(),
            suppressed,
            folded,
            opened,
        });
    }
    Ok(results)
}

/// How a claim leases what it hands out.
#[derive(Debug, Clone)]
pub(crate) enum ClaimLease {
    /// A fresh token, running out after this long (a shared store's claim).
    For(Duration),
    /// The holder's token, never running out (an exclusive store's claim).
    Held(LeaseToken),
}

/// Due work in time order, over the `deliveries_due` index: the read when no channel is
/// excluded, where the first rows in time order are the ones wanted.
const CLAIM_ALL: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", d.seq, e.body, e.accepted_at
     FROM deliveries d JOIN events e ON e.seq = d.event_seq
     WHERE d.status = 'pending' AND d.due_at <= ?1
     ORDER BY d.due_at, d.seq
     LIMIT ?2"
);
/// One due row with its event, by `seq`.
const CLAIM_ROW: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", d.seq, e.body, e.accepted_at
     FROM deliveries d JOIN events e ON e.seq = d.event_seq
     WHERE d.seq = ?1"
);
/// The earliest due time of any channel.
const NEXT_DUE_ALL: &str = "SELECT due_at FROM deliveries
     WHERE status = 'pending' AND due_at IS NOT NULL
     ORDER BY due_at LIMIT 1";

// With channels excluded (disabled, or their lane is full) a read in time order would walk
// their whole backlog on every call — on the writer thread, ahead of every team's ingest
// commit. So it goes channel by channel instead, each step one search of the
// `(team_id, channel, due_at)` index: the next channel with due-able rows after `(?1, ?2)`
// (a loose index scan), then that channel's due rows or earliest due time. The cost grows
// with the number of channels holding retries, never with an excluded channel's backlog.

/// The next channel of team `?1` after channel `?2` with pending rows that can fall due.
/// (Two statements rather than one row-value `(team_id, channel) > (?1, ?2)`, which
/// SQLite seeks on `team_id` alone and then walks the team's rows.)
const NEXT_CHANNEL_OF_TEAM: &str =
    "SELECT team_id, channel FROM deliveries INDEXED BY deliveries_channel_due
     WHERE status = 'pending' AND due_at IS NOT NULL AND team_id = ?1 AND channel > ?2
     ORDER BY channel LIMIT 1";
/// The first channel of the next team after `?1` with pending rows that can fall due.
const FIRST_CHANNEL_AFTER_TEAM: &str =
    "SELECT team_id, channel FROM deliveries INDEXED BY deliveries_channel_due
     WHERE status = 'pending' AND due_at IS NOT NULL AND team_id > ?1
     ORDER BY team_id, channel LIMIT 1";
/// A channel's rows due by `?3`, oldest due first.
const CHANNEL_DUE: &str = "SELECT due_at, seq FROM deliveries INDEXED BY deliveries_channel_due
     WHERE status = 'pending' AND due_at IS NOT NULL
       AND team_id = ?1 AND channel = ?2 AND due_at <= ?3
     ORDER BY due_at, seq LIMIT ?4";
/// A channel's earliest due time.
const CHANNEL_NEXT_DUE: &str = "SELECT due_at FROM deliveries INDEXED BY deliveries_channel_due
     WHERE status = 'pending' AND due_at IS NOT NULL AND team_id = ?1 AND channel = ?2
     ORDER BY due_at LIMIT 1";
/// What a read for work runs while channels are excluded (for the query-plan test).
#[cfg(test)]
pub(crate) const EXCLUDING_READS: &[&str] = &[
    NEXT_CHANNEL_OF_TEAM,
    FIRST_CHANNEL_AFTER_TEAM,
    CHANNEL_DUE,
    CHANNEL_NEXT_DUE,
    CLAIM_ROW,
];

/// The channels with pending rows that can fall due, minus the excluded ones.
fn open_channels(
    conn: &Connection,
    exclude_channels: &[(TeamId, String)],
) -> Result<Vec<(String, String)>, StoreError> {
    let excluded: std::collections::HashSet<(&str, &str)> = exclude_channels
        .iter()
        .map(|(team, channel)| (team.as_str(), channel.as_str()))
        .collect();
    let mut of_team = conn.prepare_cached(NEXT_CHANNEL_OF_TEAM)?;
    let mut after_team = conn.prepare_cached(FIRST_CHANNEL_AFTER_TEAM)?;
    let key = |row: &Row<'_>| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?));
    let mut open = Vec::new();
    let mut at = after_team.query_row(params![""], key).optional()?;
    while let Some((team, channel)) = at {
        at = match of_team.query_row(params![team, channel], key).optional()? {
            Some(next) => Some(next),
            None => after_team.query_row(params![team], key).optional()?,
        };
        if !excluded.contains(&(team.as_str(), channel.as_str())) {
            open.push((team, channel));
        }
    }
    Ok(open)
}

pub(crate) fn claim_due(
    conn: &Connection,
    now: Timestamp,
    limit: usize,
    lease: &ClaimLease,
    exclude_channels: &[(TeamId, String)],
) -> Result<Vec<Claimed>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now_nanos = nanos(now);
    let lease_until = match lease {
        ClaimLease::For(lease) => now_nanos.saturating_add(duration_nanos(*lease)),
        ClaimLease::Held(_) => HELD_UNTIL,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let read = |row: &Row<'_>| {
        Ok((
            delivery_from_row(row)?,
            row.get(DELIVERY_COLUMN_COUNT)?,
            row.get(DELIVERY_COLUMN_COUNT + 1)?,
            row.get(DELIVERY_COLUMN_COUNT + 2)?,
        ))
    };
    let due: Vec<(DeliveryRecord, i64, String, i64)> = if exclude_channels.is_empty() {
        conn.prepare_cached(CLAIM_ALL)?
            .query_map(params![now_nanos, limit], read)?
            .collect::<Result<_, _>>()?
    } else {
        // Each open channel's oldest due rows, merged: the oldest `limit` of them all.
        let mut heads: Vec<(i64, i64)> = Vec::new();
        let mut channel_due = conn.prepare_cached(CHANNEL_DUE)?;
        for (team, channel) in open_channels(conn, exclude_channels)? {
            let rows = channel_due
                .query_map(params![team, channel, now_nanos, limit], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect::<Result<Vec<(i64, i64)>, _>>()?;
            heads.extend(rows);
        }
        heads.sort_unstable();
        heads.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut row = conn.prepare_cached(CLAIM_ROW)?;
        heads
            .into_iter()
            .map(|(_, seq)| row.query_row(params![seq], read))
            .collect::<Result<_, _>>()?
    };

    // A leased row is due again when its lease runs out; a held one never is.
    // Claiming seals a digest: no member joins it once an attempt may have started.
    let mut lease_row = conn.prepare_cached(
        "UPDATE deliveries SET lease_token = ?2, lease_until = ?3,
             due_at = CASE WHEN ?3 = ?4 THEN NULL ELSE ?3 END, sealed = 1
         WHERE seq = ?1",
    )?;
    let mut claimed = Vec::with_capacity(due.len());
    for (delivery, seq, body, accepted_at) in due {
        let event = match decode_event(&body, timestamp(accepted_at)) {
            Ok(event) => event,
            Err(err) => {
                // A row that can never be sent must not block the queue by failing every
                // claim: give up on it, with the reason for the operator.
                conn.execute(
                    "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL,
                         due_at = NULL, last_error = ?2, updated_at = ?3
                     WHERE seq = ?1",
                    params![seq, err.to_string(), now_nanos],
                )?;
                continue;
            }
        };
        let lease = match lease {
            ClaimLease::For(_) => LeaseToken::generate(),
            ClaimLease::Held(holder) => holder.clone(),
        };
        lease_row.execute(params![seq, lease.as_str(), lease_until, HELD_UNTIL])?;
        claimed.push(Claimed {
            delivery,
            event,
            lease,
            lease_until: timestamp(lease_until),
        });
    }
    Ok(claimed)
}

/// The row of a delivery still held under `lease`, as `(seq, attempts, manual_next)`.
fn leased_row(
    conn: &Connection,
    delivery_id: &str,
    lease: &LeaseToken,
) -> Result<(i64, u32, bool), StoreError> {
    let row: Option<(i64, u32, String, Option<String>, bool)> = conn
        .prepare_cached(
            "SELECT seq, attempts, status, lease_token, manual_next FROM deliveries WHERE id = ?1",
        )?
        .query_row(params![delivery_id], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    match row {
        None => Err(StoreError::NotFound),
        Some((seq, attempts, status, Some(token), manual))
            if status == "pending" && token == lease.as_str() =>
        {
            Ok((seq, attempts, manual))
        }
        Some(_) => Err(StoreError::LeaseLost {
            delivery: delivery_id.to_owned(),
        }),
    }
}

pub(crate) fn finish(
    conn: &Connection,
    delivery_id: &str,
    lease: &LeaseToken,
    attempt: &NewAttempt,
    next: Next,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (seq, attempts, manual) = leased_row(conn, delivery_id, lease)?;
    let number = attempts.saturating_add(1);
    conn.prepare_cached(
        "INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code,
             error, response, manual)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        seq,
        number,
        nanos(attempt.started_at),
        i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX),
        attempt.status_code,
        attempt.error,
        attempt.response,
        manual,
    ])?;
    let (status, next_attempt_at) = match next {
        Next::Succeeded => (DeliveryStatus::Succeeded, None),
        Next::RetryAt(at) | Next::Wait(at) => (DeliveryStatus::Pending, Some(nanos(at))),
        Next::Dead => (DeliveryStatus::Dead, None),
        Next::Skipped => (DeliveryStatus::Skipped, None),
    };
    // A channel-wide failure is not the message's: its attempt leaves the budget alone.
    let uncounted = i64::from(matches!(next, Next::Wait(_)));
    conn.prepare_cached(
        "UPDATE deliveries
         SET status = ?2, attempts = ?3, next_attempt_at = ?4, due_at = ?4,
             lease_token = NULL, lease_until = NULL, manual_next = 0,
             last_error = ?5, last_status_code = ?6, updated_at = ?7,
             budget_start = budget_start + ?8
         WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        status.as_str(),
        number,
        next_attempt_at,
        attempt.error,
        attempt.status_code,
        nanos(now),
        uncounted,
    ])?;
    Ok(())
}

/// Records many attempts; a fenced-off one is reported and changes nothing. Any other
/// error fails the whole request (its savepoint is rolled back).
pub(crate) fn finish_many(
    conn: &Connection,
    finishes: &[Finish],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let mut results = Vec::with_capacity(finishes.len());
    for f in finishes {
        match finish(conn, &f.delivery_id, &f.lease, &f.attempt, f.next, f.now) {
            Ok(()) => results.push(Ok(())),
            Err(e @ (StoreError::LeaseLost { .. } | StoreError::NotFound)) => results.push(Err(e)),
            Err(other) => return Err(other),
        }
    }
    Ok(results)
}

/// The earliest `due_at` of a pending delivery that nobody holds, outside the excluded
/// channels.
pub(crate) fn next_due(
    conn: &Connection,
    exclude_channels: &[(TeamId, String)],
) -> Result<Option<Timestamp>, StoreError> {
    let due: Option<i64> = if exclude_channels.is_empty() {
        conn.prepare_cached(NEXT_DUE_ALL)?
            .query_row([], |row| row.get(0))
            .optional()?
    } else {
        let mut channel_next = conn.prepare_cached(CHANNEL_NEXT_DUE)?;
        let mut earliest: Option<i64> = None;
        for (team, channel) in open_channels(conn, exclude_channels)? {
            let due: Option<i64> = channel_next
                .query_row(params![team, channel], |row| row.get(0))
                .optional()?;
            earliest = earliest.into_iter().chain(due).min();
        }
        earliest
    };
    Ok(due.map(timestamp))
}

/// Voids every lease and hold of a previous process (an exclusive store, at open): what it
/// had not finished is due again at its scheduled time, which has passed.
pub(crate) fn void_leases(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE deliveries SET lease_token = NULL, lease_until = NULL, due_at = next_attempt_at
         WHERE status = 'pending' AND lease_token IS NOT NULL",
        [],
    )?)
}

/// Finishes a claimed delivery as silenced, without an attempt (see
/// `Store::finish_silenced`).
pub(crate) fn finish_silenced(
    conn: &Connection,
    delivery_id: &str,
    lease: &LeaseToken,
    silence_id: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (seq, _, _) = leased_row(conn, delivery_id, lease)?;
    conn.prepare_cached(
        "UPDATE deliveries
         SET status = 'silenced', silence_id = ?2, next_attempt_at = NULL, due_at = NULL,
             lease_token = NULL, lease_until = NULL, manual_next = 0, updated_at = ?3
         WHERE seq = ?1",
    )?
    .execute(params![seq, silence_id, nanos(now)])?;
    Ok(())
}

pub(crate) fn release(
    conn: &Connection,
    delivery_id: &str,
    lease: &LeaseToken,
) -> Result<(), StoreError> {
    let (seq, _, _) = leased_row(conn, delivery_id, lease)?;
    // It was due when claimed, so its scheduled time is already past: due at once.
    conn.prepare_cached(
        "UPDATE deliveries SET lease_token = NULL, lease_until = NULL, due_at = next_attempt_at
         WHERE seq = ?1",
    )?
    .execute(params![seq])?;
    Ok(())
}

/// Holds a leased delivery as orphaned (see `Store::orphan`).
pub(crate) fn orphan(
    conn: &Connection,
    delivery_id: &str,
    lease: &LeaseToken,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let (seq, _, _) = leased_row(conn, delivery_id, lease)?;
    conn.prepare_cached(
        "UPDATE deliveries
         SET status = 'orphaned', next_attempt_at = NULL, due_at = NULL,
             lease_token = NULL, lease_until = NULL, last_error = ?2, updated_at = ?3
         WHERE seq = ?1",
    )?
    .execute(params![seq, reason, nanos(now)])?;
    Ok(())
}

/// Orphans of the given channels become pending and due at `now` (`deliveries_orphaned`).
pub(crate) fn reattach_orphans(
    conn: &Connection,
    channels: &[(TeamId, String)],
    now: Timestamp,
) -> Result<u64, StoreError> {
    let mut update = conn.prepare_cached(
        "UPDATE deliveries
         SET status = 'pending', next_attempt_at = ?3, due_at = ?3, updated_at = ?3
         WHERE status = 'orphaned' AND team_id = ?1 AND channel = ?2",
    )?;
    let mut count = 0;
    for (team, channel) in channels {
        count += update.execute(params![team.as_str(), channel, nanos(now)])? as u64;
    }
    Ok(count)
}

/// Re-points a team's deliveries of one channel and status to another channel, due now.
pub(crate) fn move_deliveries(
    conn: &Connection,
    filter: &MoveFilter,
    now: Timestamp,
) -> Result<u64, StoreError> {
    // `deliveries_orphaned` for orphans, `deliveries_team_status` for dead letters. A dead
    // one starts a fresh budget, as a manual retry does; an orphan's budget is untouched.
    let moved = conn
        .prepare_cached(
            "UPDATE deliveries
             SET channel = ?3, status = 'pending', next_attempt_at = ?5, due_at = ?5,
                 lease_token = NULL, lease_until = NULL, manual_next = 1, updated_at = ?5,
                 budget_start = CASE WHEN status = 'dead' THEN attempts ELSE budget_start END
             WHERE team_id = ?1 AND channel = ?2 AND status = ?4",
        )?
        .execute(params![
            filter.team.as_str(),
            filter.from_channel,
            filter.to_channel,
            filter.status.as_status().as_str(),
            nanos(now),
        ])?;
    Ok(moved as u64)
}

pub(crate) fn retry_now(
    conn: &Connection,
    team: Option<&TeamId>,
    delivery_id: &str,
    now: Timestamp,
) -> Result<DeliveryRecord, StoreError> {
    let now = nanos(now);
    // (seq, status, lease_until, channel, digest_id)
    type RetryRow = (i64, String, Option<i64>, String, Option<String>);
    let row: Option<RetryRow> = conn
        .prepare_cached(
            "SELECT seq, status, lease_until, channel, digest_id FROM deliveries
             WHERE id = ?1 AND (?2 IS NULL OR team_id = ?2)",
        )?
        .query_row(params![delivery_id, team.map(TeamId::as_str)], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    let Some((seq, status, lease_until, channel, digest)) = row else {
        return Err(StoreError::NotFound);
    };
    let status: DeliveryStatus = status.parse().map_err(|message| StoreError::Corrupt {
        what: "delivery status".into(),
        message,
    })?;
    if status == DeliveryStatus::Orphaned {
        return Err(StoreError::Orphaned {
            delivery: delivery_id.to_owned(),
            channel,
        });
    }
    if matches!(status, DeliveryStatus::Succeeded | DeliveryStatus::Grouped) {
        // A grouped one is sent by its digest, which is what can be retried.
        return Err(StoreError::NotRetryable {
            delivery: delivery_id.to_owned(),
            status,
            digest,
        });
    }
    let in_flight = status == DeliveryStatus::Pending && lease_until.is_some_and(|t| t > now);
    if !in_flight {
        // Clearing the lease fences off a worker whose lease ran out but who is still going.
        // A delivery that was given up on (dead, skipped) starts a fresh retry budget: the
        // attempts made so far no longer count against the schedule. A pending one keeps
        // what is left of its budget; either way the next attempt is recorded as manual.
        // A suppressed or silenced one is sent now (it forgets why it was not).
        let fresh_budget = status != DeliveryStatus::Pending;
        conn.prepare_cached(
            "UPDATE deliveries
             SET status = 'pending', next_attempt_at = ?2, due_at = ?2,
                 lease_token = NULL, lease_until = NULL, updated_at = ?2, manual_next = 1,
                 budget_start = CASE WHEN ?3 THEN attempts ELSE budget_start END,
                 silence_id = NULL, duplicate_of = NULL
             WHERE seq = ?1",
        )?
        .execute(params![seq, now, fresh_budget])?;
    }
    let record = conn
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.seq = ?1"
        ))?
        .query_row(params![seq], delivery_from_row)?;
    Ok(record)
}

/// Counts, or re-queues, the deliveries a bulk replay selects (see `Store::replay`). One
/// statement over the team's rows (the `deliveries_team` index), so the writer holds its
/// transaction for as long as the scan takes.
pub(crate) fn replay(
    conn: &Connection,
    filter: &ReplayFilter,
    dry_run: bool,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let status = match filter.status {
        ReplayStatus::Dead => "status = 'dead'",
        ReplayStatus::Failed => "(status = 'dead' OR (status = 'pending' AND attempts > 0))",
        // Grouped deliveries are sent by their digests, which a replay selects instead.
        ReplayStatus::All => "status NOT IN ('orphaned', 'grouped')",
    };
    // ?5 = now: a delivery being attempted (live lease, or held by this process) is left
    // to its attempt.
    let selected = format!(
        "team_id = ?1 AND (?2 IS NULL OR channel = ?2) AND created_at >= ?3
         AND (?4 IS NULL OR created_at < ?4) AND {status}
         AND NOT (status = 'pending' AND lease_until IS NOT NULL AND lease_until > ?5)"
    );
    let values = params![
        filter.team.as_str(),
        filter.channel,
        nanos(filter.since),
        filter.until.map(nanos),
        nanos(now),
    ];
    if dry_run {
        let count: i64 = conn
            .prepare(&format!("SELECT count(*) FROM deliveries WHERE {selected}"))?
            .query_row(values, |row| row.get(0))?;
        return Ok(u64::try_from(count).unwrap_or(0));
    }
    // Like retry_now: a finished delivery starts a fresh retry budget, a pending one keeps
    // what is left of its own; either way the next attempt is recorded as manual.
    let changed = conn
        .prepare(&format!(
            "UPDATE deliveries
             SET budget_start = CASE WHEN status = 'pending' THEN budget_start ELSE attempts END,
                 status = 'pending', next_attempt_at = ?5, due_at = ?5,
                 lease_token = NULL, lease_until = NULL, manual_next = 1, updated_at = ?5,
                 silence_id = NULL, duplicate_of = NULL
             WHERE {selected}"
        ))?
        .execute(values)?;
    Ok(changed as u64)
}

pub(crate) fn get_event(
    conn: &Connection,
    team: Option<&TeamId>,
    event_id: &str,
) -> Result<Option<(Event, Vec<DeliveryRecord>)>, StoreError> {
    // One read transaction, so that the event and its deliveries are one snapshot.
    let tx = conn.unchecked_transaction()?;
    let row: Option<(i64, String, i64)> = tx
        .prepare_cached(
            "SELECT seq, body, accepted_at FROM events
             WHERE id = ?1 AND (?2 IS NULL OR team_id = ?2)
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![event_id, team.map(TeamId::as_str)], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((seq, body, accepted_at)) = row else {
        return Ok(None);
    };
    let event = decode_event(&body, timestamp(accepted_at))?;
    let deliveries = tx
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_seq = ?1 ORDER BY d.seq"
        ))?
        .query_map(params![seq], delivery_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((event, deliveries)))
}

pub(crate) fn get_delivery(
    conn: &Connection,
    team: Option<&TeamId>,
    delivery_id: &str,
) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let row = tx
        .prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS}, d.seq FROM deliveries d
             WHERE d.id = ?1 AND (?2 IS NULL OR d.team_id = ?2)"
        ))?
        .query_row(params![delivery_id, team.map(TeamId::as_str)], |row| {
            Ok((
                delivery_from_row(row)?,
                row.get::<_, i64>(DELIVERY_COLUMN_COUNT)?,
            ))
        })
        .optional()?;
    let Some((delivery, seq)) = row else {
        return Ok(None);
    };
    let attempts = tx
        .prepare_cached(
            "SELECT number, started_at, duration_ms, status_code, error, response, manual
             FROM attempts WHERE delivery_seq = ?1 ORDER BY number",
        )?
        .query_map(params![seq], attempt_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((delivery, attempts)))
}

pub(crate) fn list_deliveries(
    conn: &Connection,
    filter: &DeliveryFilter,
) -> Result<DeliveryPage, StoreError> {
    // Only the conditions in use go into the SQL, so that SQLite can pick the index that
    // fits them; every value is a bound parameter.
    let mut sql = format!("SELECT {DELIVERY_COLUMNS}, d.seq FROM deliveries d WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    let mut condition = |sql_part: &str, value: Value| {
        sql.push_str(" AND ");
        sql.push_str(sql_part);
        values.push(value);
    };
    if let Some(team) = &filter.team {
        // With an event id, the event's few deliveries are the rows to start from: the
        // unary `+` keeps SQLite from walking all of the team's rows instead.
        let sql_part = if filter.event_id.is_some() {
            "+d.team_id = ?"
        } else {
            "d.team_id = ?"
        };
        condition(sql_part, Value::Text(team.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        condition("d.status = ?", Value::Text(status.as_str().to_owned()));
    }
    if let Some(channel) = &filter.channel {
        condition("d.channel = ?", Value::Text(channel.clone()));
    }
    if let Some(event_type) = &filter.event_type {
        condition("d.event_type = ?", Value::Text(event_type.clone()));
    }
    if let Some(event_id) = &filter.event_id {
        condition(
            "d.event_seq IN (SELECT seq FROM events WHERE id = ?)",
            Value::Text(event_id.clone()),
        );
    }
    if let Some(cursor) = &filter.cursor {
        condition("d.seq < ?", Value::Integer(decode_cursor(cursor)?));
    }
    let limit = clamp_limit(filter.limit);
    sql.push_str(" ORDER BY d.seq DESC LIMIT ?");
    // One more than a page, to learn whether another page follows.
    values.push(Value::Integer(limit + 1));

    let mut rows = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values.iter()), |row| {
            Ok((
                delivery_from_row(row)?,
                row.get::<_, i64>(DELIVERY_COLUMN_COUNT)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let page = usize::try_from(limit).unwrap_or(MAX_PAGE_SIZE);
    let next_cursor = if rows.len() > page {
        rows.truncate(page);
        rows.last().map(|(_, seq)| encode_cursor(*seq))
    } else {
        None
    };
    Ok(DeliveryPage {
        deliveries: rows.into_iter().map(|(delivery, _)| delivery).collect(),
        next_cursor,
    })
}

pub(crate) fn set_channel_state(conn: &Connection, state: &ChannelState) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO channel_states (team_id, channel, disabled, paused_until, reason, since)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (team_id, channel) DO UPDATE SET
             disabled = excluded.disabled, paused_until = excluded.paused_until,
             reason = excluded.reason, since = excluded.since",
    )?
    .execute(params![
        state.team.as_str(),
        state.channel,
        state.disabled,
        state.paused_until.map(nanos),
        state.reason,
        nanos(state.since),
    ])?;
    Ok(())
}

pub(crate) fn clear_channel_state(
    conn: &Connection,
    team: &TeamId,
    channel: &str,
) -> Result<bool, StoreError> {
    let removed = conn
        .prepare_cached("DELETE FROM channel_states WHERE team_id = ?1 AND channel = ?2")?
        .execute(params![team.as_str(), channel])?;
    Ok(removed > 0)
}

pub(crate) fn channel_states(
    conn: &Connection,
    team: Option<&TeamId>,
) -> Result<Vec<ChannelState>, StoreError> {
    let states = conn
        .prepare_cached(
            "SELECT team_id, channel, disabled, paused_until, reason, since
             FROM channel_states WHERE ?1 IS NULL OR team_id = ?1
             ORDER BY team_id, channel",
        )?
        .query_map(params![team.map(TeamId::as_str)], channel_state_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(states)
}

/// Dead letters of one channel: the team's dead rows (`deliveries_team_status`), filtered.
pub(crate) fn dead_count(
    conn: &Connection,
    team: &TeamId,
    channel: &str,
) -> Result<u64, StoreError> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM deliveries
             WHERE team_id = ?1 AND status = 'dead' AND channel = ?2",
        )?
        .query_row(params![team.as_str(), channel], |row| row.get(0))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) fn queue_depth(conn: &Connection) -> Result<u64, StoreError> {
    let depth: i64 = conn
        // Left alone, SQLite counts through a full index of all deliveries; the partial
        // index holds the pending ones only.
        .prepare_cached(
            "SELECT count(*) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending'",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(depth).unwrap_or(0))
}

/// A team's events after seq `?1` (`?2` the team), in order: walks `events_team_seq`.
pub(crate) const EVENTS_AFTER_TEAM: &str = "SELECT body, accepted_at FROM events
     WHERE team_id = ?2 AND seq > ?1 ORDER BY seq LIMIT ?3";
/// Every team's events after seq `?1` (`?2` unused, NULL), in order.
const EVENTS_AFTER_ALL: &str = "SELECT body, accepted_at FROM events
     WHERE seq > ?1 AND ?2 IS NULL ORDER BY seq LIMIT ?3";

pub(crate) fn events_after(
    conn: &Connection,
    team: Option<&TeamId>,
    after_event_id: &str,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let team = team.map(TeamId::as_str);
    let after: Option<i64> = tx
        .prepare_cached(
            "SELECT seq FROM events WHERE id = ?1 AND (?2 IS NULL OR team_id = ?2)
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![after_event_id, team], |row| row.get(0))
        .optional()?;
    let after = after.ok_or(StoreError::NotFound)?;
    // Two statements, not `?2 IS NULL OR team_id = ?2`: that form cannot use the
    // (team_id, seq) index, and a team's replay would walk every team's later events.
    let sql = if team.is_some() {
        EVENTS_AFTER_TEAM
    } else {
        EVENTS_AFTER_ALL
    };
    let rows = tx
        .prepare_cached(sql)?
        .query_map(params![after, team, clamp_limit(limit)], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.iter()
        .map(|(body, accepted_at)| decode_event(body, timestamp(*accepted_at)))
        .collect()
}
