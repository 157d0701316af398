//! What the publisher and the subscriber share about talking to herald: the base URL
//! check, the Bearer header (marked sensitive) and one way to build the HTTP client.

use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::error::Error;

/// `url` without trailing slashes, once it parses as http(s).
pub(crate) fn base_url(url: &str) -> Result<String, Error> {
    let base = url.trim_end_matches('/');
    let parsed = reqwest::Url::parse(base).map_err(|e| Error::Url {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Url {
            url: url.to_string(),
            reason: "the scheme must be http or https".into(),
        });
    }
    Ok(base.to_string())
}

/// `Authorization: Bearer KEY`, marked sensitive so that it stays out of HTTP/2 header
/// compression tables and debug output. The error never quotes the key.
pub(crate) fn bearer(url: &str, api_key: &str) -> Result<HeaderValue, Error> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {api_key}")).map_err(|_| Error::Url {
        url: url.to_string(),
        reason: "the API key contains characters a header cannot carry".into(),
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// A client for loopback or LAN herald: no proxy, no redirects (they would carry the key
/// elsewhere), TCP_NODELAY; `timeout` bounds a whole request when given.
pub(crate) fn client(
    timeout: Option<Duration>,
    connect: Duration,
) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_nodelay(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        // herald closes a connection idle for its `[server] header_timeout` (10 s by
        // default): drop idle ones first, so a request never races that close.
        .pool_idle_timeout(Duration::from_secs(5))
        .user_agent(concat!("herald-client/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().map_err(Error::Transport)
}
