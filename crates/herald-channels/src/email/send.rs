//! One email attempt: compose, take or open a connection, run the SMTP transaction within
//! the mailer's timeout, classify what came back.
//!
//! Outcomes: the relay's final `250` → `Delivered` (its reply in `response`); a `4xx`
//! reply, a refused, reset or timed-out connection, a failed TLS handshake or a malformed
//! reply → `Retry`; a `5xx` refusing the session or the login (greeting, EHLO, STARTTLS,
//! AUTH, or 530/534/535/538 at MAIL) → `ChannelFailure`, as every message meets it; any
//! other `5xx` reply → `Permanent`. Every reply the relay sent is recorded as
//! `"<code> <text>"` in `response` and its code in `status`. Texts name the relay's host
//! and port, never the credentials.

use std::error::Error as StdError;
use std::time::{Duration, SystemTime};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::Mechanism;
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;

use super::EmailChannel;
use super::compose::compose;
use super::config::MailerInner;
use super::tls::{RelayTls, TlsMode, TlsTcp};
use crate::{Outgoing, RESPONSE_SNIPPET_LIMIT, SendOutcome, fmt_duration};

/// A pooled connection idle for longer than this is checked with `NOOP` before reuse;
/// one reused at once (the steady state under load) is not, saving a round trip.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Where an SMTP failure happened: it decides the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Greeting, EHLO, STARTTLS, AUTH.
    Session,
    /// MAIL, RCPT, DATA.
    Transaction,
}

/// Why an attempt failed before it could complete.
#[derive(Debug)]
enum Failure {
    /// The TCP connection could not be opened.
    Connect(std::io::Error),
    /// The implicit-TLS handshake failed.
    Handshake(std::io::Error),
    /// Anything lettre reports, from the greeting on.
    Smtp(Stage, SmtpError),
}

pub(super) async fn send(channel: &EmailChannel, msg: &Outgoing<'_>) -> SendOutcome {
    let mailer = &channel.mailer.inner;
    let message = match compose(channel, msg, SystemTime::now()) {
        Ok(message) => message,
        Err(e) => {
            return SendOutcome::Permanent {
                status: None,
                error: format!("cannot build the email: {e}"),
                response: None,
            };
        }
    };
    let envelope = message.envelope().clone();
    let bytes = message.formatted();

    let outcome =
        match tokio::time::timeout(mailer.timeout, transact(mailer, &envelope, &bytes)).await {
            Err(_) => SendOutcome::Retry {
                after: None,
                status: None,
                error: format!(
                    "timed out after {} sending to {}",
                    fmt_duration(mailer.timeout),
                    channel.mailer.relay()
                ),
                response: None,
            },
            Ok(Ok(response)) => SendOutcome::Delivered {
                // `status` stays empty: `SendOutcome`'s display calls it an HTTP status.
                status: None,
                response: Some(reply_text(&response)),
            },
            Ok(Err(failure)) => classify(&failure, channel),
        };
    let outcome = scrub(outcome, mailer);
    tracing::debug!(
        delivery_id = msg.delivery_id,
        attempt = msg.attempt,
        relay = %channel.mailer.relay(),
        outcome = outcome.kind(),
        status = outcome.status(),
        error = outcome.error(),
        "email attempt"
    );
    outcome
}

/// Takes a connection slot and a connection, sends, and parks the connection again if the
/// transaction succeeded. Cancelling this future (the timeout) drops the connection.
async fn transact(
    mailer: &MailerInner,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<Response, Failure> {
    // The semaphore is never closed; were it, sending without a slot is still correct.
    let _slot = mailer.slots.acquire().await;
    let mut conn = checkout(mailer).await?;
    let response = conn
        .send(envelope, bytes)
        .await
        .map_err(|e| Failure::Smtp(Stage::Transaction, e))?;
    mailer.pool.put(conn);
    Ok(response)
}

/// A pooled connection that still answers, or a new one.
async fn checkout(mailer: &MailerInner) -> Result<AsyncSmtpConnection, Failure> {
    while let Some((mut conn, idle_for)) = mailer.pool.take() {
        if idle_for < CHECK_IDLE_AFTER || conn.test_connected().await {
            return Ok(conn);
        }
        // Closed by the relay while idle: drop it and try the next.
    }
    connect(mailer).await
}

/// Opens a session: TCP (with `TCP_NODELAY`), implicit TLS or STARTTLS, greeting and
/// EHLO, AUTH.
async fn connect(mailer: &MailerInner) -> Result<AsyncSmtpConnection, Failure> {
    let session = |e| Failure::Smtp(Stage::Session, e);
    let tcp = TcpStream::connect((mailer.host.as_str(), mailer.port))
        .await
        .map_err(Failure::Connect)?;
    // lettre writes a message and its terminating `.` in two writes and then waits for the
    // reply: with Nagle's algorithm the small second write waits for the relay's delayed
    // ACK (40 ms on Linux), capping each connection at ~25 messages/s.
    tcp.set_nodelay(true).map_err(Failure::Connect)?;
    let stream: Box<dyn AsyncTokioStream> = match &mailer.tls {
        RelayTls::Implicit { connector, name } => Box::new(TlsTcp(
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(Failure::Handshake)?,
        )),
        RelayTls::Plain | RelayTls::StartTls(_) => Box::new(tcp),
    };
    let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &mailer.hello)
        .await
        .map_err(session)?;
    if let RelayTls::StartTls(parameters) = &mailer.tls {
        conn.starttls(parameters.clone(), &mailer.hello)
            .await
            .map_err(session)?;
    }
    if let Some(credentials) = &mailer.credentials {
        conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
            .await
            .map_err(session)?;
    }
    Ok(conn)
}

/// `250 2.0.0 OK queued as 42`.
fn reply_text(response: &Response) -> String {
    let text = response.message().collect::<Vec<_>>().join(" ");
    snippet(&format!("{} {}", response.code(), text.trim()))
}

/// `s` trimmed, cut to [`RESPONSE_SNIPPET_LIMIT`] bytes on a character boundary.
fn snippet(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(RESPONSE_SNIPPET_LIMIT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn classify(failure: &Failure, channel: &EmailChannel) -> SendOutcome {
    let mailer = &channel.mailer;
    let relay = mailer.relay();
    let retry = |error: String| SendOutcome::Retry {
        after: None,
        status: None,
        error,
        response: None,
    };
    let (stage, err) = match failure {
        Failure::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return retry(format!("connection to {relay} refused"));
        }
        Failure::Connect(e) => return retry(format!("connect to {relay} failed: {e}")),
        Failure::Handshake(e) => {
            return retry(format!("TLS handshake with {relay} failed: {e}"));
        }
        Failure::Smtp(stage, err) => (*stage, err),
    };

    if let Some(code) = err.status() {
        let text = err.source().map(ToString::to_string).unwrap_or_default();
        let reply = snippet(&format!("{code} {}", text.trim()));
        let status = code.to_string().parse::<u16>().ok();
        let what = match stage {
            Stage::Session => "refused the session",
            Stage::Transaction => "refused the message",
        };
        // A relay refusing the session (greeting, EHLO, STARTTLS, AUTH) or the login at
        // MAIL (530/534/535/538) refuses every message alike: the channel's failure.
        let login = matches!(status, Some(530 | 534 | 535 | 538));
        return if err.is_permanent() && (stage == Stage::Session || login) {
            SendOutcome::ChannelFailure {
                after: None,
                status,
                error: format!("{relay} {what}: {reply}"),
                response: Some(reply),
            }
        } else if err.is_permanent() {
            SendOutcome::Permanent {
                status,
                error: format!("{relay} {what}: {reply}"),
                response: Some(reply),
            }
        } else {
            SendOutcome::Retry {
                after: None,
                status,
                error: format!("{relay} {what} for now: {reply}"),
                response: Some(reply),
            }
        };
    }
    if let Some(kind) = io_kind(err) {
        use std::io::ErrorKind;
        match kind {
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                return retry(format!("connection to {relay} lost: {}", causes(err)));
            }
            // rustls reports STARTTLS handshake and certificate failures as `InvalidData`.
            ErrorKind::InvalidData if mailer.tls_mode() != TlsMode::Plain => {
                return retry(format!(
                    "TLS handshake with {relay} failed: {}",
                    innermost(err)
                ));
            }
            _ => {}
        }
    }
    if err.is_tls() {
        return retry(format!("TLS with {relay} failed: {}", causes(err)));
    }
    if err.is_client() {
        let text = causes(err);
        // The relay did not offer STARTTLS although the URL requires it: a relay
        // misconfiguration or an attacker stripping it; either may pass.
        if text.contains("STARTTLS") {
            return retry(format!(
                "{relay} does not offer STARTTLS, which smtp_url requires (tls=required)"
            ));
        }
        // A client-side refusal (no authentication mechanism in common, …) is the same
        // for every message: the channel's configuration, not the message.
        return SendOutcome::ChannelFailure {
            after: None,
            status: None,
            error: format!("cannot send through {relay}: {text}"),
            response: None,
        };
    }
    if err.is_response() {
        return retry(format!("{relay} sent an invalid reply: {}", causes(err)));
    }
    retry(format!("connection to {relay} failed: {}", causes(err)))
}

/// Replaces the SMTP password, should it appear anywhere (a relay echoing it, say), in the
/// outcome's texts.
fn scrub(outcome: SendOutcome, mailer: &MailerInner) -> SendOutcome {
    let Some(password) = mailer.password.as_ref().map(|p| p.expose()) else {
        return outcome;
    };
    // A very short password would match ordinary words; it would also be no secret.
    if password.len() < 4 {
        return outcome;
    }
    let clean = |s: String| s.replace(password, "[redacted]");
    let clean_opt = |s: Option<String>| s.map(clean);
    match outcome {
        SendOutcome::Delivered { status, response } => SendOutcome::Delivered {
            status,
            response: clean_opt(response),
        },
        SendOutcome::Retry {
            after,
            status,
            error,
            response,
        } => SendOutcome::Retry {
            after,
            status,
            error: clean(error),
            response: clean_opt(response),
        },
        SendOutcome::Permanent {
            status,
            error,
            response,
        } => SendOutcome::Permanent {
            status,
            error: clean(error),
            response: clean_opt(response),
        },
        SendOutcome::Disable {
            status,
            error,
            response,
        } => SendOutcome::Disable {
            status,
            error: clean(error),
            response: clean_opt(response),
        },
        SendOutcome::ChannelFailure {
            after,
            status,
            error,
            response,
        } => SendOutcome::ChannelFailure {
            after,
            status,
            error: clean(error),
            response: clean_opt(response),
        },
        SendOutcome::RenderingRefused {
            status,
            error,
            response,
        } => SendOutcome::RenderingRefused {
            status,
            error: clean(error),
            response: clean_opt(response),
        },
    }
}

/// `err` and its causes, outermost first (see [`crate::error_chain::chain`]).
fn chain<'e>(err: &'e SmtpError) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    crate::error_chain::chain(err)
}

/// The innermost io::Error kind in the chain that says more than `Other`.
fn io_kind(err: &SmtpError) -> Option<std::io::ErrorKind> {
    chain(err)
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
        .filter(|kind| *kind != std::io::ErrorKind::Other)
        .last()
}

fn innermost(err: &SmtpError) -> String {
    chain(err)
        .last()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// The causes' messages, outermost first, without lettre's generic outer line and without
/// repeats.
fn causes(err: &SmtpError) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err).skip(1) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}
