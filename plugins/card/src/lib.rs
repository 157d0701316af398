//! herald formatter plugin: a rich card for Telegram and email.
//!
//! Telegram: a compact HTML card (or MarkdownV2 with `markup = "markdown"`). Email: a
//! subject, an HTML card and a plain-text alternative. Settings (all optional):
//! `brand` (default `herald`) heads the email; `accent` (`#rrggbb`) colours it;
//! `dashboard_url` adds a link to `{dashboard_url}/events/{id}`; `skip_success = true`
//! skips events that succeeded.

use herald_plugin_sdk::{
    Event, Format, Formatter, Message, PluginInfo, Rendered, Settings, escape, skip,
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
        let accent = settings.get_or("accent", "#4a4de7");
        let valid_accent = accent.len() == 7
            && accent.starts_with('#')
            && accent[1..].chars().all(|c| c.is_ascii_hexdigit());
        if !valid_accent {
            return Err(format!(
                "accent must be a colour like #4a4de7, not `{accent}`"
            ));
        }
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

    #[test]
    fn email_rejects_a_bad_accent() {
        let settings = Settings::from([("accent", "red;background:url(x)")]);
        assert!(Facts::of(&event(), &settings).email(&settings).is_err());
    }
}
