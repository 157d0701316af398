//! The PostgreSQL schema and its versioned migrations, applied under an advisory lock so
//! that nodes starting together migrate once.

use deadpool_postgres::Client;

use crate::error::StoreError;

/// Migrations in order; the `schema_migrations` table records those applied. Never edit
/// one that has shipped: append a new one. Times are Unix nanoseconds (BIGINT), as in the
/// embedded store, so both backends share one encoding (`crate::codec`).
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events, deliveries (the outbox and queue), attempts, channel states.
    "
    CREATE TABLE events (
        -- insertion sequence: SSE replay order
        seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id           TEXT NOT NULL,
        team_id      TEXT NOT NULL,
        event_type   TEXT NOT NULL,
        -- the complete herald_core::Event as JSON, exactly as encoded
        body         TEXT NOT NULL,
        accepted_at  BIGINT NOT NULL,
        -- idempotency: two nodes accepting the same event store it once
        UNIQUE (id, team_id)
    );
    CREATE INDEX events_accepted ON events (accepted_at);
    CREATE INDEX events_team_seq ON events (team_id, seq);

    CREATE TABLE deliveries (
        seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id                TEXT NOT NULL UNIQUE,
        event_seq         BIGINT NOT NULL REFERENCES events (seq),
        team_id           TEXT NOT NULL,
        event_id          TEXT NOT NULL,
        event_type        TEXT NOT NULL,
        channel           TEXT NOT NULL,
        subscription      BIGINT NOT NULL,
        subscription_name TEXT,
        status            TEXT NOT NULL
                          CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped')),
        attempts          BIGINT NOT NULL DEFAULT 0,
        budget_start      BIGINT NOT NULL DEFAULT 0,
        manual_next       BOOLEAN NOT NULL DEFAULT false,
        -- when the next attempt is due, as shown; NULL unless pending
        next_attempt_at   BIGINT,
        -- the queue key: next_attempt_at, pushed to lease_until while leased, so an
        -- expired lease is simply due again
        due_at            BIGINT,
        lease_token       TEXT,
        lease_until       BIGINT,
        last_error        TEXT,
        last_status_code  BIGINT,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL
    );
    -- claim_due, next_due and queue_depth: pending rows only, so it stays small
    CREATE INDEX deliveries_due ON deliveries (due_at, seq) WHERE status = 'pending';
    CREATE INDEX deliveries_channel_due ON deliveries (team_id, channel, due_at)
        WHERE status = 'pending';
    -- list_deliveries of a team, newest first; dead_count
    CREATE INDEX deliveries_team ON deliveries (team_id, seq);
    CREATE INDEX deliveries_team_status ON deliveries (team_id, status, channel);
    -- get_event and pruning by event
    CREATE INDEX deliveries_event ON deliveries (event_seq);
    -- pruning walks finished deliveries in age order
    CREATE INDEX deliveries_finished ON deliveries (status, updated_at, seq);

    CREATE TABLE attempts (
        delivery_seq BIGINT NOT NULL REFERENCES deliveries (seq),
        number       BIGINT NOT NULL,
        started_at   BIGINT NOT NULL,
        duration_ms  BIGINT NOT NULL,
        status_code  BIGINT,
        error        TEXT,
        response     TEXT,
        manual       BOOLEAN NOT NULL DEFAULT false,
        PRIMARY KEY (delivery_seq, number)
    );

    CREATE TABLE channel_states (
        team_id      TEXT NOT NULL,
        channel      TEXT NOT NULL,
        disabled     BOOLEAN NOT NULL,
        paused_until BIGINT,
        reason       TEXT,
        since        BIGINT NOT NULL,
        PRIMARY KEY (team_id, channel)
    );
    ",
    // 2: what the Telegram channel learns and must not forget at a restart (the embedded
    // store's migration 7): a group's migration to a supergroup, per bot (its public id,
    // never the token); how many parts of a split delivery were delivered, until it
    // finishes (pruned with its delivery).
    "
    CREATE TABLE chat_migrations (
        bot         TEXT NOT NULL,
        from_chat   BIGINT NOT NULL,
        to_chat     BIGINT NOT NULL,
        migrated_at BIGINT NOT NULL,
        PRIMARY KEY (bot, from_chat)
    );

    CREATE TABLE split_progress (
        delivery_id TEXT PRIMARY KEY,
        parts       BIGINT NOT NULL,
        delivered   BIGINT NOT NULL,
        updated_at  BIGINT NOT NULL
    );
    ",
    // 3: noise control (the embedded store's migration 8): two statuses that finish a
    // delivery without an attempt, `suppressed` (a repeat inside its subscription's dedup
    // window; `duplicate_of` the delivery that opened it) and `silenced` (`silence_id`);
    // the dedup windows, one row per (team, subscription, key) whose row lock orders
    // concurrent accepts of one key; the silences.
    "
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped', 'suppressed', 'silenced'));
    ALTER TABLE deliveries ADD COLUMN silence_id TEXT, ADD COLUMN duplicate_of TEXT;

    CREATE TABLE dedup_windows (
        team_id      TEXT NOT NULL,
        subscription TEXT NOT NULL,
        key          TEXT NOT NULL,
        delivery_id  TEXT NOT NULL,
        opened_at    BIGINT NOT NULL,
        PRIMARY KEY (team_id, subscription, key)
    );
    -- pruning forgets windows in age order
    CREATE INDEX dedup_windows_opened ON dedup_windows (opened_at);

    CREATE TABLE silences (
        seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        team_id       TEXT NOT NULL,
        event_pattern TEXT,
        outcome       TEXT,
        -- the metadata matchers as a JSON object
        metadata      TEXT NOT NULL,
        channel       TEXT,
        starts_at     BIGINT NOT NULL,
        ends_at       BIGINT NOT NULL,
        comment       TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );
    -- the live ones (ends_at after now), and pruning the long-ended ones
    CREATE INDEX silences_ends ON silences (ends_at);
    CREATE INDEX silences_team ON silences (team_id, seq);
    ",
    // 4: `orphaned` deliveries (their channel left the configuration; the embedded
    // store's migration 9), held until re-attached or moved. The index finds a team's
    // orphans of one channel without walking its other rows.
    "
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped', 'suppressed', 'silenced',
                          'orphaned'));
    CREATE INDEX deliveries_orphaned ON deliveries (team_id, channel)
        WHERE status = 'orphaned';
    ",
    // 5: grouping and throttle (the embedded store's migration 10). `grouped` deliveries
    // are folded into the digest `digest_id` names; a digest is a delivery with
    // `digest_kind` (its `DigestKind` as JSON; its members carry it too) and no
    // `digest_id`, `sealed` by the claim that first takes it. `digest_groups` (per team,
    // subscription, key) and `throttle_windows` (per team, scope) are the rows whose locks
    // order concurrent accepts of one group or window, so two nodes never open two
    // digests for one.
    "
    ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
    ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
        CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped', 'suppressed', 'silenced',
                          'orphaned', 'grouped'));
    ALTER TABLE deliveries ADD COLUMN digest_id TEXT, ADD COLUMN digest_kind TEXT,
        ADD COLUMN sealed BOOLEAN NOT NULL DEFAULT false;
    -- a digest's members in the order they were folded
    CREATE INDEX deliveries_digest ON deliveries (digest_id, seq) WHERE digest_id IS NOT NULL;

    CREATE TABLE digest_groups (
        team_id      TEXT NOT NULL,
        subscription TEXT NOT NULL,
        key          TEXT NOT NULL,
        -- the group's latest digest (open while pending and not sealed)
        digest_id    TEXT NOT NULL,
        -- when that digest was due; the next one is due no earlier than this + interval
        last_due     BIGINT NOT NULL,
        -- last_due + interval: past it, with no open digest, the row is forgotten
        expires_at   BIGINT NOT NULL,
        PRIMARY KEY (team_id, subscription, key)
    );
    CREATE INDEX digest_groups_expires ON digest_groups (expires_at);

    CREATE TABLE throttle_windows (
        team_id    TEXT NOT NULL,
        scope      TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ends_at    BIGINT NOT NULL,
        -- single messages sent in the window so far
        count      BIGINT NOT NULL,
        -- the window's digest, once something was folded
        digest_id  TEXT,
        PRIMARY KEY (team_id, scope)
    );
    CREATE INDEX throttle_windows_ends ON throttle_windows (ends_at);
    ",
];

/// The schema version this herald writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// What [`migrate`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateReport {
    /// The version the schema had before (0: it did not exist).
    pub from: u32,
    /// The version it has now ([`SCHEMA_VERSION`]).
    pub to: u32,
}

/// A stable 64-bit key for a PostgreSQL advisory lock of `purpose` in `schema` (FNV-1a),
/// so that herald schemas on one database never share a lock.
pub(super) fn lock_key(schema: &str, purpose: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in "herald:"
        .bytes()
        .chain(schema.bytes())
        .chain([b':'])
        .chain(purpose.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// Creates the schema if needed and applies the migrations it lacks, in one transaction
/// under an advisory lock (a second node starting at the same moment waits, then finds
/// nothing to do). Refuses a schema newer than this herald.
pub(super) async fn migrate(
    client: &mut Client,
    schema: &str,
) -> Result<MigrateReport, StoreError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&lock_key(schema, "migrate")],
    )
    .await?;
    // `schema` is checked to be a plain identifier when the store is configured.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         SET LOCAL search_path TO {schema};
         CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let applied: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    let from = u32::try_from(applied).unwrap_or(u32::MAX);
    if from > SCHEMA_VERSION {
        return Err(StoreError::Open(format!(
            "the PostgreSQL schema `{schema}` has version {from}, newer than the {SCHEMA_VERSION} \
             this herald knows; use a newer herald (never an older one) on this database"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.batch_execute(sql).await?;
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(MigrateReport {
        from,
        to: SCHEMA_VERSION,
    })
}
