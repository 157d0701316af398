//! The SQLite schema, its migrations, and the pragmas each kind of connection runs with.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;

/// How long a connection waits for a lock held by another process (e.g. a CLI admin
/// command on the same file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Migrations in order; `PRAGMA user_version` is the number applied. Never edit one that
/// has shipped: append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events, deliveries (the outbox and queue), attempts, channel states.
    "
    CREATE TABLE events (
        -- insertion sequence: SSE replay order; AUTOINCREMENT so it never goes back
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT NOT NULL,
        team_id      TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        -- the complete herald_core::Event as JSON
        body         TEXT NOT NULL,
        accepted_at  INTEGER NOT NULL,
        -- idempotency key; id first so that an admin lookup by id alone uses it too
        UNIQUE (id, team_id)
    );

    CREATE TABLE deliveries (
        seq              INTEGER PRIMARY KEY AUTOINCREMENT,
        id               TEXT NOT NULL UNIQUE,
        event_seq        INTEGER NOT NULL REFERENCES events (seq),
        team_id          TEXT NOT NULL,
        event_id         TEXT NOT NULL,
        event_type       TEXT NOT NULL,
        channel          TEXT NOT NULL,
        subscription     INTEGER NOT NULL,
        status           TEXT NOT NULL
                         CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        -- when the next attempt is due, as shown; NULL unless pending
        next_attempt_at  INTEGER,
        -- the queue key: next_attempt_at, pushed to lease_until while leased
        due_at           INTEGER,
        lease_token      TEXT,
        lease_until      INTEGER,
        last_error       TEXT,
        last_status_code INTEGER,
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL
    );
    -- claim_due and queue_depth; holds pending rows only, so it stays small
    CREATE INDEX deliveries_due ON deliveries (due_at) WHERE status = 'pending';
    -- list_deliveries of a team, newest first (an index's tail is the rowid, i.e. seq);
    -- a channel or event type filter walks the team's rows in that order
    CREATE INDEX deliveries_team ON deliveries (team_id);
    CREATE INDEX deliveries_team_status ON deliveries (team_id, status);
    -- get_event and list_deliveries by event
    CREATE INDEX deliveries_event ON deliveries (event_seq);

    CREATE TABLE attempts (
        delivery_seq INTEGER NOT NULL REFERENCES deliveries (seq),
        number       INTEGER NOT NULL,
        started_at   INTEGER NOT NULL,
        duration_ms  INTEGER NOT NULL,
        status_code  INTEGER,
        error        TEXT,
        response     TEXT,
        PRIMARY KEY (delivery_seq, number)
    ) WITHOUT ROWID;

    CREATE TABLE channel_states (
        team_id      TEXT NOT NULL,
        channel      TEXT NOT NULL,
        disabled     INTEGER NOT NULL,
        paused_until INTEGER,
        reason       TEXT,
        since        INTEGER NOT NULL,
        PRIMARY KEY (team_id, channel)
    ) WITHOUT ROWID;
    ",
    // 2: retention. Pruning walks finished deliveries and events in age order and stops
    // at the cutoff. The switch to auto_vacuum = INCREMENTAL (so pruning can give space
    // back) needs a VACUUM, which cannot run in a migration's transaction:
    // `incremental_vacuum` runs it right after, once.
    "
    CREATE INDEX deliveries_finished ON deliveries (status, updated_at);
    CREATE INDEX events_accepted ON events (accepted_at);
    ",
    // 3: the reads for work go channel by channel when some are excluded (disabled, or
    // their lane is full), so that an excluded channel's backlog is never walked; held
    // rows (no due_at) stay out of it.
    "
    CREATE INDEX deliveries_channel_due ON deliveries (team_id, channel, due_at)
        WHERE status = 'pending' AND due_at IS NOT NULL;
    ",
    // 4: manual retries. A manual retry of a finished delivery starts a fresh retry budget
    // (`budget_start` = the attempts made before it), and its next attempt is recorded as
    // manual (`manual_next`, copied to the attempt row and cleared when it is recorded).
    "
    ALTER TABLE deliveries ADD COLUMN budget_start INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE deliveries ADD COLUMN manual_next INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN manual INTEGER NOT NULL DEFAULT 0;
    ",
    // 5: the subscription a delivery was planned for, by its stable name
    // (`Subscription::key`); NULL for older rows, which keep only the `subscription`
    // position.
    "
    ALTER TABLE deliveries ADD COLUMN subscription_name TEXT;
    ",
    // 6: a team's SSE replay (`events_after` with a team) walks only its own events.
    "CREATE INDEX events_team_seq ON events (team_id, seq);",
    // 7: what the Telegram channel learns and must not forget at a restart. A group's
    // migration to a supergroup (`migrate_to_chat_id`), per bot (its public id, never the
    // token); and how many parts of a split delivery were delivered, until it finishes
    // (pruned with its delivery).
    "
    CREATE TABLE chat_migrations (
        bot         TEXT NOT NULL,
        from_chat   INTEGER NOT NULL,
        to_chat     INTEGER NOT NULL,
        migrated_at INTEGER NOT NULL,
        PRIMARY KEY (bot, from_chat)
    ) WITHOUT ROWID;

    CREATE TABLE split_progress (
        delivery_id TEXT PRIMARY KEY,
        parts       INTEGER NOT NULL,
        delivered   INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 8 (noise control):
    // two delivery statuses that finish without an attempt, `suppressed` (a repeat inside
    // its subscription's dedup window, `duplicate_of` the delivery that opened it) and
    // `silenced` (`silence_id`); the dedup windows; the silences.
    //
    // SQLite cannot alter a CHECK constraint. Widening one changes nothing on disk, so the
    // table's stored definition is edited in place (sqlite.org/lang_altertable.html,
    // "Making Other Kinds Of Table Schema Changes") and the connection's schema reloaded
    // (`writable_schema = RESET`); connections opened later read the new definition.
    "
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
       SET sql = replace(sql,
           'CHECK (status IN (''pending'', ''succeeded'', ''dead'', ''skipped''))',
           'CHECK (status IN (''pending'', ''succeeded'', ''dead'', ''skipped'', ''suppressed'', ''silenced''))')
     WHERE type = 'table' AND name = 'deliveries';
    PRAGMA writable_schema = RESET;
    ALTER TABLE deliveries ADD COLUMN silence_id TEXT;
    ALTER TABLE deliveries ADD COLUMN duplicate_of TEXT;

    -- one row per (team, subscription, key) whose last sent delivery opened a window
    CREATE TABLE dedup_windows (
        team_id      TEXT NOT NULL,
        subscription TEXT NOT NULL,
        key          TEXT NOT NULL,
        delivery_id  TEXT NOT NULL,
        opened_at    INTEGER NOT NULL,
        PRIMARY KEY (team_id, subscription, key)
    ) WITHOUT ROWID;
    -- pruning forgets windows in age order
    CREATE INDEX dedup_windows_opened ON dedup_windows (opened_at);

    CREATE TABLE silences (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,
        team_id       TEXT NOT NULL,
        event_pattern TEXT,
        outcome       TEXT,
        -- the metadata matchers as a JSON object
        metadata      TEXT NOT NULL,
        channel       TEXT,
        starts_at     INTEGER NOT NULL,
        ends_at       INTEGER NOT NULL,
        comment       TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    -- the live ones (ends_at after now), and pruning the long-ended ones
    CREATE INDEX silences_ends ON silences (ends_at);
    CREATE INDEX silences_team ON silences (team_id, seq);
    ",
    // 9: `orphaned` deliveries (their channel left the configuration). The status CHECK of
    // migrations 1 and 8 widens in place: SQLite's documented way to relax a CHECK constraint
    // (sqlite.org/lang_altertable.html, "writable_schema"), which every existing row
    // satisfies, so no table rebuild; the index that follows is DDL, which bumps the schema
    // cookie so every connection re-reads the schema. The index finds a team's orphans of
    // one channel (re-attach on reload, move) without walking its other rows.
    "
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
       SET sql = replace(sql, '''suppressed'', ''silenced'')', '''suppressed'', ''silenced'', ''orphaned'')')
     WHERE type = 'table' AND name = 'deliveries';
    PRAGMA writable_schema = RESET;
    CREATE INDEX deliveries_orphaned ON deliveries (team_id, channel) WHERE status = 'orphaned';
    ",
    // 10 (grouping and throttle): the `grouped` status (folded into a digest, `digest_id`
    // names it), widened in place as in migrations 8 and 9. A digest is a delivery row
    // with `digest_kind` (its `DigestKind` as JSON; a grouped row has its digest's too) and
    // no `digest_id`; `sealed` is set by the claim that first takes it, after which no
    // member joins. `digest_groups` keeps, per (team, subscription, key), the group's
    // latest digest and when it fell due; `throttle_windows`, per (team, scope), the
    // current window, its count and its digest. Both are pruned by `expires_at`/`ends_at`.
    "
    PRAGMA writable_schema = ON;
    UPDATE sqlite_schema
       SET sql = replace(sql, '''silenced'', ''orphaned'')', '''silenced'', ''orphaned'', ''grouped'')')
     WHERE type = 'table' AND name = 'deliveries';
    PRAGMA writable_schema = RESET;
    ALTER TABLE deliveries ADD COLUMN digest_id TEXT;
    ALTER TABLE deliveries ADD COLUMN digest_kind TEXT;
    ALTER TABLE deliveries ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
    -- a digest's members in the order they were folded
    CREATE INDEX deliveries_digest ON deliveries (digest_id, seq) WHERE digest_id IS NOT NULL;

    CREATE TABLE digest_groups (
        team_id      TEXT NOT NULL,
        subscription TEXT NOT NULL,
        key          TEXT NOT NULL,
        -- the group's latest digest (open while pending and not sealed)
        digest_id    TEXT NOT NULL,
        -- when that digest was due; the next one is due no earlier than this + interval
        last_due     INTEGER NOT NULL,
        -- last_due + interval: past it, with no open digest, the row is forgotten
        expires_at   INTEGER NOT NULL,
        PRIMARY KEY (team_id, subscription, key)
    ) WITHOUT ROWID;
    CREATE INDEX digest_groups_expires ON digest_groups (expires_at);

    CREATE TABLE throttle_windows (
        team_id    TEXT NOT NULL,
        scope      TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ends_at    INTEGER NOT NULL,
        -- single messages sent in the window so far
        count      INTEGER NOT NULL,
        -- the window's digest, once something was folded
        digest_id  TEXT,
        PRIMARY KEY (team_id, scope)
    ) WITHOUT ROWID;
    CREATE INDEX throttle_windows_ends ON throttle_windows (ends_at);
    ",
];

/// The schema version this herald writes (`PRAGMA user_version` after migrating).
pub(crate) fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Opens the connection the writer thread will own: WAL, full sync on every commit, the
/// schema migrated.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Before anything writes the file, so that a new database starts with it; an existing
    // one is converted after migrating.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open(format!(
            "the filesystem does not support SQLite's WAL mode (journal mode is {mode})"
        )));
    }
    // Accepted means durable: NORMAL may lose the last commits on power loss.
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn)?;
    incremental_vacuum(&conn)?;
    Ok(conn)
}

/// Opens a read-only connection; the writer must have created the database first.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Makes an older database give freed pages back on request (`PRAGMA incremental_vacuum`
/// after pruning): `auto_vacuum` changes on an existing database only through a VACUUM,
/// which rewrites the file once (migration 2 of a database made before retention).
fn incremental_vacuum(conn: &Connection) -> Result<(), StoreError> {
    const INCREMENTAL: i64 = 2;
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |row| row.get(0))?;
    if mode != INCREMENTAL {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let applied: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let known = MIGRATIONS.len();
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > known {
        return Err(StoreError::Open(format!(
            "the database has schema version {applied}, newer than the {known} this herald knows; \
             use a newer herald"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
    }
    tx.commit()?;
    Ok(())
}
