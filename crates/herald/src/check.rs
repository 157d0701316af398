//! `herald check`: validate the configuration and print every problem with its location.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Prints the diagnostics of loading `path`; exit 0 when there is no error (warnings
/// allowed), 1 otherwise.
pub fn run(path: &Path, short: bool) -> anyhow::Result<ExitCode> {
    let mut outcome = herald_config::load(path);
    let plugin_lines = check_plugins(&mut outcome)?;
    let diags = &outcome.diagnostics;
    let text = if short {
        diags.render_short()
    } else {
        diags.render(std::io::stderr().is_terminal())
    };
    eprint!("{text}");
    let errors = diags.errors().count();
    let warnings = diags.warnings().count();
    match &outcome.config {
        Some(config) => {
            let subs = config.matcher.subscriptions().len();
            let plugins = match config.plugins.len() {
                0 => String::new(),
                n => format!(", {n} plugins"),
            };
            let channels: usize = config.teams.values().map(|t| t.channels.len()).sum();
            let sources = match config.sources.len() {
                0 => String::new(),
                n => format!(", {n} sources"),
            };
            println!(
                "{}: ok — {} teams, {} channels, {} subscriptions, {} event types{plugins}{sources}{}",
                path.display(),
                config.teams.len(),
                channels,
                subs,
                config.matcher.registry().len(),
                if warnings > 0 {
                    format!(", {warnings} warning(s)")
                } else {
                    String::new()
                }
            );
            for line in plugin_lines {
                println!("  {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "{}: {errors} error(s), {warnings} warning(s)",
                path.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads every configured plugin as the server would; each failure becomes an error at
/// the plugin's `path`. Returns a line per plugin that loads, naming the interface it
/// targets: `plugin card: card 0.1.0, herald:formatter@0.2.0 (renders digests)`.
fn check_plugins(outcome: &mut herald_config::LoadOutcome) -> anyhow::Result<Vec<String>> {
    let Some(config) = &outcome.config else {
        return Ok(Vec::new());
    };
    if config.plugins.is_empty() {
        return Ok(Vec::new());
    }
    // No artifact cache: `check` must not write into the data directory.
    let host = herald_plugins::PluginHost::new(herald_plugins::HostOptions::default())?;
    let mut lines = Vec::new();
    for check in herald_plugins::check_config(config, &host) {
        if let (Ok(info), Some(interface)) = (&check.result, check.interface) {
            lines.push(format!(
                "plugin {}: {} {}, {interface} ({})",
                check.name,
                info.name,
                info.version,
                if interface.renders_digests() {
                    "renders digests"
                } else {
                    "herald renders its digests"
                }
            ));
        }
        if let Err(e) = check.result {
            outcome.diagnostics.items.push(herald_config::Diagnostic {
                severity: herald_config::Severity::Error,
                message: format!("plugin `{}`: {e}", check.name),
                location: Some(check.location),
                label: Some("this plugin".into()),
                help: None,
            });
        }
    }
    if outcome.diagnostics.has_errors() {
        outcome.config = None;
    }
    Ok(lines)
}
