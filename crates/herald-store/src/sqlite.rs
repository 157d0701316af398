//! `SqliteStore`: the embedded [`Store`], one SQLite file in WAL mode.
//!
//! Writes go to one writer thread that commits them in groups (see `writer`); reads run
//! on Tokio's blocking pool over a few read-only connections, which WAL lets proceed
//! while the writer commits.

#[cfg(test)]
mod backlog_tests;
mod backup;
mod chat_state;
mod fold;
mod noise;
mod queries;
mod retention;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use herald_core::{Event, Silence, TeamId, Timestamp};
use rusqlite::Connection;

use crate::error::StoreError;
use crate::model::{
    Accepted, AttemptRecord, ChannelState, ChatMigration, Claimed, DeliveryFilter, DeliveryPage,
    DeliveryRecord, DigestMembers, Finish, LeaseToken, MoveFilter, NewAttempt, NewDelivery, Next,
    PruneLimits, PruneReport, ReplayFilter, SilenceFilter, SplitProgress, StoreStats,
};
use crate::store::{Store, StoreFuture};
pub use backup::CopyReport;
use queries::{ClaimLease, PreparedEvent};
pub use writer::WriteStats;
use writer::Writer;

/// The database file inside the data directory.
pub const DB_FILE: &str = "herald.db";
/// The lock file inside the data directory: held exclusively by the process that has the
/// store open, and holding that process's id for the error another one gets.
pub const LOCK_FILE: &str = "herald.lock";

/// The free space [`Store::health`] requires by default: room for a WAL checkpoint and
/// some thousands of events, so readiness fails before commits do.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Idle read connections kept open; more are opened under load and closed afterwards.
const MAX_IDLE_READERS: usize = 4;

/// The embedded store. Open it once per process and share it (`Arc<dyn Store>`).
///
/// Its methods must be called from within a Tokio runtime (reads use the blocking pool).
/// Dropping it commits whatever writes are already queued, then stops the writer thread.
pub struct SqliteStore {
    path: PathBuf,
    writer: Writer,
    readers: Arc<Readers>,
    /// The token this process holds deliveries under (see [`Store::holder`]).
    holder: LeaseToken,
    /// Below this much free space on the store's filesystem, [`Store::health`] fails.
    min_free_bytes: u64,
    /// Where pruning's walk over finished deliveries' attempts stopped (see `retention`).
    prune_walked: Arc<Mutex<[(i64, i64); 2]>>,
    /// Held open for the store's life: the OS lock on it is what makes this process the
    /// only one. Declared last so that it is released after the writer has stopped.
    _lock: std::fs::File,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/herald.db`, migrates its schema, and starts the
    /// writer thread.
    ///
    /// The store is exclusive: the directory is locked for as long as the store is open,
    /// and a second open — from this process or another — fails with
    /// [`StoreError::Locked`] naming the holder's pid. Every lease of a previous process is
    /// voided, so what it left unfinished is due at once.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io {
                path,
                source: Arc::new(source),
            }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = schema::open_writer(&path)?;
        queries::void_leases(&conn)?;
        let writer = Writer::start(conn)?;
        Ok(SqliteStore {
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            writer,
            holder: LeaseToken::generate(),
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            prune_walked: Arc::new(Mutex::new([(i64::MIN, 0); 2])),
            _lock: lock,
        })
    }

    /// Sets the free space [`Store::health`] requires on the store's filesystem (default
    /// [`DEFAULT_MIN_FREE_BYTES`]).
    pub fn with_min_free_bytes(mut self, bytes: u64) -> SqliteStore {
        self.min_free_bytes = bytes;
        self
    }

    /// Copies the store in `dir` to the new file `dest` with SQLite's online backup API:
    /// a consistent snapshot, taken while a herald may be serving from `dir` (it does not
    /// take the directory's lock; the copy is one read transaction, which WAL lets run
    /// beside the writer). Blocking: call it off the async runtime.
    pub fn backup(dir: &Path, dest: &Path) -> Result<CopyReport, StoreError> {
        backup::backup(&dir.join(DB_FILE), dest)
    }

    /// Replaces the store in `dir` with the backup `from`, atomically, keeping the replaced
    /// database beside it. Refused with [`StoreError::Locked`] (naming the pid) while a
    /// herald holds `dir`, and with [`StoreError::NotHerald`] when `from` is not a herald
    /// database of a schema version this herald knows. `now_secs` names the kept copy.
    /// Blocking: call it off the async runtime.
    pub fn restore(from: &Path, dir: &Path, now_secs: u64) -> Result<CopyReport, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source: Arc::new(source),
        })?;
        // Held until the new database is in place, so no herald can open the store midway.
        let _lock = lock_dir(dir)?;
        backup::restore(from, &dir.join(DB_FILE), now_secs)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How well group commit is batching: for metrics and the load example.
    pub fn write_stats(&self) -> WriteStats {
        self.writer.stats()
    }

    async fn read<F, T>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.with(work))
            .await
            .map_err(|_| StoreError::Internal("a read task panicked"))?
    }
}

/// Takes the exclusive lock on `dir/herald.lock` and writes this process's id into it.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let io = |source| StoreError::Io {
        path: path.clone(),
        source: Arc::new(source),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) if pid == std::process::id() => {
                    format!("pid {pid}, this process: the store is already open here")
                }
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid unknown".to_string(),
            };
            return Err(StoreError::Locked {
                path: dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(file)
}

/// Bytes an unprivileged process may still write on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// A small pool of read-only connections.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn with<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => schema::open_reader(&self.path)?,
        };
        let result = work(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

impl Store for SqliteStore {
    fn holder(&self) -> Option<&LeaseToken> {
        Some(&self.holder)
    }

    fn hold_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        let exclude = exclude_channels.to_vec();
        let lease = ClaimLease::Held(self.holder.clone());
        Box::pin(
            self.writer
                .run_unsynced(move |conn| queries::claim_due(conn, now, limit, &lease, &exclude)),
        )
    }

    fn next_due<'a>(
        &'a self,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Option<Timestamp>> {
        let exclude = exclude_channels.to_vec();
        Box::pin(self.read(move |conn| queries::next_due(conn, &exclude)))
    }

    fn finish_many(&self, finishes: Vec<Finish>) -> StoreFuture<'_, Vec<Result<(), StoreError>>> {
        Box::pin(
            self.writer
                .run_unsynced(move |conn| queries::finish_many(conn, &finishes)),
        )
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
            let events = batch
                .into_iter()
                .map(PreparedEvent::new)
                .collect::<Result<Vec<_>, _>>()?;
            let holder = self.holder.clone();
            self.writer
                .run(move |conn| queries::accept(conn, &events, now, &holder))
                .await
        })
    }

    fn claim_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        let exclude = exclude_channels.to_vec();
        let lease = ClaimLease::For(lease);
        Box::pin(
            self.writer
                .run(move |conn| queries::claim_due(conn, now, limit, &lease, &exclude)),
        )
    }

    fn finish<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        attempt: NewAttempt,
        next: Next,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        let id = delivery_id.to_owned();
        let lease = lease.clone();
        Box::pin(
            self.writer
                .run(move |conn| queries::finish(conn, &id, &lease, &attempt, next, now)),
        )
    }

    fn finish_silenced<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        let (id, lease, silence) = (delivery_id.to_owned(), lease.clone(), silence_id.to_owned());
        // Unsynced: lost in a crash, the delivery is held again and silenced again.
        Box::pin(
            self.writer.run_unsynced(move |conn| {
                queries::finish_silenced(conn, &id, &lease, &silence, now)
            }),
        )
    }

    fn create_silence(&self, silence: Silence) -> StoreFuture<'_, ()> {
        Box::pin(
            self.writer
                .run(move |conn| noise::create_silence(conn, &silence)),
        )
    }

    fn list_silences<'a>(&'a self, filter: &'a SilenceFilter) -> StoreFuture<'a, Vec<Silence>> {
        let filter = filter.clone();
        Box::pin(self.read(move |conn| noise::list_silences(conn, &filter)))
    }

    fn get_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
    ) -> StoreFuture<'a, Option<Silence>> {
        let (team, id) = (team.cloned(), silence_id.to_owned());
        Box::pin(self.read(move |conn| noise::get_silence(conn, team.as_ref(), &id)))
    }

    fn expire_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Silence> {
        let (team, id) = (team.cloned(), silence_id.to_owned());
        Box::pin(
            self.writer
                .run(move |conn| noise::expire_silence(conn, team.as_ref(), &id, now)),
        )
    }

    fn live_silences(&self, now: Timestamp) -> StoreFuture<'_, Vec<Silence>> {
        Box::pin(self.read(move |conn| noise::live_silences(conn, now)))
    }

    fn release<'a>(&'a self, delivery_id: &'a str, lease: &'a LeaseToken) -> StoreFuture<'a, ()> {
        let id = delivery_id.to_owned();
        let lease = lease.clone();
        Box::pin(
            self.writer
                .run(move |conn| queries::release(conn, &id, &lease)),
        )
    }

    fn retry_now<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, DeliveryRecord> {
        let team = team.cloned();
        let id = delivery_id.to_owned();
        Box::pin(
            self.writer
                .run(move |conn| queries::retry_now(conn, team.as_ref(), &id, now)),
        )
    }

    fn orphan<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        reason: String,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        let id = delivery_id.to_owned();
        let lease = lease.clone();
        Box::pin(
            self.writer
                .run_unsynced(move |conn| queries::orphan(conn, &id, &lease, &reason, now)),
        )
    }

    fn reattach_orphans<'a>(
        &'a self,
        channels: &'a [(TeamId, String)],
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        let channels = channels.to_vec();
        Box::pin(
            self.writer
                .run(move |conn| queries::reattach_orphans(conn, &channels, now)),
        )
    }

    fn move_deliveries<'a>(
        &'a self,
        filter: &'a MoveFilter,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        let filter = filter.clone();
        Box::pin(
            self.writer
                .run(move |conn| queries::move_deliveries(conn, &filter, now)),
        )
    }

    fn replay<'a>(
        &'a self,
        filter: &'a ReplayFilter,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        let filter = filter.clone();
        if dry_run {
            Box::pin(self.read(move |conn| queries::replay(conn, &filter, true, now)))
        } else {
            Box::pin(
                self.writer
                    .run(move |conn| queries::replay(conn, &filter, false, now)),
            )
        }
    }

    fn get_event<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        event_id: &'a str,
    ) -> StoreFuture<'a, Option<(Event, Vec<DeliveryRecord>)>> {
        let team = team.cloned();
        let id = event_id.to_owned();
        Box::pin(self.read(move |conn| queries::get_event(conn, team.as_ref(), &id)))
    }

    fn get_delivery<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        let team = team.cloned();
        let id = delivery_id.to_owned();
        Box::pin(self.read(move |conn| queries::get_delivery(conn, team.as_ref(), &id)))
    }

    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, DeliveryPage> {
        let filter = filter.clone();
        Box::pin(self.read(move |conn| queries::list_deliveries(conn, &filter)))
    }

    fn set_channel_state(&self, state: ChannelState) -> StoreFuture<'_, ()> {
        Box::pin(
            self.writer
                .run(move |conn| queries::set_channel_state(conn, &state)),
        )
    }

    fn clear_channel_state<'a>(
        &'a self,
        team: &'a TeamId,
        channel: &'a str,
    ) -> StoreFuture<'a, bool> {
        let team = team.clone();
        let channel = channel.to_owned();
        Box::pin(
            self.writer
                .run(move |conn| queries::clear_channel_state(conn, &team, &channel)),
        )
    }

    fn channel_states<'a>(
        &'a self,
        team: Option<&'a TeamId>,
    ) -> StoreFuture<'a, Vec<ChannelState>> {
        let team = team.cloned();
        Box::pin(self.read(move |conn| queries::channel_states(conn, team.as_ref())))
    }

    fn chat_migrations<'a>(&'a self, bot: &'a str) -> StoreFuture<'a, Vec<ChatMigration>> {
        let bot = bot.to_owned();
        Box::pin(self.read(move |conn| chat_state::chat_migrations(conn, &bot)))
    }

    fn record_chat_migration<'a>(
        &'a self,
        bot: &'a str,
        migration: ChatMigration,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        let bot = bot.to_owned();
        Box::pin(self.writer.run_unsynced(move |conn| {
            chat_state::record_chat_migration(conn, &bot, migration, now)
        }))
    }

    fn split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<SplitProgress>> {
        let id = delivery_id.to_owned();
        Box::pin(self.read(move |conn| chat_state::split_progress(conn, &id)))
    }

    fn set_split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: SplitProgress,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        let id = delivery_id.to_owned();
        Box::pin(
            self.writer
                .run_unsynced(move |conn| chat_state::set_split_progress(conn, &id, progress, now)),
        )
    }

    fn clear_split_progress<'a>(&'a self, delivery_id: &'a str) -> StoreFuture<'a, bool> {
        let id = delivery_id.to_owned();
        Box::pin(
            self.writer
                .run_unsynced(move |conn| chat_state::clear_split_progress(conn, &id)),
        )
    }

    fn prune<'a>(
        &'a self,
        limits: &'a PruneLimits,
        now: Timestamp,
        batch: usize,
    ) -> StoreFuture<'a, PruneReport> {
        let limits = *limits;
        let walked = Arc::clone(&self.prune_walked);
        // Unsynced: a prune lost to a crash is simply done again.
        Box::pin(
            self.writer
                .run_unsynced(move |conn| retention::prune(conn, &limits, now, batch, &walked)),
        )
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.read(retention::stats))
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read(queries::queue_depth))
    }

    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // An empty request through the writer: answered only by a live writer thread
            // that is not wedged (the caller bounds the wait).
            self.writer.run_unsynced(|_| Ok(())).await?;
            let dir = self.path.parent().unwrap_or(&self.path).to_owned();
            let needed = self.min_free_bytes;
            let probe = dir.clone();
            let available = tokio::task::spawn_blocking(move || free_bytes(&probe))
                .await
                .map_err(|_| StoreError::Internal("the free-space probe panicked"))?
                .map_err(|source| StoreError::Io {
                    path: dir.clone(),
                    source: Arc::new(source),
                })?;
            if available < needed {
                return Err(StoreError::DiskFull {
                    path: dir,
                    available,
                    needed,
                });
            }
            Ok(())
        })
    }

    fn dead_count<'a>(&'a self, team: &'a TeamId, channel: &'a str) -> StoreFuture<'a, u64> {
        let (team, channel) = (team.clone(), channel.to_owned());
        Box::pin(self.read(move |conn| queries::dead_count(conn, &team, &channel)))
    }

    fn digest_members<'a>(
        &'a self,
        digest_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<DigestMembers>> {
        let id = digest_id.to_owned();
        Box::pin(self.read(move |conn| fold::digest_members(conn, &id, limit)))
    }

    fn events_after<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        after_event_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Event>> {
        let team = team.cloned();
        let after = after_event_id.to_owned();
        Box::pin(self.read(move |conn| queries::events_after(conn, team.as_ref(), &after, limit)))
    }
}
