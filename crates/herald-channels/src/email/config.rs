//! The shared SMTP sender ([`Mailer`]): `smtp_url` parsing, TLS, credentials, options, and
//! construction errors.
//!
//! `smtp_url` forms:
//! - `smtp://host[:port]` — plain SMTP (port 25), for relays on the same host or network;
//! - `smtp://host[:port]?tls=required` — STARTTLS required (port 587): no message and no
//!   credential is sent unless the connection was upgraded and the certificate verified;
//! - `smtps://host[:port]` — implicit TLS (port 465).
//!
//! Certificates are verified against Mozilla's roots (webpki-roots). `ca=/path/to/ca.pem`
//! (query parameter, repeatable) adds the PEM certificates of that file as extra roots,
//! for relays with a private CA and for tests with a self-signed certificate;
//! [`MailerOptions::root_certificates`] does the same from memory.
//!
//! Credentials never go in the URL (it is not a secret and may be logged): they come from
//! `[email] username` / `password`, and are refused over a plain connection to any host
//! but a loopback one.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_core::Secret;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use tokio::sync::Semaphore;

use super::error::ConfigError;
use super::pool::Pool;
use super::tls::{RelayTls, TlsMode, relay_tls};

/// How long one attempt may take by default (connect, TLS, AUTH, the transaction).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a [`Mailer`] beyond its URL and credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailerOptions {
    /// The whole attempt: waiting for a connection slot, connecting, TLS, AUTH and the SMTP
    /// transaction up to the server's final reply.
    pub timeout: Duration,
    /// PEM certificates trusted as roots in addition to Mozilla's (and to `ca=` files).
    pub root_certificates: Vec<Vec<u8>>,
    /// Most connections open at once; further sends wait (within their timeout).
    pub max_connections: usize,
    /// Most idle connections kept open for reuse.
    pub max_idle_connections: usize,
    /// An idle connection older than this is closed instead of reused.
    pub idle_timeout: Duration,
}

impl Default for MailerOptions {
    fn default() -> Self {
        MailerOptions {
            timeout: DEFAULT_TIMEOUT,
            root_certificates: Vec::new(),
            max_connections: 16,
            max_idle_connections: 16,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The one SMTP sender all email channels of a process share: the relay, its TLS and
/// credentials, the sender address, and a pool of open connections. Cheap to clone.
///
/// Building one touches no network (and no disk unless `ca=` names a file); connections
/// are opened by the first sends and kept for reuse.
#[derive(Clone)]
pub struct Mailer {
    pub(super) inner: Arc<MailerInner>,
}

pub(super) struct MailerInner {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls_mode: TlsMode,
    pub(super) tls: RelayTls,
    pub(super) hello: ClientId,
    pub(super) credentials: Option<Credentials>,
    /// Kept only to scrub it from error texts, should a server ever echo it.
    pub(super) password: Option<Secret>,
    pub(super) from: Mailbox,
    /// The right-hand side of herald's `Message-ID`s: the sender's domain.
    pub(super) message_id_domain: String,
    pub(super) timeout: Duration,
    pub(super) slots: Semaphore,
    pub(super) pool: Pool,
}

/// Shows where mail goes, never the credentials.
impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("relay", &self.relay())
            .field("tls", &self.inner.tls_mode)
            .field("from", &self.inner.from.to_string())
            .field("authenticated", &self.inner.credentials.is_some())
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// A mailer with default options and the given attempt `timeout`.
    pub fn new(
        smtp_url: &str,
        from: &str,
        username: Option<&Secret>,
        password: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Mailer, ConfigError> {
        Mailer::with_options(
            smtp_url,
            from,
            username,
            password,
            MailerOptions {
                timeout,
                ..MailerOptions::default()
            },
        )
    }

    pub fn with_options(
        smtp_url: &str,
        from: &str,
        username: Option<&Secret>,
        password: Option<&Secret>,
        options: MailerOptions,
    ) -> Result<Mailer, ConfigError> {
        if options.timeout.is_zero() {
            return Err(ConfigError::Zero("timeout"));
        }
        if options.max_connections == 0 {
            return Err(ConfigError::Zero("max_connections"));
        }
        let url = SmtpUrl::parse(smtp_url)?;
        let from_mailbox: Mailbox = parse_mailbox("from", from)?;
        let message_id_domain = message_id_domain(&from_mailbox);

        let credentials = match (username, password) {
            (Some(user), Some(pass)) => Some(Credentials::new(
                user.expose().to_string(),
                pass.expose().to_string(),
            )),
            (None, None) => None,
            _ => return Err(ConfigError::PartialCredentials),
        };
        if credentials.is_some() && url.tls_mode == TlsMode::Plain && !is_loopback(&url.host) {
            return Err(ConfigError::PlaintextCredentials(url.host.clone()));
        }

        let mut extra_roots = Vec::new();
        for path in &url.ca_files {
            let pem = std::fs::read(path).map_err(|source| ConfigError::CaFile {
                path: path.clone(),
                source,
            })?;
            extra_roots.push((path.display().to_string(), pem));
        }
        for (i, pem) in options.root_certificates.iter().enumerate() {
            extra_roots.push((format!("root certificate #{}", i + 1), pem.clone()));
        }
        let tls = relay_tls(url.tls_mode, &url.host, &extra_roots)?;

        Ok(Mailer {
            inner: Arc::new(MailerInner {
                host: url.host,
                port: url.port,
                tls_mode: url.tls_mode,
                tls,
                hello: ClientId::default(),
                credentials,
                password: password.cloned(),
                from: from_mailbox,
                message_id_domain,
                timeout: options.timeout,
                slots: Semaphore::new(options.max_connections),
                pool: Pool::new(options.max_idle_connections, options.idle_timeout),
            }),
        })
    }

    /// `host:port` of the relay (IPv6 hosts in brackets): for messages and logs.
    pub fn relay(&self) -> String {
        if self.inner.host.contains(':') {
            format!("[{}]:{}", self.inner.host, self.inner.port)
        } else {
            format!("{}:{}", self.inner.host, self.inner.port)
        }
    }

    pub fn tls_mode(&self) -> TlsMode {
        self.inner.tls_mode
    }

    /// The `From` of every message, as configured.
    pub fn from(&self) -> String {
        self.inner.from.to_string()
    }

    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Connections open and idle in the pool right now.
    pub fn idle_connections(&self) -> usize {
        self.inner.pool.len()
    }

    /// Says `QUIT` on every idle connection and closes it: for an orderly shutdown.
    /// Connections in use are closed when their sends finish.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

/// A parsed `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SmtpUrl {
    /// Without IPv6 brackets.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls_mode: TlsMode,
    pub(super) ca_files: Vec<PathBuf>,
}

impl SmtpUrl {
    pub(super) fn parse(s: &str) -> Result<SmtpUrl, ConfigError> {
        let url = url::Url::parse(s).map_err(ConfigError::InvalidUrl)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::CredentialsInUrl);
        }
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            other => return Err(ConfigError::UnsupportedScheme(other.to_string())),
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(ConfigError::MissingHost),
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_string();
        if !matches!(url.path(), "" | "/") {
            return Err(ConfigError::Url(format!(
                "unexpected path `{}`; the URL is smtp://host:port[?tls=required]",
                url.path()
            )));
        }
        if url.fragment().is_some() {
            return Err(ConfigError::Url("unexpected `#` fragment".into()));
        }
        let mut starttls = false;
        let mut ca_files = Vec::new();
        for (key, value) in url.query_pairs() {
            match (&*key, &*value) {
                ("tls", "required") if !implicit => starttls = true,
                ("tls", _) if implicit => {
                    return Err(ConfigError::Url(
                        "smtps:// is always TLS; drop the `tls` parameter".into(),
                    ));
                }
                ("tls", "opportunistic") => {
                    return Err(ConfigError::Url(
                        "tls=opportunistic is not supported (an attacker can strip \
                         STARTTLS); use tls=required or plain smtp://"
                            .into(),
                    ));
                }
                ("tls", other) => {
                    return Err(ConfigError::Url(format!(
                        "tls={other} is not supported; the only value is `required`"
                    )));
                }
                ("ca", "") => return Err(ConfigError::Url("`ca` needs a file path".into())),
                ("ca", path) => ca_files.push(PathBuf::from(path)),
                (other, _) => {
                    return Err(ConfigError::Url(format!(
                        "unknown parameter `{other}`; known: tls, ca"
                    )));
                }
            }
        }
        let tls_mode = match (implicit, starttls) {
            (true, _) => TlsMode::Implicit,
            (false, true) => TlsMode::StartTls,
            (false, false) => TlsMode::Plain,
        };
        if !ca_files.is_empty() && tls_mode == TlsMode::Plain {
            return Err(ConfigError::Url(
                "`ca` is only used with TLS (?tls=required or smtps://)".into(),
            ));
        }
        let port = url.port().unwrap_or(match tls_mode {
            TlsMode::Plain => 25,
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
        });
        Ok(SmtpUrl {
            host,
            port,
            tls_mode,
            ca_files,
        })
    }
}

pub(super) fn parse_mailbox(field: &'static str, value: &str) -> Result<Mailbox, ConfigError> {
    value.parse::<Mailbox>().map_err(|e| ConfigError::Address {
        field,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// The sender's domain when it can stand as a `Message-ID` right-hand side, else `herald`.
fn message_id_domain(from: &Mailbox) -> String {
    let domain = from.email.domain();
    let usable = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if usable {
        domain.to_ascii_lowercase()
    } else {
        "herald".to_string()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V4(v4) => v4.is_loopback(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        })
}

#[cfg(test)]
mod unit {
    use super::*;

    fn parse(s: &str) -> Result<(String, u16, TlsMode, usize), String> {
        SmtpUrl::parse(s)
            .map(|u| (u.host, u.port, u.tls_mode, u.ca_files.len()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn smtp_urls() {
        let ok = |s: &str, host: &str, port: u16, mode: TlsMode, cas: usize| {
            assert_eq!(parse(s), Ok((host.to_string(), port, mode, cas)), "{s}");
        };
        ok(
            "smtp://127.0.0.1:2525",
            "127.0.0.1",
            2525,
            TlsMode::Plain,
            0,
        );
        ok(
            "smtp://relay.example",
            "relay.example",
            25,
            TlsMode::Plain,
            0,
        );
        ok(
            "smtp://relay.example/",
            "relay.example",
            25,
            TlsMode::Plain,
            0,
        );
        ok(
            "smtp://relay.example?tls=required",
            "relay.example",
            587,
            TlsMode::StartTls,
            0,
        );
        ok(
            "smtps://relay.example",
            "relay.example",
            465,
            TlsMode::Implicit,
            0,
        );
        ok("smtps://[::1]:4650", "::1", 4650, TlsMode::Implicit, 0);
        ok(
            "smtp://localhost:25?tls=required&ca=/tmp/a.pem&ca=/tmp/b.pem",
            "localhost",
            25,
            TlsMode::StartTls,
            2,
        );

        let err = |s: &str, expect: &str| {
            let e = parse(s).unwrap_err();
            assert!(e.contains(expect), "{s}: {e}");
        };
        err("http://relay.example", "scheme `http` is not supported");
        err(
            "smtp://user:hunter2@relay.example",
            "must not contain credentials",
        );
        err("smtp://relay.example?tls=opportunistic", "not supported");
        err("smtp://relay.example?tls=yes", "tls=yes is not supported");
        err("smtps://relay.example?tls=required", "always TLS");
        err(
            "smtp://relay.example?tsl=required",
            "unknown parameter `tsl`",
        );
        err("smtp://relay.example?ca=/x.pem", "only used with TLS");
        err("smtp://relay.example/ehlo", "unexpected path");
        err("smtp://", "no host");
        err("relay.example:25", "scheme");
        assert!(!err_contains_secret(
            "smtp://user:hunter2@relay.example",
            "hunter2"
        ));
    }

    fn err_contains_secret(url: &str, secret: &str) -> bool {
        parse(url).unwrap_err().contains(secret)
    }

    #[test]
    fn mailer_construction_checks_everything_it_can() {
        let secret = Secret::new("s3cr3t-pa55");
        let new = |url: &str, from: &str, user: Option<&Secret>, pass: Option<&Secret>| {
            Mailer::new(url, from, user, pass, DEFAULT_TIMEOUT).map_err(|e| e.to_string())
        };
        let user = Secret::new("herald");
        assert!(new("smtp://127.0.0.1:25", "herald@example.com", None, None).is_ok());
        assert!(
            new(
                "smtp://127.0.0.1:25",
                "Herald <herald@example.com>",
                Some(&user),
                Some(&secret)
            )
            .is_ok()
        );
        let e = new(
            "smtp://relay.example",
            "herald@example.com",
            Some(&user),
            Some(&secret),
        )
        .unwrap_err();
        assert!(
            e.contains("refusing to send SMTP credentials unencrypted"),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let e = new(
            "smtp://127.0.0.1",
            "herald@example.com",
            None,
            Some(&secret),
        )
        .unwrap_err();
        assert!(e.contains("set together"), "{e}");
        let e = new("smtp://127.0.0.1", "not an address", None, None).unwrap_err();
        assert!(
            e.contains("from address `not an address` is not valid"),
            "{e}"
        );
        let e = new(
            "smtps://relay.example?ca=/nonexistent/ca.pem",
            "h@example.com",
            None,
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("cannot read CA certificates from /nonexistent/ca.pem"),
            "{e}"
        );
        let e = Mailer::new(
            "smtp://127.0.0.1",
            "h@example.com",
            None,
            None,
            Duration::ZERO,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "timeout must be greater than zero");

        let mailer = Mailer::new(
            "smtps://relay.example",
            "Herald <herald@Example.COM>",
            Some(&user),
            Some(&secret),
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(mailer.relay(), "relay.example:465");
        assert_eq!(mailer.inner.message_id_domain, "example.com");
        let debug = format!("{mailer:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("relay.example:465"), "{debug}");
    }
}
