//! herald formatter plugin: a Discord webhook body with one embed.
//!
//! For `webhook` channels pointed at a Discord webhook URL. Settings (all optional):
//! `username` and `avatar_url` override the webhook's; `dashboard_url` makes the title
//! link to `{dashboard_url}/events/{id}`. Mentions in event text never ping anyone:
//! the body sets `allowed_mentions` to none.

use herald_plugin_sdk::{Event, Formatter, Message, PluginInfo, Rendered, Settings, escape, json};

/// Discord's embed limits.
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 4096;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;
const FIELDS_MAX: usize = 25;

const RED: u32 = 0xE0_1E_5A;
const GREEN: u32 = 0x2E_B6_7D;
const BLURPLE: u32 = 0x58_65_F2;

struct Discord;

impl Formatter for Discord {
    fn info() -> PluginInfo {
        PluginInfo::new("discord", env!("CARGO_PKG_VERSION"), &["webhook"])
    }

    fn format(event: &Event, _channel_kind: &str, settings: &Settings) -> Result<Rendered, String> {
        Ok(Message::json_text(body(event, settings)).into())
    }
}

herald_plugin_sdk::register!(Discord);

fn field(fields: &mut json::Array<'_>, name: &str, value: &str) {
    fields.object(|f| {
        f.str("name", &escape::truncate(name, FIELD_NAME_MAX))
            .str(
                "value",
                &escape::truncate(&escape::discord(value), FIELD_VALUE_MAX),
            )
            .bool("inline", true);
    });
}

/// The webhook body, written directly as JSON text.
pub(crate) fn body(event: &Event, settings: &Settings) -> String {
    let color = if event.failed() {
        RED
    } else if event.succeeded() {
        GREEN
    } else {
        BLURPLE
    };
    json::object(|body| {
        body.array("embeds", |embeds| {
            embeds.object(|embed| {
                embed
                    .str("title", &escape::truncate(&event.headline(), TITLE_MAX))
                    .uint("color", u64::from(color))
                    .str("timestamp", &event.timestamp);
                if let Some(error) = &event.error_message {
                    embed.str(
                        "description",
                        &escape::truncate(&escape::discord(error), DESCRIPTION_MAX),
                    );
                }
                if let Some(base) = settings.get("dashboard_url") {
                    let url = format!("{}/events/{}", base.trim_end_matches('/'), event.id);
                    embed.str("url", &url);
                }
                embed.array("fields", |fields| {
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
                embed.object("footer", |footer| {
                    footer.str("text", &format!("herald · {}", event.id));
                });
            });
        });
        body.object("allowed_mentions", |m| {
            m.array("parse", |_| {});
        });
        for key in ["username", "avatar_url"] {
            body.opt_str(key, settings.get(key));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_plugin_sdk::Outcome;
    use herald_plugin_sdk::serde_json::{self, Value, json};

    fn parsed(text: String) -> Value {
        serde_json::from_str(&text).expect("the body is JSON")
    }

    fn event(outcome: Option<Outcome>) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "host.down".into(),
            outcome,
            timestamp: "2026-11-25T17:30:00Z".into(),
            unix_seconds: 1_795_627_800,
            team_id: "acme".into(),
            actor: None,
            resource: None,
            metadata: Vec::new(),
            error_message: Some("disk *full* @everyone".into()),
        }
    }

    #[test]
    fn colour_follows_the_outcome() {
        let colour =
            |o| parsed(body(&event(o), &Settings::default()))["embeds"][0]["color"].as_u64();
        assert_eq!(colour(Some(Outcome::Error)), Some(u64::from(RED)));
        assert_eq!(colour(Some(Outcome::Success)), Some(u64::from(GREEN)));
        assert_eq!(colour(None), Some(u64::from(BLURPLE)));
    }

    #[test]
    fn text_is_escaped_and_mentions_are_off() {
        let body = parsed(body(&event(None), &Settings::default()));
        assert_eq!(body["embeds"][0]["description"], r"disk \*full\* @everyone");
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    }
}
