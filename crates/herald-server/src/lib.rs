//! herald-server: the HTTP API on axum — ingest, reads and repairs, reload, health,
//! metrics and the OpenAPI document. Handlers translate HTTP to engine and store calls
//! and back; they hold no delivery logic.

mod auth;
mod connections;
mod deadline;
mod error;
mod extract;
mod replay;
mod routes;
mod silences;
mod stream;
mod stream_slots;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use herald_engine::Engine;
use metrics_exporter_prometheus::{Matcher as MetricMatcher, PrometheusBuilder, PrometheusHandle};

pub use connections::serve;
pub use error::ApiError;
pub use stream_slots::StreamSlots;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub engine: Engine,
    /// The main configuration file, re-read on reload.
    pub config_path: PathBuf,
    pub metrics: PrometheusHandle,
    /// Counts successful reloads: open streams re-check their credentials on each.
    pub reloads: Arc<tokio::sync::watch::Sender<u64>>,
    /// The live streams open now, against `[server] max_streams` and `max_streams_per_key`.
    pub streams: Arc<StreamSlots>,
}

impl AppState {
    pub fn new(engine: Engine, config_path: PathBuf, metrics: PrometheusHandle) -> AppState {
        AppState {
            engine,
            config_path,
            metrics,
            reloads: Arc::new(tokio::sync::watch::channel(0).0),
            streams: Arc::default(),
        }
    }
}

/// The API's routes, each request's body under `[server] body_timeout`.
pub fn router(state: AppState) -> Router {
    routes::router()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            deadline::body_deadline,
        ))
        .with_state(state)
}

/// Installs the process-wide Prometheus recorder (once) and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(MetricMatcher::Full("herald_attempt_duration_seconds".into()), &buckets)
                .and_then(|b| b.install_recorder())
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "metrics recorder not installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                })
        })
        .clone()
}

/// Re-reads the configuration file and swaps it in; on any problem the running
/// configuration stays and the problems are returned, located.
pub async fn reload(state: &AppState) -> Result<(), String> {
    let path = state.config_path.clone();
    let outcome = tokio::task::spawn_blocking(move || herald_config::load(&path))
        .await
        .map_err(|e| format!("reload task failed: {e}"))?;
    match outcome.config {
        Some(config) => {
            state.engine.reload(config).await?;
            state.reloads.send_modify(|n| *n += 1);
            Ok(())
        }
        None => Err(outcome.diagnostics.render_short()),
    }
}
