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
