//! The load tools send traffic only to this machine: a URL must name a loopback host.

use std::net::IpAddr;

use reqwest::Url;

/// Why a URL is refused as a load target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLoopback {
    #[error("`{0}` is not an http:// or https:// URL")]
    Scheme(String),
    #[error(
        "`{0}` is not a loopback host: load is only ever sent to 127.0.0.0/8, [::1] or localhost"
    )]
    Host(String),
}

/// Accepts `http(s)://` URLs whose host is `localhost`, in `127.0.0.0/8`, or `[::1]`.
pub fn check(url: &Url) -> Result<(), NotLoopback> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NotLoopback::Scheme(url.scheme().to_string()));
    }
    let host = url.host_str().unwrap_or_default();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(NotLoopback::Host(host.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        let cases = [
            ("http://127.0.0.1:8650", true),
            ("http://127.1.2.3:8650/x", true),
            ("https://localhost:8650", true),
            ("http://[::1]:8650", true),
            ("http://0x7f.1:8650", true), // the URL parser makes this 127.0.0.1
            ("http://10.0.0.1:8650", false),
            ("http://192.168.1.10", false),
            ("http://example.com", false),
            ("http://localhost.example.com", false),
            ("http://0.0.0.0:8650", false),
            ("ftp://127.0.0.1", false),
        ];
        for (url, ok) in cases {
            let url = Url::parse(url).unwrap();
            assert_eq!(check(&url).is_ok(), ok, "{url}");
        }
    }
}
