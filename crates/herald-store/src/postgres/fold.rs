//! The SQL of grouping and throttling on PostgreSQL: where a delivery with a
//! [`FoldClaim`] goes (inside `accept`'s transaction), what a digest carries, and
//! forgetting groups and windows that no longer matter. The timing rules are
//! `crate::fold`'s.
//!
//! With several nodes accepting at once, one group must still get one open digest. Each
//! decision first locks the group's (or window's) row: an `INSERT … ON CONFLICT DO UPDATE`
//! that either creates it (a concurrent insert of the same key waits on the unique index,
//! then finds it) or locks the latest committed version. Joining an open digest then takes
//! a share lock on the digest's row in a statement of its own (so it sees the latest
//! committed version): a claim (`FOR UPDATE SKIP LOCKED`) passes over a digest that an
//! accept is joining until that accept commits, and an accept waits for a claim that has
//! sealed the digest and then sees it sealed. So a member never joins a digest whose
//! attempt may have read its members already.

use std::collections::HashSet;

use deadpool_postgres::GenericClient;

use super::queries::{execute, row_opt, rows, small};
use crate::codec::{decode_event, duration_nanos, timestamp};
use crate::error::StoreError;
use crate::fold::{GroupRow, Step, WindowRow, group_step, throttle_step};
use crate::model::{DigestMembers, FoldClaim};

/// Where one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Folded {
    /// Stored as usual.
    Alone,
    /// Folded into the digest `digest_id`; `opened` is its due time when this delivery
    /// opened it (the caller stores the digest's row with the batch).
    Into {
        digest_id: String,
        opened: Option<i64>,
    },
}

/// Whether the digest `digest_id` is open, locking its row against a claim until this
/// transaction ends. `opened` are the digests this batch opened (not stored yet).
async fn open_digest(
    tx: &impl GenericClient,
    digest_id: &str,
    opened: &HashSet<String>,
) -> Result<bool, StoreError> {
    if opened.contains(digest_id) {
        return Ok(true);
    }
    let row = row_opt(
        tx,
        "SELECT status = 'pending' AND NOT sealed FROM deliveries WHERE id = $1 FOR SHARE",
        &[&digest_id],
    )
    .await?;
    Ok(match row {
        Some(row) => row.try_get(0)?,
        None => false,
    })
}

/// Decides a delivery of `team` (planned for `subscription`) with `claim` at `now`, and
/// updates its group or window. `opened` holds the digests opened earlier in this batch;
/// one this delivery opens is added.
pub(super) async fn fold(
    tx: &impl GenericClient,
    team: &str,
    subscription: &str,
    claim: &FoldClaim,
    now: i64,
    opened: &mut HashSet<String>,
) -> Result<Folded, StoreError> {
    let folded = match claim {
        FoldClaim::Group {
            key,
            wait,
            interval,
            digest_id,
            ..
        } => {
            // Created as if the group were new (opening this delivery's digest), or locked.
            let Step::Open {
                due: new_due,
                expires_at: new_expiry,
            } = group_step(None, *wait, *interval, now)
            else {
                return Err(StoreError::Internal("a new group did not open a digest"));
            };
            let row = rows(
                tx,
                "INSERT INTO digest_groups AS g (team_id, subscription, key, digest_id,
                     last_due, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (team_id, subscription, key) DO UPDATE SET team_id = g.team_id
                 RETURNING (xmax = 0), g.digest_id, g.last_due",
                &[&team, &subscription, key, digest_id, &new_due, &new_expiry],
            )
            .await?;
            let row = row
                .first()
                .ok_or(StoreError::Internal("a group's upsert returned no row"))?;
            let created: bool = row.try_get(0)?;
            if created {
                Folded::Into {
                    digest_id: digest_id.clone(),
                    opened: Some(new_due),
                }
            } else {
                let current: String = row.try_get(1)?;
                let last_due: i64 = row.try_get(2)?;
                let open = open_digest(tx, &current, opened).await?;
                match group_step(Some(GroupRow { last_due, open }), *wait, *interval, now) {
                    Step::Join => Folded::Into {
                        digest_id: current,
                        opened: None,
                    },
                    Step::Open { due, expires_at } => {
                        execute(
                            tx,
                            "UPDATE digest_groups SET digest_id = $4, last_due = $5,
                                    expires_at = $6
                              WHERE team_id = $1 AND subscription = $2 AND key = $3",
                            &[&team, &subscription, key, digest_id, &due, &expires_at],
                        )
                        .await?;
                        Folded::Into {
                            digest_id: digest_id.clone(),
                            opened: Some(due),
                        }
                    }
                    Step::Alone { .. } => {
                        return Err(StoreError::Internal("a group sent a delivery alone"));
                    }
                }
            }
        }
        FoldClaim::Throttle {
            scope,
            limit,
            per,
            digest_id,
            ..
        } => {
            let per_nanos = duration_nanos(*per);
            // Created as a new window counting this delivery, or locked.
            let row = rows(
                tx,
                "INSERT INTO throttle_windows AS w (team_id, scope, started_at, ends_at, count,
                     digest_id)
                 VALUES ($1, $2, $3, $4, 1, NULL)
                 ON CONFLICT (team_id, scope) DO UPDATE SET team_id = w.team_id
                 RETURNING (xmax = 0), w.started_at, w.count, w.digest_id",
                &[&team, scope, &now, &now.saturating_add(per_nanos)],
            )
            .await?;
            let row = row
                .first()
                .ok_or(StoreError::Internal("a window's upsert returned no row"))?;
            let created: bool = row.try_get(0)?;
            if created {
                Folded::Alone
            } else {
                let started_at: i64 = row.try_get(1)?;
                let count: u32 = small("throttle count", row.try_get(2)?)?;
                let current: Option<String> = row.try_get(3)?;
                let open = match &current {
                    Some(id) => open_digest(tx, id, opened).await?,
                    None => false,
                };
                let window = WindowRow {
                    started_at,
                    count,
                    open,
                };
                match throttle_step(Some(window), *limit, *per, now) {
                    Step::Alone { started_at, count } => {
                        execute(
                            tx,
                            "UPDATE throttle_windows
                                SET digest_id = CASE WHEN started_at = $3 THEN digest_id END,
                                    started_at = $3, ends_at = $4, count = $5
                              WHERE team_id = $1 AND scope = $2",
                            &[
                                &team,
                                scope,
                                &started_at,
                                &started_at.saturating_add(per_nanos),
                                &i64::from(count),
                            ],
                        )
                        .await?;
                        Folded::Alone
                    }
                    Step::Join => Folded::Into {
                        digest_id: current
                            .ok_or(StoreError::Internal("joined a window without a digest"))?,
                        opened: None,
                    },
                    Step::Open { due, .. } => {
                        execute(
                            tx,
                            "UPDATE throttle_windows SET digest_id = $3
                              WHERE team_id = $1 AND scope = $2",
                            &[&team, scope, digest_id],
                        )
                        .await?;
                        Folded::Into {
                            digest_id: digest_id.clone(),
                            opened: Some(due),
                        }
                    }
                }
            }
        }
    };
    if let Folded::Into {
        digest_id,
        opened: Some(_),
    } = &folded
    {
        opened.insert(digest_id.clone());
    }
    Ok(folded)
}

/// The members of the digest `digest_id` (read in one snapshot by the caller).
pub(super) async fn digest_members(
    tx: &impl GenericClient,
    digest_id: &str,
    limit: usize,
) -> Result<Option<DigestMembers>, StoreError> {
    let Some(digest) = row_opt(
        tx,
        "SELECT created_at FROM deliveries
          WHERE id = $1 AND digest_kind IS NOT NULL AND digest_id IS NULL",
        &[&digest_id],
    )
    .await?
    else {
        return Ok(None);
    };
    let created: i64 = digest.try_get(0)?;
    let summary = rows(
        tx,
        "SELECT count(*), min(created_at), max(created_at) FROM deliveries
          WHERE digest_id = $1",
        &[&digest_id],
    )
    .await?;
    let summary = summary
        .first()
        .ok_or(StoreError::Internal("a count returned no row"))?;
    let total: i64 = summary.try_get(0)?;
    let first: Option<i64> = summary.try_get(1)?;
    let last: Option<i64> = summary.try_get(2)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let listed = rows(
        tx,
        "SELECT e.body, e.accepted_at FROM deliveries d JOIN events e ON e.seq = d.event_seq
          WHERE d.digest_id = $1 ORDER BY d.seq LIMIT $2",
        &[&digest_id, &limit],
    )
    .await?;
    let events = listed
        .iter()
        .map(|row| {
            let body: String = row.try_get(0)?;
            decode_event(&body, timestamp(row.try_get(1)?))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(DigestMembers {
        events,
        total: u64::try_from(total).unwrap_or(0),
        first_at: timestamp(first.unwrap_or(created)),
        last_at: timestamp(last.unwrap_or(created)),
    }))
}

/// SQL for "the digest whose id is in `column` is open": pending and not yet claimed.
fn open_digest_sql(column: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM deliveries d
                  WHERE d.id = {column} AND d.status = 'pending' AND NOT d.sealed)"
    )
}

/// Forgets up to `batch` groups and up to `batch` windows whose interval (or period)
/// ended before `now` and that have no open digest; returns how many of each. Rows an
/// accept holds are skipped (it is deciding with them).
pub(super) async fn prune(
    tx: &impl GenericClient,
    now: i64,
    batch: i64,
) -> Result<(u64, u64), StoreError> {
    let groups = execute(
        tx,
        &format!(
            "DELETE FROM digest_groups WHERE (team_id, subscription, key) IN
               (SELECT g.team_id, g.subscription, g.key FROM digest_groups g
                 WHERE g.expires_at < $1 AND NOT {}
                 ORDER BY g.expires_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            open_digest_sql("g.digest_id")
        ),
        &[&now, &batch],
    )
    .await?;
    let windows = execute(
        tx,
        &format!(
            "DELETE FROM throttle_windows WHERE (team_id, scope) IN
               (SELECT w.team_id, w.scope FROM throttle_windows w
                 WHERE w.ends_at < $1 AND NOT {}
                 ORDER BY w.ends_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)",
            open_digest_sql("w.digest_id")
        ),
        &[&now, &batch],
    )
    .await?;
    Ok((groups, windows))
}
