//! The example plugins (slack, discord, card), rendered by the host: snapshots of what
//! herald would send.

use herald_core::Format;
use herald_plugins::{PluginError, PluginOutput};

use super::*;

/// A JSON body, pretty-printed for the snapshot.
fn pretty(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn slack_renders_block_kit_for_webhooks() {
    let host = host();
    let slack = load(&host, "slack").unwrap();
    let info = slack.info();
    assert_eq!(
        (info.name.as_str(), info.channel_kinds.clone()),
        ("slack", vec!["webhook".to_string()])
    );
    let r = rendered(slack.format(
        &event(),
        "webhook",
        &settings(&[
            ("dashboard_url", "https://dash.example.com/"),
            ("mention_on_error", "here"),
        ]),
    ));
    assert_eq!(r.format, Format::Json);
    assert_eq!((r.subject, r.text_alternative), (None, None));
    insta::assert_snapshot!("slack_webhook", pretty(&r.body));
}

#[test]
fn slack_reports_a_bad_setting_and_refuses_other_channels() {
    let host = host();
    let slack = load(&host, "slack").unwrap();
    let err = slack
        .format(
            &event(),
            "webhook",
            &settings(&[("mention_on_error", "@all")]),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin error: mention_on_error must be `here`, `channel` or a Slack user id, not `@all`"
    );
    let err = slack
        .format(&event(), "telegram", &settings(&[]))
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::UnsupportedChannel {
            kind: "telegram".into(),
            supported: "webhook".into()
        }
    );
    assert!(!err.is_plugin_fault());
}

#[test]
fn discord_renders_an_embed_for_webhooks() {
    let host = host();
    let discord = load(&host, "discord").unwrap();
    let r = rendered(discord.format(
        &event(),
        "webhook",
        &settings(&[
            ("username", "herald"),
            ("dashboard_url", "https://dash.example.com"),
        ]),
    ));
    assert_eq!(r.format, Format::Json);
    insta::assert_snapshot!("discord_webhook", pretty(&r.body));
}

#[test]
fn card_renders_html_for_telegram() {
    let host = host();
    let card = load(&host, "card").unwrap();
    let r = rendered(card.format(
        &event(),
        "telegram",
        &settings(&[("dashboard_url", "https://dash.example.com")]),
    ));
    assert_eq!(r.format, Format::Html);
    assert!(!r.body.contains("<ops>"), "event text is escaped");
    insta::assert_snapshot!("card_telegram_html", r.body);
}

#[test]
fn card_renders_markdown_v2_for_telegram_on_request() {
    let host = host();
    let card = load(&host, "card").unwrap();
    let r = rendered(card.format(&event(), "telegram", &settings(&[("markup", "markdown")])));
    assert_eq!(r.format, Format::Markdown);
    insta::assert_snapshot!("card_telegram_markdown", r.body);
}

#[test]
fn card_renders_subject_html_and_text_for_email() {
    let host = host();
    let card = load(&host, "card").unwrap();
    let r = rendered(card.format(
        &event(),
        "email",
        &settings(&[("brand", "Acme Cloud"), ("accent", "#d12f2f")]),
    ));
    assert_eq!(r.format, Format::Html);
    assert_eq!(r.subject.as_deref(), Some("[acme] capsule.create failed"));
    insta::assert_snapshot!("card_email_html", r.body);
    insta::assert_snapshot!("card_email_text", r.text_alternative.unwrap());
}

#[test]
fn card_can_skip_successes() {
    let host = host();
    let card = load(&host, "card").unwrap();
    let ok = event_from(r#"{"event":"capsule.create","outcome":"success"}"#);
    assert_eq!(
        card.format(&ok, "email", &settings(&[("skip_success", "true")])),
        Ok(PluginOutput::Skip(
            "skip_success is set and the event succeeded".into()
        ))
    );
    let failed = card.format(&event(), "email", &settings(&[("skip_success", "true")]));
    assert!(matches!(failed, Ok(PluginOutput::Rendered(_))));
}

#[test]
fn log_lines_come_back_with_the_render() {
    let host = host();
    let echo = load(&host, "fixture-echo").unwrap();
    let render = echo.render(&event(), "email", &settings(&[("tag", "t1")]));
    assert_eq!(render.logs.len(), 1);
    assert_eq!(render.logs[0].message, "rendering evt_01JDX8 for email");
    assert_eq!(render.logs[0].level.as_str(), "info");
    let r = rendered(render.result);
    assert_eq!(
        r.body,
        "capsule.create failed for acme on email [tag=t1] tag=t1"
    );
    assert_eq!(r.subject.as_deref(), Some("subject: capsule.create"));
}
