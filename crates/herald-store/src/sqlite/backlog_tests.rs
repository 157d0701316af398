//! A disabled or capped channel's backlog must not slow the reads that look for work
//! (issue 15, item 3): they run on the writer thread, so a read that walks a large
//! backlog delays every team's ingest commit.

use herald_core::{TeamId, Timestamp};
use rusqlite::{Connection, params};
use tempfile::TempDir;

use super::queries::{self, ClaimLease};
use super::schema;
use crate::LeaseToken;

/// 2026-01-01T00:00:00Z plus `secs`, in the store's nanoseconds.
fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_nanos((1_767_225_600 + i128::from(secs)) * 1_000_000_000)
}

fn nanos(secs: i64) -> i64 {
    i64::try_from(at(secs).unix_nanos()).unwrap()
}

fn team(name: &str) -> TeamId {
    TeamId::parse(name).unwrap()
}

/// Team `acme`'s channel `gone` holds `backlog` due deliveries (all due before anything
/// of `globex`); team `globex`'s channel `ok` holds one, due at second 10.
fn store_with_backlog(backlog: usize) -> (TempDir, Connection) {
    let dir = TempDir::new().unwrap();
    let conn = schema::open_writer(&dir.path().join("herald.db")).unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    let body = |team: &str, id: &str| {
        format!(
            r#"{{"id":"{id}","event":"capsule.create","timestamp":"2026-01-01T00:00:00Z","team_id":"{team}"}}"#
        )
    };
    let mut event = tx
        .prepare(
            "INSERT INTO events (id, team_id, event_type, body, accepted_at)
             VALUES (?1, ?2, 'capsule.create', ?3, ?4) RETURNING seq",
        )
        .unwrap();
    let mut delivery = tx
        .prepare(
            "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, status, attempts, next_attempt_at, due_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'capsule.create', ?5, 0, 'pending', 1, ?6, ?6, ?6, ?6)",
        )
        .unwrap();
    let acme: i64 = event
        .query_row(
            params!["evt_a", "acme", body("acme", "evt_a"), nanos(0)],
            |r| r.get(0),
        )
        .unwrap();
    for i in 0..backlog {
        let due = nanos(0) + i64::try_from(i).unwrap();
        delivery
            .execute(params![
                format!("dlv_a{i}"),
                acme,
                "acme",
                "evt_a",
                "gone",
                due
            ])
            .unwrap();
    }
    let globex: i64 = event
        .query_row(
            params!["evt_g", "globex", body("globex", "evt_g"), nanos(0)],
            |r| r.get(0),
        )
        .unwrap();
    delivery
        .execute(params!["dlv_g", globex, "globex", "evt_g", "ok", nanos(10)])
        .unwrap();
    drop((event, delivery));
    tx.commit().unwrap();
    conn.execute_batch("ANALYZE").unwrap();
    (dir, conn)
}

#[test]
fn reads_for_work_find_other_teams_rows_behind_an_excluded_backlog() {
    let (_dir, conn) = store_with_backlog(5_000);
    let gone = [(team("acme"), "gone".to_string())];
    assert_eq!(queries::next_due(&conn, &gone).unwrap(), Some(at(10)));
    assert_eq!(queries::next_due(&conn, &[]).unwrap(), Some(at(0)));
    let holder = ClaimLease::Held(LeaseToken::generate());
    let claimed = queries::claim_due(&conn, at(20), 3, &holder, &gone).unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["dlv_g"]);
    // Held now: nothing of globex is due any more, and acme's backlog is still excluded.
    assert_eq!(queries::next_due(&conn, &gone).unwrap(), None);
    assert!(
        queries::claim_due(&conn, at(20), 3, &holder, &gone)
            .unwrap()
            .is_empty()
    );
    // Without the exclusion the backlog is handed out oldest first.
    let claimed = queries::claim_due(&conn, at(20), 2, &holder, &[]).unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    assert_eq!(ids, ["dlv_a0", "dlv_a1"]);
}

/// Every statement a read for work runs while a channel is excluded must reach rows
/// through an index search bounded by (team, channel): a plan that walks the due index
/// in time order (or scans the table) reads the excluded backlog on every call.
#[test]
fn reads_for_work_with_exclusions_search_per_channel_and_never_scan() {
    let (_dir, conn) = store_with_backlog(100);
    let mut searched_per_channel = false;
    for sql in queries::EXCLUDING_READS {
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // The plan does not depend on the values; NULLs fill every parameter.
        let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
        let plan: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join(" | ");
        assert!(
            !plan.contains("SCAN"),
            "a read for work scans rows:\n{sql}\nplan: {plan}"
        );
        // `deliveries_due` is in time order: walking it passes the excluded backlog.
        assert!(
            !plan.contains("deliveries_due "),
            "a read for work walks the due index in time order:\n{sql}\nplan: {plan}"
        );
        searched_per_channel |= plan.contains("deliveries_channel_due (");
    }
    assert!(
        searched_per_channel,
        "no read searches the (team_id, channel, due_at) index"
    );
}

/// The work a read does is bounded by the channels it looks at, not by the excluded
/// backlog: the statements' virtual-machine step counters (SQLite's own count of what a
/// statement did) stay small although 20,000 excluded rows are due first.
#[test]
fn reads_for_work_do_not_grow_with_an_excluded_backlog() {
    let (_dir, conn) = store_with_backlog(20_000);
    let gone = [(team("acme"), "gone".to_string())];
    let holder = ClaimLease::Held(LeaseToken::generate());
    for _ in 0..3 {
        queries::next_due(&conn, &gone).unwrap();
        queries::claim_due(&conn, at(0), 10, &holder, &gone).unwrap();
    }
    let steps: i32 = queries::EXCLUDING_READS
        .iter()
        .map(|sql| {
            conn.prepare_cached(sql)
                .unwrap()
                .get_status(rusqlite::StatementStatus::VmStep)
        })
        .sum();
    assert!(
        steps > 0,
        "the reads for work ran none of the statements checked"
    );
    assert!(
        steps < 2_000,
        "six reads took {steps} SQLite steps: they walk the excluded backlog"
    );
}
