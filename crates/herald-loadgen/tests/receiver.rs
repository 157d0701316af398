//! The receiver over real HTTP on 127.0.0.1: signed deliveries are accepted and recorded,
//! badly signed or unsigned ones are refused with the reason.

use std::time::{SystemTime, UNIX_EPOCH};

use herald_channels::webhook::SigningKey;
use herald_core::Secret;
use herald_loadgen::receiver::{self, Arrival, ReceiverOptions, RunningReceiver};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BODY: &str = r#"{"id":"load-1-7","event":"bench.ping","team_id":"bench","metadata":{"sent_at_ns":"1764000000000000000"}}"#;

async fn start_receiver(
    secret: Option<&str>,
    status: StatusCode,
) -> (RunningReceiver, mpsc::UnboundedReceiver<Arrival>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let options = ReceiverOptions {
        secret: secret.map(Secret::new),
        status,
        index: 3,
        arrivals: Some(tx),
        ..ReceiverOptions::default()
    };
    let running = receiver::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .unwrap();
    (running, rx)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// POSTs `BODY` as herald would, with `signature` (or none) in `webhook-signature`.
async fn post(
    url: &str,
    id: &str,
    timestamp: i64,
    signature: Option<String>,
) -> (StatusCode, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .body(BODY);
    if let Some(signature) = signature {
        request = request.header("webhook-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

fn error_of(reply: &str) -> String {
    let v: Value = serde_json::from_str(reply).unwrap();
    v["error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn verifies_signatures_and_records_good_deliveries() {
    let (running, mut arrivals) = start_receiver(Some(SECRET), StatusCode::ACCEPTED).await;
    let url = running.url();
    let key = SigningKey::from_secret(&Secret::new(SECRET)).unwrap();
    let ts = now();

    let good = key.sign("dlv_1", ts, BODY.as_bytes());
    assert_eq!(
        post(&url, "dlv_1", ts, Some(good)).await,
        (StatusCode::ACCEPTED, String::new())
    );
    let arrival = arrivals.recv().await.unwrap();
    assert_eq!(arrival.receiver, 3);
    assert_eq!(arrival.webhook_id.as_deref(), Some("dlv_1"));
    assert_eq!(arrival.event_id.as_deref(), Some("load-1-7"));
    assert_eq!(arrival.sent_at_ns, Some(1_764_000_000_000_000_000));
    assert!(arrival.received_at_ns > 0);

    // Signed for another id: the signature does not cover what was sent.
    let wrong = key.sign("dlv_other", ts, BODY.as_bytes());
    let (status, reply) = post(&url, "dlv_2", ts, Some(wrong)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&reply),
        "no v1 signature in webhook-signature matches the body"
    );

    let (status, reply) = post(&url, "dlv_3", ts, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        error_of(&reply),
        "missing or non-ASCII webhook-signature header"
    );

    // A correct signature over a stale timestamp is refused too.
    let stale = ts - 3600;
    let signed = key.sign("dlv_4", stale, BODY.as_bytes());
    let (status, reply) = post(&url, "dlv_4", stale, Some(signed)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error_of(&reply).contains("away from now"), "{reply}");

    // Refused deliveries are not recorded: only the first one arrived.
    drop(running);
    assert_eq!(arrivals.recv().await, None);
}

#[tokio::test]
async fn without_a_secret_everything_is_accepted_with_the_chosen_status() {
    let (running, mut arrivals) = start_receiver(None, StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, _) = post(&running.url(), "dlv_9", now(), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let arrival = arrivals.recv().await.unwrap();
    assert_eq!(arrival.webhook_id.as_deref(), Some("dlv_9"));

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client.get(running.url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
