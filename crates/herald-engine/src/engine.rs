//! The engine: the running pipeline behind the server, and its API (ingest, reload,
//! retries, channel and plugin state). The shared state lives in `state`; this file wires
//! ingest and the dispatcher to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use herald_config::Config;
use herald_core::TeamId;
use herald_store::{ChannelState, NewDelivery, Store, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::ingest::{IngestError, IngestReply, plan};
use crate::live::{LiveBus, LiveMessage};
use crate::scheduler::{Job, LaneStatus, Scheduler};
use crate::state::{Caller, EngineOptions, Inner, Snapshot, concurrency_policy};
use crate::{dispatch, now};

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
    /// The WIT package it targets: `herald:formatter@0.1.0` (herald renders its
    /// digests) or `herald:formatter@0.2.0` (it may render them).
    pub interface: &'static str,
    /// `loaded` or `quarantined` (after repeated failures, until reloaded).
    pub state: &'static str,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    /// The teams it is quarantined for (only the caller's own for a team key).
    pub quarantined_teams: Vec<String>,
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
    /// Attempts allowed in flight (learnt or pinned), in flight now, and waiting.
    pub concurrency: LaneStatus,
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
        let snapshot = Snapshot::prepare(config, None, &store).await?;
        let states = store
            .channel_states(None)
            .await
            .map_err(|e| format!("reading channel states: {e}"))?;
        let (disabled, failing): (Vec<_>, Vec<_>) = states.into_iter().partition(|s| s.disabled);
        let disabled = disabled.into_iter().map(|s| (s.team, s.channel)).collect();
        let failing = failing.into_iter().map(|s| (s.team, s.channel)).collect();
        let policy = concurrency_policy(&snapshot.config);
        let components = Arc::new(crate::components::Components::default());
        let mut bus = LiveBus::default();
        if let Some(url) = &snapshot.config.cluster.live_bus {
            let node =
                snapshot.config.cluster.node_id.clone().unwrap_or_else(|| {
                    format!("{}-{:04x}", crate::process_name(), fastrand::u16(..))
                });
            let relay = crate::cluster_bus::start(
                bus.clone(),
                url,
                &snapshot.config.cluster.channel_prefix,
                node,
                components.clone(),
            )?;
            bus = bus.with_relay(relay);
        }
        let silences = store
            .live_silences(now())
            .await
            .map_err(|e| format!("reading silences: {e}"))?;
        let inner = Arc::new(Inner {
            store,
            snapshot: RwLock::new(Arc::new(snapshot)),
            options,
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            draining: tokio::sync::watch::Sender::new(false),
            running: AtomicBool::new(true),
            scheduler: Mutex::new(Scheduler::new(policy, disabled)),
            // Start-up: everything the last process left unfinished is due.
            store_due: Mutex::new(Some(now())),
            shared_backlog: AtomicBool::new(false),
            failing: Mutex::new(failing),
            dead_alerted: Mutex::new(std::collections::HashSet::new()),
            bus,
            components,
            plugins,
            _plugin_watcher: watcher,
            silences: RwLock::new(Arc::new(silences)),
            silences_changed: std::sync::atomic::AtomicU64::new(0),
            silences_read_at: Mutex::new(Some(now())),
        });
        // Orphans whose channel is configured again (edited while herald was down) are
        // due at once; the dispatcher's first read takes them.
        reattach_orphans(&inner).await;
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

    /// The Telegram bot the channels send through (`None` without `[telegram]`): give it
    /// to `run_commands`, so that command answers share its flood control. A reload keeps
    /// its flood control and migrations unless the token or API URL changed.
    pub fn telegram_bot(&self) -> Option<herald_channels::TelegramBot> {
        self.inner.snapshot().telegram.clone()
    }

    /// The sources' and the live bus's connection states (sources write theirs).
    pub fn components(&self) -> &Arc<crate::components::Components> {
        &self.inner.components
    }

    /// Validates `body` exactly as [`Engine::ingest`] does and shows its events on the
    /// live stream only: nothing is stored, matched or delivered, whatever the event
    /// type (a Pub/Sub source: the stream is the durable path). Shown on this node only,
    /// not relayed on the cluster bus: every node subscribes to the channel itself.
    /// Returns how many events were shown.
    pub fn publish_live(&self, caller: &Caller, body: &[u8]) -> Result<usize, IngestError> {
        let snapshot = self.inner.snapshot();
        // Silences stop deliveries, not what the live stream shows: none apply here.
        let plan = plan(&snapshot.config, caller, body, now(), &[])?;
        let n = plan.events.len();
        for (event, _) in plan.events {
            self.inner.bus.publish_local(LiveMessage::Event {
                durable: false,
                event,
            });
        }
        Ok(n)
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

    /// Validates, matches and durably stores `body`; replies only after the commit. The
    /// new deliveries then go straight to the dispatcher's lanes: the store is not read
    /// to find them.
    pub async fn ingest(&self, caller: &Caller, body: &[u8]) -> Result<IngestReply, IngestError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(IngestError::ShuttingDown);
        }
        let snapshot = self.inner.snapshot();
        let now = now();
        let silences = self.inner.silences();
        let mut plan = plan(&snapshot.config, caller, body, now, &silences)?;
        drop(silences);
        let holder = self.inner.store.holder().cloned();
        let mut durable = Vec::new();
        let mut spilled = false;
        {
            // Which deliveries the lanes take from the start (held); the rest wait in the
            // store until a lane has room. A shared store holds nothing in memory.
            let mut scheduler = self.inner.scheduler();
            for (event, deliveries) in &mut plan.events {
                match deliveries {
                    None => self.inner.bus.publish(LiveMessage::Event {
                        durable: false,
                        event: event.clone(),
                    }),
                    Some(deliveries) => {
                        for d in deliveries.iter_mut() {
                            if d.silence.is_some()
                                || matches!(d.fold, Some(herald_store::FoldClaim::Group { .. }))
                            {
                                // Finished at ingest (silenced, or folded into its group's
                                // digest): never in a lane, never due.
                                d.held = false;
                                continue;
                            }
                            let key = (event.team_id.clone(), d.channel.clone());
                            d.held = holder.is_some() && scheduler.has_room(&key);
                            if !d.held {
                                // A shared store's deliveries are claimed after the commit
                                // (below), not refilled into a lane that spilled.
                                if holder.is_some() {
                                    scheduler.spilled(&key);
                                }
                                spilled = true;
                            }
                        }
                        durable.push(((**event).clone(), deliveries.clone()));
                    }
                }
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
        let mut jobs = Vec::new();
        let mut opened_due: Option<herald_core::Timestamp> = None;
        for (i, (event, deliveries)) in plan.events.iter().enumerate() {
            let mut suppressed = Vec::new();
            let mut folded = Vec::new();
            let (id, duplicate) = match deliveries {
                Some(_) => match accepted.next() {
                    Some(a) => {
                        let (id, duplicate) = (a.id().to_string(), a.is_duplicate());
                        if let herald_store::Accepted::New {
                            suppressed: s,
                            folded: f,
                            opened,
                            ..
                        } = a
                        {
                            suppressed = s;
                            folded = f;
                            for digest in opened {
                                tracing::debug!(digest = %digest.id, channel = %digest.channel, due = %digest.due, "digest opened");
                                opened_due =
                                    Some(opened_due.map_or(digest.due, |d| d.min(digest.due)));
                            }
                        }
                        (id, duplicate)
                    }
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
                if let Some(deliveries) = deliveries {
                    self.inner.bus.publish(LiveMessage::Event {
                        durable: true,
                        event: event.clone(),
                    });
                    announce_noise(&self.inner.bus, event, deliveries, &suppressed, &folded);
                    if let Some(holder) = &holder {
                        // Suppressed (a repeat inside its dedup window), silenced and
                        // folded (carried by a digest) ones are finished in the store
                        // already.
                        jobs.extend(
                            deliveries
                                .iter()
                                .filter(|d| {
                                    d.held && !suppressed.contains(&d.id) && !folded.contains(&d.id)
                                })
                                .map(|d| held_job(event, d, holder, now)),
                        );
                    }
                }
            }
            ids.push(id);
        }
        if !jobs.is_empty() {
            let mut scheduler = self.inner.scheduler();
            for job in jobs {
                scheduler.push(job);
            }
            drop(scheduler);
            self.inner.wake.notify_one();
        }
        if let Some(due) = opened_due {
            // A new digest waits in the store until its flush time, like a retry: the
            // dispatcher's timer must not sleep past it.
            self.inner.store_due_at(due);
        }
        if spilled {
            // Shared store: the dispatcher claims them; exclusive: a lane refills later.
            if holder.is_none() {
                self.inner.read_store_now();
            }
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

    /// Stores a new silence (durably) under a fresh id (`sil_` + UUID v7) and creation
    /// time, and applies it from then on, to ingest and to every attempt not yet started.
    /// The caller has validated it and checked the team.
    pub async fn create_silence(
        &self,
        mut silence: herald_core::Silence,
    ) -> Result<herald_core::Silence, StoreError> {
        silence.id = format!("sil_{}", uuid::Uuid::now_v7().simple());
        silence.created_at = now();
        self.inner.store.create_silence(silence.clone()).await?;
        let live = silence.clone();
        self.inner.update_silences(now(), |all| all.push(live));
        Ok(silence)
    }

    /// Ends a silence now (see `Store::expire_silence`); another team's is
    /// [`StoreError::NotFound`].
    pub async fn expire_silence(
        &self,
        caller: &Caller,
        silence_id: &str,
    ) -> Result<herald_core::Silence, StoreError> {
        let now = now();
        let ended = self
            .inner
            .store
            .expire_silence(caller.scope(), silence_id, now)
            .await?;
        self.inner
            .update_silences(now, |live| live.retain(|s| s.id != ended.id));
        Ok(ended)
    }

    /// Swaps in a new configuration atomically. Attempts in flight finish on the old one.
    /// Channels disabled by a 410 are re-enabled.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let previous = self.inner.snapshot();
        let snapshot = Snapshot::prepare(config, Some(&previous), &self.inner.store).await?;
        drop(previous);
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
        let policy = concurrency_policy(&snapshot.config);
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        let disabled = {
            let mut scheduler = self.inner.scheduler();
            scheduler.set_policy(policy);
            scheduler.enable_all()
        };
        for (team, channel) in disabled {
            if let Err(e) = self.inner.store.clear_channel_state(&team, &channel).await {
                tracing::error!(%team, %channel, error = %e, "could not re-enable channel after reload");
            }
        }
        // A channel name that is back takes its orphans again.
        reattach_orphans(&self.inner).await;
        // Deliveries of re-enabled channels wait in the store.
        self.inner.read_store_now();
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
        self.inner.read_store_now();
        Ok(record)
    }

    /// Re-points a team's orphaned (or dead) deliveries to another of its channels and
    /// queues them; returns how many. A team may move only its own deliveries; for
    /// another's it gets [`StoreError::NotFound`] (the API answers 403 before that). The
    /// caller checks that `filter.to_channel` exists.
    pub async fn move_deliveries(
        &self,
        caller: &Caller,
        filter: &herald_store::MoveFilter,
    ) -> Result<u64, StoreError> {
        if caller.scope().is_some_and(|team| *team != filter.team) {
            return Err(StoreError::NotFound);
        }
        let moved = self.inner.store.move_deliveries(filter, now()).await?;
        if moved > 0 {
            tracing::info!(team = %filter.team, from = %filter.from_channel, to = %filter.to_channel, moved, "deliveries moved to another channel");
            self.inner.read_store_now();
        }
        Ok(moved)
    }

    /// Bulk replay: re-queues the deliveries `filter` selects (or, with `dry_run`, only
    /// counts them) and returns how many. A team may replay only its own deliveries; for
    /// another team's it gets [`StoreError::NotFound`] (the API answers 403 before that).
    pub async fn replay(
        &self,
        caller: &Caller,
        filter: &herald_store::ReplayFilter,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        if caller.scope().is_some_and(|team| *team != filter.team) {
            return Err(StoreError::NotFound);
        }
        let count = self.inner.store.replay(filter, dry_run, now()).await?;
        if !dry_run && count > 0 {
            // The replayed deliveries are due now, in the store: the dispatcher reads them.
            self.inner.read_store_now();
        }
        Ok(count)
    }

    /// Re-enables a disabled channel. Returns false if it was not disabled.
    pub async fn enable_channel(&self, team: &TeamId, channel: &str) -> Result<bool, StoreError> {
        let was = self.inner.store.clear_channel_state(team, channel).await?;
        let key = (team.clone(), channel.to_string());
        self.inner.scheduler().set_disabled(&key, false);
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
        self.inner.read_store_now();
        Ok(was)
    }

    /// The formatter plugins and their state (admin view; plugins are global).
    /// The plugins and their health as `team` sees it (failures and quarantine are per
    /// team); `None` is the admin, who sees every team's.
    pub fn plugins(&self, team: Option<&TeamId>) -> Vec<PluginState> {
        let status = match team {
            Some(team) => self.inner.plugins.status_for_team(team.as_str()),
            None => self.inner.plugins.status(),
        };
        status
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
                interface: p.interface.package(),
                consecutive_failures: p.consecutive_failures,
                quarantined_teams: p.quarantined_teams,
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
                    concurrency: self.inner.scheduler().status(&(team.clone(), name.clone())),
                });
            }
        }
        Ok(out)
    }

    /// Stops claiming, lets attempts in flight finish (up to the grace period), releases
    /// the leases of those that did not, and returns when the workers have stopped.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // `wake` keeps a permit: a dispatcher busy elsewhere (reading the store) returns
        // from its next wait at once and sees `stopping`.
        self.inner.wake.notify_one();
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

/// Makes the orphaned deliveries of every channel the running configuration has due now.
async fn reattach_orphans(inner: &Inner) {
    let config = inner.snapshot().config.clone();
    let channels: Vec<(TeamId, String)> = config
        .teams
        .iter()
        .flat_map(|(team, t)| t.channels.keys().map(|name| (team.clone(), name.clone())))
        .collect();
    match inner.store.reattach_orphans(&channels, now()).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                deliveries = n,
                "orphaned deliveries re-attached to their channel"
            );
            inner.read_store_now();
        }
        Err(e) => {
            tracing::error!(error = %e, "re-attaching orphaned deliveries failed; they stay orphaned until the next reload")
        }
    }
}

/// The job for a delivery the lanes hold from its commit on.
fn held_job(
    event: &Arc<herald_core::Event>,
    d: &NewDelivery,
    holder: &herald_store::LeaseToken,
    now: herald_core::Timestamp,
) -> Job {
    Job {
        delivery: herald_store::DeliveryRecord {
            id: d.id.clone(),
            event_id: event.id.clone(),
            team: event.team_id.clone(),
            channel: d.channel.clone(),
            subscription: d.subscription,
            subscription_name: d.subscription_name.clone(),
            event_type: event.event.clone(),
            status: herald_store::DeliveryStatus::Pending,
            attempts: 0,
            budget_start: 0,
            next_attempt_at: Some(now),
            last_error: None,
            last_status_code: None,
            created_at: now,
            updated_at: now,
            silence_id: None,
            duplicate_of: None,
            digest_id: None,
            digest: None,
        },
        event: event.clone(),
        lease: holder.clone(),
        lease_until: None,
    }
}

/// Counts the deliveries of one event that noise control stopped at ingest, and tells the
/// live stream (status `silenced`, `suppressed` or `grouped`, attempt 0: none was made).
fn announce_noise(
    bus: &LiveBus,
    event: &Arc<herald_core::Event>,
    deliveries: &[NewDelivery],
    suppressed: &[String],
    folded: &[String],
) {
    for d in deliveries {
        let status = if d.silence.is_some() {
            "silenced"
        } else if suppressed.contains(&d.id) {
            "suppressed"
        } else if folded.contains(&d.id) {
            let kind = match &d.fold {
                Some(herald_store::FoldClaim::Throttle { .. }) => "throttle",
                _ => "group",
            };
            metrics::counter!("herald_events_folded_total", "team" => event.team_id.to_string(), "channel" => d.channel.clone(), "kind" => kind).increment(1);
            "grouped"
        } else {
            continue;
        };
        metrics::counter!("herald_deliveries_total", "team" => event.team_id.to_string(), "channel" => d.channel.clone(), "outcome" => status).increment(1);
        bus.publish(LiveMessage::Delivery {
            team: event.team_id.clone(),
            delivery_id: d.id.clone(),
            event_id: event.id.clone(),
            event_type: event.event.clone(),
            channel: d.channel.clone(),
            status,
            attempt: 0,
            error: None,
        });
    }
}

#[cfg(test)]
mod tests;
