//! Webhook tests against real HTTP receivers on 127.0.0.1 with ephemeral ports.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use herald_core::{Event, Format, RawEvent, Rendered, Secret, TeamId, Timestamp};
use reqwest::Url;

use super::*;
use crate::SendOutcome;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HINT: &str = "set [delivery] allow_private_networks = true to allow";

/// What a test receiver does with a request.
#[derive(Clone)]
enum Reply {
    Status(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Hang,
}

fn reply(status: u16, body: &str) -> Reply {
    Reply::Status(status, Vec::new(), body.to_string())
}

#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl Receiver {
    /// Starts a receiver that answers every request with `reply`.
    async fn start(reply: Reply) -> Receiver {
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let seen = Arc::clone(&requests);
        let handler = move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let reply = reply.clone();
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().unwrap().push(Captured {
                    path: uri.path().to_string(),
                    headers,
                    body,
                });
                match reply {
                    Reply::Hang => std::future::pending().await,
                    Reply::Status(status, headers, body) => {
                        let mut response = Response::builder().status(status);
                        for (name, value) in headers {
                            response = response.header(name, value);
                        }
                        response.body(Body::from(body)).unwrap()
                    }
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, requests }
    }

    fn url(&self) -> Url {
        format!(
            "http://127.0.0.1:{}/hooks/herald?token=t0ps3cret",
            self.port
        )
        .parse()
        .unwrap()
    }

    fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }
}

/// Generous timeouts, so that a loaded machine does not turn an answer into a timeout.
fn client(allow_private_networks: bool) -> WebhookClient {
    WebhookClient::new(HttpOptions {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        allow_private_networks,
        ..HttpOptions::default()
    })
    .unwrap()
}

fn channel(url: Url, allow_private_networks: bool) -> WebhookChannel {
    WebhookChannel::new(
        url,
        Some(Secret::new(SECRET)),
        client(allow_private_networks),
    )
    .unwrap()
}

fn event() -> Event {
    RawEvent::from_json(
        br#"{"id": "evt_1", "event": "capsule.create", "outcome": "error",
             "actor": {"type": "user", "id": "u_1"}, "metadata": {"reason": "oom"},
             "error": "out of memory"}"#,
    )
    .unwrap()
    .into_event(
        Some(&TeamId::parse("acme").unwrap()),
        Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        || unreachable!(),
    )
    .unwrap()
}

async fn send(channel: &WebhookChannel, delivery_id: &str, attempt: u32) -> SendOutcome {
    let event = event();
    channel
        .send(&Outgoing {
            delivery_id,
            event: &event,
            attempt,
            rendered: None,
            digest: None,
        })
        .await
}

fn header<'h>(request: &'h Captured, name: &str) -> &'h str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Checks a captured request's signature as a receiver would.
fn verify_request(request: &Captured) -> Result<(), VerifyError> {
    verify(
        &Secret::new(SECRET),
        header(request, "webhook-id"),
        header(request, "webhook-timestamp"),
        &request.body,
        header(request, "webhook-signature"),
        SystemTime::now(),
        DEFAULT_TOLERANCE,
    )
}

/// Asserts that no text of `outcome` contains the signing secret or its key part.
fn assert_no_secret(outcome: &SendOutcome) {
    let key_part = SECRET.strip_prefix(SECRET_PREFIX).unwrap();
    let text = format!("{outcome:?} {outcome}");
    assert!(!text.contains(key_part), "secret leaked: {text}");
}

#[tokio::test]
async fn delivers_the_signed_envelope() {
    let receiver = Receiver::start(reply(200, "thanks")).await;
    let channel = channel(receiver.url(), true);
    assert_eq!(channel.kind(), "webhook");
    assert!(channel.is_signed());
    let debug = format!("{channel:?}");
    assert!(
        !debug.contains("t0ps3cret") && !debug.contains("MfKQ9r8"),
        "{debug}"
    );

    let outcome = send(&channel, "dlv_1", 1).await;
    assert_eq!(
        outcome,
        SendOutcome::Delivered {
            status: Some(200),
            response: Some("thanks".into())
        }
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.path, "/hooks/herald");
    assert_eq!(verify_request(request), Ok(()));
    assert_eq!(&request.body[..], serde_json::to_vec(&event()).unwrap());
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "user-agent"), DEFAULT_USER_AGENT);
    assert!(DEFAULT_USER_AGENT.starts_with("herald/"));
    assert_eq!(header(request, "webhook-id"), "dlv_1");
    assert!(header(request, "webhook-signature").starts_with("v1,"));
    header(request, "webhook-timestamp")
        .parse::<i64>()
        .expect("unix seconds");
}

#[tokio::test]
async fn the_webhook_id_is_stable_across_attempts() {
    let receiver = Receiver::start(reply(204, "")).await;
    let channel = channel(receiver.url(), true);
    for attempt in 1..=2 {
        let outcome = send(&channel, "dlv_stable", attempt).await;
        assert_eq!(
            outcome,
            SendOutcome::Delivered {
                status: Some(204),
                response: None
            }
        );
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(header(request, "webhook-id"), "dlv_stable");
        assert_eq!(verify_request(request), Ok(()));
    }
}

#[tokio::test]
async fn without_a_secret_there_is_no_signature() {
    let receiver = Receiver::start(reply(200, "")).await;
    let channel = WebhookChannel::new(receiver.url(), None, client(true)).unwrap();
    assert!(!channel.is_signed());
    assert_eq!(send(&channel, "dlv_1", 1).await.kind(), "delivered");
    let requests = receiver.requests();
    assert!(requests[0].headers.get("webhook-signature").is_none());
    assert_eq!(header(&requests[0], "webhook-id"), "dlv_1");
}

#[tokio::test]
async fn a_rendered_body_replaces_the_envelope() {
    let receiver = Receiver::start(reply(200, "")).await;
    let channel = channel(receiver.url(), true);
    let event = event();
    for (format, body, content_type) in [
        (
            Format::Json,
            r#"{"text":"capsule.create failed"}"#,
            "application/json",
        ),
        (
            Format::Markdown,
            "**capsule.create** failed",
            "text/plain; charset=utf-8",
        ),
        (
            Format::Text,
            "capsule.create failed",
            "text/plain; charset=utf-8",
        ),
    ] {
        let rendered = Rendered {
            format,
            subject: None,
            body: body.to_string(),
            text_alternative: None,
        };
        let outcome = channel
            .send(&Outgoing {
                delivery_id: "dlv_r",
                event: &event,
                attempt: 1,
                rendered: Some(&rendered),
                digest: None,
            })
            .await;
        assert_eq!(outcome.kind(), "delivered");
        let request = receiver.requests().pop().unwrap();
        assert_eq!(&request.body[..], body.as_bytes());
        assert_eq!(header(&request, "content-type"), content_type);
        assert_eq!(verify_request(&request), Ok(()));
    }
}

#[tokio::test]
async fn a_digest_is_one_signed_json_document_listing_the_envelopes() {
    let receiver = Receiver::start(reply(200, "")).await;
    let channel = channel(receiver.url(), true);
    // Three of five events listed; the throttle kind too.
    let group = crate::digest_fixture::digest(3, 5);
    let mut throttle = crate::digest_fixture::digest(2, 2);
    throttle.id = "dlv_throttle".into();
    throttle.kind = herald_core::DigestKind::Throttle {
        limit: 10,
        per_seconds: 60,
    };
    for digest in [&group, &throttle] {
        let outcome = channel
            .send(&Outgoing {
                delivery_id: &digest.id,
                event: &digest.events[0],
                attempt: 1,
                rendered: None,
                digest: Some(digest),
            })
            .await;
        assert_eq!(outcome.kind(), "delivered");
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    for (request, digest) in requests.iter().zip([&group, &throttle]) {
        assert_eq!(verify_request(request), Ok(()));
        assert_eq!(header(request, "webhook-id"), digest.id);
        assert_eq!(header(request, "content-type"), "application/json");
        assert_eq!(&request.body[..], digest_body(digest).unwrap());
    }
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    let envelopes: Vec<serde_json::Value> = group
        .events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(
        body,
        serde_json::json!({
            "type": "herald.digest",
            "id": "dlv_digest",
            "team": "acme",
            "subscription": "eu-failures",
            "channel": "oncall",
            "kind": "group",
            "labels": [["metadata.region", "eu"]],
            "total": 5,
            "listed": 3,
            "more": 2,
            "first_at": "2026-11-25T12:00:00.5Z",
            "last_at": "2026-11-25T12:00:30Z",
            "events": envelopes,
        })
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["kind"], "throttle");
    assert_eq!(body["limit"], 10);
    assert_eq!(body["per_seconds"], 60);
    assert_eq!(
        (&body["total"], &body["listed"], &body["more"]),
        (&2.into(), &2.into(), &0.into())
    );
    assert!(body.get("labels").is_none(), "{body}");
}

#[tokio::test]
async fn a_formatters_digest_output_replaces_the_digest_document() {
    let receiver = Receiver::start(reply(200, "")).await;
    let channel = channel(receiver.url(), true);
    let digest = crate::digest_fixture::digest(2, 2);
    let rendered = Rendered {
        format: Format::Text,
        subject: None,
        body: "2 failures in eu".into(),
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
    assert_eq!(outcome.kind(), "delivered");
    let request = receiver.requests().pop().unwrap();
    assert_eq!(&request.body[..], b"2 failures in eu");
    assert_eq!(verify_request(&request), Ok(()));
}

#[tokio::test]
async fn responses_are_classified() {
    let h = |name: &'static str, value: &str| vec![(name, value.to_string())];
    // (reply, expected outcome)
    let cases = [
        (
            reply(201, "created"),
            SendOutcome::Delivered {
                status: Some(201),
                response: Some("created".into()),
            },
        ),
        (
            reply(500, "boom"),
            SendOutcome::Retry {
                after: None,
                status: Some(500),
                error: "HTTP 500 Internal Server Error".into(),
                response: Some("boom".into()),
            },
        ),
        (
            reply(404, "no such hook"),
            SendOutcome::Retry {
                after: None,
                status: Some(404),
                error: "HTTP 404 Not Found".into(),
                response: Some("no such hook".into()),
            },
        ),
        (
            reply(410, "gone for good"),
            SendOutcome::Disable {
                status: Some(410),
                error: "HTTP 410 Gone: the receiver asked for no more deliveries".into(),
                response: Some("gone for good".into()),
            },
        ),
        (
            Reply::Status(429, h("retry-after", "7"), "slow down".into()),
            SendOutcome::Retry {
                after: Some(Duration::from_secs(7)),
                status: Some(429),
                error: "HTTP 429 Too Many Requests".into(),
                response: Some("slow down".into()),
            },
        ),
        (
            Reply::Status(503, h("retry-after", "120"), String::new()),
            SendOutcome::Retry {
                after: Some(Duration::from_secs(120)),
                status: Some(503),
                error: "HTTP 503 Service Unavailable".into(),
                response: None,
            },
        ),
        (
            reply(502, ""),
            SendOutcome::Retry {
                after: None,
                status: Some(502),
                error: "HTTP 502 Bad Gateway".into(),
                response: None,
            },
        ),
        (
            // Retry-After only means "throttle" on 429/502/503/504.
            Reply::Status(500, h("retry-after", "7"), String::new()),
            SendOutcome::Retry {
                after: None,
                status: Some(500),
                error: "HTTP 500 Internal Server Error".into(),
                response: None,
            },
        ),
    ];
    for (reply, expected) in cases {
        let receiver = Receiver::start(reply).await;
        let outcome = send(&channel(receiver.url(), true), "dlv_1", 1).await;
        assert_eq!(outcome, expected);
        assert_eq!(receiver.requests().len(), 1);
        assert_no_secret(&outcome);
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(Reply::Status(
        302,
        vec![("location", "/elsewhere".to_string())],
        "moved".into(),
    ))
    .await;
    let outcome = send(&channel(receiver.url(), true), "dlv_1", 1).await;
    assert_eq!(
        outcome,
        SendOutcome::Retry {
            after: None,
            status: Some(302),
            error: "HTTP 302 Found (redirects are not followed; location: /elsewhere)".into(),
            response: Some("moved".into()),
        }
    );
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "the redirect was followed");
    assert_eq!(requests[0].path, "/hooks/herald");
}

#[tokio::test]
async fn the_response_snippet_is_cut_at_4_kib() {
    // One ASCII byte, then two-byte characters: byte 4096 falls inside a character.
    let body = format!("a{}", "é".repeat(10_000));
    let receiver = Receiver::start(reply(500, &body)).await;
    let outcome = send(&channel(receiver.url(), true), "dlv_1", 1).await;
    let response = outcome.response().unwrap();
    assert_eq!(response.len(), 4095);
    assert!(body.starts_with(response));
}

#[tokio::test]
async fn a_hanging_receiver_times_out() {
    let receiver = Receiver::start(Reply::Hang).await;
    let client = WebhookClient::new(HttpOptions {
        timeout: Duration::from_millis(300),
        allow_private_networks: true,
        ..HttpOptions::default()
    })
    .unwrap();
    let channel = WebhookChannel::new(receiver.url(), Some(Secret::new(SECRET)), client).unwrap();
    let outcome = send(&channel, "dlv_1", 1).await;
    let port = receiver.port;
    assert_eq!(
        outcome,
        SendOutcome::Retry {
            after: None,
            status: None,
            error: format!("timed out after 300ms waiting for 127.0.0.1:{port} to respond"),
            response: None,
        }
    );
    assert_no_secret(&outcome);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    // Bind, learn the port, close: nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url: Url = format!("http://127.0.0.1:{port}/hook").parse().unwrap();
    let outcome = send(&channel(url, true), "dlv_1", 1).await;
    assert_eq!(
        outcome,
        SendOutcome::Retry {
            after: None,
            status: None,
            error: format!("connection to 127.0.0.1:{port} refused"),
            response: None,
        }
    );
    assert_no_secret(&outcome);
}

#[tokio::test]
async fn a_tls_failure_says_so() {
    // An https URL pointing at a plain-HTTP receiver: the handshake cannot succeed.
    let receiver = Receiver::start(reply(200, "")).await;
    let port = receiver.port;
    let url: Url = format!("https://127.0.0.1:{port}/hook").parse().unwrap();
    let outcome = send(&channel(url, true), "dlv_1", 1).await;
    let error = outcome.error().unwrap_or_default();
    assert_eq!(outcome.kind(), "retry", "{outcome:?}");
    assert!(
        error.starts_with(&format!("TLS handshake with 127.0.0.1:{port} failed: ")),
        "{error}"
    );
    assert_no_secret(&outcome);
}

#[tokio::test]
async fn the_ssrf_guard_refuses_loopback_before_connecting() {
    let receiver = Receiver::start(reply(200, "")).await;
    let port = receiver.port;
    let cases = [
        (
            format!("http://127.0.0.1:{port}/hook"),
            format!(
                "connect to 127.0.0.1:{port} refused by SSRF guard: loopback address (127.0.0.0/8); {HINT}"
            ),
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            format!(
                "connect to [::ffff:127.0.0.1]:{port} refused by SSRF guard: loopback address (127.0.0.0/8); {HINT}"
            ),
        ),
        (
            format!("http://[::1]:{port}/hook"),
            format!(
                "connect to [::1]:{port} refused by SSRF guard: loopback address (::1/128); {HINT}"
            ),
        ),
        (
            // The URL parser turns this spelling into 127.0.0.1.
            format!("http://0x7f.1:{port}/hook"),
            format!(
                "connect to 127.0.0.1:{port} refused by SSRF guard: loopback address (127.0.0.0/8); {HINT}"
            ),
        ),
    ];
    for (url, expected) in cases {
        let outcome = send(&channel(url.parse().unwrap(), false), "dlv_1", 1).await;
        assert_eq!(
            outcome,
            SendOutcome::Permanent {
                status: None,
                error: expected,
                response: None
            },
            "{url}"
        );
    }

    // A name goes through the guarded resolver.
    let url: Url = format!("http://localhost:{port}/hook").parse().unwrap();
    let outcome = send(&channel(url, false), "dlv_1", 1).await;
    // A DNS answer the guard refuses is the channel's failure (issue 15, item 2): every
    // delivery meets it until the name resolves elsewhere.
    let SendOutcome::ChannelFailure { error, .. } = &outcome else {
        panic!("expected a channel failure, got {outcome:?}");
    };
    let prefix = format!("connect to localhost:{port} (");
    assert!(error.starts_with(&prefix), "{error}");
    assert!(
        error.contains(") refused by SSRF guard: loopback address ("),
        "{error}"
    );
    assert!(error.ends_with(HINT), "{error}");
    assert_no_secret(&outcome);

    assert!(
        receiver.requests().is_empty(),
        "the guard let a request through"
    );

    // The same receiver is reachable once private networks are allowed.
    let url: Url = format!("http://localhost:{port}/hook").parse().unwrap();
    assert_eq!(
        send(&channel(url, true), "dlv_1", 1).await.kind(),
        "delivered"
    );
}

#[tokio::test]
async fn urls_must_be_http_or_https() {
    for url in [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "unix:/run/x.sock",
    ] {
        let err = WebhookChannel::new(url.parse().unwrap(), None, client(false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not supported; use http or https"),
            "{url}: {err}"
        );
    }
}

#[test]
fn a_bad_secret_is_a_config_error_that_does_not_echo_it() {
    let client = WebhookClient::new(HttpOptions::default()).unwrap();
    let url: Url = "https://example.com/hook".parse().unwrap();
    let secret = "whsec_c2VjcmV0!c2VjcmV0";
    let err = WebhookChannel::new(url, Some(Secret::new(secret)), client).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("not valid base64 after the `whsec_` prefix"),
        "{text}"
    );
    assert!(text.contains("character 9"), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
}

#[test]
fn client_options_are_checked() {
    let bad_agent = HttpOptions {
        user_agent: "herald\n".into(),
        ..HttpOptions::default()
    };
    assert!(matches!(
        WebhookClient::new(bad_agent),
        Err(ConfigError::UserAgent)
    ));
    let zero = HttpOptions {
        timeout: Duration::ZERO,
        ..HttpOptions::default()
    };
    assert_eq!(
        WebhookClient::new(zero).unwrap_err().to_string(),
        "timeout must be greater than zero"
    );
}
