//! `herald serve`: the store, the engine and the HTTP API in one process.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use herald_engine::{Engine, EngineOptions};
use herald_server::AppState;
use herald_store::SqliteStore;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let outcome = herald_config::load(config_path);
    for warning in outcome.diagnostics.warnings() {
        tracing::warn!(
            "{}: {}",
            outcome.diagnostics.locate(warning),
            warning.message
        );
    }
    let Some(config) = outcome.config else {
        eprint!("{}", outcome.diagnostics.render(false));
        anyhow::bail!(
            "{} is not valid; nothing was started",
            config_path.display()
        );
    };
    let listen = config.server.listen;
    let store_path = config.store.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&store_path))
        .await?
        .with_context(|| format!("opening the store in {}", config.store.path.display()))?;
    let engine = Engine::start(config, Arc::new(store), EngineOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let state = AppState {
        engine: engine.clone(),
        config_path: config_path.to_path_buf(),
        metrics: herald_server::install_metrics(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr()?;
    // Scripts and tests read this first line to learn the port when listening on :0.
    println!("herald listening on http://{bound}");
    tracing::info!(address = %bound, "listening");

    tokio::spawn(reload_on_sighup(state.clone()));
    let app = herald_server::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    tracing::info!("no longer accepting requests; finishing attempts in flight");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

async fn reload_on_sighup(state: AppState) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /v1/admin/reload");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match herald_server::reload(&state).await {
            Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
            Err(problems) => {
                tracing::error!(
                    "SIGHUP: reload refused; the running configuration stays:\n{problems}"
                )
            }
        }
    }
}
