//! The plugins of a running herald: atomic hot swap, quarantine, file watching.
//!
//! Each plugin's current version sits behind an `ArcSwap`: a render takes the `Arc` of
//! the version current when it starts and finishes on it even if a reload swaps a new
//! version in meanwhile. A new version replaces the old only once it has loaded and
//! passed validation; a broken one is rejected with its error and the old keeps serving.
//!
//! Failures are counted, and quarantine applied, per team (the event's `team_id`): one
//! team's events that make a plugin fail must not stop it rendering for another team.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use herald_core::{Digest, Event, Rendered};

use crate::cache::sha256_hex;
use crate::error::PluginError;
use crate::host::PluginHost;
use crate::interface::Interface;
use crate::limits::Limits;
use crate::output::{PluginOutput, Render};
use crate::plugin::Plugin;

/// Consecutive failures after which a plugin is quarantined, by default.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 5;

/// What to load: a configured plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub name: String,
    pub path: PathBuf,
    pub limits: Limits,
}

/// One plugin's state, for status pages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    pub path: PathBuf,
    pub version: String,
    /// The `herald:formatter` version it targets.
    pub interface: Interface,
    pub wasm_sha256: String,
    /// Consecutive failures (per team; for several teams the highest).
    pub consecutive_failures: u32,
    /// Why it is quarantined (the last failure), if it is for any team in view.
    pub quarantined: Option<String>,
    /// The teams it is quarantined for, in order.
    pub quarantined_teams: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new version is serving.
    Swapped { version: String },
    /// The file is unchanged; nothing to do.
    Unchanged,
}

/// The loaded plugins, by configured name.
pub struct PluginSet {
    host: PluginHost,
    quarantine_after: u32,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet")
            .field("plugins", &self.names())
            .field("quarantine_after", &self.quarantine_after)
            .finish_non_exhaustive()
    }
}

struct Entry {
    spec: PluginSpec,
    current: ArcSwap<Plugin>,
    /// Per team.
    health: Mutex<BTreeMap<String, Health>>,
    /// SHA-256 of the file content last read, so an unchanged file is not recompiled.
    seen: Mutex<String>,
}

#[derive(Default)]
struct Health {
    consecutive_failures: u32,
    last_error: Option<String>,
    quarantined: bool,
}

impl PluginSet {
    /// An empty set. `quarantine_after` consecutive plugin failures quarantine a plugin
    /// (0 never quarantines).
    pub fn new(host: PluginHost, quarantine_after: u32) -> PluginSet {
        PluginSet {
            host,
            quarantine_after,
            entries: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Loads `spec` and adds it, replacing a plugin of the same name. On error the set
    /// is unchanged.
    pub fn insert(&self, spec: PluginSpec) -> Result<(), PluginError> {
        let (plugin, stamp) = self.load(&spec)?;
        let entry = Arc::new(Entry {
            spec: spec.clone(),
            current: ArcSwap::from_pointee(plugin),
            health: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(stamp),
        });
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.name, entry);
        Ok(())
    }

    /// Loads every spec; returns the ones that failed, with their errors. The others
    /// are in the set.
    pub fn insert_all(
        &self,
        specs: impl IntoIterator<Item = PluginSpec>,
    ) -> Vec<(String, PluginError)> {
        let mut failed = Vec::new();
        for spec in specs {
            let name = spec.name.clone();
            if let Err(e) = self.insert(spec) {
                failed.push((name, e));
            }
        }
        failed
    }

    /// Brings the set in line with a (re)loaded configuration, e.g. on SIGHUP: plugins no
    /// longer configured are removed; new ones are loaded; existing ones are reloaded
    /// from their files (which lifts any quarantine), with their new path or limits if
    /// those changed. A plugin that fails to load keeps its previous version if it had
    /// one. Returns each configured plugin's outcome.
    pub fn sync(
        &self,
        specs: impl IntoIterator<Item = PluginSpec>,
    ) -> Vec<(String, Result<Reload, PluginError>)> {
        let specs: Vec<PluginSpec> = specs.into_iter().collect();
        let stale: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !specs.iter().any(|s| &s.name == n))
            .collect();
        for name in stale {
            self.remove(&name);
        }
        specs
            .into_iter()
            .map(|spec| {
                let name = spec.name.clone();
                let result = match self.entry(&name) {
                    Some(entry) if entry.spec == spec => self.reload_entry(&entry, true),
                    _ => self.insert(spec).map(|()| Reload::Swapped {
                        version: self
                            .get(&name)
                            .map(|p| p.info().version.clone())
                            .unwrap_or_default(),
                    }),
                };
                (name, result)
            })
            .collect()
    }

    /// Removes a plugin; renders in flight finish.
    pub fn remove(&self, name: &str) -> bool {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    pub fn names(&self) -> Vec<String> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The version of `name` serving now.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.entry(name).map(|e| e.current.load_full())
    }

    fn entry(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Renders through plugin `name`, counting failures towards quarantine. A
    /// quarantined plugin is not run: the result is [`PluginError::Quarantined`].
    ///
    /// Synchronous and CPU-bound: from async code, call it in `spawn_blocking`. The
    /// plugin's log lines go to `tracing`.
    pub fn format(
        &self,
        name: &str,
        event: &Event,
        channel_kind: &str,
        settings: &crate::Settings,
    ) -> Result<PluginOutput, PluginError> {
        let team = event.team_id.as_str();
        let entry = self.checked_entry(name, team)?;
        let plugin = entry.current.load_full();
        let result = plugin.format(event, channel_kind, settings);
        self.record(&entry, team, &result);
        result
    }

    /// Like [`format`](Self::format), returning log lines and timing too.
    pub fn render(
        &self,
        name: &str,
        event: &Event,
        channel_kind: &str,
        settings: &crate::Settings,
    ) -> Result<Render, PluginError> {
        let team = event.team_id.as_str();
        let entry = self.checked_entry(name, team)?;
        let plugin = entry.current.load_full();
        let render = plugin.render(event, channel_kind, settings);
        self.record(&entry, team, &render.result);
        Ok(render)
    }

    /// Renders `digest` with plugin `name` for a channel of kind `channel_kind`, with
    /// `settings` as for [`format`](Self::format); `Ok(None)` when the plugin targets
    /// `herald:formatter@0.1.0` or declines (returns none): use the built-in digest.
    ///
    /// Failures count towards the plugin's quarantine for the digest's team like those
    /// of single events, and a quarantined plugin is not run
    /// ([`PluginError::Quarantined`]); a 0.1.0 plugin is never run for a digest, so it
    /// gives `Ok(None)` even then. Synchronous and CPU-bound: from async code, call it
    /// in `spawn_blocking`. The plugin's log lines go to `tracing`.
    pub fn render_digest(
        &self,
        name: &str,
        channel_kind: &str,
        digest: &Digest,
        settings: &crate::Settings,
    ) -> Result<Option<Rendered>, PluginError> {
        let team = digest.team.as_str();
        let entry = self
            .entry(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        let plugin = entry.current.load_full();
        if !plugin.renders_digests() {
            return Ok(None);
        }
        not_quarantined(&entry, team)?;
        let result = plugin.format_digest(digest, channel_kind, settings);
        self.record(&entry, team, &result);
        result
    }

    /// Whether plugin `name` exports the 0.2.0 digest function (`false` when no plugin of
    /// that name is loaded).
    pub fn renders_digests(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.renders_digests())
    }

    fn checked_entry(&self, name: &str, team: &str) -> Result<Arc<Entry>, PluginError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        not_quarantined(&entry, team)?;
        Ok(entry)
    }

    fn record<T>(&self, entry: &Entry, team: &str, result: &Result<T, PluginError>) {
        let mut teams = entry.health.lock().unwrap_or_else(|e| e.into_inner());
        let health = teams.entry(team.to_string()).or_default();
        match result {
            Err(e) if e.is_plugin_fault() => {
                health.consecutive_failures += 1;
                health.last_error = Some(e.to_string());
                if self.quarantine_after > 0
                    && health.consecutive_failures >= self.quarantine_after
                    && !health.quarantined
                {
                    health.quarantined = true;
                    tracing::warn!(
                        plugin = %entry.spec.name,
                        team,
                        failures = health.consecutive_failures,
                        error = %e,
                        "plugin quarantined for this team: herald formats the team's deliveries with the built-in formatter until it is reloaded"
                    );
                }
            }
            Err(_) => {}
            Ok(_) => health.consecutive_failures = 0,
        }
    }

    /// Every plugin's state over all teams (the admin's view).
    pub fn status(&self) -> Vec<PluginStatus> {
        self.status_where(|_| true)
    }

    /// Every plugin's state for `team` only: no other team's failures show.
    pub fn status_for_team(&self, team: &str) -> Vec<PluginStatus> {
        self.status_where(|t| t == team)
    }

    fn status_where(&self, in_view: impl Fn(&str) -> bool) -> Vec<PluginStatus> {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        entries
            .iter()
            .map(|entry| {
                let plugin = entry.current.load();
                let teams = entry.health.lock().unwrap_or_else(|e| e.into_inner());
                let seen: Vec<(&String, &Health)> =
                    teams.iter().filter(|(t, _)| in_view(t)).collect();
                let quarantined: Vec<&(&String, &Health)> =
                    seen.iter().filter(|(_, h)| h.quarantined).collect();
                PluginStatus {
                    name: entry.spec.name.clone(),
                    path: entry.spec.path.clone(),
                    version: plugin.info().version.clone(),
                    interface: plugin.interface(),
                    wasm_sha256: plugin.wasm_sha256().to_string(),
                    consecutive_failures: seen
                        .iter()
                        .map(|(_, h)| h.consecutive_failures)
                        .max()
                        .unwrap_or(0),
                    quarantined: quarantined
                        .first()
                        .map(|(_, h)| h.last_error.clone().unwrap_or_default()),
                    quarantined_teams: quarantined.iter().map(|(t, _)| t.to_string()).collect(),
                }
            })
            .collect()
    }

    /// Recompiles and revalidates `name` from its file, swaps it in and lifts any
    /// quarantine (SIGHUP / configuration reload). On error the old version keeps
    /// serving, still quarantined if it was.
    pub fn reload(&self, name: &str) -> Result<Reload, PluginError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        self.reload_entry(&entry, true)
    }

    /// Reloads every plugin whose file content changed (by SHA-256; reading and hashing
    /// a plugin file takes well under a millisecond) since it was last read. Returns what happened to each changed one;
    /// a broken new version is reported once, not on every call.
    pub fn reload_changed(&self) -> Vec<(String, Result<Reload, PluginError>)> {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for entry in entries {
            match self.reload_entry(&entry, false) {
                Ok(Reload::Unchanged) => {}
                result => out.push((entry.spec.name.clone(), result)),
            }
        }
        out
    }

    fn reload_entry(&self, entry: &Entry, force: bool) -> Result<Reload, PluginError> {
        let path = &entry.spec.path;
        let wasm = std::fs::read(path).map_err(|e| read_error(path, &e))?;
        let sha256 = sha256_hex(&wasm);
        {
            // Remember this content even if it turns out broken: it is reported once.
            let mut seen = entry.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == sha256 && !force {
                return Ok(Reload::Unchanged);
            }
            seen.clone_from(&sha256);
        }
        let plugin = self
            .host
            .load_bytes(&entry.spec.name, path, &wasm, entry.spec.limits)
            .inspect_err(|e| {
                tracing::error!(plugin = %entry.spec.name, path = %path.display(), error = %e, "new plugin version rejected; the previous version keeps serving");
            })?;
        let version = plugin.info().version.clone();
        entry.current.store(Arc::new(plugin));
        entry
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        tracing::info!(plugin = %entry.spec.name, %version, "plugin reloaded");
        Ok(Reload::Swapped { version })
    }

    fn load(&self, spec: &PluginSpec) -> Result<(Plugin, String), PluginError> {
        let path = &spec.path;
        let wasm = std::fs::read(path).map_err(|e| read_error(path, &e))?;
        let plugin = self.host.load_bytes(&spec.name, path, &wasm, spec.limits)?;
        Ok((plugin, sha256_hex(&wasm)))
    }

    /// Calls [`reload_changed`](Self::reload_changed) every `interval` on a thread of
    /// its own (compiling is CPU work) until the returned [`Watcher`] is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let set = Arc::downgrade(self);
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("herald-plugin-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::park_timeout(interval);
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let Some(set) = set.upgrade() else { break };
                    set.reload_changed();
                }
            });
        match spawned {
            Ok(thread) => Watcher {
                stop,
                thread: Some(thread),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start the plugin file watcher; plugins reload only on request");
                Watcher { stop, thread: None }
            }
        }
    }
}

fn not_quarantined(entry: &Entry, team: &str) -> Result<(), PluginError> {
    let teams = entry.health.lock().unwrap_or_else(|e| e.into_inner());
    match teams.get(team).filter(|h| h.quarantined) {
        Some(health) => Err(PluginError::Quarantined {
            failures: health.consecutive_failures,
            last: health.last_error.clone().unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

fn read_error(path: &Path, e: &std::io::Error) -> PluginError {
    PluginError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The file watcher thread of [`PluginSet::watch`]; stops (and is joined) on drop.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
