//! The `Store` trait: everything the engine and the admin API need from durable storage.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use herald_core::{Event, Silence, TeamId, Timestamp};

use crate::error::StoreError;
#[cfg(doc)]
use crate::model::FoldClaim;
use crate::model::{
    Accepted, AttemptRecord, ChannelState, ChatMigration, Claimed, DeliveryFilter, DeliveryPage,
    DeliveryRecord, DigestMembers, Finish, LeaseToken, MoveFilter, NewAttempt, NewDelivery, Next,
    PruneLimits, PruneReport, ReplayFilter, SilenceFilter, SplitProgress, StoreStats,
};

/// What every [`Store`] method returns: a boxed future, so that the trait stays
/// object-safe and the engine can hold an `Arc<dyn Store>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The durable record of events and the queue of their deliveries.
///
/// Methods that a team can reach take a scope, `Option<&TeamId>`: `None` is an admin, who
/// sees every team; with `Some(team)` rows of other teams behave exactly as if they did
/// not exist (`None` / [`StoreError::NotFound`]).
///
/// Times are always passed in (`now`), never read from the clock, so that callers and
/// tests control them.
///
/// # The queue boundary
///
/// Two kinds of store sit behind this trait, and the engine asks [`Store::holder`] which
/// one it has:
///
/// - **Exclusive** (the embedded [`crate::SqliteStore`]): exactly one process owns the
///   store (an OS lock on the directory), so claims need no durable lease. `holder()` is
///   `Some(token)`: the engine stores new deliveries as *held* (leased to that token,
///   never handed out by a claim), dispatches them from memory, and reads the store for
///   work only at start-up and when retries fall due ([`Store::next_due`],
///   [`Store::hold_due`]). Opening the store voids every lease of the previous process, so
///   after a crash everything unfinished is due at once.
/// - **Shared** (several processes on one database): `holder()` is `None`; deliveries are
///   claimed with [`Store::claim_due`] under a lease that expires, and a lease that ran out
///   is taken over by another process.
///
/// Both kinds promise: [`Store::accept`] is durable when it returns; every finish is
/// fenced by the lease (or holder token) it was claimed under; a finish may be lost in a
/// crash (the attempt is then made again, with the same delivery id, which is the
/// `webhook-id`) but never applied twice.
pub trait Store: Send + Sync + 'static {
    /// The token this process holds deliveries under, for an exclusive store; `None` for a
    /// shared one, where only expiring leases are handed out.
    fn holder(&self) -> Option<&LeaseToken>;

    /// Stores events with their fan-out deliveries (new deliveries are pending and due at
    /// `now`), all in one transaction, and returns once it is durable. The result has one
    /// entry per event, in order. An event whose `(team, id)` is already stored, or appears
    /// earlier in `batch`, is a [`Accepted::Duplicate`] and its deliveries are dropped.
    /// If anything fails, nothing of the batch is stored. A future dropped after the
    /// request was queued may still store the batch; retrying it is safe (idempotency).
    ///
    /// A delivery with [`NewDelivery::silence`] is stored `silenced` (finished, never
    /// due). One with [`NewDelivery::dedup`] is decided in the same transaction: if its
    /// (team, subscription name, key) has a window opened less than `window` before `now`,
    /// it is stored `suppressed` with `duplicate_of` the delivery that opened it, and
    /// listed in [`Accepted::New::suppressed`]; otherwise it is stored as usual and opens
    /// the window at `now`. Deliveries are decided in batch order, so two of one batch
    /// (or of two concurrent batches) with one key send once.
    ///
    /// A delivery with [`NewDelivery::fold`] that is neither silenced nor suppressed is then
    /// folded, in the same transaction (decided in batch order, so two concurrent batches,
    /// or two nodes, never open two digests for one group or window):
    /// - A *digest* is an ordinary delivery row ([`DeliveryRecord::is_digest`]): pending,
    ///   due at its flush time, never held at creation, claimed like a retry; its
    ///   `event_id` is its first member's event, its channel and subscription those of the
    ///   delivery that opened it, and its id the claim's `digest_id`. A folded delivery is
    ///   stored `grouped` with `digest_id` naming its digest (finished, never due; `held`
    ///   is ignored for it) and listed in [`Accepted::New::folded`]; a digest opened is
    ///   listed in [`Accepted::New::opened`].
    /// - [`FoldClaim::Group`]: the group is (team, subscription name, key). The delivery
    ///   joins the group's open digest if there is one; else it opens one, due
    ///   `now + wait` — or `last_due + interval` when the group's previous digest fell due
    ///   at `last_due`, less than `interval` before `now`.
    /// - [`FoldClaim::Throttle`]: the window is (team, scope). With no window, or
    ///   `now >= start + per`, a new window starts at `now` with a count of 1 and the
    ///   delivery is stored as usual; below `limit` the count goes up by one, as usual;
    ///   beyond it the delivery joins the window's open digest (one is opened, due at
    ///   `start + per`, if there is none).
    /// - A digest is open until it is first claimed or held: [`Store::claim_due`] and
    ///   [`Store::hold_due`] seal it in their transaction, and a delivery arriving after
    ///   that opens the next digest. So a digest's members never change once an attempt
    ///   may have started, and its retries resend exactly the same members under the same
    ///   id.
    fn accept(
        &self,
        batch: Vec<(Event, Vec<NewDelivery>)>,
        now: Timestamp,
    ) -> StoreFuture<'_, Vec<Accepted>>;

    /// Leases up to `limit` pending deliveries that are due at `now`, oldest due first,
    /// for `lease`. A delivery whose lease has run out (its worker died) is due again.
    /// Deliveries to the `(team, channel)` pairs in `exclude_channels` are left alone.
    fn claim_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>>;

    /// Exclusive stores only: like [`Store::claim_due`], but the claimed deliveries are held
    /// under the [`Store::holder`] token until finished, with no expiry (the process that
    /// holds them is the only one). An error for a shared store.
    fn hold_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>>;

    /// When the earliest pending delivery that is not held or leased falls due (it may be
    /// in the past), leaving out the `(team, channel)` pairs in `exclude_channels`; `None`
    /// if there is none. The dispatcher sleeps until then instead of polling.
    fn next_due<'a>(
        &'a self,
        exclude_channels: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Option<Timestamp>>;

    /// Records many attempts, each as [`Store::finish`] would, in one write. The result has
    /// one entry per finish, in order; a fenced-off finish ([`StoreError::LeaseLost`])
    /// changes nothing and does not affect the others. May be committed without a full
    /// sync: a finish lost to a crash only means the attempt is made again.
    fn finish_many(&self, finishes: Vec<Finish>) -> StoreFuture<'_, Vec<Result<(), StoreError>>>;

    /// Records an attempt and the delivery's new state in one transaction, provided the
    /// delivery is still held under `lease` (else [`StoreError::LeaseLost`], nothing
    /// changed). A lease that ran out but was not taken over still counts.
    fn finish<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        attempt: NewAttempt,
        next: Next,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// Marks a claimed (or held) delivery `silenced` by `silence_id` instead of attempting
    /// it: finished, with no attempt recorded. Fenced like [`Store::finish`]. May be
    /// committed without a full sync (lost in a crash, the delivery is claimed again and
    /// the silence, if still in force, stops it again).
    fn finish_silenced<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// Stores a new silence, durably (a full sync) before returning.
    fn create_silence(&self, silence: Silence) -> StoreFuture<'_, ()>;

    /// Silences in scope (`filter.team`; another team's are absent), newest first, at most
    /// [`crate::MAX_PAGE_SIZE`].
    fn list_silences<'a>(&'a self, filter: &'a SilenceFilter) -> StoreFuture<'a, Vec<Silence>>;

    /// One silence in scope.
    fn get_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
    ) -> StoreFuture<'a, Option<Silence>>;

    /// Ends a silence at `now` (one already over is left as it is) and returns it; a
    /// pending one also starts at `now`, so it is simply over. [`StoreError::NotFound`] for
    /// an unknown id or another team's.
    fn expire_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Silence>;

    /// Every team's silences that have not ended at `now` (active and pending): what the
    /// engine keeps in memory to apply.
    fn live_silences(&self, now: Timestamp) -> StoreFuture<'_, Vec<Silence>>;

    /// Gives a claimed delivery back without recording an attempt (graceful shutdown): it
    /// is claimable again at once. Fenced like [`Store::finish`].
    fn release<'a>(&'a self, delivery_id: &'a str, lease: &'a LeaseToken) -> StoreFuture<'a, ()>;

    /// Makes a dead, skipped, suppressed, silenced or pending delivery due at `now` (an
    /// operator's "retry now"; a suppressed or silenced one is then sent, unless a silence
    /// in force stops it again before its attempt).
    /// A delivery being attempted right now (live lease) is left as it is. Attempts
    /// already made still count. [`StoreError::NotRetryable`] for a succeeded delivery,
    /// and for a grouped one (naming its digest, which is retried instead);
    /// [`StoreError::Orphaned`] (naming its channel) for an orphaned one.
    ///
    /// Orphaned deliveries come back through [`Store::reattach_orphans`] and
    /// [`Store::move_deliveries`] only.
    fn retry_now<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, DeliveryRecord>;

    /// Holds a claimed delivery whose channel no longer exists as `orphaned`, with `reason`
    /// as its last error: not due, no attempt recorded, its retry budget untouched. Fenced
    /// like [`Store::finish`].
    fn orphan<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        reason: String,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// Makes the orphaned deliveries of the `(team, channel)` pairs in `channels` (the
    /// channels a configuration has) pending and due at `now`; returns how many.
    fn reattach_orphans<'a>(
        &'a self,
        channels: &'a [(TeamId, String)],
        now: Timestamp,
    ) -> StoreFuture<'a, u64>;

    /// Re-points `filter.team`'s deliveries of `filter.from_channel` in `filter.status` to
    /// `filter.to_channel` and makes them pending and due at `now`, with their ids (a dead
    /// one gets a fresh budget; the next attempt is recorded as manual); returns how many.
    /// The caller checks that `to_channel` exists. Only `filter.team`'s rows are touched.
    fn move_deliveries<'a>(
        &'a self,
        filter: &'a MoveFilter,
        now: Timestamp,
    ) -> StoreFuture<'a, u64>;

    /// Bulk replay: makes every delivery matching `filter` due at `now` again, as
    /// [`Store::retry_now`] does each (same delivery id, a fresh retry budget for a
    /// finished one, the next attempt recorded as manual), and returns how many. Deliveries
    /// being attempted (live lease or hold) are left alone and not counted. With `dry_run`
    /// nothing changes and the count is what would be replayed. Only `filter.team`'s rows
    /// are touched. Grouped deliveries are left alone (their digest is replayed instead).
    fn replay<'a>(
        &'a self,
        filter: &'a ReplayFilter,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreFuture<'a, u64>;

    /// An event with its deliveries (in creation order). With the admin scope and an id
    /// used by several teams, the earliest stored of them.
    fn get_event<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        event_id: &'a str,
    ) -> StoreFuture<'a, Option<(Event, Vec<DeliveryRecord>)>>;

    /// A delivery with its attempts (first attempt first).
    fn get_delivery<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<(DeliveryRecord, Vec<AttemptRecord>)>>;

    /// Deliveries matching `filter`, newest first, one page at a time; the filter's `team`
    /// is the caller's scope.
    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, DeliveryPage>;

    /// Sets (or replaces) the state of `(state.team, state.channel)`.
    fn set_channel_state(&self, state: ChannelState) -> StoreFuture<'_, ()>;

    /// Forgets the state of a channel; `false` if it had none.
    fn clear_channel_state<'a>(
        &'a self,
        team: &'a TeamId,
        channel: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// Channel states in scope, ordered by team then channel.
    fn channel_states<'a>(&'a self, team: Option<&'a TeamId>)
    -> StoreFuture<'a, Vec<ChannelState>>;

    /// The chat migrations `bot` has recorded (its public id, e.g. a Telegram bot's numeric
    /// id: never a token), in no particular order.
    fn chat_migrations<'a>(&'a self, bot: &'a str) -> StoreFuture<'a, Vec<ChatMigration>>;

    /// Records that `migration.from` moved to `migration.to` for `bot` (replacing what
    /// was known of `from`). May be committed without a full sync: a migration lost in a
    /// crash is learnt again from the next send to the old chat.
    fn record_chat_migration<'a>(
        &'a self,
        bot: &'a str,
        migration: ChatMigration,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// How far the delivery `delivery_id`, sent as several messages, got; `None` if
    /// nothing is recorded.
    fn split_progress<'a>(&'a self, delivery_id: &'a str)
    -> StoreFuture<'a, Option<SplitProgress>>;

    /// Records (or replaces) the progress of a split delivery. May be committed without
    /// a full sync: progress lost in a crash repeats parts, which at-least-once allows.
    fn set_split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: SplitProgress,
        now: Timestamp,
    ) -> StoreFuture<'a, ()>;

    /// Forgets the progress of a delivery (it finished); `false` if there was none.
    /// [`Store::prune`] also removes the progress of every delivery it removes.
    fn clear_split_progress<'a>(&'a self, delivery_id: &'a str) -> StoreFuture<'a, bool>;

    /// Removes one batch of finished rows past `limits` at `now` (dedup windows opened
    /// longer ago than `limits.dedup`, silences that ended longer ago than
    /// `limits.events` included): at most about `batch` rows of each kind, in one short write, so that ingest is never held up behind a
    /// long one; call again until the report is empty. Never removes a pending delivery
    /// (due, retrying, held or leased) or its event, nor a grouped delivery (or its event)
    /// whose digest is pending, dead or orphaned; dead letters go only past
    /// `limits.dead`. Groups and throttle windows with no open digest are forgotten once
    /// their interval (or period) is over. May be committed without a full sync (a lost prune is redone).
    fn prune<'a>(
        &'a self,
        limits: &'a PruneLimits,
        now: Timestamp,
        batch: usize,
    ) -> StoreFuture<'a, PruneReport>;

    /// The store's size, row counts and oldest pending delivery (for metrics; counting
    /// may take a while on a large store, so call it now and then, not per request).
    fn stats(&self) -> StoreFuture<'_, StoreStats>;

    /// How many deliveries are pending (due or not, leased or not).
    fn queue_depth(&self) -> StoreFuture<'_, u64>;

    /// `Ok` when the store can take writes now: its writer is running and answering, and
    /// its disk has room. Cheap (writes nothing), for readiness probes; an error says why
    /// (e.g. [`StoreError::Closed`], [`StoreError::DiskFull`]).
    fn health(&self) -> StoreFuture<'_, ()>;

    /// How many dead deliveries (dead letters) `channel` of `team` has now.
    fn dead_count<'a>(&'a self, team: &'a TeamId, channel: &'a str) -> StoreFuture<'a, u64>;

    /// The members of the digest delivery `digest_id` (any team; the caller holds it):
    /// its first `limit` events in the order they were folded, how many in all, and when
    /// the first and last were folded. `None` if `digest_id` is not a digest delivery.
    fn digest_members<'a>(
        &'a self,
        digest_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<DigestMembers>>;

    /// Up to `limit` (clamped to `1..=MAX_PAGE_SIZE`) events in scope stored after the event
    /// `after_event_id`, in the order they were stored: the replay behind SSE
    /// `Last-Event-ID`. [`StoreError::NotFound`] if that event is not in scope.
    fn events_after<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        after_event_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Event>>;
}
