//! One event through all three real channel kinds: a signed webhook to a real HTTP
//! receiver, a Telegram message to the Bot API double, and an email to a real SMTP server.

use std::time::Duration;

use herald_testkit::smtp::{SmtpOptions, SmtpServer};
use herald_testkit::telegram::TelegramDouble;
use serde_json::json;

use crate::harness::*;

const CHAT: i64 = -1_001_234_567_890;

#[test]
fn one_event_reaches_webhook_telegram_and_email() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime for the Telegram double");
    let telegram = runtime.block_on(TelegramDouble::start());
    let smtp = SmtpServer::start(SmtpOptions::default());
    let hook = Receiver::start("three-channels");
    let conf = Conf::new()
        .webhook("acme", "hook", &hook)
        .raw(&format!(
            "[teams.acme.channels.chat]\ntype = \"telegram\"\nchat_id = {CHAT}\n\n\
             [teams.acme.channels.mail]\ntype = \"email\"\nto = [\"ops@acme.example\"]\nsubject_prefix = \"[herald]\"\n"
        ))
        .subscribe("acme", "hook", &["capsule.*"])
        .subscribe("acme", "chat", &["capsule.create"])
        .subscribe("acme", "mail", &["capsule.create"])
        .raw(&format!(
            "[telegram]\nbot_token = \"{}\"\napi_url = \"{}\"\n\n[email]\nsmtp_url = \"{}\"\nfrom = \"herald <herald@example.com>\"\n",
            telegram.token(),
            telegram.api_url(),
            smtp.url()
        ));
    let herald = Herald::start("three-channels", &conf);
    let event = json!({
        "id": "evt_three", "event": "capsule.create", "outcome": "error",
        "actor": {"type": "user", "id": "u_1", "name": "Ada <ada@acme>"},
        "resource": {"id": "sb_42", "type": "sandbox"},
        "metadata": {"region": "eu", "reason": "oom & <swap>"}, "error": "out of memory"
    });
    herald.client().post(&event, ACME_KEY).expect(202);

    // The webhook: the signed envelope.
    let requests = hook.wait_for(1, Duration::from_secs(10));
    assert_eq!(requests[0].json()["id"], "evt_three");

    // Telegram: one readable HTML message in the configured chat, hostile text escaped.
    let messages = runtime.block_on(telegram.wait_for_messages(CHAT, 1, Duration::from_secs(10)));
    assert_eq!(messages.len(), 1, "Telegram messages: {messages:?}");
    let text = &messages[0].visible_text;
    for needle in [
        "capsule.create",
        "sb_42",
        "oom & <swap>",
        "out of memory",
        "Ada <ada@acme>",
    ] {
        assert!(
            text.contains(needle),
            "`{needle}` missing from the Telegram message:\n{text}"
        );
    }
    assert_eq!(telegram.too_many_requests_sent(), 0);

    // Email: multipart/alternative with the subject herald derives from the event.
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    let mail = &mails[0];
    assert_eq!(
        mail.subject.as_deref(),
        Some("[herald] [acme] capsule.create failed: sb_42")
    );
    assert_eq!(mail.to, vec!["ops@acme.example".to_string()]);
    assert_eq!(mail.content_type, "multipart/alternative");
    let html = mail
        .parts
        .iter()
        .find(|p| p.content_type == "text/html")
        .expect("an HTML part");
    assert!(
        html.body.contains("oom &amp; &lt;swap&gt;"),
        "{}",
        html.body
    );
    assert!(
        !html.body.contains("<swap>"),
        "unescaped content in HTML:\n{}",
        html.body
    );
    assert!(
        mail.parts
            .iter()
            .any(|p| p.content_type == "text/plain" && p.body.contains("out of memory"))
    );

    // And the API records all three as succeeded.
    wait_until(
        "all three deliveries succeed",
        Duration::from_secs(10),
        || {
            let reply = herald
                .client()
                .get("/v1/events/evt_three", ACME_KEY)
                .expect(200);
            let deliveries = reply["deliveries"].as_array().cloned().unwrap_or_default();
            let done = deliveries
                .iter()
                .filter(|d| d["status"] == "succeeded")
                .count();
            if deliveries.len() == 3 && done == 3 {
                Ok(())
            } else {
                Err(format!("{deliveries:?}"))
            }
        },
    );
}
