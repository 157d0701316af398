//! A [`Store`] that passes everything to a real one, except `finish_many`, which fails the
//! first few times: the finisher's fault path, which a healthy SQLite store never takes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herald_core::{Event, Silence, TeamId, Timestamp};
use herald_store::{
    Accepted, AttemptRecord, ChannelState, ChatMigration, Claimed, DeliveryFilter, DeliveryPage,
    DeliveryRecord, DigestMembers, Finish, LeaseToken, MoveFilter, NewAttempt, NewDelivery, Next,
    PruneLimits, PruneReport, ReplayFilter, SilenceFilter, SplitProgress, Store, StoreError,
    StoreFuture, StoreStats,
};

pub(super) struct FailingFinishes {
    pub inner: std::sync::Arc<dyn Store>,
    /// `finish_many` calls still to fail.
    pub fail: AtomicUsize,
    /// Every `finish_many` call, failed or not.
    pub calls: AtomicUsize,
}

impl Store for FailingFinishes {
    fn finish_silenced<'a>(
        &'a self,
        delivery_id: &'a str,
        lease: &'a LeaseToken,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.inner
            .finish_silenced(delivery_id, lease, silence_id, now)
    }
    fn create_silence(&self, silence: Silence) -> StoreFuture<'_, ()> {
        self.inner.create_silence(silence)
    }
    fn list_silences<'a>(&'a self, filter: &'a SilenceFilter) -> StoreFuture<'a, Vec<Silence>> {
        self.inner.list_silences(filter)
    }
    fn get_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
    ) -> StoreFuture<'a, Option<Silence>> {
        self.inner.get_silence(team, silence_id)
    }
    fn expire_silence<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        silence_id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, Silence> {
        self.inner.expire_silence(team, silence_id, now)
    }
    fn live_silences(&self, now: Timestamp) -> StoreFuture<'_, Vec<Silence>> {
        self.inner.live_silences(now)
    }
    fn chat_migrations<'a>(&'a self, bot: &'a str) -> StoreFuture<'a, Vec<ChatMigration>> {
        self.inner.chat_migrations(bot)
    }
    fn record_chat_migration<'a>(
        &'a self,
        bot: &'a str,
        migration: ChatMigration,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.inner.record_chat_migration(bot, migration, now)
    }
    fn split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
    ) -> StoreFuture<'a, Option<SplitProgress>> {
        self.inner.split_progress(delivery_id)
    }
    fn set_split_progress<'a>(
        &'a self,
        delivery_id: &'a str,
        progress: SplitProgress,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.inner.set_split_progress(delivery_id, progress, now)
    }
    fn clear_split_progress<'a>(&'a self, delivery_id: &'a str) -> StoreFuture<'a, bool> {
        self.inner.clear_split_progress(delivery_id)
    }
    fn holder(&self) -> Option<&LeaseToken> {
        self.inner.holder()
    }
    fn accept(
        &self,
        batch: Vec<(Event, Vec<NewDelivery>)>,
        now: Timestamp,
    ) -> StoreFuture<'_, Vec<Accepted>> {
        self.inner.accept(batch, now)
    }
    fn claim_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
        exclude: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        self.inner.claim_due(now, limit, lease, exclude)
    }
    fn hold_due<'a>(
        &'a self,
        now: Timestamp,
        limit: usize,
        exclude: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Vec<Claimed>> {
        self.inner.hold_due(now, limit, exclude)
    }
    fn next_due<'a>(
        &'a self,
        exclude: &'a [(TeamId, String)],
    ) -> StoreFuture<'a, Option<Timestamp>> {
        self.inner.next_due(exclude)
    }
    fn finish_many(&self, finishes: Vec<Finish>) -> StoreFuture<'_, Vec<Result<(), StoreError>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Box::pin(async { Err(StoreError::Internal("injected finish failure")) });
        }
        self.inner.finish_many(finishes)
    }
    fn finish<'a>(
        &'a self,
        id: &'a str,
        lease: &'a LeaseToken,
        attempt: NewAttempt,
        next: Next,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.inner.finish(id, lease, attempt, next, now)
    }
    fn release<'a>(&'a self, id: &'a str, lease: &'a LeaseToken) -> StoreFuture<'a, ()> {
        self.inner.release(id, lease)
    }
    fn retry_now<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        id: &'a str,
        now: Timestamp,
    ) -> StoreFuture<'a, DeliveryRecord> {
        self.inner.retry_now(team, id, now)
    }
    fn orphan<'a>(
        &'a self,
        id: &'a str,
        lease: &'a LeaseToken,
        reason: String,
        now: Timestamp,
    ) -> StoreFuture<'a, ()> {
        self.inner.orphan(id, lease, reason, now)
    }
    fn reattach_orphans<'a>(
        &'a self,
        channels: &'a [(TeamId, String)],
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        self.inner.reattach_orphans(channels, now)
    }
    fn move_deliveries<'a>(
        &'a self,
        filter: &'a MoveFilter,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        self.inner.move_deliveries(filter, now)
    }
    fn replay<'a>(
        &'a self,
        filter: &'a ReplayFilter,
        dry_run: bool,
        now: Timestamp,
    ) -> StoreFuture<'a, u64> {
        self.inner.replay(filter, dry_run, now)
    }
    fn get_event<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        id: &'a str,
    ) -> StoreFuture<'a, Option<(Event, Vec<DeliveryRecord>)>> {
        self.inner.get_event(team, id)
    }
    fn get_delivery<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        id: &'a str,
    ) -> StoreFuture<'a, Option<(DeliveryRecord, Vec<AttemptRecord>)>> {
        self.inner.get_delivery(team, id)
    }
    fn list_deliveries<'a>(&'a self, filter: &'a DeliveryFilter) -> StoreFuture<'a, DeliveryPage> {
        self.inner.list_deliveries(filter)
    }
    fn set_channel_state(&self, state: ChannelState) -> StoreFuture<'_, ()> {
        self.inner.set_channel_state(state)
    }
    fn clear_channel_state<'a>(
        &'a self,
        team: &'a TeamId,
        channel: &'a str,
    ) -> StoreFuture<'a, bool> {
        self.inner.clear_channel_state(team, channel)
    }
    fn channel_states<'a>(
        &'a self,
        team: Option<&'a TeamId>,
    ) -> StoreFuture<'a, Vec<ChannelState>> {
        self.inner.channel_states(team)
    }
    fn prune<'a>(
        &'a self,
        limits: &'a PruneLimits,
        now: Timestamp,
        batch: usize,
    ) -> StoreFuture<'a, PruneReport> {
        self.inner.prune(limits, now, batch)
    }
    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        self.inner.stats()
    }
    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        self.inner.queue_depth()
    }
    fn health(&self) -> StoreFuture<'_, ()> {
        self.inner.health()
    }
    fn dead_count<'a>(&'a self, team: &'a TeamId, channel: &'a str) -> StoreFuture<'a, u64> {
        self.inner.dead_count(team, channel)
    }
    fn events_after<'a>(
        &'a self,
        team: Option<&'a TeamId>,
        after: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Event>> {
        self.inner.events_after(team, after, limit)
    }
    fn digest_members<'a>(
        &'a self,
        digest_id: &'a str,
        limit: usize,
    ) -> StoreFuture<'a, Option<DigestMembers>> {
        self.inner.digest_members(digest_id, limit)
    }
}
