//! Formatter plugins in the running server: a Slack-shaped webhook body, the rich card in
//! Telegram and email, and a hostile plugin that falls back to the built-in formatter
//! without losing the delivery.

use std::time::Duration;

use herald_plugins::build::plugin_wasm;
use herald_testkit::smtp::{SmtpOptions, SmtpServer};
use herald_testkit::telegram::TelegramDouble;
use serde_json::json;

use crate::harness::*;

const CHAT: i64 = -1_009_876_543_210;

fn plugin(name: &str, crate_name: &str) -> String {
    format!(
        "[plugins.{name}]\npath = \"{}\"\ntimeout = \"2s\"\n",
        plugin_wasm(crate_name).display()
    )
}

#[test]
fn formatters_shape_slack_bodies_and_rich_cards() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime for the Telegram double");
    let telegram = runtime.block_on(TelegramDouble::start());
    let smtp = SmtpServer::start(SmtpOptions::default());
    let slack = Receiver::start("plugins-slack");
    let conf = Conf::new()
        .webhook("acme", "slack", &slack)
        .raw(&format!(
            "[teams.acme.channels.chat]\ntype = \"telegram\"\nchat_id = {CHAT}\n\n\
             [teams.acme.channels.mail]\ntype = \"email\"\nto = [\"ops@acme.example\"]\n\n\
             [[teams.acme.subscriptions]]\nchannel = \"slack\"\nevents = [\"capsule.*\"]\nformatter = \"slack\"\n\n\
             [[teams.acme.subscriptions]]\nchannel = \"chat\"\nevents = [\"capsule.*\"]\nformatter = \"card\"\n\n\
             [[teams.acme.subscriptions]]\nchannel = \"mail\"\nevents = [\"capsule.*\"]\nformatter = \"card\"\n"
        ))
        .raw(&plugin("slack", "slack"))
        .raw(&plugin("card", "card"))
        .raw(&format!(
            "[telegram]\nbot_token = \"{}\"\napi_url = \"{}\"\n\n[email]\nsmtp_url = \"{}\"\nfrom = \"herald <herald@example.com>\"\n",
            telegram.token(),
            telegram.api_url(),
            smtp.url()
        ));
    let herald = Herald::start("plugins-formatters", &conf);
    let event = json!({
        "id": "evt_card", "event": "capsule.create", "outcome": "error",
        "resource": {"id": "sb_42", "type": "sandbox"},
        "metadata": {"region": "eu"}, "error": "out of memory"
    });
    herald.client().post(&event, ACME_KEY).expect(202);

    // Slack: an incoming-webhook body with Block Kit blocks, not herald's envelope.
    let body = slack.wait_for(1, Duration::from_secs(20))[0].json();
    assert!(
        body.get("event").is_none(),
        "the envelope was sent instead of the Slack body: {body}"
    );
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.contains("capsule.create")),
        "{body}"
    );
    assert!(
        body["blocks"].as_array().is_some_and(|b| !b.is_empty()),
        "{body}"
    );

    // Telegram: the card, as HTML the Bot API accepted.
    let messages = runtime.block_on(telegram.wait_for_messages(CHAT, 1, Duration::from_secs(20)));
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].visible_text.contains("sb_42"),
        "{}",
        messages[0].visible_text
    );

    // Email: the card's subject and HTML.
    let mail = &smtp.wait_for(1, Duration::from_secs(20))[0];
    assert!(
        mail.subject
            .as_deref()
            .is_some_and(|s| s.contains("capsule.create")),
        "{:?}",
        mail.subject
    );
    assert!(
        mail.parts
            .iter()
            .any(|p| p.content_type == "text/html" && p.body.contains("sb_42"))
    );

    // Every attempt succeeded without a formatter error.
    wait_until("three clean deliveries", Duration::from_secs(20), || {
        let reply = herald
            .client()
            .get("/v1/events/evt_card", ACME_KEY)
            .expect(200);
        let deliveries = reply["deliveries"].as_array().cloned().unwrap_or_default();
        let clean = deliveries
            .iter()
            .filter(|d| d["status"] == "succeeded" && d["last_error"].is_null())
            .count();
        if clean == 3 {
            Ok(())
        } else {
            Err(format!("{deliveries:?}"))
        }
    });
    let plugins = herald.client().get("/v1/plugins", ADMIN_TOKEN).expect(200);
    assert_eq!(
        plugins["plugins"].as_array().map(Vec::len),
        Some(2),
        "{plugins}"
    );
    // Both are built with the SDK, so both target the digest-capable interface.
    for plugin in plugins["plugins"].as_array().into_iter().flatten() {
        assert_eq!(plugin["interface"], "herald:formatter@0.2.0", "{plugin}");
    }
    // Plugins are global configuration: a team sees only those its subscriptions use.
    let names = |key: &str| -> Vec<String> {
        let reply = herald.client().get("/v1/plugins", key).expect(200);
        let mut names: Vec<String> = reply["plugins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(ACME_KEY), ["card", "slack"]);
    assert_eq!(names(GLOBEX_KEY), Vec::<String>::new());
}

#[test]
fn a_runaway_plugin_falls_back_to_the_built_in_formatter() {
    let hook = Receiver::start("plugins-spin");
    let other = Receiver::start("plugins-other-team");
    let spin = format!(
        "[plugins.spin]\npath = \"{}\"\ntimeout = \"50ms\"\n",
        plugin_wasm("fixture-spin").display()
    );
    let conf = Conf::new()
        .webhook("acme", "hook", &hook)
        .webhook("globex", "hook", &other)
        .raw("[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\nformatter = \"spin\"\n")
        .subscribe("globex", "hook", &["*"])
        .raw(&spin);
    let herald = Herald::start("plugins-spin", &conf);
    herald
        .client()
        .post(&json!({"id": "evt_spin", "event": "host.down"}), ACME_KEY)
        .expect(202);
    herald
        .client()
        .post(
            &json!({"id": "evt_globex", "event": "host.down"}),
            GLOBEX_KEY,
        )
        .expect(202);

    // The delivery is made with herald's own rendering (the envelope) …
    let body = hook.wait_for(1, Duration::from_secs(20))[0].json();
    assert_eq!(body["id"], "evt_spin");
    // … another team's delivery is not held up …
    assert_eq!(
        other.wait_for(1, Duration::from_secs(20))[0].json()["id"],
        "evt_globex"
    );
    // … and the attempt records what the plugin did.
    wait_until(
        "the plugin error is recorded",
        Duration::from_secs(20),
        || {
            let reply = herald
                .client()
                .get("/v1/events/evt_spin", ACME_KEY)
                .expect(200);
            let d = &reply["deliveries"][0];
            let error = d["last_error"].as_str().unwrap_or("");
            if d["status"] == "succeeded"
                && error.contains("formatter `spin` failed")
                && error.contains("timed out")
            {
                Ok(())
            } else {
                Err(format!("{d}"))
            }
        },
    );
}
