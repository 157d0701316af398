//! `herald explain`: which subscriptions an event matches, and why the others do not.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use herald_config::Config;
use herald_core::{EventKind, Explanation, RawEvent, TeamId, Timestamp};

pub fn run(
    config_path: &Path,
    event_path: &Path,
    team: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let outcome = herald_config::load(config_path);
    let Some(config) = outcome.config else {
        eprint!("{}", outcome.diagnostics.render_short());
        anyhow::bail!(
            "{} is not valid; run `herald check` for details",
            config_path.display()
        );
    };
    let bytes = if event_path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the event from standard input")?;
        buf
    } else {
        std::fs::read(event_path).with_context(|| format!("reading {}", event_path.display()))?
    };
    let explanation = explain(&config, &bytes, team)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", render(&config, &explanation));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses the event and explains it against the configuration.
pub fn explain(config: &Config, bytes: &[u8], team: Option<&str>) -> anyhow::Result<Explanation> {
    let raw = RawEvent::from_json(bytes).context("the event is not valid")?;
    let team = team
        .map(TeamId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let now = Timestamp::from_unix_nanos(0);
    let event = raw
        .into_event(team.as_ref(), now, || "explain".into())
        .map_err(|e| match e {
            herald_core::EventError::Invalid { field, .. } if field == "team_id" => {
                anyhow::anyhow!("the event has no team_id; pass --team NAME")
            }
            other => anyhow::Error::new(other).context("the event is not valid"),
        })?;
    if !config.teams.contains_key(&event.team_id) {
        anyhow::bail!("team `{}` is not configured", event.team_id);
    }
    Ok(config.matcher.explain(&event))
}

/// The human-readable form: one line per subscription, then a summary.
pub fn render(config: &Config, e: &Explanation) -> String {
    let mut out = String::new();
    let kind = match e.kind {
        Some(EventKind::Durable) => "durable: stored and delivered to matching subscriptions",
        Some(EventKind::Transient) => "transient: live stream only, never stored or delivered",
        None => "not declared in [[event_types]]: herald rejects it at ingest (422)",
    };
    let _ = writeln!(
        out,
        "event `{}` of team `{}` is {kind}",
        e.event_type, e.team
    );
    for v in &e.verdicts {
        let kind = config
            .channel(&e.team, &v.channel)
            .map_or("?", herald_config::ChannelConfig::kind);
        let name = v
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        if v.matched {
            let _ = writeln!(
                out,
                "  ✓ {}{name} → {} ({kind}): matches",
                v.subscription, v.channel
            );
        } else {
            let _ = writeln!(
                out,
                "  ✗ {}{name} → {} ({kind}): does not match",
                v.subscription, v.channel
            );
            for r in &v.reasons {
                let _ = writeln!(out, "      - {r}");
            }
        }
    }
    let matched: Vec<&str> = e.matched().map(|v| v.channel.as_str()).collect();
    let mut channels = matched.clone();
    channels.dedup();
    let _ = writeln!(
        out,
        "{} of {} subscriptions match{}",
        matched.len(),
        e.verdicts.len(),
        if channels.is_empty() {
            String::new()
        } else {
            format!("; delivered to: {}", channels.join(", "))
        }
    );
    out
}

#[cfg(test)]
mod tests;
