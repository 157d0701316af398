//! Email tests against a real SMTP server (aiosmtpd, started per test on 127.0.0.1), with
//! the received messages parsed as MIME.
//!
//! Why this file is long (~680 lines): many small data-driven cases against one real SMTP
//! server per test (bodies, headers, TLS modes, failures); they share the helpers at the top.

use std::time::Duration;

use herald_core::{Event, Format, RawEvent, Rendered, Secret, TeamId, Timestamp};
use herald_testkit::smtp::{FailOn, ParsedMessage, SmtpOptions, SmtpServer};

use super::*;
use crate::SendOutcome;

const FROM: &str = "Herald <herald@example.com>";
const PASSWORD: &str = "pa55-w0rd-never-shown";
/// Bounded wait for a message the server already acknowledged.
const WAIT: Duration = Duration::from_secs(10);

fn team() -> TeamId {
    TeamId::parse("acme").unwrap()
}

fn event() -> Event {
    RawEvent::from_json(
        br#"{"id": "evt_1", "event": "capsule.create", "outcome": "error",
             "actor": {"type": "user", "id": "u_1", "name": "Alice"},
             "resource": {"id": "sb_42", "type": "capsule"},
             "metadata": {"reason": "oom", "region": "eu-west"},
             "error": "out of memory"}"#,
    )
    .unwrap()
    .into_event(
        Some(&team()),
        Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        || unreachable!(),
    )
    .unwrap()
}

fn mailer(url: &str) -> Mailer {
    Mailer::new(url, FROM, None, None, Duration::from_secs(20)).unwrap()
}

fn channel(mailer: Mailer, to: &[&str], cc: &[&str], prefix: Option<&str>) -> EmailChannel {
    EmailChannel::new(
        mailer,
        team(),
        to.iter().map(ToString::to_string).collect(),
        cc.iter().map(ToString::to_string).collect(),
        prefix.map(str::to_string),
    )
    .unwrap()
}

async fn send(
    channel: &EmailChannel,
    delivery_id: &str,
    event: &Event,
    rendered: Option<&Rendered>,
) -> SendOutcome {
    channel
        .send(&Outgoing {
            delivery_id,
            event,
            attempt: 1,
            rendered,
            digest: None,
        })
        .await
}

fn assert_delivered(outcome: &SendOutcome) {
    match outcome {
        SendOutcome::Delivered {
            response: Some(reply),
            ..
        } if reply.starts_with("250 ") => {}
        other => panic!("expected delivery with a 250 reply, got {other:?}"),
    }
}

fn only_message(server: &SmtpServer) -> ParsedMessage {
    let mut messages = server.wait_for(1, WAIT);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    messages.remove(0)
}

/// A received body with `\n` line ends and no trailing line break.
fn lf(body: &str) -> String {
    body.replace("\r\n", "\n").trim_end().to_string()
}

fn part_types(message: &ParsedMessage) -> Vec<&str> {
    message
        .parts
        .iter()
        .map(|p| p.content_type.as_str())
        .collect()
}

#[tokio::test]
async fn delivers_multipart_alternative_with_every_header() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(
        mailer(&server.url()),
        &["Ops <ops@acme.example>", "oncall@acme.example"],
        &["boss@acme.example"],
        None,
    );
    assert_eq!(channel.kind(), "email");

    let outcome = send(&channel, "dlv_1", &event(), None).await;
    assert_delivered(&outcome);
    let message = only_message(&server);

    assert_eq!(message.content_type, "multipart/alternative");
    assert_eq!(part_types(&message), ["text/plain", "text/html"]);
    for part in &message.parts {
        assert_eq!(part.charset.as_deref(), Some("utf-8"), "{part:?}");
    }
    assert_eq!(
        message.subject.as_deref(),
        Some("[acme] capsule.create failed: sb_42")
    );
    assert_eq!(message.from, ["herald@example.com"]);
    assert_eq!(message.to, ["ops@acme.example", "oncall@acme.example"]);
    assert_eq!(message.cc, ["boss@acme.example"]);
    assert!(message.bcc.is_empty());
    assert_eq!(message.envelope_from, "herald@example.com");
    assert_eq!(
        message.envelope_to,
        [
            "ops@acme.example",
            "oncall@acme.example",
            "boss@acme.example"
        ]
    );
    assert_eq!(message.message_id.as_deref(), Some("dlv_1@example.com"));
    assert!(message.date.is_some(), "no parsable Date: {message:#?}");
    assert_eq!(message.header("Auto-Submitted"), ["auto-generated"]);
    assert_eq!(message.header("MIME-Version"), ["1.0"]);

    let text = message.text().unwrap();
    for expect in [
        "capsule.create failed: sb_42",
        "Team",
        "acme",
        "capsule sb_42",
        "user u_1 (Alice)",
        "2026-11-25T12:00:00Z",
        "out of memory",
        "reason: oom",
        "region: eu-west",
    ] {
        assert!(text.contains(expect), "text lacks {expect:?}:\n{text}");
    }
    let html = message.html().unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for expect in [
        "<td>capsule sb_42</td>",
        "out of memory",
        "<code>reason</code>",
    ] {
        assert!(html.contains(expect), "html lacks {expect:?}:\n{html}");
    }
}

#[tokio::test]
async fn a_retried_delivery_keeps_its_message_id() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(mailer(&server.url()), &["ops@acme.example"], &[], None);
    let event = event();
    assert_delivered(&send(&channel, "dlv_7", &event, None).await);
    assert_delivered(&send(&channel, "dlv_7", &event, None).await);
    assert_delivered(&send(&channel, "dlv_8", &event, None).await);
    let messages = server.wait_for(3, WAIT);
    let ids: Vec<_> = messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "dlv_7@example.com",
            "dlv_7@example.com",
            "dlv_8@example.com"
        ]
    );
    // Three sends in a row went over one pooled connection, which is parked again.
    assert_eq!(channel.mailer().idle_connections(), 1);
}

#[tokio::test]
async fn hostile_event_content_is_escaped_and_adds_no_header() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(
        mailer(&server.url()),
        &["ops@acme.example"],
        &[],
        Some("[herald]"),
    );
    let inject = "\r\nBcc: evil@x\r\nX-Injected: yes";
    let mut event = event();
    // Past validation (which already refuses such types), as a defence in depth.
    event.event = format!("capsule.create{inject}");
    event.resource.as_mut().unwrap().id = format!("sb_42{inject}\n\rTo: evil@x");
    event.metadata.insert(
        format!("note{inject}"),
        format!("<script>alert(1)</script> & co{inject}"),
    );
    event.error = Some("<b>bold</b> & \"quoted\" 'single'".into());
    event.actor.as_mut().unwrap().name = Some("<img src=x onerror=alert(1)>".into());

    assert_delivered(&send(&channel, "dlv_1", &event, None).await);
    let message = only_message(&server);

    let names: Vec<&str> = message.headers.iter().map(|(n, _)| n.as_str()).collect();
    let allowed = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "MIME-Version",
        "Content-Type",
    ];
    for name in &names {
        assert!(
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name)),
            "unexpected header {name:?} in {names:?}"
        );
    }
    assert!(message.bcc.is_empty());
    assert_eq!(message.to, ["ops@acme.example"]);
    assert_eq!(message.envelope_to, ["ops@acme.example"]);
    let raw = String::from_utf8_lossy(&message.raw);
    let (header_block, _) = raw.split_once("\r\n\r\n").unwrap();
    for line in header_block.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.starts_with("bcc:") && !lower.starts_with("x-injected:"),
            "injected line {line:?} in\n{raw}"
        );
    }
    let subject = message.subject.clone().unwrap();
    assert_eq!(
        subject,
        "[herald] [acme] capsule.create Bcc: evil@x X-Injected: yes failed: \
         sb_42 Bcc: evil@x X-Injected: yes To: evil@x"
    );

    let html = message.html().unwrap();
    for forbidden in ["<script>", "<img", "<b>"] {
        assert!(
            !html.contains(forbidden),
            "html contains {forbidden}:\n{html}"
        );
    }
    for expect in [
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co",
        "&lt;img src=x onerror=alert(1)&gt;",
        "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot; &#39;single&#39;",
    ] {
        assert!(html.contains(expect), "html lacks {expect:?}:\n{html}");
    }
    // The plain-text part shows the content as it is.
    assert!(
        message
            .text()
            .unwrap()
            .contains("<script>alert(1)</script> & co")
    );
}

#[tokio::test]
async fn non_ascii_subjects_are_encoded_and_decode_back() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(
        mailer(&server.url()),
        &["Zoë Ops <ops@acme.example>"],
        &[],
        Some("[Ünïcode]"),
    );
    let mut event = event();
    event.resource.as_mut().unwrap().id = "sandbox-é-日本語-🦀".into();
    assert_delivered(&send(&channel, "dlv_1", &event, None).await);
    let message = only_message(&server);

    let expect = "[Ünïcode] [acme] capsule.create failed: sandbox-é-日本語-🦀";
    assert_eq!(message.subject.as_deref(), Some(expect));
    let raw_subject = message.header("Subject")[0];
    assert!(raw_subject.is_ascii(), "{raw_subject}");
    assert!(
        raw_subject.to_ascii_lowercase().contains("=?utf-8?"),
        "not RFC 2047: {raw_subject}"
    );
    assert!(message.raw.is_ascii(), "the message is not 7-bit clean");
    assert!(message.text().unwrap().contains("sandbox-é-日本語-🦀"));
    assert!(message.html().unwrap().contains("sandbox-é-日本語-🦀"));
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate() {
    let server = SmtpServer::start(SmtpOptions::default().starttls());
    let url = server.url();
    assert!(url.contains("?tls=required&ca="), "{url}");

    // Trusted through `ca=` in the URL.
    let by_url = channel(mailer(&url), &["ops@acme.example"], &[], None);
    assert_eq!(by_url.mailer().tls_mode(), TlsMode::StartTls);
    assert_delivered(&send(&by_url, "dlv_1", &event(), None).await);

    // Trusted through the options.
    let plain_url = format!("smtp://127.0.0.1:{}?tls=required", server.port());
    let by_option = Mailer::with_options(
        &plain_url,
        FROM,
        None,
        None,
        MailerOptions {
            root_certificates: vec![server.ca_pem().unwrap().as_bytes().to_vec()],
            ..MailerOptions::default()
        },
    )
    .unwrap();
    let by_option = channel(by_option, &["ops@acme.example"], &[], None);
    assert_delivered(&send(&by_option, "dlv_2", &event(), None).await);

    let messages = server.wait_for(2, WAIT);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].message_id.as_deref(), Some("dlv_2@example.com"));

    // Not trusted: the handshake fails, nothing is sent, and it is worth retrying.
    let untrusted = channel(mailer(&plain_url), &["ops@acme.example"], &[], None);
    match send(&untrusted, "dlv_3", &event(), None).await {
        SendOutcome::Retry { error, .. } => assert!(
            error.starts_with(&format!(
                "TLS handshake with 127.0.0.1:{} failed",
                server.port()
            )),
            "{error}"
        ),
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(server.messages().len(), 2);
}

#[tokio::test]
async fn implicit_tls_with_a_self_signed_certificate() {
    let server = SmtpServer::start(SmtpOptions::default().implicit_tls());
    let url = server.url();
    assert!(url.starts_with("smtps://127.0.0.1:"), "{url}");
    let trusted = channel(mailer(&url), &["ops@acme.example"], &[], None);
    assert_eq!(trusted.mailer().tls_mode(), TlsMode::Implicit);
    assert_delivered(&send(&trusted, "dlv_1", &event(), None).await);
    assert_delivered(&send(&trusted, "dlv_2", &event(), None).await);
    let messages = server.wait_for(2, WAIT);
    assert_eq!(messages[1].message_id.as_deref(), Some("dlv_2@example.com"));
    assert_eq!(trusted.mailer().idle_connections(), 1);

    let untrusted_url = format!("smtps://127.0.0.1:{}", server.port());
    let untrusted = channel(mailer(&untrusted_url), &["ops@acme.example"], &[], None);
    match send(&untrusted, "dlv_3", &event(), None).await {
        SendOutcome::Retry { error, .. } => assert!(
            error.starts_with(&format!(
                "TLS handshake with 127.0.0.1:{} failed: invalid peer certificate",
                server.port()
            )),
            "{error}"
        ),
        other => panic!("expected a retry, got {other:?}"),
    }
    assert_eq!(server.messages().len(), 2);
}

#[tokio::test]
async fn starttls_required_but_not_offered_is_retried_and_sends_nothing() {
    let server = SmtpServer::start(SmtpOptions::default());
    let url = format!("smtp://127.0.0.1:{}?tls=required", server.port());
    let channel = channel(mailer(&url), &["ops@acme.example"], &[], None);
    match send(&channel, "dlv_1", &event(), None).await {
        SendOutcome::Retry { error, .. } => {
            assert!(error.contains("does not offer STARTTLS"), "{error}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_4xx_reply_is_retried_and_the_next_attempt_delivers() {
    let server = SmtpServer::start(SmtpOptions::default().fail_first(1, FailOn::Data));
    let channel = channel(mailer(&server.url()), &["ops@acme.example"], &[], None);
    let event = event();
    let relay = format!("127.0.0.1:{}", server.port());

    let first = send(&channel, "dlv_1", &event, None).await;
    assert_eq!(
        first,
        SendOutcome::Retry {
            after: None,
            status: Some(451),
            error: format!("{relay} refused the message for now: 451 4.3.0 try again later"),
            response: Some("451 4.3.0 try again later".into()),
        }
    );
    assert!(server.messages().is_empty());

    assert_delivered(&send(&channel, "dlv_1", &event, None).await);
    let message = only_message(&server);
    assert_eq!(message.message_id.as_deref(), Some("dlv_1@example.com"));
}

#[tokio::test]
async fn a_4xx_reply_to_rcpt_is_retried() {
    let server = SmtpServer::start(SmtpOptions::default().fail_first(1, FailOn::Rcpt));
    let channel = channel(mailer(&server.url()), &["ops@acme.example"], &[], None);
    let first = send(&channel, "dlv_1", &event(), None).await;
    assert_eq!(first.kind(), "retry", "{first:?}");
    assert_eq!(first.status(), Some(451));
    assert_delivered(&send(&channel, "dlv_1", &event(), None).await);
    only_message(&server);
}

#[tokio::test]
async fn a_5xx_reply_fails_permanently_with_the_reply_recorded() {
    let server = SmtpServer::start(SmtpOptions::default().reject_rcpt("*@rejected.example"));
    let channel = channel(
        mailer(&server.url()),
        &["nobody@rejected.example"],
        &[],
        None,
    );
    let outcome = send(&channel, "dlv_1", &event(), None).await;
    let reply = "550 5.1.1 <nobody@rejected.example>: Recipient address rejected: User unknown";
    assert_eq!(
        outcome,
        SendOutcome::Permanent {
            status: Some(550),
            error: format!("127.0.0.1:{} refused the message: {reply}", server.port()),
            response: Some(reply.into()),
        }
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    // A port that was free a moment ago: nothing listens there now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let channel = channel(
        mailer(&format!("smtp://127.0.0.1:{port}")),
        &["ops@acme.example"],
        &[],
        None,
    );
    assert_eq!(
        send(&channel, "dlv_1", &event(), None).await,
        SendOutcome::Retry {
            after: None,
            status: None,
            error: format!("connection to 127.0.0.1:{port} refused"),
            response: None,
        }
    );
}

#[tokio::test]
async fn a_relay_that_never_answers_times_out_and_is_retried() {
    // Accepts connections and never says a word (no SMTP greeting).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        FROM,
        None,
        None,
        Duration::from_millis(500),
    )
    .unwrap();
    let channel = channel(mailer, &["ops@acme.example"], &[], None);
    assert_eq!(
        send(&channel, "dlv_1", &event(), None).await,
        SendOutcome::Retry {
            after: None,
            status: None,
            error: format!("timed out after 500ms sending to 127.0.0.1:{port}"),
            response: None,
        }
    );
    assert_eq!(channel.mailer().idle_connections(), 0);
    held.abort();
}

#[tokio::test]
async fn a_formatters_output_is_used() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(
        mailer(&server.url()),
        &["ops@acme.example"],
        &[],
        Some("[ops]"),
    );
    let event = event();

    // HTML with a subject and no text alternative: a text version is derived.
    let html = Rendered {
        format: Format::Html,
        subject: Some("Custom <subject>\r\nBcc: evil@x".into()),
        body: "<h1>Capsule sb_42</h1><p>failed &amp; stopped</p>".into(),
        text_alternative: None,
    };
    assert_delivered(&send(&channel, "dlv_1", &event, Some(&html)).await);
    // HTML with its own text alternative.
    let with_text = Rendered {
        text_alternative: Some("the text version".into()),
        subject: None,
        ..html.clone()
    };
    assert_delivered(&send(&channel, "dlv_2", &event, Some(&with_text)).await);
    // Markdown: one plain part, the built-in subject.
    let markdown = Rendered {
        format: Format::Markdown,
        subject: None,
        body: "**capsule** failed\nsecond line".into(),
        text_alternative: None,
    };
    assert_delivered(&send(&channel, "dlv_3", &event, Some(&markdown)).await);

    let messages = server.wait_for(3, WAIT);
    let [first, second, third] = &messages[..] else {
        panic!("{messages:#?}")
    };
    assert_eq!(
        first.subject.as_deref(),
        Some("[ops] Custom <subject> Bcc: evil@x")
    );
    assert!(first.bcc.is_empty() && first.header("Bcc").is_empty());
    assert_eq!(first.content_type, "multipart/alternative");
    assert_eq!(part_types(first), ["text/plain", "text/html"]);
    assert_eq!(lf(first.html().unwrap()), html.body);
    assert_eq!(lf(first.text().unwrap()), "Capsule sb_42\nfailed & stopped");

    assert_eq!(
        second.subject.as_deref(),
        Some("[ops] [acme] capsule.create failed: sb_42")
    );
    assert_eq!(lf(second.text().unwrap()), "the text version");
    assert_eq!(lf(second.html().unwrap()), html.body);

    assert_eq!(third.content_type, "text/plain");
    assert_eq!(part_types(third), ["text/plain"]);
    assert_eq!(lf(third.text().unwrap()), markdown.body);
    assert_eq!(
        third.subject.as_deref(),
        Some("[ops] [acme] capsule.create failed: sb_42")
    );
}

#[tokio::test]
async fn the_password_never_appears_in_outcomes_or_debug_output() {
    let server = SmtpServer::start(SmtpOptions::default().auth("herald", PASSWORD));
    let user = Secret::new("herald");
    let build = |password: &str| {
        let password = Secret::new(password);
        Mailer::new(
            &server.url(),
            FROM,
            Some(&user),
            Some(&password),
            Duration::from_secs(20),
        )
        .unwrap()
    };
    let assert_clean = |what: &str, text: &str| {
        assert!(
            !text.contains(PASSWORD),
            "{what} shows the password: {text}"
        );
        assert!(
            !text.contains("wrong-pa55word"),
            "{what} shows the password: {text}"
        );
    };

    // The right password delivers.
    let good = channel(build(PASSWORD), &["ops@acme.example"], &[], None);
    assert_clean("channel debug", &format!("{good:?}"));
    let outcome = send(&good, "dlv_1", &event(), None).await;
    assert_delivered(&outcome);
    assert_clean("delivered outcome", &format!("{outcome:?} {outcome}"));
    only_message(&server);

    // A wrong one is refused: the channel's failure, not the message's (issue 15, item 2).
    let bad = channel(build("wrong-pa55word"), &["ops@acme.example"], &[], None);
    assert_clean("mailer debug", &format!("{:?}", bad.mailer()));
    let outcome = send(&bad, "dlv_2", &event(), None).await;
    assert_eq!(outcome.kind(), "channel_failure", "{outcome:?}");
    assert_eq!(outcome.status(), Some(535));
    assert!(
        outcome
            .error()
            .unwrap()
            .contains("refused the session: 535"),
        "{outcome:?}"
    );
    assert_clean("refused outcome", &format!("{outcome:?} {outcome}"));

    // And a relay that is not there.
    drop(server);
    let outcome = send(&good, "dlv_3", &event(), None).await;
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");
    assert_clean("retry outcome", &format!("{outcome:?} {outcome}"));
}

#[test]
fn channels_check_their_configuration() {
    let mailer = mailer("smtp://127.0.0.1:25");
    let new = |to: &[&str], cc: &[&str], prefix: Option<&str>| {
        EmailChannel::new(
            mailer.clone(),
            team(),
            to.iter().map(ToString::to_string).collect(),
            cc.iter().map(ToString::to_string).collect(),
            prefix.map(str::to_string),
        )
        .map_err(|e| e.to_string())
    };
    assert!(new(&["a@example.com"], &[], None).is_ok());
    assert_eq!(
        new(&[], &["a@example.com"], None).unwrap_err(),
        "an email channel needs at least one `to` address"
    );
    let e = new(&["a@example.com", "not-an-address"], &[], None).unwrap_err();
    assert!(
        e.starts_with("to address `not-an-address` is not valid"),
        "{e}"
    );
    let e = new(&["a@example.com"], &["x@example.com\r\nBcc: evil@x"], None).unwrap_err();
    assert!(e.starts_with("cc address"), "{e}");
    assert_eq!(
        new(&["a@example.com"], &[], Some("[ops]\r\nBcc: evil@x")).unwrap_err(),
        "subject_prefix must be one line without control characters"
    );
    let channel = new(&["a@example.com"], &[], Some("  [ops] ")).unwrap();
    assert_eq!(channel.subject_prefix(), Some("[ops]"));
}

#[test]
fn render_is_pure_and_shows_everything() {
    let rendered = render(&event(), &team(), Some("[herald]"));
    assert_eq!(
        rendered.subject,
        "[herald] [acme] capsule.create failed: sb_42"
    );
    assert!(
        rendered.text.contains("Outcome   error"),
        "{}",
        rendered.text
    );
    assert!(
        rendered.html.contains("<td>user u_1 (Alice)</td>"),
        "{}",
        rendered.html
    );

    let mut state = event();
    state.outcome = None;
    state.resource = None;
    state.event = "host.up".into();
    assert_eq!(render(&state, &team(), None).subject, "[acme] host.up");
    state.outcome = Some(herald_core::Outcome::Success);
    assert_eq!(
        render(&state, &team(), None).subject,
        "[acme] host.up succeeded"
    );
}

#[tokio::test]
async fn a_digest_is_one_email_listing_its_events() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(
        mailer(&server.url()),
        &["ops@acme.example"],
        &[],
        Some("[ops]"),
    );
    let mut digest = crate::digest_fixture::digest(3, 5);
    digest.events[1].error = Some("<script>alert(1)</script>\r\nBcc: evil@example.com".into());
    let outcome = channel
        .send(&Outgoing {
            delivery_id: &digest.id,
            event: &digest.events[0],
            attempt: 1,
            rendered: None,
            digest: Some(&digest),
        })
        .await;
    assert_delivered(&outcome);
    let message = only_message(&server);
    assert_eq!(message.content_type, "multipart/alternative");
    assert_eq!(part_types(&message), ["text/plain", "text/html"]);
    assert_eq!(
        message.subject.as_deref(),
        Some("[ops] [acme] 5 × capsule.create (metadata.region = eu)")
    );
    assert_eq!(
        message.message_id.as_deref(),
        Some("dlv_digest@example.com")
    );
    assert!(message.bcc.is_empty());
    insta::assert_snapshot!(lf(message.text().unwrap()), @r"
    5 × capsule.create (metadata.region = eu)

    Team    acme
    Events  5 (3 listed)
    First   2026-11-25T12:00:00.5Z
    Last    2026-11-25T12:00:30Z

    - 2026-11-25T12:00:00Z  capsule.create failed: capsule sb_0
        out of memory
    - 2026-11-25T12:00:01Z  capsule.create failed: capsule sb_1
        <script>alert(1)</script>
    - 2026-11-25T12:00:02Z  capsule.create failed: capsule sb_2
        out of memory
    … and 2 more

    -- 
    Sent by herald
    ");
    let html = message.html().unwrap();
    assert!(
        html.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("<td>capsule sb_2</td>"), "{html}");
    assert!(html.contains("… and 2 more"), "{html}");
}

#[tokio::test]
async fn a_formatters_digest_without_a_subject_gets_the_digest_subject() {
    let server = SmtpServer::start(SmtpOptions::default());
    let channel = channel(mailer(&server.url()), &["ops@acme.example"], &[], None);
    let digest = crate::digest_fixture::digest(2, 2);
    let rendered = Rendered {
        format: Format::Text,
        subject: None,
        body: "two failures".into(),
        text_alternative: None,
    };
    let outcome = channel
        .send(&Outgoing {
            delivery_id: &digest.id,
            event: &digest.events[0],
            attempt: 1,
            rendered: Some(&rendered),
            digest: Some(&digest),
        })
        .await;
    assert_delivered(&outcome);
    let message = only_message(&server);
    assert_eq!(
        message.subject.as_deref(),
        Some("[acme] 2 × capsule.create (metadata.region = eu)")
    );
    assert_eq!(lf(message.text().unwrap()), "two failures");
}
