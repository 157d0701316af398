//! herald formatter plugin: a rich card for Telegram and email.
//!
//! Telegram: a compact HTML card (or MarkdownV2 with `markup = "markdown"`). Email: a
//! subject, an HTML card and a plain-text alternative. Settings (all optional):
//! `brand` (default `herald`) heads the email; `accent` (`#rrggbb`) colours it;
//! `dashboard_url` adds a link to `{dashboard_url}/events/{id}`; `skip_success = true`
//! skips events that succeeded.
//!
//! Digests (`herald:formatter@0.2.0`): the same card with the digest's headline, one
//! line per listed event (at most [`DIGEST_LINES`], then "and N more") and the time span.

use herald_plugin_sdk::{
    Digest, Event, Format, Formatter, Message, PluginInfo, Rendered, Settings, escape, skip,
};

struct Card;

impl Formatter for Card {
    fn info() -> PluginInfo {
        PluginInfo::new("card", env!("CARGO_PKG_VERSION"), &["telegram", "email"])
    }

    fn format(event: &Event, channel_kind: &str, settings: &Settings) -> Result<Rendered, String> {
        if settings.flag("skip_success") && event.succeeded() {
            return Ok(skip("skip_success is set and the event succeeded"));
        }
        let card = Facts::of(event, settings);
        match channel_kind {
            "telegram" if settings.get("markup") == Some("markdown") => {
                Ok(Message::new(Format::Markdown, card.telegram_markdown()).into())
            }
            "telegram" => Ok(Message::new(Format::Html, card.telegram_html()).into()),
            "email" => card.email(settings).map(Rendered::from),
            other => Err(format!("card renders for telegram and email, not {other}")),
        }
    }

    fn format_digest(
        digest: &Digest,
        channel_kind: &str,
        settings: &Settings,
    ) -> Result<Option<Message>, String> {
        let card = DigestCard::of(digest, settings);
        match channel_kind {
            "telegram" if settings.get("markup") == Some("markdown") => Ok(Some(Message::new(
                Format::Markdown,
                card.telegram_markdown(),
            ))),
            "telegram" => Ok(Some(Message::new(Format::Html, card.telegram_html()))),
            "email" => card.email(settings).map(Some),
            other => Err(format!("card renders for telegram and email, not {other}")),
        }
    }
}

herald_plugin_sdk::register!(Card);

/// The lines every form of the card shows, unescaped.
struct Facts<'a> {
    event: &'a Event,
    icon: &'static str,
    headline: String,
    /// (label, value) rows.
    rows: Vec<(String, String)>,
    link: Option<String>,
}

/// Telegram's limit is 4096 characters after parsing; keep well within it.
const ERROR_MAX: usize = 1500;

impl<'a> Facts<'a> {
    fn of(event: &'a Event, settings: &Settings) -> Facts<'a> {
        let icon = if event.failed() {
            "❌"
        } else if event.succeeded() {
            "✅"
        } else {
            "ℹ️"
        };
        let mut rows = vec![("Team".to_string(), event.team_id.clone())];
        if let Some(actor) = event.actor_label() {
            rows.push(("By".to_string(), actor));
        }
        if let Some(r) = &event.resource {
            rows.push((r.kind.clone(), r.id.clone()));
        }
        for (k, v) in event.metadata.iter().take(12) {
            rows.push((k.clone(), v.clone()));
        }
        let link = settings
            .get("dashboard_url")
            .map(|base| format!("{}/events/{}", base.trim_end_matches('/'), event.id));
        Facts {
            event,
            icon,
            headline: event.headline(),
            rows,
            link,
        }
    }

    fn telegram_html(&self) -> String {
        let mut out = format!("{} <b>{}</b>\n", self.icon, escape::html(&self.headline));
        for (label, value) in &self.rows {
            out.push_str(&format!(
                "<b>{}</b>: <code>{}</code>\n",
                escape::html(label),
                escape::html(value)
            ));
        }
        if let Some(error) = &self.event.error_message {
            out.push_str(&format!(
                "<blockquote>{}</blockquote>\n",
                escape::html(&escape::truncate(error, ERROR_MAX))
            ));
        }
        if let Some(link) = &self.link {
            out.push_str(&format!(
                "<a href=\"{}\">Open in dashboard</a>\n",
                escape::html(link)
            ));
        }
        out.push_str(&format!("<i>{}</i>", escape::html(&self.event.timestamp)));
        out
    }

    fn telegram_markdown(&self) -> String {
        let mut out = format!("{} *{}*\n", self.icon, escape::markdown_v2(&self.headline));
        for (label, value) in &self.rows {
            out.push_str(&format!(
                "*{}*: `{}`\n",
                escape::markdown_v2(label),
                escape::markdown_v2_code(value)
            ));
        }
        if let Some(error) = &self.event.error_message {
            out.push_str(&format!(
                ">{}\n",
                escape::markdown_v2(&escape::truncate(error, ERROR_MAX))
            ));
        }
        if let Some(link) = &self.link {
            // Inside (...) of a link only `)` and `\` need escaping.
            let url = link.replace('\\', "\\\\").replace(')', "\\)");
            out.push_str(&format!("[Open in dashboard]({url})\n"));
        }
        out.push_str(&format!("_{}_", escape::markdown_v2(&self.event.timestamp)));
        out
    }

    fn email(&self, settings: &Settings) -> Result<Message, String> {
        let brand = settings.get_or("brand", "herald");
        let accent = accent(settings)?;
        let subject = format!("[{}] {}", self.event.team_id, self.headline);

        let mut rows = String::new();
        for (label, value) in &self.rows {
            rows.push_str(&format!(
                "<tr><th align=\"left\" style=\"padding:4px 12px 4px 0;color:#555\">{}</th><td style=\"padding:4px 0\">{}</td></tr>\n",
                escape::html(label),
                escape::html(value)
            ));
        }
        let error = self.event.error_message.as_ref().map_or(String::new(), |e| {
            format!(
                "<pre style=\"white-space:pre-wrap;background:#f6f6f6;padding:12px;border-left:4px solid {accent}\">{}</pre>\n",
                escape::html(e)
            )
        });
        let link = self.link.as_ref().map_or(String::new(), |l| {
            format!(
                "<p><a href=\"{}\" style=\"color:{accent}\">Open in dashboard</a></p>\n",
                escape::html(l)
            )
        });
        let html = format!(
            "<!doctype html>\n<html><body style=\"font-family:sans-serif;color:#222\">\n\
             <div style=\"border-top:4px solid {accent};padding:16px;max-width:640px\">\n\
             <p style=\"color:#888;margin:0\">{brand}</p>\n\
             <h2 style=\"margin:8px 0\">{icon} {headline}</h2>\n\
             <table>\n{rows}</table>\n{error}{link}\
             <p style=\"color:#888\">{when} · {id}</p>\n</div>\n</body></html>\n",
            brand = escape::html(brand),
            icon = self.icon,
            headline = escape::html(&self.headline),
            when = escape::html(&self.event.timestamp),
            id = escape::html(&self.event.id),
        );

        let mut text = format!("{}\n\n", self.headline);
        for (label, value) in &self.rows {
            text.push_str(&format!("{label}: {value}\n"));
        }
        if let Some(e) = &self.event.error_message {
            text.push_str(&format!("\n{e}\n"));
        }
        if let Some(l) = &self.link {
            text.push_str(&format!("\n{l}\n"));
        }
        text.push_str(&format!("\n{} · {}\n", self.event.timestamp, self.event.id));

        Ok(Message::new(Format::Html, html)
            .with_subject(escape::truncate(&subject.replace(['\r', '\n'], " "), 200))
            .with_text_alternative(text))
    }
}

/// Events a digest card lists; the rest are counted in "and N more".
const DIGEST_LINES: usize = 20;

/// The lines every form of a digest card shows, unescaped.
struct DigestCard<'a> {
    digest: &'a Digest,
    icon: &'static str,
    headline: String,
    /// One per listed event: (time, what, link).
    lines: Vec<(String, String, Option<String>)>,
    /// Events not listed.
    more: u64,
    span: String,
}

impl<'a> DigestCard<'a> {
    fn of(digest: &'a Digest, settings: &Settings) -> DigestCard<'a> {
        let listed = &digest.events[..digest.events.len().min(DIGEST_LINES)];
        let icon = if listed.iter().any(Event::failed) {
            "❌"
        } else if !listed.is_empty() && listed.iter().all(Event::succeeded) {
            "✅"
        } else {
            "ℹ️"
        };
        let lines = listed
            .iter()
            .map(|e| {
                let mut what = e.headline();
                if let Some(r) = &e.resource {
                    what.push_str(&format!(" · {} {}", r.kind, r.id));
                }
                if let Some(error) = &e.error_message {
                    what.push_str(&format!(": {}", escape::truncate(error, 200)));
                }
                let link = settings
                    .get("dashboard_url")
                    .map(|base| format!("{}/events/{}", base.trim_end_matches('/'), e.id));
                (e.timestamp.clone(), what, link)
            })
            .collect();
        let span = if digest.first_at == digest.last_at {
            digest.first_at.clone()
        } else {
            format!("{} – {}", digest.first_at, digest.last_at)
        };
        DigestCard {
            digest,
            icon,
            headline: digest.headline(),
            lines,
            more: digest.total.saturating_sub(listed.len() as u64),
            span,
        }
    }

    fn telegram_html(&self) -> String {
        let mut out = format!("{} <b>{}</b>\n", self.icon, escape::html(&self.headline));
        for (when, what, link) in &self.lines {
            let what = match link {
                Some(l) => format!("<a href=\"{}\">{}</a>", escape::html(l), escape::html(what)),
                None => escape::html(what),
            };
            out.push_str(&format!("• <code>{}</code> {what}\n", escape::html(when)));
        }
        if self.more > 0 {
            out.push_str(&format!("… and {} more\n", self.more));
        }
        out.push_str(&format!("<i>{}</i>", escape::html(&self.span)));
        out
    }

    fn telegram_markdown(&self) -> String {
        let mut out = format!("{} *{}*\n", self.icon, escape::markdown_v2(&self.headline));
        for (when, what, link) in &self.lines {
            let what = match link {
                Some(l) => format!(
                    "[{}]({})",
                    escape::markdown_v2(what),
                    l.replace('\\', "\\\\").replace(')', "\\)")
                ),
                None => escape::markdown_v2(what),
            };
            out.push_str(&format!("• `{}` {what}\n", escape::markdown_v2_code(when)));
        }
        if self.more > 0 {
            out.push_str(&format!("… and {} more\n", self.more));
        }
        out.push_str(&format!("_{}_", escape::markdown_v2(&self.span)));
        out
    }

    fn email(&self, settings: &Settings) -> Result<Message, String> {
        let brand = settings.get_or("brand", "herald");
        let accent = accent(settings)?;
        let subject = format!("[{}] {}", self.digest.team_id, self.headline);
        let mut rows = String::new();
        let mut text = format!("{}\n\n", self.headline);
        for (when, what, link) in &self.lines {
            let cell = match link {
                Some(l) => format!(
                    "<a href=\"{}\" style=\"color:{accent}\">{}</a>",
                    escape::html(l),
                    escape::html(what)
                ),
                None => escape::html(what),
            };
            rows.push_str(&format!(
                "<tr><td style=\"padding:4px 12px 4px 0;color:#555;white-space:nowrap\">{}</td><td style=\"padding:4px 0\">{cell}</td></tr>\n",
                escape::html(when)
            ));
            text.push_str(&format!("{when}  {what}\n"));
            if let Some(l) = link {
                text.push_str(&format!("  {l}\n"));
            }
        }
        let more = if self.more > 0 {
            text.push_str(&format!("… and {} more\n", self.more));
            format!("<p>… and {} more</p>\n", self.more)
        } else {
            String::new()
        };
        text.push_str(&format!("\n{} · {}\n", self.span, self.digest.id));
        let html = format!(
            "<!doctype html>\n<html><body style=\"font-family:sans-serif;color:#222\">\n\
             <div style=\"border-top:4px solid {accent};padding:16px;max-width:640px\">\n\
             <p style=\"color:#888;margin:0\">{brand}</p>\n\
             <h2 style=\"margin:8px 0\">{icon} {headline}</h2>\n\
             <table>\n{rows}</table>\n{more}\
             <p style=\"color:#888\">{span} · {id}</p>\n</div>\n</body></html>\n",
            brand = escape::html(brand),
            icon = self.icon,
            headline = escape::html(&self.headline),
            span = escape::html(&self.span),
            id = escape::html(&self.digest.id),
        );
        Ok(Message::new(Format::Html, html)
            .with_subject(escape::truncate(&subject.replace(['\r', '\n'], " "), 200))
            .with_text_alternative(text))
    }
}

/// The `accent` setting (`#rrggbb`, default `#4a4de7`): checked, since it goes into a
/// style attribute.
fn accent(settings: &Settings) -> Result<&str, String> {
    let accent = settings.get_or("accent", "#4a4de7");
    let valid = accent.len() == 7
        && accent.starts_with('#')
        && accent[1..].chars().all(|c| c.is_ascii_hexdigit());
    if valid {
        Ok(accent)
    } else {
        Err(format!(
            "accent must be a colour like #4a4de7, not `{accent}`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_plugin_sdk::{Actor, ActorKind, Outcome};

    fn event() -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "capsule.create".into(),
            outcome: Some(Outcome::Error),
            timestamp: "2026-11-25T17:30:00Z".into(),
            unix_seconds: 1_795_627_800,
            team_id: "acme".into(),
            actor: Some(Actor {
                kind: ActorKind::User,
                id: None,
                name: Some("<script>".into()),
            }),
            resource: None,
            metadata: Vec::new(),
            error_message: Some("a_b (c)".into()),
        }
    }

    #[test]
    fn telegram_html_escapes() {
        let html = Facts::of(&event(), &Settings::default()).telegram_html();
        assert!(
            html.contains("<b>By</b>: <code>&lt;script&gt;</code>"),
            "{html}"
        );
    }

    #[test]
    fn telegram_markdown_escapes() {
        let md = Facts::of(&event(), &Settings::default()).telegram_markdown();
        assert!(md.starts_with("❌ *capsule\\.create failed*\n"), "{md}");
        assert!(md.contains(">a\\_b \\(c\\)\n"), "{md}");
    }

    fn digest(events: Vec<Event>, total: u64) -> Digest {
        Digest {
            id: "dlv_1".into(),
            team_id: "acme".into(),
            subscription: "errors".into(),
            channel: "oncall".into(),
            kind: herald_plugin_sdk::DigestKind::Group(Vec::new()),
            events,
            total,
            first_at: "2026-11-25T17:30:00Z".into(),
            first_unix_seconds: 1_795_627_800,
            last_at: "2026-11-25T17:30:00Z".into(),
            last_unix_seconds: 1_795_627_800,
        }
    }

    #[test]
    fn a_digest_lists_at_most_digest_lines_events_and_counts_the_rest() {
        let events = vec![event(); DIGEST_LINES + 5];
        let html = DigestCard::of(&digest(events, 40), &Settings::default()).telegram_html();
        assert_eq!(html.matches("• <code>").count(), DIGEST_LINES, "{html}");
        assert!(html.contains("… and 20 more\n"), "{html}");
        // One instant: no range.
        assert!(html.ends_with("<i>2026-11-25T17:30:00Z</i>"), "{html}");
        assert!(
            html.starts_with("❌ <b>40 × capsule.create</b>\n"),
            "{html}"
        );
    }

    #[test]
    fn a_digest_escapes_markdown() {
        let md =
            DigestCard::of(&digest(vec![event()], 1), &Settings::default()).telegram_markdown();
        assert!(
            md.contains("• `2026-11-25T17:30:00Z` capsule\\.create failed: a\\_b \\(c\\)\n"),
            "{md}"
        );
    }

    #[test]
    fn email_rejects_a_bad_accent() {
        let settings = Settings::from([("accent", "red;background:url(x)")]);
        assert!(Facts::of(&event(), &settings).email(&settings).is_err());
    }
}
