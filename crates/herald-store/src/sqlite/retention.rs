//! Pruning finished rows by age and size, and the store's size and row counts.
//!
//! Each [`prune`] call removes at most about `batch` rows of each kind and is one short
//! request of the writer's group commit, so ingest waits for a prune batch no longer than
//! for any other group. Selections walk indexes in age order and stop at the cutoff. A
//! removed delivery takes its split progress (migration 7) with it.

use std::sync::{Mutex, PoisonError};

use herald_core::Timestamp;
use rusqlite::{Connection, params};

use super::queries::{duration_nanos, nanos, timestamp};
use crate::error::StoreError;
use crate::model::{PruneLimits, PruneReport, StoreStats};

/// Free pages given back to the filesystem after each batch (4 MiB at 4 KiB pages).
const VACUUM_PAGES: i64 = 1024;

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Bytes of live data: pages in use (the file minus its free list).
fn live_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let bytes: i64 = conn.query_row(
        "SELECT (p.page_count - f.freelist_count) * s.page_size
           FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Whether any split delivery has progress recorded: usually none, and then pruning
/// skips looking for the progress of each delivery it removes.
fn has_split_progress(conn: &Connection) -> Result<bool, StoreError> {
    let any: bool = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM split_progress)")?
        .query_row([], |row| row.get(0))?;
    Ok(any)
}

/// Removes up to `batch` events (accepted before `cutoff`, every delivery finished, and
/// every grouped one's digest finished too) with their deliveries and attempts, oldest
/// first.
fn prune_events(
    conn: &Connection,
    cutoff: i64,
    batch: i64,
    report: &mut PruneReport,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = conn
        .prepare_cached(
            "SELECT e.seq FROM events e INDEXED BY events_accepted
              WHERE e.accepted_at < ?1
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.event_seq = e.seq
                                   AND (d.status IN ('pending', 'dead', 'orphaned')
                                        OR (d.status = 'grouped' AND EXISTS
                                              (SELECT 1 FROM deliveries g WHERE g.id = d.digest_id
                                                  AND g.status IN ('pending', 'dead', 'orphaned')))))
              ORDER BY e.accepted_at LIMIT ?2",
        )?
        .query_map(params![cutoff, batch], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    report.more |= i64::try_from(seqs.len()).unwrap_or(i64::MAX) >= batch;
    let progress = has_split_progress(conn)?;
    let mut split = conn.prepare_cached(
        "DELETE FROM split_progress WHERE delivery_id IN
           (SELECT id FROM deliveries WHERE event_seq = ?1)",
    )?;
    let mut attempts = conn.prepare_cached(
        "DELETE FROM attempts WHERE delivery_seq IN
           (SELECT seq FROM deliveries WHERE event_seq = ?1)",
    )?;
    let mut deliveries = conn.prepare_cached("DELETE FROM deliveries WHERE event_seq = ?1")?;
    let mut events = conn.prepare_cached("DELETE FROM events WHERE seq = ?1")?;
    for seq in seqs {
        if progress {
            split.execute([seq])?;
        }
        report.attempts += count(attempts.execute([seq])?);
        report.deliveries += count(deliveries.execute([seq])?);
        report.events += count(events.execute([seq])?);
    }
    Ok(())
}

/// One batch of pruning at `now`; see [`crate::Store::prune`]. `walked` is where the
/// previous batch's walk over finished deliveries stopped, per status (`(i64::MIN, 0)`
/// at first).
pub(crate) fn prune(
    conn: &Connection,
    limits: &PruneLimits,
    now: Timestamp,
    batch: usize,
    walked: &Mutex<[(i64, i64); 2]>,
) -> Result<PruneReport, StoreError> {
    let now = nanos(now);
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let before = |age| now.saturating_sub(duration_nanos(age));
    let full = |n: usize| i64::try_from(n).unwrap_or(i64::MAX) >= batch;
    let mut report = PruneReport::default();

    // Attempt records of finished deliveries, oldest finish first, from where the last
    // batch stopped (`walked`, per status): deliveries before it have no attempts left,
    // and walking past them again on every batch would grow with the store.
    let cutoff = before(limits.attempts);
    let mut attempts = conn.prepare_cached("DELETE FROM attempts WHERE delivery_seq = ?1")?;
    let mut walked = walked.lock().unwrap_or_else(PoisonError::into_inner);
    for (status, mark) in ["succeeded", "skipped"].into_iter().zip(walked.iter_mut()) {
        let finished: Vec<(i64, i64)> = conn
            .prepare_cached(
                "SELECT updated_at, seq FROM deliveries INDEXED BY deliveries_finished
                  WHERE status = ?1 AND (updated_at, seq) > (?2, ?3) AND updated_at < ?4
                  ORDER BY updated_at, seq LIMIT ?5",
            )?
            .query_map(params![status, mark.0, mark.1, cutoff, batch], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for (_, seq) in &finished {
            report.attempts += count(attempts.execute([seq])?);
        }
        if let Some(last) = finished.last() {
            *mark = *last;
        }
        report.more |= full(finished.len());
    }
    drop(walked);

    // Dead letters past their own age, with their attempts.
    let dead: Vec<i64> = conn
        .prepare_cached(
            "SELECT seq FROM deliveries INDEXED BY deliveries_finished
              WHERE status = 'dead' AND updated_at < ?1 LIMIT ?2",
        )?
        .query_map(params![before(limits.dead), batch], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    report.more |= full(dead.len());
    let mut delivery = conn.prepare_cached("DELETE FROM deliveries WHERE seq = ?1")?;
    let progress = !dead.is_empty() && has_split_progress(conn)?;
    let mut split = conn.prepare_cached(
        "DELETE FROM split_progress WHERE delivery_id = (SELECT id FROM deliveries WHERE seq = ?1)",
    )?;
    for seq in &dead {
        if progress {
            split.execute([seq])?;
        }
        report.attempts += count(attempts.execute([seq])?);
        let n = count(delivery.execute([seq])?);
        report.deliveries += n;
        report.dead += n;
    }

    prune_events(conn, before(limits.events), batch, &mut report)?;

    // Dedup windows no configured window can still reach, and long-ended silences.
    report.dedup_windows = super::noise::prune_windows(conn, before(limits.dedup), batch)?;
    report.silences = super::noise::prune_silences(conn, before(limits.events), batch)?;
    report.more |= full(report.dedup_windows as usize) || full(report.silences as usize);

    // Groups and throttle windows past their interval (or period), with no open digest.
    let (groups, windows) = super::fold::prune(conn, now, batch)?;
    report.fold_rows = groups + windows;
    report.more |= full(groups as usize) || full(windows as usize);

    // Over the size ceiling: the oldest finished events go, whatever their age.
    if let Some(max) = limits.max_store_size
        && live_bytes(conn)? > max
    {
        report.over_size = true;
        prune_events(conn, now, batch, &mut report)?;
    }

    if report.removed() > 0 {
        // Give freed pages back to the filesystem (auto_vacuum = INCREMENTAL). The pragma
        // frees one page per step, each step answering an empty row: step to the end.
        let mut vacuum =
            conn.prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_PAGES})"))?;
        let mut steps = vacuum.query([])?;
        while steps.next()?.is_some() {}
    }
    Ok(report)
}

/// The store's size, row counts and oldest pending delivery.
pub(crate) fn stats(conn: &Connection) -> Result<StoreStats, StoreError> {
    let number = |sql: &str| -> Result<u64, StoreError> {
        let n: i64 = conn.prepare_cached(sql)?.query_row([], |row| row.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let oldest: Option<i64> = conn
        .prepare_cached(
            "SELECT min(created_at) FROM deliveries INDEXED BY deliveries_due
              WHERE status = 'pending'",
        )?
        .query_row([], |row| row.get(0))?;
    Ok(StoreStats {
        size_bytes: number(
            "SELECT p.page_count * s.page_size FROM pragma_page_count() p, pragma_page_size() s",
        )?,
        events: number("SELECT count(*) FROM events")?,
        deliveries: number("SELECT count(*) FROM deliveries")?,
        attempts: number("SELECT count(*) FROM attempts")?,
        pending: number(
            "SELECT count(*) FROM deliveries INDEXED BY deliveries_due WHERE status = 'pending'",
        )?,
        dead: number(
            "SELECT count(*) FROM deliveries INDEXED BY deliveries_finished WHERE status = 'dead'",
        )?,
        oldest_pending: oldest.map(timestamp),
    })
}

#[cfg(test)]
mod tests;
