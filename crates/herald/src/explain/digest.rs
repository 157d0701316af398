//! `herald explain`'s digest preview: for each matched channel whose subscription groups
//! (or is throttled), the digest message this event would start, as the server would
//! render it: by the subscription's formatter plugin when it renders digests
//! (`herald:formatter@0.2.0`), else — or when the plugin declines or fails — by the
//! channel's built-in digest. Only the running server knows which events already wait in
//! the group, so the preview shows a digest holding this event alone.

use herald_channels::telegram::ParseMode as TelegramParseMode;
use herald_config::{ChannelConfig, Config, ParseMode};
use herald_core::{Digest, DigestKind, Event, Explanation, Timestamp};

/// One digest preview.
#[derive(Debug, serde::Serialize)]
pub struct DigestPreview {
    pub channel: String,
    pub kind: &'static str,
    /// The subscription whose settings apply (the first matching one on the channel).
    pub subscription: String,
    /// `group` (every matching event joins a digest) or `throttle` (events beyond the
    /// limit do).
    pub digest: &'static str,
    /// The formatter plugin that rendered it; absent for the built-in digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatter: Option<String>,
    /// Why the subscription's formatter plugin did not render it (it targets 0.1.0,
    /// declined, or failed), when it names one: the built-in digest is shown instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message text: one part for Telegram and email, the JSON body of a webhook or
    /// the line of a file.
    pub parts: Vec<String>,
}

/// The digest previews of the channels `e` delivers to, in the order of the matches.
pub fn digest_previews(
    config: &Config,
    event: &Event,
    e: &Explanation,
    now: Timestamp,
) -> Vec<DigestPreview> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut host = None;
    for v in e.matched() {
        if !seen.insert(v.channel.as_str()) {
            continue;
        }
        let Some(sub) = config.matcher.subscriptions().iter().find(|s| s.id == v.id) else {
            continue;
        };
        let Some(kind) = sub.digest_kind(event) else {
            continue;
        };
        let digest_kind = match kind {
            DigestKind::Group { .. } => "group",
            DigestKind::Throttle { .. } => "throttle",
        };
        let Some(channel) = config.channel(&e.team, &v.channel) else {
            continue;
        };
        let digest = Digest {
            id: "dlv_preview".to_string(),
            team: e.team.clone(),
            subscription: sub.key(),
            channel: v.channel.clone(),
            kind,
            events: vec![event.clone()],
            total: 1,
            first_at: now,
            last_at: now,
        };
        let by_plugin = config.formatter(sub).map(|(plugin, settings)| {
            (
                plugin.name.clone(),
                plugin_digest(
                    &mut host,
                    config,
                    plugin,
                    &settings,
                    &digest,
                    channel.kind(),
                ),
            )
        });
        let (formatter, fallback, (subject, parts)) = match by_plugin {
            Some((name, Ok(Some(r)))) => (Some(name), None, (r.subject, vec![r.body])),
            Some((name, Ok(None))) => (
                None,
                Some(format!(
                    "formatter `{name}` does not render digests (it targets                      herald:formatter@0.1.0 or declined): the built-in digest is sent"
                )),
                render(channel, &digest),
            ),
            Some((name, Err(e))) => (
                None,
                Some(format!(
                    "formatter `{name}` failed on the digest ({e}): the built-in digest is sent"
                )),
                render(channel, &digest),
            ),
            None => (None, None, render(channel, &digest)),
        };
        out.push(DigestPreview {
            channel: v.channel.clone(),
            kind: channel.kind(),
            subscription: v.subscription.clone(),
            digest: digest_kind,
            formatter,
            fallback,
            subject,
            parts,
        });
    }
    out
}

/// Renders `digest` through a formatter plugin, as the server would: `Ok(None)` when the
/// plugin targets 0.1.0 or declines.
fn plugin_digest(
    host: &mut Option<Result<herald_plugins::PluginHost, String>>,
    config: &Config,
    plugin: &herald_config::PluginConfig,
    settings: &herald_plugins::Settings,
    digest: &Digest,
    channel_kind: &str,
) -> Result<Option<herald_core::Rendered>, String> {
    super::load_plugin(host, config, plugin)?
        .format_digest(digest, channel_kind, settings)
        .map_err(|e| e.to_string())
}

/// The channel's built-in digest: subject (email) and message parts.
fn render(channel: &ChannelConfig, digest: &Digest) -> (Option<String>, Vec<String>) {
    match channel {
        ChannelConfig::Telegram(t) => {
            let mode = match t.parse_mode {
                ParseMode::Html => TelegramParseMode::Html,
                ParseMode::MarkdownV2 => TelegramParseMode::MarkdownV2,
                ParseMode::Plain => TelegramParseMode::Plain,
            };
            (None, herald_channels::telegram::render_digest(digest, mode))
        }
        ChannelConfig::Email(m) => {
            let email = herald_channels::email::render_digest(
                digest,
                &digest.team,
                m.subject_prefix.as_deref(),
            );
            (Some(email.subject), vec![email.text])
        }
        ChannelConfig::Webhook(_) => {
            let body = herald_channels::webhook::digest_body_pretty(digest)
                .unwrap_or_else(|e| format!("(cannot encode the digest as JSON: {e})"));
            (None, vec![body])
        }
        ChannelConfig::File(_) => (
            None,
            vec![serde_json::to_string(&serde_json::json!({"digest": digest})).unwrap_or_default()],
        ),
    }
}

/// The human-readable form of the previews.
pub fn render_digest_previews(previews: &[DigestPreview]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in previews {
        let what = match p.digest {
            "group" => "its group's digest, with this event alone",
            _ => "the digest beyond the throttle, with this event alone",
        };
        let by = match &p.formatter {
            Some(name) => format!(", by formatter `{name}`"),
            None => String::new(),
        };
        let _ = write!(
            out,
            "\n── {} ({} digest preview{by}: {what}) ──\n",
            p.channel, p.kind
        );
        if let Some(fallback) = &p.fallback {
            let _ = writeln!(out, "({fallback})");
        }
        if let Some(subject) = &p.subject {
            let _ = writeln!(out, "Subject: {subject}");
        }
        for part in &p.parts {
            let _ = writeln!(out, "{part}");
        }
    }
    out
}
