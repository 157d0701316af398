//! The engine: the running pipeline behind the server, with its configuration snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_config::Config;
use herald_core::TeamId;
use herald_store::{ChannelState, Store, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::channels::{Channels, build_channels};
use crate::ingest::{IngestError, IngestReply, plan};
use crate::live::{LiveBus, LiveMessage};
use crate::retry::RetryPolicy;
use crate::{dispatch, now};

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
    /// How often the dispatcher looks for due deliveries when nothing wakes it.
    pub poll_interval: Duration,
    /// Most deliveries claimed in one store round trip.
    pub claim_batch: usize,
    /// How long shutdown waits for attempts in flight before releasing their leases.
    pub shutdown_grace: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            poll_interval: Duration::from_millis(200),
            claim_batch: 64,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// One configuration with the channel adapters built from it. Swapped whole on reload;
/// attempts in flight keep the snapshot they started with.
pub struct Snapshot {
    pub config: Arc<Config>,
    pub(crate) channels: Channels,
    pub(crate) policy: RetryPolicy,
    /// (team, subscription index) → (formatter plugin, its merged settings), for the
    /// subscriptions that name a formatter.
    pub(crate) formatters: HashMap<(TeamId, usize), (String, herald_plugins::Settings)>,
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
    fn build(config: Config) -> Result<Snapshot, String> {
        let channels = build_channels(&config)?;
        let policy = RetryPolicy::new(config.delivery.retry_schedule.clone());
        let formatters = config
            .matcher
            .subscriptions()
            .iter()
            .filter_map(|sub| {
                let (plugin, settings) = config.formatter(sub)?;
                Some((
                    (sub.id.team.clone(), sub.id.index),
                    (plugin.name.clone(), settings),
                ))
            })
            .collect();
        Ok(Snapshot {
            config: Arc::new(config),
            channels,
            policy,
            formatters,
        })
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

/// The dispatcher's bookkeeping: attempts in flight per channel, and their leases.
#[derive(Default)]
pub(crate) struct InFlight {
    pub per_channel: HashMap<(TeamId, String), usize>,
    pub leases: HashMap<String, herald_store::LeaseToken>,
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub snapshot: RwLock<Arc<Snapshot>>,
    pub options: EngineOptions,
    pub wake: Notify,
    pub stop: Notify,
    pub stopping: AtomicBool,
    /// Set when shutdown begins, while requests in flight still finish: not ready, and
    /// live streams end (they would otherwise hold the server open forever).
    pub draining: tokio::sync::watch::Sender<bool>,
    pub running: AtomicBool,
    pub in_flight: Mutex<InFlight>,
    /// Channels disabled (e.g. by a 410); their deliveries wait.
    pub disabled: Mutex<HashSet<(TeamId, String)>>,
    /// Channels whose last attempt failed permanently (blocked bot, SMTP 5xx, …).
    pub failing: Mutex<HashSet<(TeamId, String)>>,
    pub bus: LiveBus,
    /// The formatter plugins; hot-swapped on their own (file watcher, reload).
    pub plugins: Arc<herald_plugins::PluginSet>,
    /// Polls plugin files for changes while the engine runs; stops when dropped.
    pub _plugin_watcher: Option<herald_plugins::Watcher>,
}

impl Inner {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    dispatcher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// A formatter plugin and its health, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginState {
    pub name: String,
    pub version: String,
    /// `loaded` or `quarantined` (after repeated failures, until reloaded).
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
}

/// A channel and its health, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelStatus {
    pub team: TeamId,
    pub channel: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub state: &'static str,
    pub reason: Option<String>,
    pub since: Option<herald_core::Timestamp>,
    /// Something the operator should act on, e.g. a Telegram chat that migrated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl Engine {
    /// Builds the channels and starts the delivery workers.
    pub async fn start(
        config: Config,
        store: Arc<dyn Store>,
        options: EngineOptions,
    ) -> Result<Engine, String> {
        let host = herald_plugins::PluginHost::new(herald_plugins::host_options_for(&config))
            .map_err(|e| format!("starting the plugin host: {e}"))?;
        let plugins = Arc::new(herald_plugins::PluginSet::new(
            host,
            herald_plugins::DEFAULT_QUARANTINE_AFTER,
        ));
        for (name, error) in plugins.insert_all(herald_plugins::specs_from_config(&config)) {
            tracing::error!(plugin = %name, %error, "formatter plugin not loaded; its subscriptions use the built-in formatter");
        }
        let watcher = (!plugins.names().is_empty()).then(|| plugins.watch(Duration::from_secs(1)));
        let snapshot = Snapshot::build(config)?;
        let states = store
            .channel_states(None)
            .await
            .map_err(|e| format!("reading channel states: {e}"))?;
        let (disabled, failing): (Vec<_>, Vec<_>) = states.into_iter().partition(|s| s.disabled);
        let disabled = disabled.into_iter().map(|s| (s.team, s.channel)).collect();
        let failing = failing.into_iter().map(|s| (s.team, s.channel)).collect();
        let inner = Arc::new(Inner {
            store,
            snapshot: RwLock::new(Arc::new(snapshot)),
            options,
            wake: Notify::new(),
            stop: Notify::new(),
            stopping: AtomicBool::new(false),
            draining: tokio::sync::watch::Sender::new(false),
            running: AtomicBool::new(true),
            in_flight: Mutex::new(InFlight::default()),
            disabled: Mutex::new(disabled),
            failing: Mutex::new(failing),
            bus: LiveBus::default(),
            plugins,
            _plugin_watcher: watcher,
        });
        let handle = tokio::spawn(dispatch::run(inner.clone()));
        Ok(Engine {
            inner,
            dispatcher: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// The live bus: subscribe to follow events and delivery state changes.
    pub fn bus(&self) -> &LiveBus {
        &self.inner.bus
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.snapshot().config.clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Whether delivery workers run (false once shutdown began).
    pub fn is_ready(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
            && !self.inner.stopping.load(Ordering::SeqCst)
            && !*self.inner.draining.borrow()
    }

    /// Marks the engine not ready (for load balancers) while it still serves the requests
    /// in flight; call when a shutdown signal arrives, before `shutdown`.
    pub fn begin_draining(&self) {
        self.inner.draining.send_replace(true);
    }

    /// Turns true when shutdown begins; live streams watch it to end.
    pub fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.draining.subscribe()
    }

    /// Validates, matches and durably stores `body`; replies only after the commit.
    pub async fn ingest(&self, caller: &Caller, body: &[u8]) -> Result<IngestReply, IngestError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(IngestError::ShuttingDown);
        }
        let snapshot = self.inner.snapshot();
        let now = now();
        let plan = plan(&snapshot.config, caller, body, now)?;
        for (event, deliveries) in &plan.events {
            if deliveries.is_none() {
                self.inner.bus.publish(LiveMessage::Event {
                    durable: false,
                    event: Arc::new(event.clone()),
                });
            }
        }
        let mut durable = Vec::new();
        let mut any_delivery = false;
        for (event, deliveries) in &plan.events {
            if let Some(deliveries) = deliveries {
                any_delivery |= !deliveries.is_empty();
                durable.push((event.clone(), deliveries.clone()));
            }
        }
        let accepted = if durable.is_empty() {
            Vec::new()
        } else {
            self.inner.store.accept(durable, now).await?
        };
        let mut accepted = accepted.into_iter();
        let mut ids = Vec::with_capacity(plan.events.len());
        let mut duplicates = Vec::new();
        for (i, (event, deliveries)) in plan.events.iter().enumerate() {
            let (id, duplicate) = match deliveries {
                Some(_) => match accepted.next() {
                    Some(a) => (a.id().to_string(), a.is_duplicate()),
                    None => {
                        return Err(IngestError::Store(StoreError::Internal(
                            "store replied for fewer events than sent",
                        )));
                    }
                },
                None => (event.id.clone(), false),
            };
            if duplicate {
                duplicates.push(i);
            } else {
                metrics::counter!("herald_events_accepted_total", "team" => event.team_id.to_string()).increment(1);
                if deliveries.is_some() {
                    self.inner.bus.publish(LiveMessage::Event {
                        durable: true,
                        event: Arc::new(event.clone()),
                    });
                }
            }
            ids.push(id);
        }
        if any_delivery {
            self.inner.wake.notify_one();
        }
        Ok(if plan.batch {
            IngestReply::Many { ids, duplicates }
        } else {
            IngestReply::One {
                id: ids.pop().unwrap_or_default(),
                duplicate: !duplicates.is_empty(),
            }
        })
    }

    /// Swaps in a new configuration atomically. Attempts in flight finish on the old one.
    /// Channels disabled by a 410 are re-enabled.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let snapshot = Snapshot::build(config)?;
        let plugins = self.inner.plugins.clone();
        let specs = herald_plugins::specs_from_config(&snapshot.config);
        let results = tokio::task::spawn_blocking(move || plugins.sync(specs))
            .await
            .map_err(|e| format!("reloading plugins failed: {e}"))?;
        for (name, result) in results {
            match result {
                Ok(herald_plugins::Reload::Swapped { version }) => {
                    tracing::info!(plugin = %name, %version, "formatter plugin loaded")
                }
                Ok(herald_plugins::Reload::Unchanged) => {}
                Err(error) => {
                    tracing::error!(plugin = %name, %error, "formatter plugin not reloaded; the previous version (or the built-in formatter) keeps serving")
                }
            }
        }
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        let disabled: Vec<(TeamId, String)> = self
            .inner
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for (team, channel) in disabled {
            if let Err(e) = self.inner.store.clear_channel_state(&team, &channel).await {
                tracing::error!(%team, %channel, error = %e, "could not re-enable channel after reload");
            }
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Makes a dead (or failing) delivery due now and wakes the workers.
    pub async fn retry(
        &self,
        caller: &Caller,
        delivery_id: &str,
    ) -> Result<herald_store::DeliveryRecord, StoreError> {
        let record = self
            .inner
            .store
            .retry_now(caller.scope(), delivery_id, now())
            .await?;
        self.inner.wake.notify_one();
        Ok(record)
    }

    /// Re-enables a disabled channel. Returns false if it was not disabled.
    pub async fn enable_channel(&self, team: &TeamId, channel: &str) -> Result<bool, StoreError> {
        let was = self.inner.store.clear_channel_state(team, channel).await?;
        let key = (team.clone(), channel.to_string());
        self.inner
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.inner
            .failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.inner.bus.publish(LiveMessage::Channel {
            team: team.clone(),
            channel: channel.to_string(),
            state: "ok",
            reason: None,
        });
        self.inner.wake.notify_one();
        Ok(was)
    }

    /// The formatter plugins and their state (admin view; plugins are global).
    pub fn plugins(&self) -> Vec<PluginState> {
        self.inner
            .plugins
            .status()
            .into_iter()
            .map(|p| PluginState {
                state: if p.quarantined.is_some() {
                    "quarantined"
                } else {
                    "loaded"
                },
                last_error: p.quarantined,
                name: p.name,
                version: p.version,
                consecutive_failures: p.consecutive_failures,
            })
            .collect()
    }

    /// Every configured channel the caller may see, with its state.
    pub async fn channels(&self, caller: &Caller) -> Result<Vec<ChannelStatus>, StoreError> {
        let snapshot = self.inner.snapshot();
        let config = snapshot.config.clone();
        let states: HashMap<(TeamId, String), ChannelState> = self
            .inner
            .store
            .channel_states(caller.scope())
            .await?
            .into_iter()
            .map(|s| ((s.team.clone(), s.channel.clone()), s))
            .collect();
        let mut out = Vec::new();
        for (team, t) in &config.teams {
            if caller.scope().is_some_and(|scope| scope != team) {
                continue;
            }
            for (name, channel) in &t.channels {
                let state = states.get(&(team.clone(), name.clone()));
                let label = match state {
                    Some(s) if s.disabled => "disabled",
                    Some(s) if s.reason.is_some() => "failing",
                    _ => "ok",
                };
                out.push(ChannelStatus {
                    team: team.clone(),
                    channel: name.clone(),
                    kind: channel.kind(),
                    state: label,
                    reason: state.and_then(|s| s.reason.clone()),
                    since: state.map(|s| s.since),
                    notice: snapshot
                        .channels
                        .get(&(team.clone(), name.clone()))
                        .and_then(|c| c.notice()),
                });
            }
        }
        Ok(out)
    }

    /// Stops claiming, lets attempts in flight finish (up to the grace period), releases
    /// the leases of those that did not, and returns when the workers have stopped.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.notify_waiters();
        let handle = self
            .dispatcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "the dispatcher ended abnormally");
        }
        self.inner.running.store(false, Ordering::SeqCst);
    }
}
