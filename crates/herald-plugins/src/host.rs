//! The plugin host: its options, loading (the artifact cache, the import check, the
//! sample render) and the [`Sandbox`] every plugin it loads shares.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::bindings;
use crate::cache::{self, chain};
use crate::error::PluginError;
use crate::interface::Interface;
use crate::limits::{Limits, fmt_bytes};
use crate::plugin::{self, Plugin, Pre};
use crate::sandbox::Sandbox;

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
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

struct HostInner {
    /// Shared with every [`Plugin`] loaded here, so renders keep the engine and its
    /// epoch ticker alive after the host itself is dropped.
    sandbox: Arc<Sandbox>,
    options: HostOptions,
    engine_key: String,
}

impl PluginHost {
    pub fn new(options: HostOptions) -> Result<PluginHost, PluginError> {
        if options.max_concurrent_renders == 0 {
            return Err(PluginError::Host(
                "max_concurrent_renders must be at least 1".into(),
            ));
        }
        let sandbox = Sandbox::new(options.max_concurrent_renders, options.max_memory_limit)?;
        Ok(PluginHost {
            inner: Arc::new(HostInner {
                engine_key: cache::engine_key(&sandbox.engine),
                sandbox: Arc::new(sandbox),
                options,
            }),
        })
    }

    pub fn options(&self) -> &HostOptions {
        &self.inner.options
    }

    /// Loads the plugin at `path`: reads and compiles it (through the cache), checks
    /// its imports and which WIT version it targets (0.1.0 or 0.2.0, from its formatter
    /// export), calls `info()` and renders the [sample event](crate::sample_event) (and
    /// for 0.2.0 the [sample digest](crate::sample_digest)) for each channel kind it
    /// supports, all under `limits`.
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
            &inner.sandbox.engine,
            &inner.engine_key,
            inner.options.cache_dir.as_deref(),
            wasm,
            &hash,
        )?;
        let interface = crate::interface::check(&component, &inner.sandbox.engine)?;
        // Everything the allowlist tolerates (Rust's stdio plumbing) traps when called.
        let mut linker = inner.sandbox.linker.clone();
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| PluginError::Compile(chain(&e)))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Compile(chain(&e)))?;
        // Type-checks the exports against the world the component targets.
        let pre = match interface {
            Interface::V0_1 => bindings::v0_1::PluginPre::new(pre).map(Pre::V0_1),
            Interface::V0_2 => bindings::v0_2::PluginPre::new(pre).map(Pre::V0_2),
        }
        .map_err(|e| PluginError::Compile(chain(&e)))?;
        plugin::validate(inner.sandbox.clone(), name, path, hash, pre, limits)
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
