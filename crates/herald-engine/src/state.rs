//! The engine's shared state: the configuration snapshot, the dispatcher's memory and the
//! signals between ingest, the dispatcher and the API. Ingest, dispatch and the engine's
//! API all import it; it imports none of them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use herald_config::Config;
use herald_core::{Event, Silence, TeamId, Timestamp};
use herald_store::Store;
use tokio::sync::Notify;

use crate::bot_state::StoreBotState;
use crate::channels::{Channels, build_channels, telegram_bot};
use crate::concurrency::{INITIAL_LIMIT, Policy};
use crate::live::LiveBus;
use crate::retry::RetryPolicy;
use crate::scheduler::{ChannelKey, Scheduler};

/// Who is calling: a team (through one of its API keys) or the administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Team(TeamId),
    Admin,
}

impl Caller {
    /// The team a read is limited to; `None` for the administrator.
    pub fn scope(&self) -> Option<&TeamId> {
        match self {
            Caller::Team(t) => Some(t),
            Caller::Admin => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most deliveries read from the store in one round trip (start-up recovery, retries
    /// falling due, refilling a lane that spilled).
    pub claim_batch: usize,
    /// How long shutdown waits for attempts in flight before releasing their leases.
    pub shutdown_grace: Duration,
    /// Shared store only: how often the dispatcher claims due work even when it knows of
    /// none, to take what other nodes accepted but did not start, retries they scheduled,
    /// and the leases of nodes that died once they expire.
    pub shared_poll: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            claim_batch: 512,
            shutdown_grace: Duration::from_secs(20),
            shared_poll: Duration::from_secs(1),
        }
    }
}

/// One configuration with the channel adapters built from it. Swapped whole on reload;
/// attempts in flight keep the snapshot they started with.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub(crate) channels: Channels,
    /// The Telegram bot the channels share (and the command answers use).
    pub(crate) telegram: Option<herald_channels::TelegramBot>,
    pub(crate) policy: RetryPolicy,
    /// (team, subscription key) → (formatter plugin, its merged settings), for the
    /// subscriptions that name a formatter. Keyed by `Subscription::key`, not position,
    /// so a delivery queued before a reload keeps its subscription's formatter.
    pub(crate) formatters: HashMap<(TeamId, String), (String, herald_plugins::Settings)>,
    /// (team, position) → subscription key, for deliveries stored by an older herald,
    /// which recorded only the position.
    by_position: HashMap<(TeamId, usize), String>,
    /// (team, subscription key) → `max_group_size`, for the subscriptions that group.
    group_sizes: HashMap<(TeamId, String), u32>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("config", &self.config.source)
            .field("channels", &self.channels.len())
            .finish()
    }
}

impl Snapshot {
    /// Builds the snapshot of `config`. Its Telegram bot is `previous`'s when that one
    /// serves the same token and API URL (a reload keeps the flood control and what the
    /// bot learnt); a new one keeps what it learns in `store` and first reads what an
    /// earlier process recorded there.
    pub(crate) async fn prepare(
        config: Config,
        previous: Option<&Snapshot>,
        store: &Arc<dyn Store>,
    ) -> Result<Snapshot, String> {
        let state: Arc<dyn herald_channels::telegram::BotState> =
            Arc::new(StoreBotState(Arc::clone(store)));
        let previous_bot = previous.and_then(|s| s.telegram.as_ref());
        let (telegram, new) = match telegram_bot(&config, previous_bot, &state)? {
            Some((bot, new)) => (Some(bot), new),
            None => (None, false),
        };
        if let Some(bot) = telegram.as_ref().filter(|_| new) {
            if previous_bot.is_some() {
                tracing::info!(
                    "telegram: the bot_token or api_url changed; a new bot starts with a fresh flood control"
                );
            }
            let known = bot
                .restore()
                .await
                .map_err(|e| format!("reading the Telegram chat migrations: {e}"))?;
            if known > 0 {
                tracing::info!(
                    migrations = known,
                    "telegram: chat migrations recorded earlier apply"
                );
            }
        }
        Snapshot::build(config, telegram)
    }

    pub(crate) fn build(
        config: Config,
        telegram: Option<herald_channels::TelegramBot>,
    ) -> Result<Snapshot, String> {
        let channels = build_channels(&config, telegram.as_ref())?;
        let policy = RetryPolicy::new(config.delivery.retry_schedule.clone());
        let formatters = config
            .matcher
            .subscriptions()
            .iter()
            .filter_map(|sub| {
                let (plugin, settings) = config.formatter(sub)?;
                Some((
                    (sub.id.team.clone(), sub.key()),
                    (plugin.name.clone(), settings),
                ))
            })
            .collect();
        let by_position = config
            .matcher
            .subscriptions()
            .iter()
            .map(|sub| ((sub.id.team.clone(), sub.id.index), sub.key()))
            .collect();
        let group_sizes = config
            .matcher
            .subscriptions()
            .iter()
            .filter_map(|sub| {
                let group = sub.group.as_ref()?;
                Some(((sub.id.team.clone(), sub.key()), group.max_size))
            })
            .collect();
        Ok(Snapshot {
            config: Arc::new(config),
            channels,
            telegram,
            policy,
            formatters,
            by_position,
            group_sizes,
        })
    }

    /// The formatter plugin (and its settings) of the subscription `delivery` was planned
    /// for, found by its stable name (by position for rows of an older herald).
    pub(crate) fn formatter(
        &self,
        delivery: &herald_store::DeliveryRecord,
    ) -> Option<&(String, herald_plugins::Settings)> {
        let team = delivery.team.clone();
        let key = match &delivery.subscription_name {
            Some(name) => name.clone(),
            None => self
                .by_position
                .get(&(team.clone(), delivery.subscription as usize))?
                .clone(),
        };
        self.formatters.get(&(team, key))
    }

    /// How many events a digest delivery lists: its subscription's `max_group_size`, or
    /// the default (100) for a throttle's digest and when the subscription is gone.
    pub(crate) fn max_group_size(&self, delivery: &herald_store::DeliveryRecord) -> usize {
        let size = delivery
            .subscription_name
            .as_ref()
            .and_then(|name| self.group_sizes.get(&(delivery.team.clone(), name.clone())))
            .copied()
            .unwrap_or(herald_core::group::DEFAULT_MAX_GROUP_SIZE);
        size as usize
    }

    /// The longest one attempt may take before the engine gives up on it. A channel may
    /// spend up to three timeouts in one send (Telegram: waiting its turn under the rate
    /// limits, waiting out a 429, the request itself); webhook and email use one.
    pub(crate) fn attempt_limit(&self) -> Duration {
        self.config.delivery.timeout * 3 + Duration::from_secs(10)
    }

    /// How long a claimed delivery stays leased: longer than any attempt can take, so a
    /// live worker never loses its lease to another.
    pub(crate) fn lease(&self) -> Duration {
        self.attempt_limit() + self.config.delivery.timeout + Duration::from_secs(20)
    }
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub snapshot: RwLock<Arc<Snapshot>>,
    pub options: EngineOptions,
    /// Wakes the dispatcher: new work in a lane, the store due, shutdown. Keeps a permit,
    /// so a wake while the dispatcher is busy is not lost.
    pub wake: Notify,
    pub stopping: AtomicBool,
    /// Set when shutdown begins, while requests in flight still finish: not ready, and
    /// live streams end (they would otherwise hold the server open forever).
    pub draining: tokio::sync::watch::Sender<bool>,
    pub running: AtomicBool,
    /// The lanes of deliveries ready in memory, their limits, and disabled channels.
    pub scheduler: Mutex<Scheduler>,
    /// When the store next holds due work nobody has in memory (a retry falling due):
    /// the dispatcher reads the store then, and not before. `Some(past)` = at once.
    pub store_due: Mutex<Option<Timestamp>>,
    /// Shared store: the last claim filled its page, so more due work may wait in the
    /// store; the dispatcher claims again as soon as an attempt ends.
    pub shared_backlog: AtomicBool,
    /// Channels whose last attempt failed permanently (blocked bot, SMTP 5xx, …).
    pub failing: Mutex<HashSet<ChannelKey>>,
    /// Channels whose dead letters are at or over their team's `alert_dead_letters` and
    /// whose owner was alerted (memory only: after a restart the next dead letter over the
    /// threshold alerts once more).
    pub dead_alerted: Mutex<HashSet<ChannelKey>>,
    pub bus: LiveBus,
    /// The state of the sources' and the live bus's connections, for `/readyz`.
    pub components: Arc<crate::components::Components>,
    /// The formatter plugins; hot-swapped on their own (file watcher, reload).
    pub plugins: Arc<herald_plugins::PluginSet>,
    /// Polls plugin files for changes while the engine runs; stops when dropped.
    pub _plugin_watcher: Option<herald_plugins::Watcher>,
    /// Every team's silences that had not ended when last written: read from the store at
    /// start-up and replaced whole (copy on write) when one is created or expired, so
    /// ingest and attempts read them without touching the store. On a shared store other
    /// nodes create and expire silences too: the copy is read again from the store every
    /// `shared_poll` ([`Inner::refresh_silences`]).
    pub silences: RwLock<Arc<Vec<Silence>>>,
    /// Bumped by every change this process makes to `silences`, so that a refresh read
    /// from the store before the change does not undo it.
    pub silences_changed: AtomicU64,
    /// When the silences were last read from a shared store.
    pub silences_read_at: Mutex<Option<Timestamp>>,
}

impl Inner {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the dispatcher to read the store at `at` (or at once, if earlier than what it
    /// already planned) and wakes it.
    pub fn store_due_at(&self, at: Timestamp) {
        {
            let mut due = self.store_due.lock().unwrap_or_else(|e| e.into_inner());
            if due.is_none_or(|d| at < d) {
                *due = Some(at);
            }
        }
        self.wake.notify_one();
    }

    pub fn silences(&self) -> Arc<Vec<Silence>> {
        self.silences
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the silences in memory with `change` applied to them; ended ones go.
    pub fn update_silences(&self, now: Timestamp, change: impl FnOnce(&mut Vec<Silence>)) {
        let mut slot = self.silences.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Silence> = slot.iter().filter(|s| s.ends_at > now).cloned().collect();
        change(&mut next);
        *slot = Arc::new(next);
        self.silences_changed.fetch_add(1, Ordering::SeqCst);
    }

    /// A shared store: reads the live silences again (other nodes create and expire them
    /// too), at most once per `shared_poll`. A change this process made while the read
    /// was under way wins; the next refresh brings both.
    pub async fn refresh_silences(&self, now: Timestamp) {
        {
            let mut read_at = self
                .silences_read_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if read_at.is_some_and(|at| now < crate::after(at, self.options.shared_poll)) {
                return;
            }
            *read_at = Some(now);
        }
        let seen = self.silences_changed.load(Ordering::SeqCst);
        match self.store.live_silences(now).await {
            Ok(live) => {
                let mut slot = self.silences.write().unwrap_or_else(|e| e.into_inner());
                if self.silences_changed.load(Ordering::SeqCst) == seen {
                    *slot = Arc::new(live);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the silences other nodes changed failed; using the last copy");
            }
        }
    }

    /// The silence (its id) that stops a delivery of `event` to `channel` at `now`.
    pub fn silence_for(&self, event: &Event, channel: &str, now: Timestamp) -> Option<String> {
        herald_core::silence::silencing(&self.silences(), event, channel, now).map(|s| s.id.clone())
    }

    /// The id of the first silence in force that stops a digest of `events` to `channel`:
    /// one that matches the channel and every listed event.
    pub fn silence_for_all(
        &self,
        events: &[Event],
        channel: &str,
        now: Timestamp,
    ) -> Option<String> {
        if events.is_empty() {
            return None;
        }
        self.silences()
            .iter()
            .find(|s| events.iter().all(|e| s.silences(e, channel, now)))
            .map(|s| s.id.clone())
    }

    /// Asks the dispatcher to read the store now (a retry requested, a channel re-enabled).
    pub fn read_store_now(&self) {
        self.store_due_at(crate::now());
    }
}

/// The concurrency policy `[delivery]` asks for.
pub(crate) fn concurrency_policy(config: &Config) -> Policy {
    match config.delivery.concurrency_per_channel {
        Some(n) => Policy::Pinned(n),
        None => Policy::Adaptive {
            initial: INITIAL_LIMIT.min(config.delivery.max_concurrency_per_channel),
            max: config.delivery.max_concurrency_per_channel,
        },
    }
}
