//! `PostgresStore`: the shared [`Store`], one PostgreSQL schema that several herald
//! processes (nodes) use at once.
//!
//! Nothing is held in memory across nodes: `holder()` is `None`, deliveries are claimed
//! with `FOR UPDATE SKIP LOCKED` under a lease that expires (`due_at` becomes the lease's
//! end, so an expired lease is simply due again), and every finish is one statement
//! fenced by the lease token. Accepting commits with `synchronous_commit = on` whatever
//! the server's default; attempt records, claims and prunes commit without waiting for
//! the WAL flush (losing one repeats an attempt, which at-least-once allows).

mod chat_state;
mod fold;
mod noise;
mod queries;
mod retention;
mod schema;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use herald_core::{Event, Silence, TeamId, Timestamp};
use tokio_postgres::NoTls;

use crate::codec::nanos;
use crate::error::StoreError;
use crate::model::{
    Accepted, AttemptRecord, ChannelState, ChatMigration, Claimed, DeliveryFilter, DeliveryPage,
    DeliveryRecord, DigestMembers, Finish, LeaseToken, MoveFilter, NewAttempt, NewDelivery, Next,
    PruneLimits, PruneReport, ReplayFilter, SilenceFilter, SplitProgress, StoreStats,
};
use crate::store::{Store, StoreFuture};
pub use schema::{MigrateReport, SCHEMA_VERSION};

/// The schema herald's tables live in unless configured otherwise.
pub const DEFAULT_SCHEMA: &str = "herald";
/// Connections per node unless configured otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// How long an operation waits to connect, or for a free connection of the pool, before
/// the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the shared store is and how to use it.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A libpq-style connection string or `postgres://` URL. May hold a password: never
    /// printed (the `Debug` of this struct leaves it out).
    pub url: String,
    /// Most connections this process opens.
    pub pool_size: usize,
    /// The schema herald's tables live in: a plain lower-case identifier.
    pub schema: String,
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &"[redacted]")
            .field("pool_size", &self.pool_size)
            .field("schema", &self.schema)
            .finish()
    }
}

/// Whether `schema` may name herald's PostgreSQL schema: a lower-case identifier that
/// needs no quoting (`[a-z_][a-z0-9_]*`, at most 63 bytes), so it is safe in SQL text.
pub fn valid_schema_name(schema: &str) -> Result<(), String> {
    let mut chars = schema.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || !schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "`{schema}` is not a plain schema name: use lower-case letters, digits and `_`, not starting with a digit"
        ));
    }
    if schema.len() > 63 {
        return Err(format!(
            "`{schema}` is longer than PostgreSQL's 63-byte names"
        ));
    }
    if schema.starts_with("pg_") {
        return Err(format!(
            "`{schema}`: names starting with `pg_` are PostgreSQL's own"
        ));
    }
    Ok(())
}

/// The shared store. Open it once per process and share it (`Arc<dyn Store>`).
pub struct PostgresStore {
    pool: Pool,
    schema: String,
    /// `host:port/database`, for errors and logs (never the password).
    target: Arc<str>,
    /// The advisory lock that orders `events_after` after every accept in flight.
    events_lock: i64,
    /// Where pruning's walk over finished deliveries stopped (see `retention`).
    prune_walked: Mutex<[(i64, i64); 2]>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The server a connection string points at, as `host:port/database`.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Whether a PostgreSQL error means the server cannot serve us right now (as opposed to
/// refusing one statement): no answer at all, or a connection-class SQLSTATE.
fn is_unreachable(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => err.as_db_error().is_none(),
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
                || code == "53300" // too many connections
        }
    }
}

/// A transaction PostgreSQL aborted to resolve a conflict (deadlock, serialization), which
/// may succeed when run again.
fn is_retryable(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        *code == tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED
            || *code == tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE
    })
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_unreachable(&err) {
            StoreError::Unavailable {
                target: "PostgreSQL".into(),
                reason: err.to_string(),
            }
        } else {
            StoreError::Postgres(Arc::new(err))
        }
    }
}

impl PostgresStore {
    /// Connects to the database, applies the migrations the schema lacks (creating it if
    /// needed), and returns the store. Fails with [`StoreError::Open`] when the schema is
    /// newer than this herald, [`StoreError::Unavailable`] when the server cannot be
    /// reached.
    pub async fn open(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let store = PostgresStore::connect(options)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations the schema lacks and reports the versions (`herald migrate`).
    pub async fn migrate_only(options: &PostgresOptions) -> Result<MigrateReport, StoreError> {
        PostgresStore::connect(options)?.migrate().await
    }

    /// Builds the pool without connecting (connections open on first use).
    fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        valid_schema_name(&options.schema).map_err(StoreError::Open)?;
        let mut config = tokio_postgres::Config::from_str(&options.url).map_err(|e| {
            StoreError::Open(format!(
                "[store] url is not a PostgreSQL connection string: {e}"
            ))
        })?;
        let target: Arc<str> = Arc::from(describe(&config));
        config
            .application_name("herald")
            .connect_timeout(CONNECT_TIMEOUT)
            // Every statement resolves herald's tables in its own schema.
            .options(format!("-c search_path={}", options.schema));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Open(format!("cannot build the connection pool: {e}")))?;
        Ok(PostgresStore {
            pool,
            events_lock: schema::lock_key(&options.schema, "events"),
            schema: options.schema.clone(),
            target,
            prune_walked: Mutex::new([(i64::MIN, 0); 2]),
        })
    }

    async fn migrate(&self) -> Result<MigrateReport, StoreError> {
        let mut client = self.client().await?;
        schema::migrate(&mut client, &self.schema)
            .await
            .map_err(|e| self.named(e))
    }

    /// The server this store talks to, as `host:port/database`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The schema herald's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Names the server in an unreachable error.
    fn named(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::Unavailable { reason, .. } => StoreError::Unavailable {
                target: self.target.to_string(),
                reason,
            },
            other => other,
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            let reason = match e {
                deadpool_postgres::PoolError::Backend(e) => e.to_string(),
                deadpool_postgres::PoolError::Timeout(_) => format!(
                    "no connection within {}s (the server is down, or every pooled connection is busy)",
                    CONNECT_TIMEOUT.as_secs()
                ),
                other => other.to_string(),
            };
            StoreError::Unavailable {
                target: self.target.to_string(),
                reason,
            }
        })
    }

    /// Runs `work` in one transaction; `sync` chooses whether the commit waits for the
    /// WAL to be flushed (accepts) or not (records whose loss only repeats work).
    async fn in_tx<T, F>(&self, sync: bool, work: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, StoreError>,
    {
        let result = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(if sync {
                "SET LOCAL synchronous_commit = on"
            } else {
                "SET LOCAL synchronous_commit = off"
            })
            .await?;
            let value = work(&tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        result.map_err(|e| self.named(e))
    }

    /// Runs `work` on a connection outside any transaction (single statements, reads).
    async fn on_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Object) -> Result<T, StoreError>,
    {
        let result = async {
            let client = self.client().await?;
            work(&client).await
        }
        .await;
        result.map_err(|e| self.named(e))
    }

    /// Runs `work` in a read-only snapshot (one consistent view over several statements).
    async fn snapshot<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T, StoreError>,
    {
        let result = async {
            let mut client = self.client().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let value = work(&tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        result.map_err(|e| self.named(e))
    }
}

impl Store for PostgresStore {
    fn holder(&self) -> Option<&LeaseToken> {
        None
    }

    fn accept(
        &self,
        batch: Vec<(Event, Vec<NewDelivery>)>,
        now: Timestamp,
    ) -> StoreFuture<'_, Vec<Accepted>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let lock = self.events_lock;
            let batch = &batch;
            let mut tries = 0;
            loop {
                tries += 1;
                let result = self
                    .in_tx(true, async move |tx| {
                        // Shared: many accepts at once; `events_after` takes it exclusively
                        // to see a `seq` order no later commit can fill in (see there).
                        tx.execute("SELECT pg_advisory_xact_lock_shared($1)", &[&lock])
                            .await?;
                        queries::accept(tx, batch, now).await
                    })
                    .await;
                // Two nodes inserting the same event ids in different orders can deadlock
                // on the unique key; PostgreSQL aborts one of them, which simply tries
                // again (and then finds the other's rows: duplicates).
                match result {
                    Err(StoreError::Postgres(e)) if tries < 5 && is_retryable(&e) => continue,
                    other => return other,
                }
            }
        })
    }

    fn claim_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            let until = Timestamp::from_unix_nanos(
                i128::from(nanos(now)) + i128::try_from(lease.as_nanos()).unwrap_or(i128::MAX),
            );
            self.in_tx(false, async move |tx| {
                queries::claim_due(tx, now, limit, until, exclude_channels).await
            })
            .await
        })
    }

    fn hold_due<'a>(
        &'a self,
        _now: Timestamp,
        _limit: usize,
        _exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        Box::pin(async {
            Err(StoreError::Unsupported(
                "a shared store holds nothing: claim with claim_due under a lease".into(),
            ))
        })
    }

    fn next_due<'a>(
        &'a self,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Option<Timestamp>> {
        Box::pin(self.on_conn(async move |c| queries::next_due(c, exclude_channels).await))
    }

    fn finish_many(&self, finishes: Vec<Finish>) -> StoreFuture<'_, Vec<Result<(), StoreError>>> {
        Box::pin(self.in_tx(false, async move |tx| {
            queries::finish_many(tx, &finishes).await
        }))
    }

    fn finish<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        attempt: NewAttempt,
        next: Next,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let finish = Finish {
                delivery_id: delivery_id.to_owned(),
                lease: lease.clone(),
                attempt,
                next,
                now,
            };
            let mut results = self
                .in_tx(false, async move |tx| {
                    queries::finish_many(tx, std::slice::from_ref(&finish)).await
                })
                .await?;
            results
                .pop()
                .unwrap_or(Err(StoreError::Internal("a finish got no result")))
        })
    }

    fn finish_silenced<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.on_conn(async move |c| {
            queries::finish_silenced(c, delivery_id, lease, silence_id, now).await
        }))
    }

    fn create_silence(&self, silence: Silence) -> StoreFuture<'_, ()> {
        // Durable before it returns: a one-statement transaction with a synchronous commit.
        Box::pin(self.in_tx(true, async move |tx| {
            noise::create_silence(tx, &silence).await
        }))
    }

    fn list_silences<'a>(&'a self, filter: &'a SilenceFilter) -> StoreFuture<'a, Vec<Silence>> {
        Box::pin(self.on_conn(async move |c| noise::list_silences(c, filter).await))
    }

    fn get_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
    ) -> StoreFuture<'a, Option<Silence>> {
        Box::pin(self.on_conn(async move |c| noise::get_silence(c, team, silence_id).await))
    }

    fn expire_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Silence> {
        Box::pin(self.in_tx(true, async move |tx| {
            noise::expire_silence(tx, team, silence_id, now).await
        }))
    }

    fn live_silences(&self, now: Timestamp) -> StoreFuture<'_, Vec<Silence>> {
        Box::pin(self.on_conn(async move |c| noise::live_silences(c, now).await))
    }

    fn release<'a>(&'a self, delivery_id: &'a str, lease: &'a LeaseToken) -> StoreFuture<'a, ()> {
        Box::pin(self.on_conn(async move |c| queries::release(c, delivery_id, lease).await))
    }

    fn retry_now<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, DeliveryRecord> {
        Box::pin(self.in_tx(true, async move |tx| {
            queries::retry_now(tx, team, delivery_id, now).await
        }))
    }

    fn orphan<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        reason: String,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.in_tx(false, async move |tx| {
            queries::orphan(tx, delivery_id, lease, &reason, now).await
        }))
    }

    fn reattach_orphans<'a>(
        &'a self,
        channels: &'a [(TeamId, String)],
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.in_tx(true, async move |tx| {
            queries::reattach_orphans(tx, channels, now).await
        }))
    }

    fn move_deliveries<'a>(
        &'a self,
        filter: &'a MoveFilter,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.in_tx(true, async move |tx| {
            queries::move_deliveries(tx, filter, now).await
        }))
    }

    fn replay<'a>(
        &'a self,
        filter: &'a ReplayFilter,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        Box::pin(self.in_tx(true, async move |tx| {
            queries::replay(tx, filter, dry_run, now).await
        }))
    }

    fn get_event<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        event_id: &'a str,
    ) -> StoreFuture<'a, Option<(Event, Vec<DeliveryRecord>)>> {
        Box::pin(self.snapshot(async move |tx| queries::get_event(tx, team, event_id).await))
    }

    fn get_delivery<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        Box::pin(self.snapshot(async move |tx| queries::get_delivery(tx, team, delivery_id).await))
    }

    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, DeliveryPage> {
        Box::pin(self.on_conn(async move |c| queries::list_deliveries(c, filter).await))
    }

    fn set_channel_state(&self, state: ChannelState) -> StoreFuture<'_, ()> {
        Box::pin(self.on_conn(async move |c| queries::set_channel_state(c, &state).await))
    }

    fn clear_channel_state<'a>(
        &'a self,
        team: &'a TeamId,
        channel: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(self.on_conn(async move |c| queries::clear_channel_state(c, team, channel).await))
    }

    fn channel_states<'a>(
        &'a self,
        team: Option<&'a TeamId>,
    ) -> StoreFuture<'a, Vec<ChannelState>> {
        Box::pin(self.on_conn(async move |c| queries::channel_states(c, team).await))
    }

    fn chat_migrations<'a>(&'a self, bot: &'a str) -> StoreFuture<'a, Vec<ChatMigration>> {
        Box::pin(self.on_conn(async move |c| chat_state::chat_migrations(c, bot).await))
    }

    fn record_chat_migration<'a>(
        &'a self,
        bot: &'a str,
        migration: ChatMigration,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.in_tx(false, async move |tx| {
            chat_state::record_chat_migration(tx, bot, migration, now).await
        }))
    }

    fn split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<SplitProgress>> {
        Box::pin(self.on_conn(async move |c| chat_state::split_progress(c, delivery_id).await))
    }

    fn set_split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: SplitProgress,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.in_tx(false, async move |tx| {
            chat_state::set_split_progress(tx, delivery_id, progress, now).await
        }))
    }

    fn clear_split_progress<'a>(&'a self, delivery_id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(self.in_tx(false, async move |tx| {
            chat_state::clear_split_progress(tx, delivery_id).await
        }))
    }

    fn prune<'a>(
        &'a self,
        limits: &'a PruneLimits,
        now: Timestamp,
        batch: usize,
    ) -> StoreFuture<'a, PruneReport> {
        let walked = &self.prune_walked;
        Box::pin(self.in_tx(false, async move |tx| {
            retention::prune(tx, limits, now, batch, walked).await
        }))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.on_conn(async move |c| retention::stats(c).await))
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.on_conn(async move |c| queries::queue_depth(c).await))
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.on_conn(async move |c| {
            // A standby answers reads but refuses every write: not ready to accept.
            let standby: bool = c
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await?
                .try_get(0)?;
            if standby {
                return Err(StoreError::Unavailable {
                    target: String::new(),
                    reason: "the server is a read-only standby (in recovery)".into(),
                });
            }
            Ok(())
        }))
    }

    fn dead_count<'a>(&'a self, team: &'a TeamId, channel: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(self.on_conn(async move |c| queries::dead_count(c, team, channel).await))
    }

    fn digest_members<'a>(
        &'a self,
        digest_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<DigestMembers>> {
        Box::pin(self.snapshot(async move |tx| fold::digest_members(tx, digest_id, limit).await))
    }

    fn events_after<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        after_event_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Event>> {
        let lock = self.events_lock;
        // `seq` comes from a sequence when a row is inserted, not when it commits: an
        // accept in flight may hold a lower `seq` than one already visible. Taking the
        // events lock exclusively waits for the accepts in flight (they hold it shared)
        // and makes new ones wait for this read, so what it sees has no gap that a later
        // commit could fill, and a resume never skips an event. It is short: one
        // indexed read, on a reconnect.
        Box::pin(self.in_tx(false, async move |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])
                .await?;
            queries::events_after(tx, team, after_event_id, limit).await
        }))
    }
}
