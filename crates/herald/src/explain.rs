//! `herald explain`: which subscriptions an event matches, and why the others do not.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use herald_channels::telegram::ParseMode as TelegramParseMode;
use herald_config::{ChannelConfig, Config, ParseMode};
use herald_core::{
    Event, EventKind, Explanation, RawEvent, Silence, TeamId, ThrottleScope, Timestamp,
};

use crate::client::Target;

mod digest;

pub fn run(
    config_path: &Path,
    event_path: &Path,
    team: Option<&str>,
    json: bool,
    server: Option<&Target>,
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
    let digest_previews =
        digest::digest_previews(&config, &event, &explanation, herald_engine::now());
    let silences = match server {
        Some(target) => Some(
            crate::runtime()
                .and_then(|rt| rt.block_on(fetch_silences(target, &event.team_id)))
                .context("reading the silences of the running herald")?,
        ),
        None => None,
    };
    let noise = noise(
        &config,
        &event,
        &explanation,
        silences.as_deref(),
        herald_engine::now(),
    );
    if json {
        let mut value = serde_json::to_value(&explanation)?;
        value["renderings"] = serde_json::to_value(&previews)?;
        value["digest_renderings"] = serde_json::to_value(&digest_previews)?;
        value["noise"] = serde_json::to_value(&noise)?;
        value["silences_checked"] = silences.is_some().into();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&config, &explanation));
        print!("{}", render_noise(&noise, silences.is_some()));
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
        print!("{}", digest::render_digest_previews(&digest_previews));
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

/// Loads `plugin` in `host` (made on first use, shared by every preview), with the limits
/// the server gives it.
pub(crate) fn load_plugin(
    host: &mut Option<Result<herald_plugins::PluginHost, String>>,
    config: &Config,
    plugin: &herald_config::PluginConfig,
) -> Result<herald_plugins::Plugin, String> {
    let host = host.get_or_insert_with(|| {
        herald_plugins::PluginHost::new(herald_plugins::host_options_for(config))
            .map_err(|e| e.to_string())
    });
    let limits = herald_plugins::Limits {
        timeout: plugin.timeout,
        memory: plugin.memory_limit,
    };
    host.as_ref()
        .map_err(Clone::clone)?
        .load(&plugin.name, &plugin.path, limits)
        .map_err(|e| e.to_string())
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
    let result = load_plugin(host, config, plugin)
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

/// Noise control for one channel the event would be delivered to: the subscription whose
/// settings apply (the first matching one on that channel), its dedup key and window, its
/// grouping (the event's group) or throttle, and the silence that stops it, when silences
/// were checked.
#[derive(Debug, serde::Serialize)]
pub struct Noise {
    pub channel: String,
    pub subscription: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupView>,
    /// Only for an ungrouped subscription (a grouped one is never throttled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<SilenceView>,
}

#[derive(Debug, serde::Serialize)]
pub struct DedupView {
    pub fields: Vec<String>,
    /// The event's key under those fields.
    pub key: String,
    pub window: String,
}

/// The group this event joins: every delivery of a grouped subscription goes into the
/// group's digest, never out on its own.
#[derive(Debug, serde::Serialize)]
pub struct GroupView {
    /// `group_by`, as configured (empty: the subscription has one group).
    pub by: Vec<String>,
    /// The event's group key, as the store keys the group.
    pub key: String,
    /// The event's `field = value` pairs the digest is headed with (absent fields left out).
    pub labels: Vec<LabelView>,
    pub wait: String,
    pub interval: String,
    pub max_size: u32,
}

#[derive(Debug, serde::Serialize)]
pub struct LabelView {
    pub field: String,
    pub value: String,
}

#[derive(Debug, serde::Serialize)]
pub struct ThrottleView {
    /// As configured: `10/1m`.
    pub rule: String,
    pub limit: u32,
    pub per: String,
    /// `subscription` (its own throttle) or `channel` (inherited, shared with the
    /// channel's other ungrouped subscriptions).
    pub scope: &'static str,
    /// The subscription's key or the channel's name.
    pub counted_by: String,
}

#[derive(Debug, serde::Serialize)]
pub struct SilenceView {
    pub id: String,
    pub comment: String,
    pub ends_at: Timestamp,
}

/// The pipeline after matching, per channel: silence (when `silences` were read from a
/// running herald), dedup, then grouping or throttle. Whether a repeat is inside its
/// window, whether the group has an open digest, or how many messages the throttle's
/// window has sent depends on what came before, which only the server's store knows:
/// explain shows the keys, the group and the rules.
pub fn noise(
    config: &Config,
    event: &Event,
    e: &Explanation,
    silences: Option<&[Silence]>,
    now: Timestamp,
) -> Vec<Noise> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for v in e.matched() {
        if !seen.insert(v.channel.as_str()) {
            continue;
        }
        let sub = config.matcher.subscriptions().iter().find(|s| s.id == v.id);
        let silenced_by = silences
            .and_then(|all| herald_core::silence::silencing(all, event, &v.channel, now))
            .map(|s| SilenceView {
                id: s.id.clone(),
                comment: s.comment.clone(),
                ends_at: s.ends_at,
            });
        let dedup = sub.and_then(|s| s.dedup.as_ref()).map(|d| DedupView {
            fields: d.field_names(),
            key: d.key_for(event),
            window: humantime::format_duration(d.window).to_string(),
        });
        let group = sub.and_then(|s| s.group.as_ref()).map(|g| GroupView {
            by: g.field_names(),
            key: g.key_for(event),
            labels: g
                .labels_for(event)
                .into_iter()
                .map(|(field, value)| LabelView { field, value })
                .collect(),
            wait: humantime::format_duration(g.wait).to_string(),
            interval: humantime::format_duration(g.interval).to_string(),
            max_size: g.max_size,
        });
        let throttle = sub
            .filter(|s| s.group.is_none())
            .and_then(|s| s.throttle.as_ref())
            .map(|(t, scope)| {
                let (scope, counted_by) = match scope {
                    ThrottleScope::Subscription(key) => ("subscription", key.clone()),
                    ThrottleScope::Channel(name) => ("channel", name.clone()),
                };
                ThrottleView {
                    rule: t.to_string(),
                    limit: t.limit,
                    per: humantime::format_duration(t.per).to_string(),
                    scope,
                    counted_by,
                }
            });
        out.push(Noise {
            channel: v.channel.clone(),
            subscription: v.subscription.clone(),
            dedup,
            group,
            throttle,
            silenced_by,
        });
    }
    out
}

/// The noise-control part of the human-readable form.
pub fn render_noise(noise: &[Noise], silences_checked: bool) -> String {
    let mut out = String::new();
    if noise.is_empty() {
        return out;
    }
    out.push_str(
        "noise control (match → silence → dedup → group or throttle → deliver):
",
    );
    for n in noise {
        let _ = write!(out, "  {} (settings of {}): ", n.channel, n.subscription);
        match (&n.silenced_by, silences_checked) {
            (Some(s), _) => {
                let _ = writeln!(
                    out,
                    "silenced by {} until {} ({}): recorded as `silenced`, not sent",
                    s.id, s.ends_at, s.comment
                );
                continue;
            }
            (None, true) => out.push_str("no silence in force matches; "),
            (None, false) => out.push_str("silences not checked (offline; pass --url and --key); "),
        }
        match &n.dedup {
            Some(d) => {
                let _ = writeln!(
                    out,
                    "dedup_window {} on [{}], key {}: a repeat of this key within {} of a sent one is recorded as `suppressed`",
                    d.window,
                    d.fields.join(", "),
                    d.key,
                    d.window
                );
            }
            None => out.push_str("no dedup_window: repeats are not suppressed\n"),
        }
        match (&n.group, &n.throttle) {
            (Some(g), _) => {
                let labels: Vec<String> = g
                    .labels
                    .iter()
                    .map(|l| format!("{} = {}", l.field, l.value))
                    .collect();
                let group = if g.by.is_empty() {
                    "grouped: joins the subscription's one group (group_by = [])".to_string()
                } else if labels.is_empty() {
                    format!(
                        "grouped by [{}]: joins group {} (none of its fields is set)",
                        g.by.join(", "),
                        g.key
                    )
                } else {
                    format!(
                        "grouped by [{}]: joins group {} ({})",
                        g.by.join(", "),
                        g.key,
                        labels.join(", ")
                    )
                };
                let _ = writeln!(
                    out,
                    "      {group}; a new group's digest goes out {} after its first event, a busy group's next one {} after the previous; each lists up to {} events and counts the rest",
                    g.wait, g.interval, g.max_size
                );
            }
            (None, Some(t)) => {
                let scope = match t.scope {
                    "channel" => format!(
                        "set on channel {}, counted across its ungrouped subscriptions",
                        t.counted_by
                    ),
                    _ => "this subscription's own".to_string(),
                };
                let _ = writeln!(
                    out,
                    "      throttle {} ({scope}): beyond {} messages per {}, events are folded into a digest that counts them",
                    t.rule, t.limit, t.per
                );
            }
            (None, None) => out.push_str("      no grouping or throttle: sent on its own\n"),
        }
    }
    out
}

/// The team's silences in force or pending, from a running herald.
async fn fetch_silences(target: &Target, team: &TeamId) -> anyhow::Result<Vec<Silence>> {
    let url = format!("{}/v1/silences", target.url.trim_end_matches('/'));
    let reply = crate::client::call(
        crate::client::client()?
            .get(url)
            .bearer_auth(&target.key)
            .query(&[("state", "active")]),
    )
    .await?;
    reply["silences"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|s| s["team"].as_str() == Some(team.as_str()))
        .map(silence_from_json)
        .collect()
}

/// A silence as `/v1/silences` shows it.
pub fn silence_from_json(v: &serde_json::Value) -> anyhow::Result<Silence> {
    let text = |field: &str| {
        v[field]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("a silence without `{field}`"))
    };
    let time = |field: &str| {
        text(field).and_then(|t| Timestamp::parse(&t).map_err(|e| anyhow::anyhow!("{field}: {e}")))
    };
    let m = &v["matchers"];
    Ok(Silence {
        id: text("id")?,
        team: TeamId::parse(&text("team")?).map_err(|e| anyhow::anyhow!("team: {e}"))?,
        matchers: herald_core::SilenceMatchers {
            event: m["event"]
                .as_str()
                .map(herald_core::Pattern::parse)
                .transpose()?,
            outcome: match m["outcome"].as_str() {
                None => None,
                Some("success") => Some(herald_core::Outcome::Success),
                Some("error") => Some(herald_core::Outcome::Error),
                Some(other) => anyhow::bail!("unknown outcome `{other}`"),
            },
            metadata: m["metadata"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            channel: m["channel"].as_str().map(str::to_string),
        },
        starts_at: time("starts_at")?,
        ends_at: time("ends_at")?,
        comment: text("comment")?,
        created_by: text("created_by")?,
        created_at: time("created_at")?,
    })
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
