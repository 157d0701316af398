//! Pruning finished rows by age and size, and the store's size and row counts, on
//! PostgreSQL. Same rules as the embedded store's `retention.rs`: each call removes at
//! most about `batch` rows of each kind in one short transaction, walking indexes in age
//! order. Space goes back to PostgreSQL's free space map (autovacuum), not to the disk.
//! A removed delivery takes its split progress with it; old dedup windows and long-ended
//! silences go too, and groups and throttle windows that no longer matter.

use std::sync::{Mutex, PoisonError};

use deadpool_postgres::GenericClient;
use herald_core::Timestamp;

use super::queries::number;
use crate::codec::{duration_nanos, nanos, timestamp};
use crate::error::StoreError;
use crate::model::{PruneLimits, PruneReport, StoreStats};

/// Bytes the schema's tables take, with their indexes and TOAST.
const SIZE: &str = "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::int8
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind = 'r'";

/// The finished deliveries an event goes with (succeeded, skipped, suppressed, silenced,
/// grouped): every status but `pending`, `dead` and `orphaned`, which keep their event —
/// and a grouped one keeps it too while its digest is in one of those (a digest sent or
/// retried later lists it). For statements over `deliveries` without an alias.
const GOES_WITH_EVENT: &str = "status NOT IN ('pending', 'dead', 'orphaned')
     AND NOT (status = 'grouped' AND EXISTS
              (SELECT 1 FROM deliveries g WHERE g.id = deliveries.digest_id
                  AND g.status IN ('pending', 'dead', 'orphaned')))";

/// Removes up to `batch` events (accepted before `cutoff`, no delivery pending, dead or
/// orphaned, no grouped one whose digest is) with their deliveries, attempts and split
/// progress, oldest first.
async fn prune_events(
    tx: &impl GenericClient,
    cutoff: i64,
    batch: i64,
    report: &mut PruneReport,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "SELECT e.seq FROM events e
              WHERE e.accepted_at < $1
                AND NOT EXISTS (SELECT 1 FROM deliveries d
                                 WHERE d.event_seq = e.seq
                                   AND (d.status IN ('pending', 'dead', 'orphaned')
                                        OR (d.status = 'grouped' AND EXISTS
                                              (SELECT 1 FROM deliveries g
                                                WHERE g.id = d.digest_id
                                                  AND g.status IN ('pending', 'dead',
                                                                   'orphaned')))))
              ORDER BY e.accepted_at LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let seqs: Vec<i64> = tx
        .query(&statement, &[&cutoff, &batch])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    report.more |= i64::try_from(seqs.len()).unwrap_or(i64::MAX) >= batch;
    if seqs.is_empty() {
        return Ok(());
    }
    // Another node may have re-queued one of these deliveries (a replay) since the
    // selection: each statement checks again, so a pending delivery and its event stay.
    let split = tx
        .prepare_cached(&format!(
            "DELETE FROM split_progress WHERE delivery_id IN
               (SELECT id FROM deliveries WHERE event_seq = ANY($1) AND {GOES_WITH_EVENT})"
        ))
        .await?;
    let attempts = tx
        .prepare_cached(&format!(
            "DELETE FROM attempts WHERE delivery_seq IN
               (SELECT seq FROM deliveries WHERE event_seq = ANY($1) AND {GOES_WITH_EVENT})"
        ))
        .await?;
    let deliveries = tx
        .prepare_cached(&format!(
            "DELETE FROM deliveries WHERE event_seq = ANY($1) AND {GOES_WITH_EVENT}"
        ))
        .await?;
    let events = tx
        .prepare_cached(
            "DELETE FROM events e WHERE e.seq = ANY($1)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
        )
        .await?;
    tx.execute(&split, &[&seqs]).await?;
    report.attempts += tx.execute(&attempts, &[&seqs]).await?;
    report.deliveries += tx.execute(&deliveries, &[&seqs]).await?;
    report.events += tx.execute(&events, &[&seqs]).await?;
    Ok(())
}

/// One batch of pruning at `now`; see [`crate::Store::prune`]. `walked` is where the
/// previous batch's walk over finished deliveries stopped, per status.
pub(super) async fn prune(
    tx: &impl GenericClient,
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
    // batch stopped (per status), so repeated batches do not walk the same rows again.
    let cutoff = before(limits.attempts);
    let marks = *walked.lock().unwrap_or_else(PoisonError::into_inner);
    let finished_sql = tx
        .prepare_cached(
            "SELECT updated_at, seq FROM deliveries
              WHERE status = $1 AND (updated_at, seq) > ($2, $3) AND updated_at < $4
              ORDER BY updated_at, seq LIMIT $5",
        )
        .await?;
    let delete_attempts = tx
        .prepare_cached("DELETE FROM attempts WHERE delivery_seq = ANY($1)")
        .await?;
    let mut new_marks = marks;
    for (i, status) in ["succeeded", "skipped"].into_iter().enumerate() {
        let mark = marks[i];
        let finished: Vec<(i64, i64)> = tx
            .query(&finished_sql, &[&status, &mark.0, &mark.1, &cutoff, &batch])
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        let seqs: Vec<i64> = finished.iter().map(|(_, seq)| *seq).collect();
        if !seqs.is_empty() {
            report.attempts += tx.execute(&delete_attempts, &[&seqs]).await?;
        }
        if let Some(last) = finished.last() {
            new_marks[i] = *last;
        }
        report.more |= full(finished.len());
    }
    *walked.lock().unwrap_or_else(PoisonError::into_inner) = new_marks;

    // Dead letters past their own age, with their attempts.
    let dead_sql = tx
        .prepare_cached(
            "SELECT seq FROM deliveries
              WHERE status = 'dead' AND updated_at < $1
              ORDER BY updated_at, seq LIMIT $2
              FOR UPDATE SKIP LOCKED",
        )
        .await?;
    let dead: Vec<i64> = tx
        .query(&dead_sql, &[&before(limits.dead), &batch])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    report.more |= full(dead.len());
    if !dead.is_empty() {
        let split = tx
            .prepare_cached(
                "DELETE FROM split_progress WHERE delivery_id IN
                   (SELECT id FROM deliveries WHERE seq = ANY($1) AND status = 'dead')",
            )
            .await?;
        tx.execute(&split, &[&dead]).await?;
        report.attempts += tx.execute(&delete_attempts, &[&dead]).await?;
        let delete = tx
            .prepare_cached("DELETE FROM deliveries WHERE seq = ANY($1) AND status = 'dead'")
            .await?;
        let n = tx.execute(&delete, &[&dead]).await?;
        report.deliveries += n;
        report.dead += n;
    }

    prune_events(tx, before(limits.events), batch, &mut report).await?;

    // Dedup windows no configured window can still reach, and long-ended silences.
    report.dedup_windows = super::noise::prune_windows(tx, before(limits.dedup), batch).await?;
    report.silences = super::noise::prune_silences(tx, before(limits.events), batch).await?;
    report.more |=
        report.dedup_windows >= batch.unsigned_abs() || report.silences >= batch.unsigned_abs();

    // Groups and throttle windows past their interval (or period), with no open digest.
    let (groups, windows) = super::fold::prune(tx, now, batch).await?;
    report.fold_rows = groups + windows;
    report.more |= groups >= batch.unsigned_abs() || windows >= batch.unsigned_abs();

    // Over the size ceiling: the oldest finished events go, whatever their age.
    if let Some(max) = limits.max_store_size
        && number(tx, SIZE, &[]).await? > max
    {
        report.over_size = true;
        prune_events(tx, now, batch, &mut report).await?;
    }
    Ok(report)
}

/// The store's size, row counts and oldest pending delivery.
pub(super) async fn stats(c: &impl GenericClient) -> Result<StoreStats, StoreError> {
    let oldest_sql = c
        .prepare_cached("SELECT min(created_at) FROM deliveries WHERE status = 'pending'")
        .await?;
    let oldest: Option<i64> = c.query_one(&oldest_sql, &[]).await?.try_get(0)?;
    Ok(StoreStats {
        size_bytes: number(c, SIZE, &[]).await?,
        events: number(c, "SELECT count(*) FROM events", &[]).await?,
        deliveries: number(c, "SELECT count(*) FROM deliveries", &[]).await?,
        attempts: number(c, "SELECT count(*) FROM attempts", &[]).await?,
        pending: number(
            c,
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            &[],
        )
        .await?,
        dead: number(
            c,
            "SELECT count(*) FROM deliveries WHERE status = 'dead'",
            &[],
        )
        .await?,
        oldest_pending: oldest.map(timestamp),
    })
}
