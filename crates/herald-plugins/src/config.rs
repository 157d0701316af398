//! From herald's configuration to plugins: specs for a [`PluginSet`](crate::PluginSet),
//! the host options, and `herald check`'s validation of every configured plugin.

use herald_config::{Config, Location};

use crate::error::PluginError;
use crate::host::{HostOptions, PluginHost};
use crate::interface::Interface;
use crate::limits::Limits;
use crate::output::PluginInfo;
use crate::set::PluginSpec;

/// What to load for every `[plugins.NAME]`.
pub fn specs_from_config(config: &Config) -> Vec<PluginSpec> {
    config
        .plugins
        .values()
        .map(|p| PluginSpec {
            name: p.name.clone(),
            path: p.path.clone(),
            limits: Limits {
                timeout: p.timeout,
                memory: p.memory_limit,
            },
        })
        .collect()
}

/// Host options for a server running `config`: compiled plugins are cached in
/// `plugin-cache/` under the store's data directory.
pub fn host_options_for(config: &Config) -> HostOptions {
    HostOptions {
        cache_dir: Some(config.store.path.join("plugin-cache")),
        max_concurrent_renders: u32::try_from(config.delivery.workers)
            .unwrap_or(u32::MAX)
            .clamp(1, 1024),
        ..HostOptions::default()
    }
}

/// The verdict on one configured plugin.
#[derive(Debug, Clone)]
pub struct PluginCheck {
    pub name: String,
    /// Where the plugin's `path` is written.
    pub location: Location,
    /// Its `info()`, or why it cannot serve: it does not load, or a subscription uses
    /// it for a channel kind it does not render.
    pub result: Result<PluginInfo, PluginError>,
    /// The `herald:formatter` version it targets, when it loaded.
    pub interface: Option<Interface>,
}

/// Loads and validates every configured plugin exactly as the server would (compile,
/// import allowlist, WIT version, `info()`, a sample render under its limits), and
/// checks that each subscription's channel kind is one its plugin renders.
///
/// The result is in the order the plugins appear in the configuration.
pub fn check_config(config: &Config, host: &PluginHost) -> Vec<PluginCheck> {
    let mut plugins: Vec<_> = config.plugins.values().collect();
    plugins.sort_by_key(|p| (p.location.file, p.location.span.start));
    plugins
        .into_iter()
        .map(|p| {
            let limits = Limits {
                timeout: p.timeout,
                memory: p.memory_limit,
            };
            let loaded = host.load(&p.name, &p.path, limits);
            let interface = loaded.as_ref().ok().map(|plugin| plugin.interface());
            let result = loaded.and_then(|plugin| {
                check_channel_kinds(config, &p.name, plugin.info())?;
                Ok(plugin.info().clone())
            });
            PluginCheck {
                name: p.name.clone(),
                location: p.location.clone(),
                result,
                interface,
            }
        })
        .collect()
}

fn check_channel_kinds(config: &Config, name: &str, info: &PluginInfo) -> Result<(), PluginError> {
    for sub in config.matcher.subscriptions() {
        if sub.formatter.as_deref() != Some(name) {
            continue;
        }
        let Some(channel) = config.channel(&sub.id.team, &sub.channel) else {
            continue;
        };
        if !info.supports(channel.kind()) {
            return Err(PluginError::Misused {
                subscription: sub.id.to_string(),
                channel: sub.channel.clone(),
                kind: channel.kind().to_string(),
                supported: info.channel_kinds.join(", "),
            });
        }
    }
    Ok(())
}
