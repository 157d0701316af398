//! `herald explain`: which subscriptions an event matches, and why the others do not.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use herald_channels::telegram::ParseMode as TelegramParseMode;
use herald_config::{ChannelConfig, Config, ParseMode};
use herald_core::{Event, EventKind, Explanation, RawEvent, TeamId};

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
    let (event, explanation) = explain_event(&config, &bytes, team)?;
    let previews = previews(&config, &event, &explanation);
    if json {
        let mut value = serde_json::to_value(&explanation)?;
        value["renderings"] = serde_json::to_value(&previews)?;
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&config, &explanation));
        for p in &previews {
            match &p.formatter {
                Some(f) => print!("\n── {} ({}, formatter `{f}`) ──\n", p.channel, p.kind),
                None => print!("\n── {} ({}) ──\n", p.channel, p.kind),
            }
            if let Some(subject) = &p.subject {
                println!("Subject: {subject}");
            }
            for (i, part) in p.parts.iter().enumerate() {
                if p.parts.len() > 1 {
                    println!("[part {} of {}]", i + 1, p.parts.len());
                }
                println!("{part}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// How a matched Telegram or email channel would render the event.
#[derive(Debug, serde::Serialize)]
pub struct Preview {
    pub channel: String,
    pub kind: &'static str,
    /// The formatter plugin that rendered it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message text; Telegram may split a long message into several parts.
    pub parts: Vec<String>,
}

/// How each matched channel would render the event: through the subscription's
/// formatter plugin when it names one, else the built-in rendering of Telegram and email.
pub fn previews(config: &Config, event: &Event, e: &Explanation) -> Vec<Preview> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut host = None;
    for v in e.matched() {
        if !seen.insert(v.channel.as_str()) {
            continue;
        }
        let sub = config.matcher.subscriptions().iter().find(|s| s.id == v.id);
        let formatter = sub.and_then(|s| config.formatter(s));
        if let (Some((plugin, settings)), Some(channel)) =
            (formatter, config.channel(&e.team, &v.channel))
        {
            out.push(plugin_preview(
                &mut host,
                config,
                plugin,
                &settings,
                event,
                &v.channel,
                channel.kind(),
            ));
            continue;
        }
        match config.channel(&e.team, &v.channel) {
            Some(ChannelConfig::Telegram(t)) => {
                let mode = match t.parse_mode {
                    ParseMode::Html => TelegramParseMode::Html,
                    ParseMode::MarkdownV2 => TelegramParseMode::MarkdownV2,
                    ParseMode::Plain => TelegramParseMode::Plain,
                };
                out.push(Preview {
                    channel: v.channel.clone(),
                    kind: "telegram",
                    formatter: None,
                    subject: None,
                    parts: herald_channels::telegram::render(event, mode),
                });
            }
            Some(ChannelConfig::Email(m)) => {
                let email =
                    herald_channels::email::render(event, &e.team, m.subject_prefix.as_deref());
                out.push(Preview {
                    channel: v.channel.clone(),
                    kind: "email",
                    formatter: None,
                    subject: Some(email.subject),
                    parts: vec![email.text],
                });
            }
            _ => {}
        }
    }
    out
}

/// Renders through a formatter plugin, as the server would (failures say so: the server
/// would then use the built-in formatter).
fn plugin_preview(
    host: &mut Option<Result<herald_plugins::PluginHost, String>>,
    config: &Config,
    plugin: &herald_config::PluginConfig,
    settings: &herald_plugins::Settings,
    event: &Event,
    channel: &str,
    kind: &'static str,
) -> Preview {
    let host = host.get_or_insert_with(|| {
        herald_plugins::PluginHost::new(herald_plugins::host_options_for(config))
            .map_err(|e| e.to_string())
    });
    let limits = herald_plugins::Limits {
        timeout: plugin.timeout,
        memory: plugin.memory_limit,
    };
    let result = host
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|h| {
            h.load(&plugin.name, &plugin.path, limits)
                .map_err(|e| e.to_string())
        })
        .and_then(|p| p.format(event, kind, settings).map_err(|e| e.to_string()));
    let (subject, parts) = match result {
        Ok(herald_plugins::PluginOutput::Rendered(r)) => (r.subject, vec![r.body]),
        Ok(herald_plugins::PluginOutput::Skip(reason)) => {
            (None, vec![format!("(skipped by the formatter: {reason})")])
        }
        Err(e) => (
            None,
            vec![format!(
                "(formatter failed: {e}; the built-in formatter would be used)"
            )],
        ),
    };
    Preview {
        channel: channel.to_string(),
        kind,
        formatter: Some(plugin.name.clone()),
        subject,
        parts,
    }
}

/// Parses the event and explains it against the configuration.
#[cfg(test)]
pub fn explain(config: &Config, bytes: &[u8], team: Option<&str>) -> anyhow::Result<Explanation> {
    explain_event(config, bytes, team).map(|(_, e)| e)
}

/// Like [`explain`], also returning the completed event.
pub fn explain_event(
    config: &Config,
    bytes: &[u8],
    team: Option<&str>,
) -> anyhow::Result<(Event, Explanation)> {
    let raw = RawEvent::from_json(bytes).context("the event is not valid")?;
    let team = team
        .map(TeamId::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let now = herald_engine::now();
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
    let explanation = config.matcher.explain(&event);
    Ok((event, explanation))
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
