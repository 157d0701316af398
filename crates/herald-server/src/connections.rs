//! The accept loop: HTTP/1.1 connections served by hyper with a header read timeout, a cap
//! on open connections, and a stop that ends within the shutdown grace period however
//! slow the connected clients are. (axum's own `serve` has none of these.)
//!
//! Limits are read from the configuration in force at each accept, so a reload changes
//! them for new connections. A connection beyond `[server] max_connections` is answered
//! `503 too_many_connections` (with `Retry-After: 1`) at once and closed, rather than left
//! waiting in the kernel's queue: the client learns why, and the queue stays short.
//! `header_timeout` bounds the wait for a request head, which includes the idle time of a
//! kept-alive connection between requests.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::AppState;

/// Refusals being written at once; beyond this a refused connection is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long a refusal keeps reading what the client sent, so that closing does not
/// reset the connection before the client has read the `503`.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, asks
/// every open connection to finish its request in flight, and closes what is still open
/// after `[server] shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    router: Router,
    shutdown: impl Future<Output = ()> + Send,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Finished connections are reaped here, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::error!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let limits = state.engine.config().server.clone();
        let Some(slot) = Slot::take(&open, limits.max_connections) else {
            metrics::counter!("herald_http_connections_refused_total").increment(1);
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream, limits.max_connections).await;
                    drop(permit);
                });
            }
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            let mut asked_to_stop = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.wait_for(|s| *s), if !asked_to_stop => {
                        asked_to_stop = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let grace = state.engine.config().server.shutdown_grace;
    let open_now = connections.len();
    if open_now > 0 {
        tracing::info!(
            connections = open_now,
            "waiting up to {grace:?} ([server] shutdown_grace) for open connections"
        );
    }
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "closing the connections still open after {grace:?} ([server] shutdown_grace)"
        );
        connections.shutdown().await;
    }
}

/// One open connection, counted while it lives.
#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()?;
        metrics::gauge!("herald_http_connections_open").increment(1.0);
        Some(Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("herald_http_connections_open").decrement(1.0);
    }
}

/// Answers `503` on a connection over the limit and closes it, reading (and dropping)
/// what the client sends meanwhile for a moment, so the reply is not lost to a reset.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": format!(
            "herald has {max} open connections, the limit ([server] max_connections = {max}); try again later"
        ),
    }})
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let linger = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
}
