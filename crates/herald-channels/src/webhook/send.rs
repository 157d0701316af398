//! One webhook attempt: build the signed request, send it, classify what came back.
//!
//! Error texts name the host and port but never the URL's path or query (webhook URLs often
//! carry tokens) and never the signing secret.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use herald_core::Format;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RETRY_AFTER};

use super::WebhookChannel;
use super::sign::unix_seconds;
use super::ssrf::{Blocked, DnsFailed, SsrfRefused, check_ip};
use crate::{Outgoing, RESPONSE_SNIPPET_LIMIT, SendOutcome, fmt_duration};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const ALLOW_HINT: &str = "set [delivery] allow_private_networks = true to allow";

pub(super) async fn send(channel: &WebhookChannel, msg: &Outgoing<'_>) -> SendOutcome {
    let url = &channel.url;
    let options = &channel.client.options;
    let target = Target {
        host: url.host_str().unwrap_or_default().to_string(),
        port: url.port_or_known_default().unwrap_or(80),
    };

    // IP-literal hosts never reach the resolver, so the guard must look at them here.
    if !options.allow_private_networks
        && let Some(ip) = super::host_ip(url)
        && let Err(reason) = check_ip(ip)
    {
        return refused(SocketAddr::new(ip, target.port).to_string(), reason);
    }

    let (body, content_type) = match msg.rendered {
        Some(rendered) => (
            rendered.body.clone().into_bytes(),
            if rendered.format == Format::Json {
                JSON
            } else {
                TEXT
            },
        ),
        None => {
            let encoded = match msg.digest {
                Some(digest) => super::digest_body(digest)
                    .map_err(|e| format!("cannot encode digest {} as JSON: {e}", digest.id)),
                None => serde_json::to_vec(msg.event)
                    .map_err(|e| format!("cannot encode event {} as JSON: {e}", msg.event.id)),
            };
            match encoded {
                Ok(body) => (body, JSON),
                Err(error) => {
                    return SendOutcome::Permanent {
                        status: None,
                        error,
                        response: None,
                    };
                }
            }
        }
    };

    let timestamp = unix_seconds(SystemTime::now());
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    match HeaderValue::from_str(msg.delivery_id) {
        Ok(id) => headers.insert("webhook-id", id),
        Err(_) => {
            return SendOutcome::Permanent {
                status: None,
                error: "delivery id is not a valid header value".to_string(),
                response: None,
            };
        }
    };
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    if !channel.keys.is_empty() {
        let signature = channel
            .keys
            .iter()
            .map(|key| key.sign(msg.delivery_id, timestamp, &body))
            .collect::<Vec<_>>()
            .join(" ");
        // base64, `v1,` and spaces are always a valid header value.
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert("webhook-signature", value);
        }
    }

    let result = channel
        .client
        .http
        .post(url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await;
    let outcome = match result {
        Ok(response) => classify_response(response).await,
        Err(err) => classify_error(&err, &target, channel),
    };
    tracing::debug!(
        delivery_id = msg.delivery_id,
        attempt = msg.attempt,
        host = %target,
        outcome = outcome.kind(),
        status = outcome.status(),
        error = outcome.error(),
        "webhook attempt"
    );
    outcome
}

/// `host:port` for messages (IPv6 hosts keep their brackets).
struct Target {
    host: String,
    port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn refused(what: String, reason: Blocked) -> SendOutcome {
    SendOutcome::Permanent {
        status: None,
        error: format!("connect to {what} refused by SSRF guard: {reason}; {ALLOW_HINT}"),
        response: None,
    }
}

async fn classify_response(mut response: reqwest::Response) -> SendOutcome {
    let status = response.status();
    let code = Some(status.as_u16());
    let retry_after = retry_after(response.headers(), SystemTime::now());
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(256).collect::<String>());
    let snippet = read_snippet(&mut response).await;
    let error = status_text(status);
    if status.is_success() {
        SendOutcome::Delivered {
            status: code,
            response: snippet,
        }
    } else if status == StatusCode::GONE {
        SendOutcome::Disable {
            status: code,
            error: format!("{error}: the receiver asked for no more deliveries"),
            response: snippet,
        }
    } else if status == StatusCode::TOO_MANY_REQUESTS && retry_after.is_none() {
        // A throttle that gives no hint throttles the channel, not this message.
        SendOutcome::ChannelFailure {
            after: None,
            status: code,
            error: format!("{error} without Retry-After"),
            response: snippet,
        }
    } else if matches!(status.as_u16(), 429 | 502 | 503 | 504) {
        SendOutcome::Retry {
            after: retry_after,
            status: code,
            error,
            response: snippet,
        }
    } else if status.is_redirection() {
        let error = match location {
            Some(to) => format!("{error} (redirects are not followed; location: {to})"),
            None => format!("{error} (redirects are not followed)"),
        };
        SendOutcome::Retry {
            after: None,
            status: code,
            error,
            response: snippet,
        }
    } else {
        SendOutcome::Retry {
            after: None,
            status: code,
            error,
            response: snippet,
        }
    }
}

/// `HTTP 500 Internal Server Error`.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date; a date in the past means "now".
pub(super) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(Duration::from_secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Reads at most [`RESPONSE_SNIPPET_LIMIT`] bytes of the body (plus one chunk), never the
/// whole of a large body. A body that fails halfway keeps what arrived.
async fn read_snippet(response: &mut reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() <= RESPONSE_SNIPPET_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    snippet(&buf)
}

/// The first [`RESPONSE_SNIPPET_LIMIT`] bytes of `body`, cut on a character boundary;
/// invalid UTF-8 is replaced. `None` for an empty body.
pub(crate) fn snippet(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let mut end = body.len().min(RESPONSE_SNIPPET_LIMIT);
    if end < body.len() {
        // `body[end]` is the first byte left out; if it continues a character, that
        // character started inside the kept part: leave it out whole.
        let mut back = 0;
        while end > 0 && back < 3 && body[end] & 0b1100_0000 == 0b1000_0000 {
            end -= 1;
            back += 1;
        }
    }
    Some(String::from_utf8_lossy(&body[..end]).into_owned())
}

fn classify_error(err: &reqwest::Error, target: &Target, channel: &WebhookChannel) -> SendOutcome {
    let options = &channel.client.options;
    let retry = |error: String| SendOutcome::Retry {
        after: None,
        status: None,
        error,
        response: None,
    };
    if let Some(refusal) = find::<SsrfRefused>(err) {
        let what = match refusal.addr {
            IpAddr::V4(_) => format!("{target} ({})", refusal.addr),
            IpAddr::V6(_) => format!("{target} ([{}])", refusal.addr),
        };
        // A DNS answer (not the configured URL) pointed somewhere private: every delivery
        // of the channel meets it until the name resolves elsewhere or the operator allows
        // private networks, so it is the channel's failure, not the message's.
        let SendOutcome::Permanent { error, .. } = refused(what, refusal.reason) else {
            unreachable!("refused() is permanent")
        };
        return SendOutcome::ChannelFailure {
            after: None,
            status: None,
            error,
            response: None,
        };
    }
    if let Some(dns) = find::<DnsFailed>(err) {
        return retry(format!("DNS lookup of {} failed: {}", dns.host, dns.source));
    }
    if err.is_timeout() {
        return retry(if err.is_connect() {
            format!(
                "connect to {target} timed out after {}",
                fmt_duration(options.connect_timeout)
            )
        } else {
            format!(
                "timed out after {} waiting for {target} to respond",
                fmt_duration(options.timeout)
            )
        });
    }
    if let Some(kind) = io_kind(err) {
        use std::io::ErrorKind;
        match kind {
            ErrorKind::ConnectionRefused => {
                return retry(format!("connection to {target} refused"));
            }
            ErrorKind::ConnectionReset => {
                return retry(format!("connection to {target} reset by the receiver"));
            }
            // rustls reports handshake and certificate failures as `InvalidData`.
            ErrorKind::InvalidData if channel.url.scheme() == "https" => {
                return retry(format!(
                    "TLS handshake with {target} failed: {}",
                    innermost(err)
                ));
            }
            _ => {}
        }
    }
    if err.is_connect() {
        return retry(format!("connect to {target} failed: {}", causes(err)));
    }
    retry(format!("request to {target} failed: {}", causes(err)))
}

/// `err` and its causes, outermost first (see [`crate::error_chain::chain`]).
fn chain<'e>(err: &'e reqwest::Error) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    crate::error_chain::chain(err)
}

/// The first error of type `E` in `err`'s chain.
fn find<E: StdError + 'static>(err: &reqwest::Error) -> Option<&E> {
    chain(err).find_map(|e| e.downcast_ref::<E>())
}

/// The innermost io::Error kind in `err`'s chain that says more than `Other`.
fn io_kind(err: &reqwest::Error) -> Option<std::io::ErrorKind> {
    chain(err)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .filter(|kind| *kind != std::io::ErrorKind::Other)
        .last()
}

fn innermost(err: &reqwest::Error) -> String {
    chain(err)
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The messages of `err`'s causes, outermost first, without reqwest's own generic line
/// (which would also name the URL) and without repeats (wrappers often echo their cause).
fn causes(err: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err).skip(1) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        "unknown error".to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn snippets_are_cut_on_a_character_boundary() {
        let limit = RESPONSE_SNIPPET_LIMIT;
        let check = |body: Vec<u8>, expect_len: usize| {
            let got = snippet(&body).unwrap_or_default();
            assert_eq!(got.len(), expect_len);
            assert!(body.starts_with(got.as_bytes()));
        };
        check(b"ok".to_vec(), 2);
        check(vec![b'a'; limit], limit);
        check(vec![b'a'; limit + 10], limit);
        // Two-byte characters at odd offsets: the last one straddles the limit.
        let mut body = b"a".to_vec();
        body.extend("é".repeat(limit).as_bytes());
        check(body, limit - 1);
        // A four-byte character straddling the limit at every possible offset.
        for pad in 0..4 {
            let mut body = vec![b'a'; limit - pad];
            body.extend("🦀".repeat(4).as_bytes());
            check(body, limit - pad);
        }
        assert_eq!(snippet(b""), None);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(check("7"), Some(Duration::from_secs(7)));
        assert_eq!(check(" 120 "), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(check(&later), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(check(&earlier), Some(Duration::ZERO));
        assert_eq!(check("-5"), None);
        assert_eq!(check("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }
}
