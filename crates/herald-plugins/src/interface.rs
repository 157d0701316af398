//! What a component must export and may import: the WIT version check and the import
//! allowlist, applied at load before anything is instantiated.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "herald:formatter@0.1.0";
const WIT_VERSION: &str = "0.1.0";
const FORMATTER_EXPORT: &str = "herald:formatter/formatter@0.1.0";

/// Imports of the world itself.
const WORLD_IMPORTS: &[&str] = &["herald:formatter/log@0.1.0", "herald:formatter/types@0.1.0"];

/// WASI 0.2 interfaces that Rust's standard library links into every wasm32-wasip2
/// component (stdio plumbing, `exit`). herald defines each of their functions as a trap:
/// they are tolerated at load so ordinary Rust plugins load, but give a plugin nothing.
const TOLERATED_WASI: &[&str] = &[
    "wasi:io/error",
    "wasi:io/streams",
    "wasi:io/poll",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];

/// Checks the component's exports and imports against the world.
pub(crate) fn check(component: &Component, engine: &Engine) -> Result<(), PluginError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();

    // A different version of our own package first: that is the clearest explanation.
    for name in exports.iter().chain(&imports) {
        if let Some(version) = herald_version(name)
            && version != WIT_VERSION
        {
            return Err(PluginError::WrongVersion {
                found: version.to_string(),
                expected: WIT_VERSION.to_string(),
            });
        }
    }
    let forbidden: Vec<String> = imports
        .iter()
        .filter(|name| !allowed(name))
        .cloned()
        .collect();
    if !forbidden.is_empty() {
        return Err(PluginError::ForbiddenImport { imports: forbidden });
    }
    if !exports.iter().any(|e| e == FORMATTER_EXPORT) {
        return Err(PluginError::MissingExport {
            expected: WIT_VERSION.to_string(),
            exports: if exports.is_empty() {
                "nothing".to_string()
            } else {
                exports.join(", ")
            },
        });
    }
    Ok(())
}

/// The version of a `herald:formatter/…@VERSION` name.
fn herald_version(name: &str) -> Option<&str> {
    name.strip_prefix("herald:formatter/")?
        .split_once('@')
        .map(|(_, v)| v)
}

fn allowed(import: &str) -> bool {
    if WORLD_IMPORTS.contains(&import) {
        return true;
    }
    // WASI 0.2.x: any patch release of 0.2.
    match import.split_once('@') {
        Some((interface, version)) => {
            TOLERATED_WASI.contains(&interface) && version.starts_with("0.2.")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        for ok in [
            "herald:formatter/log@0.1.0",
            "wasi:cli/stderr@0.2.6",
            "wasi:io/streams@0.2.0",
        ] {
            assert!(allowed(ok), "{ok}");
        }
        for refused in [
            "herald:formatter/log@0.1.1",
            "wasi:filesystem/types@0.2.6",
            "wasi:filesystem/preopens@0.2.6",
            "wasi:sockets/tcp@0.2.6",
            "wasi:http/outgoing-handler@0.2.6",
            "wasi:clocks/wall-clock@0.2.6",
            "wasi:random/random@0.2.6",
            "wasi:cli/stderr@0.3.0",
            "wasi:cli/stderr",
            "log",
        ] {
            assert!(!allowed(refused), "{refused}");
        }
    }

    #[test]
    fn version_of_our_package() {
        assert_eq!(herald_version("herald:formatter/log@0.2.0"), Some("0.2.0"));
        assert_eq!(herald_version("herald:formatter/log"), None);
        assert_eq!(herald_version("wasi:cli/stderr@0.2.6"), None);
    }
}
