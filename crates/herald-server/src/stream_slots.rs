//! Limits on open live streams (SSE and WebSocket together): `[server] max_streams` in
//! total and `max_streams_per_key` per API key or admin token. A stream holds a
//! [`StreamSlot`] for as long as it is open; one over either limit is refused with
//! `429 too_many_streams` naming the limit.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use herald_config::ServerConfig;
use herald_engine::Caller;

use crate::error::ApiError;

#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Open streams by a hash of their token (the token itself is not kept here).
    per_key: HashMap<u64, usize>,
}

/// One open stream, counted until dropped.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    slots: Arc<StreamSlots>,
    key: u64,
}

impl StreamSlots {
    /// A slot for a stream opened with `token`, or the `429` saying which limit is full.
    pub(crate) fn take(
        self: &Arc<Self>,
        token: &str,
        caller: &Caller,
        limits: &ServerConfig,
    ) -> Result<StreamSlot, ApiError> {
        let mut hasher = DefaultHasher::new();
        token.hash(&mut hasher);
        let key = hasher.finish();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let of_key = open.per_key.get(&key).copied().unwrap_or(0);
        let refuse = |message: String| {
            metrics::counter!("herald_streams_refused_total").increment(1);
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_streams", message)
        };
        if of_key >= limits.max_streams_per_key {
            let whose = match caller {
                Caller::Admin => "the admin token",
                Caller::Team(_) => "this API key",
            };
            return Err(refuse(format!(
                "{whose} has {of_key} open live streams, the limit ([server] max_streams_per_key = {}); close one first",
                limits.max_streams_per_key
            )));
        }
        if open.total >= limits.max_streams {
            return Err(refuse(format!(
                "herald has {} open live streams, the limit ([server] max_streams = {}); try again later",
                open.total, limits.max_streams
            )));
        }
        open.total += 1;
        *open.per_key.entry(key).or_insert(0) += 1;
        metrics::gauge!("herald_streams_open").increment(1.0);
        Ok(StreamSlot {
            slots: Arc::clone(self),
            key,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.per_key.remove(&self.key);
            }
        }
        metrics::gauge!("herald_streams_open").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use herald_core::TeamId;

    use super::*;

    fn limits(total: usize, per_key: usize) -> ServerConfig {
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: None,
            max_body_bytes: 1024,
            metrics_public: false,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 10,
            max_streams: total,
            max_streams_per_key: per_key,
        }
    }

    fn code(r: Result<StreamSlot, ApiError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(e) => format!("{} {}: {}", e.status.as_u16(), e.code, e.message),
        }
    }

    #[test]
    fn each_limit_refuses_with_its_name_and_a_dropped_slot_is_free_again() {
        let slots = Arc::new(StreamSlots::default());
        let team = Caller::Team(TeamId::parse("acme").unwrap());
        let l = limits(3, 2);
        let a1 = slots.take("key-a", &team, &l).unwrap();
        let _a2 = slots.take("key-a", &team, &l).unwrap();
        assert_eq!(
            code(slots.take("key-a", &team, &l)),
            "429 too_many_streams: this API key has 2 open live streams, the limit ([server] max_streams_per_key = 2); close one first"
        );
        let _b1 = slots.take("key-b", &team, &l).unwrap();
        assert_eq!(
            code(slots.take("admin", &Caller::Admin, &l)),
            "429 too_many_streams: herald has 3 open live streams, the limit ([server] max_streams = 3); try again later"
        );
        drop(a1);
        assert_eq!(code(slots.take("key-a", &team, &l)), "ok");
    }
}
