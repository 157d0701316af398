//! Where a delivery with a [`FoldClaim`] goes: the timing rules of grouping and throttling,
//! shared by the backends so that they agree exactly. Pure: each backend reads the group's
//! or window's row (locked, inside `accept`'s transaction), asks here, and writes back.

use crate::codec::duration_nanos;
#[cfg(doc)]
use crate::model::FoldClaim;

/// A group's row as a backend read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupRow {
    /// When the group's latest digest was (or is) due.
    pub last_due: i64,
    /// Whether that digest is still open (pending, not yet claimed).
    pub open: bool,
}

/// A throttle window's row as a backend read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WindowRow {
    pub started_at: i64,
    pub count: u32,
    /// Whether the window has a digest that is still open.
    pub open: bool,
}

/// What to do with one delivery, and what to write back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Stored as usual (sent on its own); a throttle's window to write back: its start
    /// and its count with this delivery. (A group never sends a delivery alone.)
    Alone { started_at: i64, count: u32 },
    /// Joins the open digest the row names.
    Join,
    /// Opens a new digest (the claim's `digest_id`), due at `due`. For a group the row
    /// becomes `(digest_id, last_due = due, expires_at)`; for a window, its digest.
    Open { due: i64, expires_at: i64 },
}

/// Decides a grouped delivery at `now` given its group's row.
pub(crate) fn group_step(
    row: Option<GroupRow>,
    wait: std::time::Duration,
    interval: std::time::Duration,
    now: i64,
) -> Step {
    let interval = duration_nanos(interval);
    match row {
        Some(GroupRow { open: true, .. }) => Step::Join,
        row => {
            // A live group (its previous digest fell due less than `interval` ago) flushes
            // on its interval; a new or quiet one waits `wait` to collect more.
            let due = match row {
                Some(GroupRow { last_due, .. }) if now < last_due.saturating_add(interval) => {
                    last_due.saturating_add(interval)
                }
                _ => now.saturating_add(duration_nanos(wait)),
            };
            Step::Open {
                due,
                expires_at: due.saturating_add(interval),
            }
        }
    }
}

/// Decides a throttled delivery at `now` given its window's row.
pub(crate) fn throttle_step(
    row: Option<WindowRow>,
    limit: u32,
    per: std::time::Duration,
    now: i64,
) -> Step {
    let per = duration_nanos(per);
    match row {
        Some(w) if now < w.started_at.saturating_add(per) => {
            if w.count < limit {
                Step::Alone {
                    started_at: w.started_at,
                    count: w.count + 1,
                }
            } else if w.open {
                Step::Join
            } else {
                let end = w.started_at.saturating_add(per);
                Step::Open {
                    due: end,
                    expires_at: end,
                }
            }
        }
        // No window, or it is over: a new one starts now with this delivery.
        _ => Step::Alone {
            started_at: now,
            count: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_group_waits_then_flushes_on_its_interval() {
        let (wait, interval) = (Duration::from_secs(30), Duration::from_secs(300));
        let open = |due| Step::Open {
            due,
            expires_at: due + 300 * S,
        };
        assert_eq!(group_step(None, wait, interval, 0), open(30 * S));
        let row = |last_due, open| Some(GroupRow { last_due, open });
        assert_eq!(
            group_step(row(30 * S, true), wait, interval, 40 * S),
            Step::Join
        );
        // Sealed at 30 s: the next digest is due at 30 s + interval.
        assert_eq!(
            group_step(row(30 * S, false), wait, interval, 40 * S),
            open(330 * S)
        );
        // A group quiet for a whole interval starts over with `wait`.
        assert_eq!(
            group_step(row(30 * S, false), wait, interval, 330 * S),
            open(360 * S)
        );
    }

    #[test]
    fn a_throttle_counts_then_folds_until_its_window_ends() {
        let per = Duration::from_secs(60);
        let row = |started_at, count, open| {
            Some(WindowRow {
                started_at,
                count,
                open,
            })
        };
        let alone = |started_at, count| Step::Alone { started_at, count };
        assert_eq!(throttle_step(None, 2, per, 5 * S), alone(5 * S, 1));
        assert_eq!(
            throttle_step(row(5 * S, 1, false), 2, per, 6 * S),
            alone(5 * S, 2)
        );
        assert_eq!(
            throttle_step(row(5 * S, 2, false), 2, per, 7 * S),
            Step::Open {
                due: 65 * S,
                expires_at: 65 * S
            }
        );
        assert_eq!(
            throttle_step(row(5 * S, 2, true), 2, per, 8 * S),
            Step::Join
        );
        assert_eq!(
            throttle_step(row(5 * S, 2, true), 2, per, 65 * S),
            alone(65 * S, 1)
        );
    }
}
