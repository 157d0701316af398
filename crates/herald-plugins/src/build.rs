//! Building the guest plugins in `plugins/` for herald's own tests and benchmarks.
//!
//! `cargo nextest run --workspace` must build the plugins its tests load: the first call
//! in a process runs `cargo build --target wasm32-wasip2 --release` on
//! `plugins/Cargo.toml` into `target/wasm-plugins` (cargo's own lock serialises test
//! processes; a build that is up to date takes well under a second).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const TARGET: &str = "wasm32-wasip2";

/// The repository root (this crate lives in `crates/herald-plugins`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the plugins workspace is built to.
pub fn target_dir() -> PathBuf {
    repo_root().join("target/wasm-plugins")
}

/// The built component of plugin crate `crate_name` (e.g. `slack`, `fixture-spin`),
/// building the plugins workspace first if this process has not yet.
///
/// Panics with instructions when the `wasm32-wasip2` target is missing or the build
/// fails: a plugin test must fail, never skip.
pub fn plugin_wasm(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = match BUILT.get_or_init(build_all) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(
        path.is_file(),
        "{} was not built: is `{crate_name}` a member of plugins/Cargo.toml?",
        path.display()
    );
    path
}

fn build_all() -> Result<PathBuf, String> {
    check_target_installed()?;
    let root = repo_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Run from plugins/ so its .cargo/config.toml (guest link flags) applies.
    let output = Command::new(cargo)
        .current_dir(root.join("plugins"))
        .args(["build", "--locked", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .map_err(|e| format!("cannot run cargo to build the plugins: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("target may not be installed") {
            return Err(missing_target());
        }
        return Err(format!("building plugins/ for {TARGET} failed:\n{stderr}"));
    }
    Ok(target_dir().join(TARGET).join("release"))
}

fn missing_target() -> String {
    format!("install the {TARGET} target: rustup target add {TARGET}")
}

/// The standard library for the target is part of the sysroot when the target is
/// installed.
fn check_target_installed() -> Result<(), String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .current_dir(repo_root())
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc: {e}"))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        Ok(())
    } else {
        Err(missing_target())
    }
}
