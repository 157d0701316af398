//! The webhook channel: signed HTTP POSTs following Standard Webhooks v1, behind an SSRF guard.
//!
//! Every webhook of a process shares one [`WebhookClient`] (one connection pool, one set of
//! timeouts, one guard). A [`WebhookChannel`] is a URL plus an optional signing secret.
//! Receivers can check what herald sends with [`verify`].
//!
//! The body is the event's JSON envelope, a formatter's output, or for a digest without
//! a formatter [`digest_body`]'s document (`"type": "herald.digest"`).

mod config;
mod digest;
mod send;
mod sign;
mod ssrf;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use herald_core::Secret;
use reqwest::Url;

use crate::{Channel, Outgoing, SendFuture};

pub use config::{ConfigError, DEFAULT_USER_AGENT, HttpOptions, WebhookClient};
pub use digest::{DIGEST_TYPE, digest_body, digest_body_pretty};
pub use sign::{DEFAULT_TOLERANCE, SECRET_PREFIX, SecretError, SigningKey, VerifyError, verify};
pub use ssrf::{Blocked, check_ip};

/// One webhook endpoint.
#[derive(Clone)]
pub struct WebhookChannel {
    url: Url,
    /// Every key signs each request (several while receivers rotate); none = unsigned.
    keys: Vec<SigningKey>,
    client: WebhookClient,
}

/// Shows only the URL's origin: paths and queries of webhook URLs often carry tokens.
impl fmt::Debug for WebhookChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookChannel")
            .field("origin", &self.url.origin().ascii_serialization())
            .field("signing_keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl WebhookChannel {
    /// Checks the URL (http or https, with a host) and decodes the secret; touches no network.
    /// A secret that is not valid base64 after `whsec_` is an error that says what is wrong
    /// with it without repeating it.
    pub fn new(
        url: Url,
        secret: Option<Secret>,
        client: WebhookClient,
    ) -> Result<WebhookChannel, ConfigError> {
        WebhookChannel::with_secrets(url, secret.as_slice(), client)
    }

    /// Like [`WebhookChannel::new`] with any number of secrets: each signs every request,
    /// and `webhook-signature` lists their signatures space-separated (Standard Webhooks'
    /// rotation), so a receiver holding either the old or the new secret verifies.
    pub fn with_secrets(
        url: Url,
        secrets: &[Secret],
        client: WebhookClient,
    ) -> Result<WebhookChannel, ConfigError> {
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(ConfigError::UnsupportedScheme(other.to_string())),
        }
        if url.host().is_none() {
            return Err(ConfigError::MissingHost);
        }
        let keys = secrets
            .iter()
            .map(SigningKey::from_secret)
            .collect::<Result<_, _>>()?;
        Ok(WebhookChannel { url, keys, client })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Whether requests carry a `webhook-signature`.
    pub fn is_signed(&self) -> bool {
        !self.keys.is_empty()
    }
}

impl Channel for WebhookChannel {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(send::send(self, msg))
    }
}

/// The IP address of an IP-literal URL host; `None` for names. (The URL parser already
/// turns IPv4-looking names such as `0x7f.1` into IPv4 literals for http and https.)
pub(crate) fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse().ok()
}
