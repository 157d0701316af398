//! `[server]`: the listen address, the admin token, the request body limit, who may
//! read `/metrics`, and the bounds that keep slow or greedy clients from taking the
//! server down (read timeouts, connection and stream limits, the shutdown grace).

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::Spanned;

use super::{In, Loader, at};
use crate::model::ServerConfig;
use crate::raw::RawServer;

const DEFAULT_LISTEN: &str = "127.0.0.1:8650";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(300);
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const BODY_TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(3600);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const SHUTDOWN_GRACE_RANGE: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(600);
const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;
const DEFAULT_MAX_STREAMS: u64 = 5_000;
const DEFAULT_MAX_STREAMS_PER_KEY: u64 = 1_000;
/// Limits on counts of open connections and streams.
const COUNT_RANGE: RangeInclusive<u64> = 1..=1_000_000;

impl Loader<'_> {
    pub(super) fn server(&mut self, raw: Option<In<RawServer>>) -> Option<ServerConfig> {
        let Some(In { file, value }) = raw else {
            return Some(ServerConfig {
                listen: DEFAULT_LISTEN.parse().ok()?,
                admin_token: None,
                max_body_bytes: DEFAULT_MAX_BODY as usize,
                metrics_public: false,
                header_timeout: DEFAULT_HEADER_TIMEOUT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
                max_connections: DEFAULT_MAX_CONNECTIONS as usize,
                max_streams: DEFAULT_MAX_STREAMS as usize,
                max_streams_per_key: DEFAULT_MAX_STREAMS_PER_KEY as usize,
            });
        };
        let listen = match &value.listen {
            Some(l) => {
                match l.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        self.error(
                        format!("invalid listen address `{}`: write IP:PORT, e.g. \"127.0.0.1:8650\"", l.get_ref()),
                        at(file, l.span()),
                    );
                        None
                    }
                }
            }
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let admin_token = match &value.admin_token {
            Some(t) => Some(self.secret(t, file, "admin token")?),
            None => None,
        };
        let max_body_bytes = match &value.max_body_bytes {
            Some(m) if !(1024..=64 * 1024 * 1024).contains(m.get_ref()) => {
                self.error(
                    "max_body_bytes must be between 1024 and 67108864",
                    at(file, m.span()),
                );
                None
            }
            Some(m) => Some(*m.get_ref()),
            None => Some(DEFAULT_MAX_BODY),
        };
        let mut timeout = |value: &Option<Spanned<String>>, what, default, range| match value {
            Some(v) => self.duration_in(v, file, what, range),
            None => Some(default),
        };
        let header_timeout = timeout(
            &value.header_timeout,
            "header_timeout",
            DEFAULT_HEADER_TIMEOUT,
            HEADER_TIMEOUT_RANGE,
        );
        let body_timeout = timeout(
            &value.body_timeout,
            "body_timeout",
            DEFAULT_BODY_TIMEOUT,
            BODY_TIMEOUT_RANGE,
        );
        let shutdown_grace = timeout(
            &value.shutdown_grace,
            "shutdown_grace",
            DEFAULT_SHUTDOWN_GRACE,
            SHUTDOWN_GRACE_RANGE,
        );
        let max_connections = self.count(
            &value.max_connections,
            file,
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
        );
        let max_streams = self.count(&value.max_streams, file, "max_streams", DEFAULT_MAX_STREAMS);
        let max_streams_per_key = self.count(
            &value.max_streams_per_key,
            file,
            "max_streams_per_key",
            DEFAULT_MAX_STREAMS_PER_KEY,
        );
        Some(ServerConfig {
            listen: listen?,
            admin_token,
            max_body_bytes: usize::try_from(max_body_bytes?).ok()?,
            metrics_public: value.metrics_public,
            header_timeout: header_timeout?,
            body_timeout: body_timeout?,
            shutdown_grace: shutdown_grace?,
            max_connections: max_connections?,
            max_streams: max_streams?,
            max_streams_per_key: max_streams_per_key?,
        })
    }

    /// A limit on a count of open things, within [`COUNT_RANGE`].
    fn count(
        &mut self,
        value: &Option<Spanned<u64>>,
        file: usize,
        what: &str,
        default: u64,
    ) -> Option<usize> {
        let n = match value {
            Some(v) if !COUNT_RANGE.contains(v.get_ref()) => {
                self.error(
                    format!(
                        "{what} must be between {} and {}",
                        COUNT_RANGE.start(),
                        COUNT_RANGE.end()
                    ),
                    at(file, v.span()),
                );
                return None;
            }
            Some(v) => *v.get_ref(),
            None => default,
        };
        usize::try_from(n).ok()
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{SUB, check};

    #[test]
    fn unknown_key_in_a_section() {
        check(
            &format!("{SUB}[server]\nlisten = \"127.0.0.1:1\"\nport = 8650\n"),
            "herald.toml:23:1: error: unknown field `port`, expected one of `listen`, `admin_token`, `max_body_bytes`, `metrics_public`, `header_timeout`, `body_timeout`, `shutdown_grace`, `max_connections`, `max_streams`, `max_streams_per_key`",
        );
    }

    #[test]
    fn limits_and_timeouts_are_bounded() {
        check(
            &format!(
                "{SUB}[server]\nheader_timeout = \"500000000000y\"\nbody_timeout = \"0s\"\n\
                 shutdown_grace = \"soon\"\nmax_connections = 0\nmax_streams = 2000000\n\
                 max_streams_per_key = 0\n"
            ),
            "herald.toml:22:18: error: header_timeout `500000000000y` is out of range: write a header_timeout between 1s and 5m\n\
             herald.toml:23:16: error: body_timeout `0s` is out of range: write a body_timeout between 1s and 1h\n\
             herald.toml:24:18: error: invalid shutdown_grace `soon`: expected number at 0 (write e.g. \"5s\", \"30m\", \"2h\")\n\
             herald.toml:25:19: error: max_connections must be between 1 and 1000000\n\
             herald.toml:26:15: error: max_streams must be between 1 and 1000000\n\
             herald.toml:27:23: error: max_streams_per_key must be between 1 and 1000000",
        );
    }

    #[test]
    fn limits_and_timeouts_in_range_are_taken() {
        check(
            &format!(
                "{SUB}[server]\nheader_timeout = \"1s\"\nbody_timeout = \"1h\"\nshutdown_grace = \"0s\"\n\
                 max_connections = 1\nmax_streams = 1000000\nmax_streams_per_key = 1\n"
            ),
            "",
        );
    }

    #[test]
    fn invalid_listen_address() {
        check(
            &format!("{SUB}[server]\nlisten = \"localhost\"\n"),
            "herald.toml:22:10: error: invalid listen address `localhost`: write IP:PORT, e.g. \"127.0.0.1:8650\"",
        );
    }
}
