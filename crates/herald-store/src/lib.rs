//! herald-store: the durable record of accepted events and the queue of their deliveries.
//!
//! The engine talks to a [`Store`] only; [`SqliteStore`] is the embedded implementation
//! (SQLite in WAL mode, one writer thread doing group commit). A PostgreSQL backend is
//! meant to implement the same trait without the engine changing.
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
//! - Every read a team can make is scoped by `Option<&TeamId>` (`None` = admin): a team
//!   never sees another team's rows, not even as a distinct error.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod model;
mod sqlite;
mod store;

pub use error::StoreError;
pub use model::{
    Accepted, AttemptRecord, ChannelState, Claimed, DEFAULT_PAGE_SIZE, DeliveryFilter,
    DeliveryPage, DeliveryRecord, DeliveryStatus, Finish, LeaseToken, MAX_PAGE_SIZE, MoveFilter,
    MoveStatus, NewAttempt, NewDelivery, Next, PruneLimits, PruneReport, ReplayFilter,
    ReplayStatus, StoreStats,
};
pub use sqlite::{CopyReport, DEFAULT_MIN_FREE_BYTES, SqliteStore, WriteStats};
pub use store::{Store, StoreFuture};
