//! The sandbox renders run in: one wasmtime `Engine` (pooling allocator, epoch
//! interruption), the epoch ticker thread, the linker with herald's one import, the
//! instance slots, and one render's store data ([`RenderState`]) with [`run`].
//!
//! Its own module because the host (which builds it and loads plugins into it) and each
//! [`Plugin`](crate::Plugin) (which renders in it) both need it; neither owns the other's
//! half.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    Trap,
};

use crate::bindings::{v0_1, v0_2};
use crate::cache::chain;
use crate::error::PluginError;
use crate::limits::{Limits, MAX_LOG_LINE_BYTES, MAX_LOG_LINES, cut};
use crate::output::{LogLevel, LogLine};

/// How often the epoch advances: the granularity of timeouts. A render that runs away
/// is stopped between `timeout` and `timeout + EPOCH_TICK` after it started.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes at the bottom of a reused memory or table slot that are reset with `memset`
/// instead of released with `madvise` and faulted in again by the next render. A Rust
/// plugin built with a small stack (plugins/.cargo/config.toml: 64 KiB) keeps its
/// stack, data and early heap in this range, so a render costs no page faults.
const KEEP_RESIDENT: usize = 256 * 1024;

/// The engine, the linker and the instance slots, shared by the host and every plugin it
/// loaded. The epoch ticker runs until the last of them is dropped.
pub(crate) struct Sandbox {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<RenderState>,
    slots: Slots,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// `slots` renders may run at once, each with up to `max_memory_limit` bytes.
    pub(crate) fn new(slots: u32, max_memory_limit: u64) -> Result<Sandbox, PluginError> {
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
            .max_memory_size(usize::try_from(max_memory_limit).unwrap_or(usize::MAX))
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
        // Both worlds' imports: their names differ by version, so they never clash.
        v0_1::Plugin::add_to_linker::<RenderState, HasSelf<RenderState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Host(chain(&e)))?;
        v0_2::Plugin::add_to_linker::<RenderState, HasSelf<RenderState>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Host(chain(&e)))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), stop_ticker.clone())?;
        Ok(Sandbox {
            engine,
            linker,
            slots: Slots::new(slots),
            stop_ticker,
        })
    }
}

/// The data of one render's store.
pub(crate) struct RenderState {
    memory_limit: usize,
    memory_exceeded: bool,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) dropped_logs: usize,
}

impl ResourceLimiter for RenderState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            // An error (not `Ok(false)`) traps at once, instead of letting the guest's
            // allocator turn the failure into an abort with a vaguer message.
            self.memory_exceeded = true;
            wasmtime::bail!("memory limit exceeded");
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 20_000)
    }
}

impl RenderState {
    fn log(&mut self, level: LogLevel, message: &str) {
        if self.logs.len() >= MAX_LOG_LINES {
            self.dropped_logs += 1;
            return;
        }
        self.logs.push(LogLine {
            level,
            message: cut(message, MAX_LOG_LINE_BYTES).to_string(),
        });
    }
}

impl v0_1::herald::formatter::log::Host for RenderState {
    fn log(&mut self, level: v0_1::herald::formatter::log::Level, message: String) {
        use v0_1::herald::formatter::log::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        RenderState::log(self, level, &message);
    }
}

impl v0_2::herald::formatter::log::Host for RenderState {
    fn log(&mut self, level: v0_2::herald::formatter::log::Level, message: String) {
        use v0_2::herald::formatter::log::Level;
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        RenderState::log(self, level, &message);
    }
}

impl v0_1::herald::formatter::types::Host for RenderState {}
impl v0_2::herald::formatter::types::Host for RenderState {}

/// Runs `call` in a fresh store under `limits`: `call` instantiates the plugin in it
/// from its pre-instantiated component and calls it.
pub(crate) fn run<R>(
    sandbox: &Sandbox,
    limits: Limits,
    call: impl FnOnce(&mut Store<RenderState>) -> wasmtime::Result<R>,
) -> (Result<R, PluginError>, RenderState) {
    let _slot = sandbox.slots.acquire();
    let state = RenderState {
        memory_limit: usize::try_from(limits.memory).unwrap_or(usize::MAX),
        memory_exceeded: false,
        logs: Vec::new(),
        dropped_logs: 0,
    };
    let mut store = Store::new(&sandbox.engine, state);
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    // Set before instantiating: the deadline counts from the current epoch, and
    // instantiation itself runs guest code (constructors).
    store.set_epoch_deadline(deadline_ticks(limits.timeout));
    let result = call(&mut store);
    let result = result.map_err(|e| classify(&e, &limits, store.data()));
    (result, store.into_data())
}

/// Epoch ticks for `timeout`: rounded up, plus one because the current tick may be
/// nearly over.
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    let ticks = timeout.as_nanos().div_ceil(tick) + 1;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// Names what stopped a render.
fn classify(e: &wasmtime::Error, limits: &Limits, state: &RenderState) -> PluginError {
    if state.memory_exceeded {
        return PluginError::MemoryLimit {
            limit: limits.memory,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout {
            timeout: limits.timeout,
        },
        Some(trap) => {
            // A Rust panic aborts with `unreachable`; the SDK logged the message first.
            let panic = state
                .logs
                .iter()
                .rev()
                .find(|l| l.level == LogLevel::Error && l.message.starts_with("panicked"));
            let trap = trap.to_string();
            let trap = trap.strip_prefix("wasm trap: ").unwrap_or(&trap);
            match panic {
                Some(line) => PluginError::Trap(format!("{trap} ({})", line.message)),
                None => PluginError::Trap(trap.to_string()),
            }
        }
        None => {
            let text = chain(e);
            match text.find("unknown import: `") {
                // A tolerated WASI function (stdio, exit) was called: explain.
                Some(i) => {
                    let name = text[i + 17..].split('`').next().unwrap_or_default();
                    PluginError::Trap(format!(
                        "called `{name}`, which herald's sandbox does not provide (write diagnostics with the log import instead)"
                    ))
                }
                None => PluginError::Trap(text),
            }
        }
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
struct Slots {
    state: Mutex<SlotState>,
    freed: Condvar,
}

struct SlotState {
    free: u32,
    waiting: u32,
}

struct SlotGuard<'a>(&'a Slots);

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

    fn acquire(&self) -> SlotGuard<'_> {
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
