//! herald formatter plugin: a Slack incoming-webhook body with Block Kit blocks.
//!
//! For `webhook` channels pointed at a Slack incoming webhook. Settings (all optional):
//! `dashboard_url` adds an "Open" button to `{dashboard_url}/events/{id}`;
//! `mention_on_error` (`here`, `channel` or a user id such as `U012AB3CD`) pings on
//! failures; `username`, `icon_emoji` and `channel` are passed through for legacy
//! webhooks.

use herald_plugin_sdk::{Event, Formatter, Message, PluginInfo, Rendered, Settings, escape, json};

/// Slack's limits: header text 150, section text 3000, field text 2000, 10 fields.
const HEADER_MAX: usize = 150;
const SECTION_MAX: usize = 3000;
const FIELD_MAX: usize = 2000;
const FIELDS_MAX: usize = 10;

struct Slack;

impl Formatter for Slack {
    fn info() -> PluginInfo {
        PluginInfo::new("slack", env!("CARGO_PKG_VERSION"), &["webhook"])
    }

    fn format(event: &Event, _channel_kind: &str, settings: &Settings) -> Result<Rendered, String> {
        Ok(Message::json_text(body(event, settings)?).into())
    }
}

herald_plugin_sdk::register!(Slack);

fn icon(event: &Event) -> &'static str {
    if event.failed() {
        "🔴"
    } else if event.succeeded() {
        "🟢"
    } else {
        "🔔"
    }
}

fn mention(settings: &Settings) -> Result<Option<String>, String> {
    let Some(who) = settings.get("mention_on_error") else {
        return Ok(None);
    };
    match who {
        "here" | "channel" => Ok(Some(format!("<!{who}> "))),
        id if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Ok(Some(format!("<@{id}> ")))
        }
        other => Err(format!(
            "mention_on_error must be `here`, `channel` or a Slack user id, not `{other}`"
        )),
    }
}

fn field(fields: &mut json::Array<'_>, label: &str, value: &str) {
    let text = format!("*{}*\n{}", escape::slack(label), escape::slack(value));
    fields.object(|f| {
        f.str("type", "mrkdwn")
            .str("text", &escape::truncate(&text, FIELD_MAX));
    });
}

/// The webhook body, written directly as JSON text.
pub(crate) fn body(event: &Event, settings: &Settings) -> Result<String, String> {
    let headline = format!("{} {}", icon(event), event.headline());
    let ping = if event.failed() {
        mention(settings)?
    } else {
        None
    };
    let ping = ping.as_deref().unwrap_or("");
    let fallback = format!(
        "{ping}{} — team {}",
        escape::slack(&headline),
        escape::slack(&event.team_id)
    );
    Ok(json::object(|body| {
        body.str("text", &fallback);
        body.array("blocks", |blocks| {
            blocks.object(|header| {
                header.str("type", "header").object("text", |t| {
                    t.str("type", "plain_text")
                        .str("text", &escape::truncate(&headline, HEADER_MAX))
                        .bool("emoji", true);
                });
            });
            if let Some(error) = &event.error_message {
                let text = format!("{ping}*Error:* {}", escape::slack(error));
                blocks.object(|section| {
                    section.str("type", "section").object("text", |t| {
                        t.str("type", "mrkdwn")
                            .str("text", &escape::truncate(&text, SECTION_MAX));
                    });
                });
            }
            blocks.object(|section| {
                section.str("type", "section").array("fields", |fields| {
                    let mut n = 1;
                    field(fields, "Team", &event.team_id);
                    if let Some(actor) = event.actor_label() {
                        field(fields, "Actor", &actor);
                        n += 1;
                    }
                    if let Some(resource) = &event.resource {
                        field(
                            fields,
                            "Resource",
                            &format!("{} {}", resource.kind, resource.id),
                        );
                        n += 1;
                    }
                    for (key, value) in event.metadata.iter().take(FIELDS_MAX - n) {
                        field(fields, key, value);
                    }
                });
            });
            if let Some(base) = settings.get("dashboard_url") {
                let url = format!("{}/events/{}", base.trim_end_matches('/'), event.id);
                blocks.object(|actions| {
                    actions
                        .str("type", "actions")
                        .array("elements", |elements| {
                            elements.object(|button| {
                                button
                                    .str("type", "button")
                                    .object("text", |t| {
                                        t.str("type", "plain_text").str("text", "Open");
                                    })
                                    .str("url", &url)
                                    .str(
                                        "style",
                                        if event.failed() { "danger" } else { "primary" },
                                    );
                            });
                        });
                });
            }
            // Slack shows the date in the reader's time zone; the fallback is the UTC text.
            let context = format!(
                "<!date^{}^{{date_short_pretty}} {{time}}|{}> · `{}`",
                event.unix_seconds,
                escape::slack(&event.timestamp),
                escape::slack(&event.id)
            );
            blocks.object(|c| {
                c.str("type", "context").array("elements", |elements| {
                    elements.object(|e| {
                        e.str("type", "mrkdwn").str("text", &context);
                    });
                });
            });
        });
        for key in ["username", "icon_emoji", "channel"] {
            body.opt_str(key, settings.get(key));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_plugin_sdk::Outcome;
    use herald_plugin_sdk::serde_json::{self, Value};

    fn parsed(text: String) -> Value {
        serde_json::from_str(&text).expect("the body is JSON")
    }

    fn event() -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "capsule.create".into(),
            outcome: Some(Outcome::Error),
            timestamp: "2026-11-25T17:30:00Z".into(),
            unix_seconds: 1_795_627_800,
            team_id: "acme".into(),
            actor: None,
            resource: None,
            metadata: vec![("region".into(), "<eu>".into())],
            error_message: Some("quota & <limits>".into()),
        }
    }

    #[test]
    fn escapes_event_text_and_mentions_on_error() {
        let settings = Settings::from([("mention_on_error", "here")]);
        let body = parsed(body(&event(), &settings).unwrap());
        assert_eq!(body["text"], "<!here> 🔴 capsule.create failed — team acme");
        assert_eq!(
            body["blocks"][1]["text"]["text"],
            "<!here> *Error:* quota &amp; &lt;limits&gt;"
        );
        assert_eq!(
            body["blocks"][2]["fields"][1]["text"],
            "*region*\n&lt;eu&gt;"
        );
    }

    #[test]
    fn rejects_a_bad_mention() {
        let settings = Settings::from([("mention_on_error", "<!everyone>")]);
        assert!(
            body(&event(), &settings)
                .unwrap_err()
                .contains("mention_on_error")
        );
    }

    #[test]
    fn at_most_ten_fields() {
        let mut e = event();
        e.metadata = (0..20)
            .map(|i| (format!("k{i:02}"), "v".to_string()))
            .collect();
        let body = parsed(body(&e, &Settings::default()).unwrap());
        assert_eq!(body["blocks"][2]["fields"].as_array().unwrap().len(), 10);
    }
}
