//! The retention task: prunes the store to `[retention]` in small batches, now and then,
//! and keeps the store's gauges (size, rows, oldest pending delivery) up to date.
//!
//! Each batch is one short write in the writer's group commit, and the task yields
//! between batches, so ingest never waits behind a whole pruning round.

use std::time::Duration;

use herald_store::{PruneLimits, PruneReport, Store};
use tokio::sync::watch;

use crate::engine::Engine;

/// Runs until `stop` turns true (or its sender goes away). Reads `[retention]` afresh at
/// each round, so a reload applies from the next one.
pub async fn run_retention(engine: Engine, mut stop: watch::Receiver<bool>) {
    loop {
        let config = engine.config();
        let retention = &config.retention;
        let limits = PruneLimits {
            events: retention.events,
            attempts: retention.attempts,
            dead: retention.dead,
            max_store_size: retention.max_store_size,
            // A window no subscription can still reach is forgotten.
            dedup: config
                .matcher
                .subscriptions()
                .iter()
                .filter_map(|s| s.dedup.as_ref().map(|d| d.window))
                .max()
                .unwrap_or(Duration::ZERO),
        };
        let batch = usize::try_from(retention.batch).unwrap_or(100);
        let interval = retention.interval;
        drop(config);
        let store = engine.store();
        match prune_round(&**store, &limits, batch, &stop).await {
            Ok(report) if report.removed() > 0 => {
                tracing::info!(
                    events = report.events,
                    deliveries = report.deliveries,
                    dead_letters = report.dead,
                    attempts = report.attempts,
                    dedup_windows = report.dedup_windows,
                    silences = report.silences,
                    over_size = report.over_size,
                    "retention: pruned finished rows"
                );
            }
            Ok(_) => tracing::debug!("retention: nothing to prune"),
            Err(e) => tracing::error!(error = %e, "retention: pruning failed; retrying next round"),
        }
        export_stats(&**store).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
    }
}

/// Prunes batch after batch until no batch limit is reached (or `stop`); the sum.
async fn prune_round(
    store: &dyn Store,
    limits: &PruneLimits,
    batch: usize,
    stop: &watch::Receiver<bool>,
) -> Result<PruneReport, herald_store::StoreError> {
    let mut total = PruneReport::default();
    loop {
        let report = store.prune(limits, crate::now(), batch).await?;
        for (table, n) in [
            ("events", report.events),
            ("deliveries", report.deliveries),
            ("attempts", report.attempts),
            ("dedup_windows", report.dedup_windows),
            ("silences", report.silences),
        ] {
            if n > 0 {
                metrics::counter!("herald_pruned_rows_total", "table" => table).increment(n);
            }
        }
        total.events += report.events;
        total.deliveries += report.deliveries;
        total.dead += report.dead;
        total.attempts += report.attempts;
        total.dedup_windows += report.dedup_windows;
        total.silences += report.silences;
        total.over_size |= report.over_size;
        if !report.more || *stop.borrow() {
            return Ok(total);
        }
        // Let ingest and attempts have the writer between batches.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sets the store gauges of `/metrics` (and the dashboard's Store panel).
async fn export_stats(store: &dyn Store) {
    let stats = match store.stats().await {
        Ok(stats) => stats,
        Err(e) => {
            tracing::warn!(error = %e, "retention: reading the store's size failed");
            return;
        }
    };
    metrics::gauge!("herald_store_size_bytes").set(stats.size_bytes as f64);
    for (table, n) in [
        ("events", stats.events),
        ("deliveries", stats.deliveries),
        ("attempts", stats.attempts),
    ] {
        metrics::gauge!("herald_store_rows", "table" => table).set(n as f64);
    }
    metrics::gauge!("herald_store_pending_deliveries").set(stats.pending as f64);
    metrics::gauge!("herald_store_dead_letters").set(stats.dead as f64);
    let age = stats.oldest_pending.map_or(0.0, |oldest| {
        let nanos = crate::now().unix_nanos() - oldest.unix_nanos();
        (nanos.max(0) as f64) / 1e9
    });
    metrics::gauge!("herald_oldest_pending_delivery_age_seconds").set(age);
}
