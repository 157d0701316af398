//! `herald check`: validate the configuration and print every problem with its location.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// Prints the diagnostics of loading `path`; exit 0 when there is no error (warnings
/// allowed), 1 otherwise.
pub fn run(path: &Path, short: bool) -> anyhow::Result<ExitCode> {
    let outcome = herald_config::load(path);
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
            let channels: usize = config.teams.values().map(|t| t.channels.len()).sum();
            println!(
                "{}: ok — {} teams, {} channels, {} subscriptions, {} event types{}",
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
