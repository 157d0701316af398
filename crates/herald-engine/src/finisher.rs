//! The finisher: records ended attempts in batches, off the attempts' path. Each batch is
//! one store write that shares the writer's group commit with ingest; no attempt waits
//! for its own record. A retry's due time reaches the dispatcher only once its record is
//! committed, so the store never hands out a delivery whose last attempt it has not seen.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_store::{Finish, Next, StoreError};
use tokio::sync::mpsc;

use crate::state::Inner;

/// Most records written in one store request.
const MAX_BATCH: usize = 1024;
/// Tries of one batch once shutdown has begun, before giving up on it (its deliveries
/// are then attempted again after the restart: at least once, never lost).
const TRIES_WHEN_STOPPING: u32 = 3;

pub(crate) async fn run_finisher(inner: Arc<Inner>, mut finished: mpsc::UnboundedReceiver<Finish>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while finished.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let retries: Vec<_> = batch
            .iter()
            .filter_map(|f| match f.next {
                Next::RetryAt(at) | Next::Wait(at) => Some(at),
                _ => None,
            })
            .collect();
        let dead: Vec<String> = batch
            .iter()
            .filter(|f| f.next == Next::Dead)
            .map(|f| f.delivery_id.clone())
            .collect();
        record(&inner, std::mem::take(&mut batch)).await;
        if !dead.is_empty() {
            // Counted once the records are committed; off the finisher's path.
            tokio::spawn(crate::alerts::dead_letters_added(Arc::clone(&inner), dead));
        }
        if let Some(earliest) = retries.into_iter().min() {
            inner.store_due_at(earliest);
        }
    }
}

/// Writes one batch, trying again (with a growing pause, loudly) while the store fails.
async fn record(inner: &Inner, batch: Vec<Finish>) {
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        match inner.store.finish_many(batch.clone()).await {
            Ok(results) => {
                for (finish, result) in batch.iter().zip(results) {
                    match result {
                        Ok(()) => {}
                        Err(StoreError::LeaseLost { .. }) => tracing::warn!(
                            delivery = %finish.delivery_id,
                            "lease lost before the attempt was recorded; another worker owns it"
                        ),
                        Err(e) => tracing::error!(
                            delivery = %finish.delivery_id, error = %e,
                            "recording an attempt failed"
                        ),
                    }
                }
                return;
            }
            Err(e) => {
                metrics::counter!("herald_finish_failures_total").increment(1);
                if inner.stopping.load(Ordering::SeqCst) && tries >= TRIES_WHEN_STOPPING {
                    tracing::error!(error = %e, records = batch.len(), "recording attempts failed at shutdown; those deliveries will be attempted again after a restart");
                    return;
                }
                tracing::error!(error = %e, records = batch.len(), retry_in_ms = pause.as_millis() as u64, "recording attempts failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
