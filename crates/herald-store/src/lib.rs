//! herald-store: the durable record of accepted events and the queue of their deliveries.
//!
//! The engine talks to a [`Store`] only; [`SqliteStore`] is the embedded implementation
//! (SQLite in WAL mode, one writer thread doing group commit, exclusive to one process);
//! [`PostgresStore`] is the shared one, which several herald nodes use at once.
//!
//! Architecture invariants:
//! - Accepted means durable: [`Store::accept`] returns only after the transaction that
//!   holds the event *and* its fan-out delivery rows has been committed with a full sync.
//!   The deliveries table is the outbox; nothing is enqueued after the commit.
//! - An event is identified by `(team, id)`: accepting it again is a no-op that reports
//!   [`Accepted::Duplicate`].
//! - Every outcome of a delivery attempt is fenced by the lease under which it was claimed:
//!   a worker whose lease was taken over changes nothing ([`StoreError::LeaseLost`]).
//! - The embedded store is exclusive: one process per data directory (an OS lock on
//!   `herald.lock`, whose holder's pid is named in the error), so it hands the engine a
//!   holder token and the engine dispatches from memory (see [`Store`], "The queue
//!   boundary").
//! - The PostgreSQL store is shared: `holder()` is `None`, every claim is a lease that
//!   expires (`FOR UPDATE SKIP LOCKED`, a random token per row), and a node's dead leases
//!   are taken over by the others; its conformance run and shared-store tests are in
//!   `postgres/tests.rs`, against the real server.
//! - Repeat suppression is decided inside the transaction that accepts the event (see
//!   [`NewDelivery::dedup`]), so concurrent ingest of the same key sends it once.
//! - Grouping and throttling are decided inside the transaction that accepts the event
//!   (see [`NewDelivery::fold`]): a digest is an ordinary delivery row, its members
//!   `grouped` rows naming it, and it is sealed (no member joins any more) in the
//!   transaction that first claims it, so its members never change once an attempt may
//!   have started.
//! - Every read a team can make is scoped by `Option<&TeamId>` (`None` = admin): a team
//!   never sees another team's rows, not even as a distinct error.

mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod fold;
mod model;
mod postgres;
mod sqlite;
mod store;

pub use error::StoreError;
pub use model::{
    Accepted, AttemptRecord, ChannelState, ChatMigration, Claimed, DEFAULT_PAGE_SIZE, DedupClaim,
    DeliveryFilter, DeliveryPage, DeliveryRecord, DeliveryStatus, DigestMembers, Finish, FoldClaim,
    LeaseToken, MAX_PAGE_SIZE, MoveFilter, MoveStatus, NewAttempt, NewDelivery, Next, OpenedDigest,
    PruneLimits, PruneReport, ReplayFilter, ReplayStatus, SilenceFilter, SplitProgress, StoreStats,
};
pub use postgres::{
    DEFAULT_POOL_SIZE as DEFAULT_POSTGRES_POOL_SIZE, DEFAULT_SCHEMA as DEFAULT_POSTGRES_SCHEMA,
    MigrateReport, PostgresOptions, PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION,
    valid_schema_name,
};
pub use sqlite::{CopyReport, DEFAULT_MIN_FREE_BYTES, SqliteStore, WriteStats};
pub use store::{Store, StoreFuture};
