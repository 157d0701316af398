//! `herald serve`: the store, the engine and the HTTP API in one process.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use herald_engine::{Engine, EngineOptions};
use herald_server::AppState;
use herald_store::{PostgresOptions, PostgresStore, SqliteStore, Store};
use tokio::signal::unix::{Signal, SignalKind, signal};

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
    let store = open_store(&config.store).await?;
    let engine = Engine::start(config, store, EngineOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let state = AppState::new(
        engine.clone(),
        config_path.to_path_buf(),
        herald_server::install_metrics(),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr()?;
    // Signal handlers are installed before the first line: whoever reads it may signal at
    // once, and a SIGTERM or SIGHUP arriving earlier would get the default action (exit).
    let term = signal(SignalKind::terminate());
    let hup = signal(SignalKind::hangup());
    // Scripts and tests read this first line to learn the port when listening on :0.
    println!("herald listening on http://{bound}");
    tracing::info!(address = %bound, "listening");

    tokio::spawn(reload_on_sighup(state.clone(), hup));
    let (stop_commands, stop_rx) = tokio::sync::watch::channel(false);
    let retention = tokio::spawn(herald_engine::run_retention(
        engine.clone(),
        stop_rx.clone(),
    ));
    let sources =
        herald_sources::start(&engine, stop_rx.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let commands = start_telegram_commands(&engine, stop_rx)?;
    let app = herald_server::router(state.clone());
    herald_server::serve(listener, state, app, shutdown_signal(engine.clone(), term)).await;
    tracing::info!("no longer accepting requests; finishing attempts in flight");
    let _ = stop_commands.send(true);
    if let Some(commands) = commands {
        let _ = commands.await;
    }
    // A batch in progress finishes; the round stops there.
    let _ = retention.await;
    // Each source finishes the entry it is ingesting (acknowledged once committed) and
    // leaves the rest pending in Redis.
    for source in sources {
        let _ = source.await;
    }
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal(engine: Engine, term: std::io::Result<Signal>) {
    let mut term = match term {
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
    engine.begin_draining();
}

/// The store `[store]` names: the embedded one (exclusive to this process), or the shared
/// PostgreSQL one, migrated to this herald's schema version first.
async fn open_store(config: &herald_config::StoreConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(pg) = &config.postgres {
        let options = postgres_options(pg);
        let store = PostgresStore::open(&options)
            .await
            .context("opening the PostgreSQL store")?;
        tracing::info!(database = %store.target(), schema = %store.schema(), "using the shared PostgreSQL store");
        return Ok(Arc::new(store));
    }
    let store_path = config.path.clone();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&store_path))
        .await?
        .with_context(|| format!("opening the store in {}", config.path.display()))?;
    Ok(Arc::new(match config.min_free_bytes {
        Some(bytes) => store.with_min_free_bytes(bytes),
        None => store,
    }))
}

/// The store's connection settings from `[store] backend = "postgres"`.
pub fn postgres_options(pg: &herald_config::PostgresConfig) -> PostgresOptions {
    PostgresOptions {
        url: pg.url.expose().to_string(),
        pool_size: pg.pool_size,
        schema: pg.schema.clone(),
    }
}

async fn reload_on_sighup(state: AppState, hup: std::io::Result<Signal>) {
    let mut hup = match hup {
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

/// With `[telegram] commands = true`, answers `/start` and `/status` in chats, through
/// the engine's bot: the answers take their turn under the same flood control as the
/// notifications. (A reload that changes the token leaves the answers on the old bot
/// until herald restarts.)
fn start_telegram_commands(
    engine: &Engine,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let config = engine.config();
    if !config.telegram.as_ref().is_some_and(|t| t.commands) {
        return Ok(None);
    }
    let bot = engine
        .telegram_bot()
        .ok_or_else(|| anyhow::anyhow!("[telegram]: the engine has no bot"))?;
    let engine = engine.clone();
    let status: herald_channels::telegram::StatusFn =
        Arc::new(move |chat_id, thread| chat_status(&engine.config(), chat_id, thread));
    Ok(Some(tokio::spawn(herald_channels::telegram::run_commands(
        bot, status, stop,
    ))))
}

/// What `/status` answers in a chat: the subscriptions whose channel points at it.
fn chat_status(config: &herald_config::Config, chat_id: i64, thread: Option<i32>) -> String {
    let mut lines = Vec::new();
    for (team, t) in &config.teams {
        for (name, channel) in &t.channels {
            let herald_config::ChannelConfig::Telegram(tg) = channel else {
                continue;
            };
            if tg.chat_id != chat_id
                || (tg.message_thread_id.is_some() && tg.message_thread_id != thread)
            {
                continue;
            }
            for sub in config.matcher.subscriptions() {
                if sub.id.team == *team && sub.channel == *name {
                    let patterns: Vec<String> =
                        sub.patterns.iter().map(ToString::to_string).collect();
                    let mut line = format!("{} → {name}: {}", sub.id, patterns.join(", "));
                    if let Some(o) = sub.outcome {
                        line.push_str(&format!(" (outcome {o})"));
                    }
                    if !sub.metadata.is_empty() {
                        let m: Vec<String> = sub
                            .metadata
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        line.push_str(&format!(" [{}]", m.join(", ")));
                    }
                    if !sub.active {
                        line.push_str(" (inactive)");
                    }
                    lines.push(line);
                }
            }
        }
    }
    if lines.is_empty() {
        "No subscription points at this chat yet. Send /start for the configuration snippet."
            .to_string()
    } else {
        format!(
            "Subscriptions delivering to this chat:\n{}",
            lines.join("\n")
        )
    }
}
