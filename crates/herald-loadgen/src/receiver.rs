//! The webhook receiver behind `herald-receiver` and `herald-load e2e`: checks Standard
//! Webhooks signatures, prints one JSON line per delivery and/or hands each one to a recorder.
//! It also understands Alertmanager's webhook body, so `herald-load side-by-side` can measure
//! both servers with the same receivers.

use std::future::Future;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::ALLOW;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_channels::webhook::{DEFAULT_TOLERANCE, verify};
use herald_core::Secret;
use serde::Serialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

/// The metadata key under which `herald-load` puts an event's publish time (unix nanoseconds).
/// Alerts carry it as an annotation of the same name.
pub const SENT_AT_KEY: &str = "sent_at_ns";
/// The alert label that carries the event id, so that Alertmanager sees every alert as a
/// new one (nothing deduplicated) and the ledger can match it like a herald event.
pub const ALERT_ID_LABEL: &str = "event_id";

/// How one receiver behaves.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// When set, every request must carry a valid Standard Webhooks signature (else 401).
    pub secret: Option<Secret>,
    /// The answer to every accepted delivery.
    pub status: StatusCode,
    /// Print one JSON line per request to stdout.
    pub print: bool,
    /// This receiver's number in [`Arrival::receiver`].
    pub index: usize,
    /// Where accepted deliveries are reported; `None` records nothing.
    pub arrivals: Option<UnboundedSender<Arrival>>,
    /// Counts requests refused for their signature.
    pub rejected: Option<Arc<AtomicU64>>,
    /// Counts requests accepted (a digest is one request however many events it lists).
    pub accepted: Option<Arc<AtomicU64>>,
    /// Answer only after this long: a slow endpoint next to fast ones.
    pub delay: Duration,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            secret: None,
            status: StatusCode::OK,
            print: false,
            index: 0,
            arrivals: None,
            rejected: None,
            accepted: None,
            delay: Duration::ZERO,
        }
    }
}

/// One accepted delivery, as a load run records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub receiver: usize,
    pub webhook_id: Option<String>,
    /// The body's `id`, when the body is a herald event.
    pub event_id: Option<String>,
    /// `metadata.sent_at_ns` of the event, when present and a number.
    pub sent_at_ns: Option<u64>,
    pub received_at_ns: u64,
}

/// A receiver serving in the background; dropping it stops it.
#[derive(Debug)]
pub struct RunningReceiver {
    addr: SocketAddr,
    task: JoinHandle<io::Result<()>>,
}

impl RunningReceiver {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/`, what a herald webhook channel should point at.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for RunningReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves in the background until the returned value is dropped.
pub async fn start(addr: SocketAddr, options: ReceiverOptions) -> io::Result<RunningReceiver> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(serve(listener, options, std::future::pending()));
    Ok(RunningReceiver { addr, task })
}

/// Serves on `listener` until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    options: ReceiverOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(options))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Every path accepts webhooks: channels may point at `/`, `/hook` or anything else.
pub fn router(options: ReceiverOptions) -> Router {
    Router::new()
        .fallback(receive)
        .with_state(Arc::new(options))
}

async fn receive(
    State(options): State<Arc<ReceiverOptions>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(ALLOW, "POST")],
            "webhooks are POSTed here\n",
        )
            .into_response();
    }
    let now = SystemTime::now();
    let webhook_id = header(&headers, "webhook-id");
    let checked = check_signature(options.secret.as_ref(), &headers, &body, now);
    let wants_body = options.print || (options.arrivals.is_some() && checked.is_ok());
    let parsed = wants_body.then(|| parse_body(&body));

    if options.print {
        let line = Line {
            received_at: rfc3339(now),
            webhook_id,
            verified: checked == Ok(true),
            body: parsed.as_ref().unwrap_or(&Value::Null),
            error: checked.as_ref().err().map(String::as_str),
        };
        print_line(&line);
    }

    match checked {
        Ok(_) => {
            if let Some(accepted) = &options.accepted {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(arrivals) = &options.arrivals {
                let body = parsed.as_ref().unwrap_or(&Value::Null);
                for (event_id, sent_at_ns) in carried_events(body) {
                    // The recorder goes away only when a run is over; late deliveries are moot then.
                    let _ = arrivals.send(Arrival {
                        receiver: options.index,
                        webhook_id: webhook_id.map(str::to_string),
                        event_id,
                        sent_at_ns,
                        received_at_ns: unix_nanos(now),
                    });
                }
            }
            if !options.delay.is_zero() {
                tokio::time::sleep(options.delay).await;
            }
            options.status.into_response()
        }
        Err(reason) => {
            if let Some(rejected) = &options.rejected {
                rejected.fetch_add(1, Ordering::Relaxed);
            }
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": reason })),
            )
                .into_response()
        }
    }
}

/// `Ok(true)` when a signature was checked and is valid, `Ok(false)` when there is no secret
/// to check against, `Err(reason)` when a check was required and failed.
pub fn check_signature(
    secret: Option<&Secret>,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<bool, String> {
    let Some(secret) = secret else {
        return Ok(false);
    };
    let required = |name: &str| {
        header(headers, name).ok_or_else(|| format!("missing or non-ASCII {name} header"))
    };
    let id = required("webhook-id")?;
    let timestamp = required("webhook-timestamp")?;
    let signature = required("webhook-signature")?;
    verify(
        secret,
        id,
        timestamp,
        body,
        signature,
        now,
        DEFAULT_TOLERANCE,
    )
    .map(|()| true)
    .map_err(|e| e.to_string())
}

/// The events one delivery carries, each as (id, publish time): a herald event is one (`id`,
/// `metadata.sent_at_ns`); a herald digest (`"type": "herald.digest"`) one per listed event;
/// an Alertmanager notification one per alert (label [`ALERT_ID_LABEL`], annotation
/// [`SENT_AT_KEY`]). Anything else counts as one unknown event.
pub fn carried_events(body: &Value) -> Vec<(Option<String>, Option<u64>)> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let nanos = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|s| s.parse().ok());
    if body.get("type").and_then(Value::as_str) == Some("herald.digest") {
        let events = body.get("events").and_then(Value::as_array);
        return events
            .into_iter()
            .flatten()
            .map(|event| {
                (
                    text(event.get("id")),
                    nanos(event.get("metadata").and_then(|m| m.get(SENT_AT_KEY))),
                )
            })
            .collect();
    }
    match body.get("alerts").and_then(Value::as_array) {
        Some(alerts) => alerts
            .iter()
            .map(|alert| {
                (
                    text(alert.get("labels").and_then(|l| l.get(ALERT_ID_LABEL))),
                    nanos(alert.get("annotations").and_then(|a| a.get(SENT_AT_KEY))),
                )
            })
            .collect(),
        None => vec![(
            text(body.get("id")),
            nanos(body.get("metadata").and_then(|m| m.get(SENT_AT_KEY))),
        )],
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The body as JSON, or as a string when it is not JSON.
fn parse_body(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[derive(Serialize)]
struct Line<'a> {
    received_at: String,
    webhook_id: Option<&'a str>,
    verified: bool,
    body: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

fn print_line(line: &Line<'_>) {
    let mut out = io::stdout().lock();
    // A closed stdout (`| head`) must not take the receiver down: the answer still goes out.
    if serde_json::to_writer(&mut out, line).is_ok() {
        let _ = out.write_all(b"\n");
    }
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Unix nanoseconds of `t`; 0 before 1970.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn herald_events_and_alertmanager_alerts_are_both_read() {
        let herald = json!({"id": "r-1", "metadata": {"sent_at_ns": "17"}});
        assert_eq!(
            carried_events(&herald),
            [(Some("r-1".to_string()), Some(17))]
        );
        // Alertmanager's webhook body (version 4): one notification may carry several alerts.
        let alertmanager = json!({
            "version": "4", "status": "firing", "receiver": "r1",
            "alerts": [
                {"labels": {"alertname": "bench", "event_id": "r-2"}, "annotations": {"sent_at_ns": "5"}},
                {"labels": {"alertname": "bench", "event_id": "r-3"}, "annotations": {}},
            ],
        });
        assert_eq!(
            carried_events(&alertmanager),
            [
                (Some("r-2".to_string()), Some(5)),
                (Some("r-3".to_string()), None)
            ]
        );
        assert_eq!(carried_events(&json!("not json")), [(None, None)]);
    }

    #[test]
    fn a_herald_digest_carries_every_event_it_lists() {
        let digest = json!({
            "type": "herald.digest", "total": 3, "more": 1,
            "events": [
                {"id": "r-4", "metadata": {"sent_at_ns": "9"}},
                {"id": "r-5", "metadata": {}},
            ],
        });
        assert_eq!(
            carried_events(&digest),
            [
                (Some("r-4".to_string()), Some(9)),
                (Some("r-5".to_string()), None)
            ]
        );
    }
}
