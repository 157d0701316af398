//! `[server]`: the listen address, the admin token, the request body limit and who may
//! read `/metrics`.

use std::net::SocketAddr;

use super::{In, Loader, at};
use crate::model::ServerConfig;
use crate::raw::RawServer;

const DEFAULT_LISTEN: &str = "127.0.0.1:8650";
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

impl Loader<'_> {
    pub(super) fn server(&mut self, raw: Option<In<RawServer>>) -> Option<ServerConfig> {
        let Some(In { file, value }) = raw else {
            return Some(ServerConfig {
                listen: DEFAULT_LISTEN.parse().ok()?,
                admin_token: None,
                max_body_bytes: DEFAULT_MAX_BODY as usize,
                metrics_public: false,
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
        Some(ServerConfig {
            listen: listen?,
            admin_token,
            max_body_bytes: usize::try_from(max_body_bytes?).ok()?,
            metrics_public: value.metrics_public,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{SUB, check};

    #[test]
    fn unknown_key_in_a_section() {
        check(
            &format!("{SUB}[server]\nlisten = \"127.0.0.1:1\"\nport = 8650\n"),
            "herald.toml:23:1: error: unknown field `port`, expected one of `listen`, `admin_token`, `max_body_bytes`, `metrics_public`",
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
