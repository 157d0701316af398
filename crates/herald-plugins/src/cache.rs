//! Compiled components cached on disk, keyed by the wasm's SHA-256 and the engine's
//! compatibility hash, so a restart (or a second `herald check`) does not recompile.
//!
//! The cache is best-effort: a directory that cannot be written only costs compile time.
//! Only herald may write to it: its artifacts are native code loaded without validation.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;

/// Hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Hasher` that feeds SHA-256, to turn the engine's compatibility hash (an
/// `impl Hash`) into a stable file name part.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `digest` below is used.
        0
    }
}

/// A short, stable digest of everything about `engine` that compiled code depends on.
pub(crate) fn engine_key(engine: &Engine) -> String {
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex(&hasher.0.finalize()[..12])
}

/// Compiles `wasm`, through the cache in `dir` when there is one.
pub(crate) fn compile(
    engine: &Engine,
    engine_key: &str,
    dir: Option<&Path>,
    wasm: &[u8],
    wasm_hash: &str,
) -> Result<Component, PluginError> {
    check_header(wasm)?;
    let Some(dir) = dir else {
        return Component::new(engine, wasm).map_err(|e| PluginError::Compile(chain(&e)));
    };
    let path = dir.join(format!("{wasm_hash}-{engine_key}.cwasm"));
    if let Ok(artifact) = std::fs::read(&path) {
        match deserialize(engine, &artifact) {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %chain(&e), "discarding an unusable cached plugin artifact");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let artifact = engine
        .precompile_component(wasm)
        .map_err(|e| PluginError::Compile(chain(&e)))?;
    if let Err(e) = store(dir, &path, &artifact) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot cache a compiled plugin; continuing without");
    }
    deserialize(engine, &artifact).map_err(|e| PluginError::Compile(chain(&e)))
}

/// Writes atomically (temporary file, then rename), so concurrent herald processes never
/// read a half-written artifact.
fn store(dir: &Path, path: &PathBuf, artifact: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(artifact)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(name);
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}

// SAFETY: `Component::deserialize` trusts its input to be an artifact
// that this wasmtime produced, because it maps it as executable code. The bytes here are
// either what `Engine::precompile_component` returned a moment ago, or a file in herald's
// own cache directory that herald wrote the same way; wasmtime additionally checks the
// artifact's header against the engine's configuration and version. The cache directory
// must not be writable by anyone who is not allowed to run code as herald.
#[allow(unsafe_code)] // the only unsafe in this crate; see above
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    unsafe { Component::deserialize(engine, artifact) }
}

// Cached artifacts are read into memory rather than mapped with `deserialize_file`: a
// mapped file that someone truncates or rewrites in place would crash the process
// (SIGBUS), and reading a few hundred kilobytes once per load costs nothing.

/// Rejects what is not a component with a message that says what it is instead.
fn check_header(wasm: &[u8]) -> Result<(), PluginError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(PluginError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        ));
    }
    // Bytes 4..8: version and layer; layer 1 is a component, layer 0 a core module.
    if wasm[6..8] == [0, 0] {
        return Err(PluginError::NotAComponent(
            "it is a core WebAssembly module; build the plugin for the wasm32-wasip2 target, which emits a component".into(),
        ));
    }
    Ok(())
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
