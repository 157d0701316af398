//! The plugin host: one wasmtime `Engine` (pooling allocator, epoch interruption), the
//! epoch ticker thread, the linker with herald's one import, and the artifact cache.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings;
use crate::cache::{self, chain};
use crate::error::PluginError;
use crate::limits::{Limits, fmt_bytes};
use crate::plugin::{self, Plugin, RenderState};

/// How often the epoch advances: the granularity of timeouts. A render that runs away
/// is stopped between `timeout` and `timeout + EPOCH_TICK` after it started.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes at the bottom of a reused memory or table slot that are reset with `memset`
/// instead of released with `madvise` and faulted in again by the next render. A Rust
/// plugin built with a small stack (plugins/.cargo/config.toml: 64 KiB) keeps its
/// stack, data and early heap in this range, so a render costs no page faults.
const KEEP_RESIDENT: usize = 256 * 1024;

/// How a [`PluginHost`] is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled plugins are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Most renders running at once (the pooling allocator's instance slots). A render
    /// beyond this waits for a slot.
    pub max_concurrent_renders: u32,
    /// The largest `memory_limit` a plugin may be given, in bytes.
    pub max_memory_limit: u64,
}

impl Default for HostOptions {
    fn default() -> HostOptions {
        HostOptions {
            cache_dir: None,
            max_concurrent_renders: 64,
            max_memory_limit: 256 * 1024 * 1024,
        }
    }
}

/// The plugin host. Cheap to clone; every [`Plugin`] keeps it alive.
#[derive(Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<HostInner>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

pub(crate) struct HostInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<RenderState>,
    pub(crate) options: HostOptions,
    engine_key: String,
    pub(crate) slots: Slots,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl PluginHost {
    pub fn new(options: HostOptions) -> Result<PluginHost, PluginError> {
        if options.max_concurrent_renders == 0 {
            return Err(PluginError::Host(
                "max_concurrent_renders must be at least 1".into(),
            ));
        }
        let slots = options.max_concurrent_renders;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(8))
            .max_core_instances_per_component(8)
            .total_memories(slots.saturating_mul(2))
            .max_memories_per_component(2)
            .max_memories_per_module(1)
            .total_tables(slots.saturating_mul(4))
            .max_tables_per_component(4)
            .table_elements(20_000)
            .max_memory_size(usize::try_from(options.max_memory_limit).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(true)
            .max_wasm_stack(512 * 1024);
        let engine = Engine::new(&config).map_err(|e| PluginError::Host(chain(&e)))?;
        let mut linker: Linker<RenderState> = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<RenderState, HasSelf<RenderState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Host(chain(&e)))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), stop_ticker.clone())?;
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine_key: cache::engine_key(&engine),
                engine,
                linker,
                options,
                slots: Slots::new(slots),
                stop_ticker,
            }),
        })
    }

    pub fn options(&self) -> &HostOptions {
        &self.inner.options
    }

    /// Loads the plugin at `path`: reads and compiles it (through the cache), checks
    /// its imports and WIT version, calls `info()` and renders the
    /// [sample event](crate::sample_event) for each channel kind it supports, all under
    /// `limits`.
    ///
    /// The sample render must complete within the limits with valid output; a plugin's
    /// own `err(…)` or `skip` answer passes (it may need settings the sample lacks).
    /// Takes as long as a compile (tens of milliseconds, less from the cache): call it
    /// from a blocking context.
    pub fn load(&self, name: &str, path: &Path, limits: Limits) -> Result<Plugin, PluginError> {
        let wasm = std::fs::read(path).map_err(|e| PluginError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.load_bytes(name, path, &wasm, limits)
    }

    /// [`load`](Self::load) from bytes already read; `path` is recorded as the origin.
    pub fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        wasm: &[u8],
        limits: Limits,
    ) -> Result<Plugin, PluginError> {
        self.check_limits(&limits)?;
        let inner = &self.inner;
        let hash = cache::sha256_hex(wasm);
        let component = cache::compile(
            &inner.engine,
            &inner.engine_key,
            inner.options.cache_dir.as_deref(),
            wasm,
            &hash,
        )?;
        crate::interface::check(&component, &inner.engine)?;
        // Everything the allowlist tolerates (Rust's stdio plumbing) traps when called.
        let mut linker = inner.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| PluginError::Compile(chain(&e)))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Compile(chain(&e)))?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| PluginError::Compile(chain(&e)))?;
        plugin::validate(self.clone(), name, path, hash, pre, limits)
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), PluginError> {
        let max = self.inner.options.max_memory_limit;
        if limits.memory > max {
            return Err(PluginError::Limits(format!(
                "memory_limit {} is above this host's maximum of {}",
                fmt_bytes(limits.memory),
                fmt_bytes(max)
            )));
        }
        if limits.timeout.is_zero() {
            return Err(PluginError::Limits("timeout must be above zero".into()));
        }
        Ok(())
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the host is dropped.
fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<(), PluginError> {
    std::thread::Builder::new()
        .name("herald-plugin-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(|e| PluginError::Host(format!("cannot start the epoch thread: {e}")))
}

/// A counting semaphore over the pooling allocator's instance slots, so a burst of
/// renders waits for a slot instead of failing to instantiate.
pub(crate) struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: u32,
    waiting: u32,
}

pub(crate) struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn new(n: u32) -> Slots {
        Slots {
            state: Mutex::new(SlotState {
                free: n,
                waiting: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(crate) fn acquire(&self) -> SlotGuard<'_> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.free == 0 {
            state.waiting += 1;
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
            state.waiting -= 1;
        }
        state.free -= 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.free += 1;
        // Waking is a syscall: only when someone waits.
        if state.waiting > 0 {
            self.0.freed.notify_one();
        }
    }
}
