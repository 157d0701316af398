//! The one error type of the store. Messages name rows by id, never by content or lease token.

use std::path::PathBuf;
use std::sync::Arc;

use crate::model::DeliveryStatus;

/// Why a store operation failed.
///
/// Cheap to clone: the database error is shared, so one failed commit can be reported to
/// every request of its group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The delivery is no longer held under the given lease: the lease expired and another
    /// worker claimed it, or it was released, finished or retried by an admin. Nothing was
    /// changed.
    #[error("the lease on delivery {delivery} was lost; nothing was recorded")]
    LeaseLost { delivery: String },
    /// No such row in the caller's scope.
    #[error("not found")]
    NotFound,
    /// The delivery is in a state the operation does not apply to. A `grouped` one names
    /// the digest that carries it (which is what can be retried).
    #[error(
        "delivery {delivery} is {status} and cannot be retried{}",
        .digest.as_ref().map(|d| format!(
            " on its own: it is sent as part of digest {d}; retry the digest instead"
        )).unwrap_or_default()
    )]
    NotRetryable {
        delivery: String,
        status: DeliveryStatus,
        digest: Option<String>,
    },
    /// The delivery is orphaned: its channel no longer exists for its team, so a retry
    /// has nowhere to send it.
    #[error(
        "delivery {delivery} is orphaned: channel `{channel}` no longer exists for its team; \
         restore the channel and reload, or move the delivery to another channel with \
         POST /v1/deliveries/move"
    )]
    Orphaned { delivery: String, channel: String },
    /// A pagination cursor that this store did not hand out.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A stored row that cannot be read back (it was written by something else, or damaged).
    #[error("stored {what} is unreadable: {message}")]
    Corrupt { what: String, message: String },
    /// The database file was made by a newer herald, or the filesystem lacks what is needed.
    #[error("cannot open the store: {0}")]
    Open(String),
    /// Another process holds the store directory (embedded store: one process per
    /// directory, enforced with an exclusive lock on `herald.lock`).
    #[error(
        "the store directory {} is in use by another herald process ({holder}); stop it, or point this one at another [store] path",
        path.display()
    )]
    Locked { path: PathBuf, holder: String },
    /// The data directory could not be created, locked or inspected.
    #[error("I/O error on the data directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file operation of a backup or restore failed.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file offered as a herald database (a backup to restore) is not one this herald
    /// can use.
    #[error("{} is not a usable herald database: {reason}", path.display())]
    NotHerald { path: PathBuf, reason: String },
    /// An error from SQLite.
    #[error("database error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// An error from PostgreSQL (a statement failed; the database answered).
    #[error("database error: {0}")]
    Postgres(#[source] Arc<tokio_postgres::Error>),
    /// The shared database cannot be reached (down, restarting, refusing connections,
    /// out of connections): nothing was written, and the operation may be tried again.
    /// `target` names the server (`host:port/database`), never a password.
    #[error("the database at {target} is unreachable: {reason}")]
    Unavailable { target: String, reason: String },
    /// The operation does not apply to this kind of store (e.g. an online backup of a
    /// PostgreSQL store, which `pg_dump` makes).
    #[error("{0}")]
    Unsupported(String),
    /// The filesystem holding the store has less free space than the store's minimum, so
    /// new events could soon fail to commit.
    #[error(
        "the disk holding {} is full: {available} bytes free, the store needs at least {needed}",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        available: u64,
        needed: u64,
    },
    /// The writer thread has stopped (the store is shutting down, or a bug killed it).
    #[error("the store is closed")]
    Closed,
    /// A bug in the store, reported instead of a panic.
    #[error("internal store error: {0}")]
    Internal(&'static str),
}

impl StoreError {
    /// Whether the store could not be reached at all (as opposed to refusing or failing an
    /// operation): the caller may answer "unavailable, try again" rather than "error".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. } | StoreError::Closed)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(err))
    }
}
