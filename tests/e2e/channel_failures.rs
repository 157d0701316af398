//! Channel-wide failures are channel state, not message failures (issue 15, item 2): a
//! refused SMTP login, a refused Telegram token, a throttle without a hint, an address the
//! SSRF guard refuses — the channel is marked failing and its deliveries wait and retry on
//! the schedule, however many attempts that takes, instead of each dying on its first
//! attempt; a formatter's markup the channel cannot parse is resent with the built-in
//! rendering in the same attempt.

use herald_plugins::build::plugin_wasm;
use herald_testkit::smtp::{SmtpOptions, SmtpServer};
use herald_testkit::telegram::{ChatBehaviour, TelegramDouble};
use serde_json::{Value, json};

use crate::harness::*;

const CHAT: i64 = -1_001_234_567_890;
/// More attempts than the test schedule (3 retries) allows a failing delivery.
const BEYOND_THE_SCHEDULE: u64 = 6;

/// The channel's state as `GET /v1/channels` shows it to acme.
fn channel_state(h: &Herald, channel: &str) -> Value {
    let all = h.get("/v1/channels", ACME_KEY).expect(200);
    all["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["channel"] == channel).cloned())
        .unwrap_or_else(|| panic!("no channel `{channel}` in {all}"))
}

/// Publishes one event and waits until its one delivery has been attempted more often than
/// the schedule allows a failing message while still pending (not dead), with the channel
/// `failing` for `reason`. Returns the delivery id.
fn waits_beyond_the_schedule(h: &Herald, channel: &str, reason: &str) -> String {
    h.post(
        &json!({"id": "evt_wide", "event": "capsule.create", "outcome": "error"}),
        ACME_KEY,
    )
    .expect(202);
    let deliveries = h.wait_deliveries("evt_wide", ACME_KEY, "attempted often", |ds| {
        ds.len() == 1 && ds[0]["attempts"].as_u64() >= Some(BEYOND_THE_SCHEDULE)
            || ds.iter().any(|d| d["status"] != "pending")
    });
    let delivery = &deliveries[0];
    assert_eq!(
        delivery["status"], "pending",
        "a channel-wide failure killed the message: {delivery}"
    );
    let state = channel_state(h, channel);
    assert_eq!(state["state"], "failing", "{state}");
    let why = state["reason"].as_str().unwrap_or_default();
    assert!(why.contains(reason), "reason `{why}` lacks `{reason}`");
    delivery["id"].as_str().unwrap().to_string()
}

/// Reloads `conf` through the API.
fn reload(h: &Herald, conf: &Conf) {
    h.write_config(&conf.render());
    h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200);
}

fn succeeds(h: &Herald, id: &str) -> Vec<Value> {
    h.wait_delivery(id, ACME_KEY, "succeeded", |d, _| d["status"] == "succeeded")
        .1
}

fn email_conf(smtp: &SmtpServer, password: &str) -> Conf {
    Conf::new()
        .raw("[teams.acme.channels.mail]\ntype = \"email\"\nto = [\"ops@acme.example\"]\n")
        .subscribe("acme", "mail", &["capsule.*"])
        .raw(&format!(
            "[email]\nsmtp_url = \"{}\"\nfrom = \"herald@example.com\"\nusername = \"herald\"\npassword = \"{password}\"\n",
            smtp.url()
        ))
}

#[test]
fn a_refused_smtp_login_marks_the_channel_failing_and_its_mail_waits() {
    let smtp = SmtpServer::start(
        SmtpOptions::default()
            .starttls()
            .auth("herald", "s3cret-right"),
    );
    let h = Herald::start("wide-smtp-auth", &email_conf(&smtp, "s3cret-wrong"));
    let id = waits_beyond_the_schedule(&h, "mail", "535");
    assert!(smtp.messages().is_empty());
    reload(&h, &email_conf(&smtp, "s3cret-right"));
    smtp.wait_for(1, WAIT);
    succeeds(&h, &id);
    assert_eq!(channel_state(&h, "mail")["state"], "ok");
    assert!(!h.logs().contains("s3cret-wrong"), "the password leaked");
}

fn telegram_conf(telegram: &TelegramDouble, token: &str, extra: &str) -> Conf {
    Conf::new()
        .raw(&format!(
            "[teams.acme.channels.chat]\ntype = \"telegram\"\nchat_id = {CHAT}\n"
        ))
        .raw(extra)
        .raw(&format!(
            "[telegram]\nbot_token = \"{token}\"\napi_url = \"{}\"\n",
            telegram.api_url()
        ))
}

const CHAT_SUB: &str =
    "[[teams.acme.subscriptions]]\nchannel = \"chat\"\nevents = [\"capsule.*\"]\n";

#[test]
fn a_refused_telegram_token_marks_the_channel_failing_and_its_messages_wait() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let telegram = runtime.block_on(TelegramDouble::start());
    let wrong = "4242424242:AAHerald-testkit_double-token-WRONG00";
    let h = Herald::start(
        "wide-telegram-token",
        &telegram_conf(&telegram, wrong, CHAT_SUB),
    );
    let id = waits_beyond_the_schedule(&h, "chat", "Unauthorized");
    reload(&h, &telegram_conf(&telegram, telegram.token(), CHAT_SUB));
    runtime.block_on(telegram.wait_for_messages(CHAT, 1, WAIT));
    succeeds(&h, &id);
    assert!(!h.logs().contains(wrong), "the token leaked");
}

#[test]
fn a_telegram_429_without_retry_after_is_waited_out_not_fatal() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let telegram = runtime.block_on(TelegramDouble::start());
    telegram.set_chat_behaviour(CHAT, ChatBehaviour::Throttled { times: 7 });
    let h = Herald::start(
        "wide-telegram-429",
        &telegram_conf(&telegram, telegram.token(), CHAT_SUB),
    );
    h.post(
        &json!({"id": "evt_wide", "event": "capsule.create"}),
        ACME_KEY,
    )
    .expect(202);
    let deliveries = h.wait_deliveries("evt_wide", ACME_KEY, "finished", |ds| {
        ds.len() == 1 && ds[0]["status"] != "pending"
    });
    assert_eq!(deliveries[0]["status"], "succeeded", "{:?}", deliveries);
    assert_eq!(deliveries[0]["attempts"], 8, "{:?}", deliveries);
    assert_eq!(telegram.messages(CHAT).len(), 1);
}

#[test]
fn markup_telegram_cannot_parse_is_resent_with_the_built_in_rendering() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let telegram = runtime.block_on(TelegramDouble::start());
    let plugin = format!(
        "[plugins.echo]\npath = \"{}\"\ntimeout = \"2s\"\n\n\
         [[teams.acme.subscriptions]]\nchannel = \"chat\"\nevents = [\"capsule.*\"]\n\
         formatter = \"echo\"\nformatter_settings = {{ markup = \"<b>unclosed <i>tags\" }}\n",
        plugin_wasm("fixture-echo").display()
    );
    let h = Herald::start(
        "wide-telegram-markup",
        &telegram_conf(&telegram, telegram.token(), &plugin),
    );
    h.post(
        &json!({"id": "evt_markup", "event": "capsule.create", "outcome": "error"}),
        ACME_KEY,
    )
    .expect(202);
    let messages = runtime.block_on(telegram.wait_for_messages(CHAT, 1, WAIT));
    assert!(
        messages[0].visible_text.contains("capsule.create"),
        "not the built-in rendering: {:?}",
        messages[0]
    );
    let deliveries = h.wait_deliveries("evt_markup", ACME_KEY, "succeeded", |ds| {
        ds.len() == 1 && ds[0]["status"] == "succeeded"
    });
    let id = deliveries[0]["id"].as_str().unwrap();
    let attempts = succeeds(&h, id);
    assert_eq!(
        attempts.len(),
        1,
        "resent within the same attempt: {attempts:?}"
    );
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("formatter `echo`") && error.contains("can't parse entities"),
        "the attempt records the formatter's fault: {attempts:?}"
    );
}

#[test]
fn a_dns_answer_the_ssrf_guard_refuses_marks_the_channel_failing_and_waits() {
    let hook = Receiver::start("wide-ssrf");
    // `localhost` resolves to 127.0.0.1, which the guard refuses: as a DNS answer that
    // points somewhere private for a while would be.
    let url = hook.url().replace("127.0.0.1", "localhost");
    let conf = |allow: bool| {
        let text = Conf::new()
            .raw(&format!(
                "[teams.acme.channels.hook]\ntype = \"webhook\"\nurl = \"{url}\"\nsecret = \"{WEBHOOK_SECRET}\"\n"
            ))
            .subscribe("acme", "hook", &["capsule.*"])
            .render();
        text.replace(
            "allow_private_networks = true",
            &format!("allow_private_networks = {allow}"),
        )
    };
    let h = Herald::start("wide-ssrf", &Conf::new());
    h.write_config(&conf(false));
    h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200);
    let id = waits_beyond_the_schedule(&h, "hook", "SSRF guard");
    assert_eq!(hook.count(), 0);
    h.write_config(&conf(true));
    h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200);
    hook.wait_for(1, WAIT);
    succeeds(&h, &id);
}

#[test]
fn a_webhook_429_without_retry_after_is_waited_out_not_fatal() {
    let hook = Receiver::scripted(
        "wide-429",
        (0..7).map(|_| Answer::status(429)),
        Answer::status(200),
    );
    let conf = Conf::new()
        .webhook("acme", "hook", &hook)
        .subscribe("acme", "hook", &["capsule.*"]);
    let h = Herald::start("wide-429", &conf);
    h.post(
        &json!({"id": "evt_wide", "event": "capsule.create"}),
        ACME_KEY,
    )
    .expect(202);
    let deliveries = h.wait_deliveries("evt_wide", ACME_KEY, "finished", |ds| {
        ds.len() == 1 && ds[0]["status"] != "pending"
    });
    assert_eq!(deliveries[0]["status"], "succeeded", "{:?}", deliveries);
    assert_eq!(hook.count(), 8);
}
