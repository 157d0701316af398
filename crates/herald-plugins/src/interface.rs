//! What a component must export and may import: which `herald:formatter` version it
//! targets (from its formatter export), the WIT version check and the import allowlist,
//! applied at load before anything is instantiated.

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::PluginError;

/// The newest WIT package this host implements.
pub const WIT_PACKAGE: &str = "herald:formatter@0.2.0";

/// The `herald:formatter` version a plugin targets. herald loads both; the version is
/// read from the component's formatter export, never from its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interface {
    /// `herald:formatter@0.1.0`: single events only; herald renders its digests.
    V0_1,
    /// `herald:formatter@0.2.0`: single events and `format-digest`.
    V0_2,
}

impl Interface {
    /// Every version this host loads, oldest first.
    pub const ALL: [Interface; 2] = [Interface::V0_1, Interface::V0_2];

    /// `0.1.0`, `0.2.0`.
    pub fn version(self) -> &'static str {
        match self {
            Interface::V0_1 => "0.1.0",
            Interface::V0_2 => "0.2.0",
        }
    }

    /// `herald:formatter@0.2.0`.
    pub fn package(self) -> &'static str {
        match self {
            Interface::V0_1 => "herald:formatter@0.1.0",
            Interface::V0_2 => "herald:formatter@0.2.0",
        }
    }

    /// Whether plugins of this version export `format-digest`.
    pub fn renders_digests(self) -> bool {
        self >= Interface::V0_2
    }

    fn from_version(version: &str) -> Option<Interface> {
        Interface::ALL.into_iter().find(|i| i.version() == version)
    }

    fn formatter_export(self) -> String {
        format!("herald:formatter/formatter@{}", self.version())
    }

    /// Imports of the world itself.
    fn world_imports(self) -> [String; 2] {
        [
            format!("herald:formatter/log@{}", self.version()),
            format!("herald:formatter/types@{}", self.version()),
        ]
    }
}

impl std::fmt::Display for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.package())
    }
}

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

/// Checks the component's exports and imports against the worlds, and says which one it
/// targets.
pub(crate) fn check(component: &Component, engine: &Engine) -> Result<Interface, PluginError> {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();

    // A version of our own package this host does not know first: that is the clearest
    // explanation.
    for name in exports.iter().chain(&imports) {
        if let Some(version) = herald_version(name)
            && Interface::from_version(version).is_none()
        {
            return Err(PluginError::WrongVersion {
                found: version.to_string(),
                expected: supported_versions(),
            });
        }
    }
    // The newest formatter it exports decides; its imports must be of the same version.
    let interface = Interface::ALL
        .into_iter()
        .rev()
        .find(|i| exports.contains(&i.formatter_export()));
    let forbidden: Vec<String> = imports
        .iter()
        .filter(|name| !allowed(name, interface))
        .cloned()
        .collect();
    if !forbidden.is_empty() {
        return Err(PluginError::ForbiddenImport { imports: forbidden });
    }
    interface.ok_or_else(|| PluginError::MissingExport {
        expected: supported_versions(),
        exports: if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        },
    })
}

/// `0.1.0 or 0.2.0`.
fn supported_versions() -> String {
    let versions: Vec<&str> = Interface::ALL.iter().map(|i| i.version()).collect();
    versions.join(" or ")
}

/// The version of a `herald:formatter/…@VERSION` name.
fn herald_version(name: &str) -> Option<&str> {
    name.strip_prefix("herald:formatter/")?
        .split_once('@')
        .map(|(_, v)| v)
}

/// Whether a plugin targeting `interface` (`None`: it exports no formatter we know) may
/// import `import`.
fn allowed(import: &str, interface: Option<Interface>) -> bool {
    if interface.is_some_and(|i| i.world_imports().iter().any(|w| w == import)) {
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
        for (ok, interface) in [
            ("herald:formatter/log@0.1.0", Interface::V0_1),
            ("herald:formatter/types@0.1.0", Interface::V0_1),
            ("herald:formatter/log@0.2.0", Interface::V0_2),
            ("herald:formatter/types@0.2.0", Interface::V0_2),
            ("wasi:cli/stderr@0.2.6", Interface::V0_1),
            ("wasi:io/streams@0.2.0", Interface::V0_2),
        ] {
            assert!(allowed(ok, Some(interface)), "{ok} for {interface}");
        }
        // Our own imports only with the matching formatter export.
        for (refused, interface) in [
            ("herald:formatter/log@0.1.0", Some(Interface::V0_2)),
            ("herald:formatter/log@0.2.0", Some(Interface::V0_1)),
            ("herald:formatter/log@0.2.0", None),
        ] {
            assert!(!allowed(refused, interface), "{refused} for {interface:?}");
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
            assert!(!allowed(refused, Some(Interface::V0_2)), "{refused}");
        }
    }

    #[test]
    fn interfaces() {
        assert_eq!(Interface::from_version("0.2.0"), Some(Interface::V0_2));
        assert_eq!(Interface::from_version("0.3.0"), None);
        assert_eq!(
            Interface::V0_2.formatter_export(),
            "herald:formatter/formatter@0.2.0"
        );
        assert_eq!(Interface::V0_1.to_string(), "herald:formatter@0.1.0");
        assert!(Interface::V0_2.renders_digests() && !Interface::V0_1.renders_digests());
        assert_eq!(supported_versions(), "0.1.0 or 0.2.0");
        assert_eq!(
            WIT_PACKAGE,
            Interface::ALL[Interface::ALL.len() - 1].package()
        );
    }

    #[test]
    fn version_of_our_package() {
        assert_eq!(herald_version("herald:formatter/log@0.2.0"), Some("0.2.0"));
        assert_eq!(herald_version("herald:formatter/log"), None);
        assert_eq!(herald_version("wasi:cli/stderr@0.2.6"), None);
    }
}
