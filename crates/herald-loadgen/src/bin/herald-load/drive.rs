//! One delivery run, shared by `e2e` and `side-by-side`: publishers send a schedule of events
//! while the receivers' arrivals are matched to them, until every accepted event arrived
//! everywhere (then a linger for duplicates) or a timeout; the target's memory is sampled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use herald_loadgen::ledger::{Ledger, LedgerSummary};
use herald_loadgen::memory::{MemoryReport, RssSampler};
use herald_loadgen::pacer::Schedule;
use herald_loadgen::payload::RunIds;
use herald_loadgen::receiver::{Arrival, unix_nanos};
use herald_loadgen::stats::{LatencySummary, per_second};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::publish::{Publisher, Tally};

pub const RSS_EVERY: Duration = Duration::from_millis(100);

/// The body of event `index`, published at unix nanoseconds `sent_ns`.
pub type BodyFn = Arc<dyn Fn(u64, u64) -> Vec<u8> + Send + Sync>;

/// The publishing half of a run.
#[derive(Debug, Serialize)]
pub struct Published {
    #[serde(flatten)]
    pub tally: Tally,
    /// From the first release to the last reply.
    pub seconds: f64,
    pub events_per_s: f64,
    pub latency: LatencySummary,
    #[serde(skip)]
    accepted: Vec<bool>,
    #[serde(skip)]
    first_sent_ns: Option<u64>,
}

/// How long a run may wait, and whose memory it watches.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// After the last publish, wait at most this long for the remaining deliveries.
    pub timeout: Duration,
    /// After everything arrived, keep listening this long to catch duplicates.
    pub linger: Duration,
    /// The publishers' own request timeout (bounds how long publishing can overrun).
    pub request_timeout: Duration,
    /// The target process, for its peak RSS.
    pub pid: Option<u32>,
}

/// What a run came to.
#[derive(Debug, Serialize)]
pub struct Delivered {
    pub publish: Option<Published>,
    pub deliveries: LedgerSummary,
    /// From the first publish to the last first-arrival.
    pub delivery_seconds: f64,
    pub deliveries_per_s: f64,
    /// Arrivals at receivers beyond the measured ones (the slow endpoint of a run).
    pub unmeasured_arrivals: u64,
    /// Stopped waiting before every expected delivery arrived.
    pub timed_out: bool,
    pub interrupted: bool,
    pub memory: Option<MemoryReport>,
}

/// Publishes `schedule` through `publishers` and matches what arrives on `arrived` against
/// events `ids.id(0..)` expected at receivers `0..measured` (arrivals at higher receiver
/// numbers are only counted).
pub async fn drive(
    publishers: Vec<Publisher>,
    schedule: Schedule,
    ids: RunIds,
    body: BodyFn,
    measured: usize,
    arrived: mpsc::UnboundedReceiver<Arrival>,
    waits: Waits,
) -> anyhow::Result<Delivered> {
    let (published, _) = tokio::sync::oneshot::channel();
    drive_notifying(
        publishers, schedule, ids, body, measured, arrived, waits, published,
    )
    .await
}

/// [`drive`], telling `on_published` the moment the last publish was answered (before
/// waiting for the deliveries), so that the target can be sampled then.
#[allow(clippy::too_many_arguments)]
pub async fn drive_notifying(
    publishers: Vec<Publisher>,
    schedule: Schedule,
    ids: RunIds,
    body: BodyFn,
    measured: usize,
    mut arrived: mpsc::UnboundedReceiver<Arrival>,
    waits: Waits,
    on_published: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<Delivered> {
    let mut on_published = Some(on_published);
    // Bounded: publishing ends within its span plus request timeouts, waiting within
    // the timeout; the sampler is capped well beyond both.
    let longest = schedule.span()
        + waits.request_timeout * 2
        + waits.timeout
        + waits.linger
        + Duration::from_secs(60);
    let max_samples = (longest.as_millis() / RSS_EVERY.as_millis()) as u64;
    let sampler = waits
        .pid
        .map(|pid| RssSampler::start(pid, RSS_EVERY, max_samples));

    let mut ledger = Ledger::new(ids, schedule.total(), measured);
    let mut publishing = tokio::spawn(publish_all(publishers, schedule, body));
    let mut published: Option<Published> = None;
    let mut deadline: Option<Instant> = None;
    let mut lingering = false;
    let mut interrupted = false;
    let mut unmeasured_arrivals = 0;
    let far = Instant::now() + longest;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        if ledger.is_complete() && !lingering {
            lingering = true;
            let until = Instant::now() + waits.linger;
            deadline = Some(deadline.map_or(until, |d| d.min(until)));
        }
        tokio::select! {
            Some(arrival) = arrived.recv() => {
                if arrival.receiver < measured {
                    ledger.record(&arrival);
                } else {
                    unmeasured_arrivals += 1;
                }
            }
            done = &mut publishing, if published.is_none() => {
                let done = done.context("publishing task")?;
                if let Some(tell) = on_published.take() {
                    let _ = tell.send(());
                }
                ledger.set_accepted(done.accepted.clone());
                deadline = Some(Instant::now() + waits.timeout);
                published = Some(done);
            }
            () = tokio::time::sleep_until(deadline.unwrap_or(far)) => break,
            _ = &mut ctrl_c => {
                interrupted = true;
                publishing.abort();
                break;
            }
        }
    }
    let memory = match sampler {
        Some(sampler) => Some(sampler.finish().await),
        None => None,
    };
    let deliveries = ledger.summary();
    let first_sent = published.as_ref().and_then(|p| p.first_sent_ns);
    let delivery_span = match (first_sent, ledger.last_received_ns()) {
        (Some(first), Some(last)) => Duration::from_nanos(last.saturating_sub(first)),
        _ => Duration::ZERO,
    };
    Ok(Delivered {
        publish: published,
        delivery_seconds: delivery_span.as_secs_f64(),
        deliveries_per_s: per_second(deliveries.delivered, delivery_span),
        deliveries,
        unmeasured_arrivals,
        timed_out: !ledger.is_complete() && !interrupted,
        interrupted,
        memory,
    })
}

/// Publishes every event of `schedule` through `publishers`, each taking the next event as
/// soon as it is due and the publisher is free.
async fn publish_all(publishers: Vec<Publisher>, schedule: Schedule, body: BodyFn) -> Published {
    let total = schedule.total();
    let permits = Arc::new(Semaphore::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let pacer = {
        let permits = Arc::clone(&permits);
        tokio::spawn(async move { schedule.release(start, &permits).await })
    };
    let workers: Vec<_> = publishers
        .into_iter()
        .map(|publisher| {
            let permits = Arc::clone(&permits);
            let next = Arc::clone(&next);
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut accepted = Vec::new();
                let mut first_sent = None;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        break;
                    }
                    // Exactly `total` permits are released and each index takes one, so
                    // this never waits for a permit that will not come.
                    match permits.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                    let sent = unix_nanos(SystemTime::now());
                    first_sent = first_sent.or(Some(sent));
                    let began = Instant::now();
                    let outcome = publisher.publish(body(index, sent)).await;
                    if outcome.is_success() {
                        accepted.push(index);
                    }
                    tally.add(outcome, began.elapsed());
                }
                (tally, accepted, first_sent)
            })
        })
        .collect();

    let mut tally = Tally::default();
    let mut accepted = vec![false; usize::try_from(total).unwrap_or(usize::MAX)];
    let mut first_sent_ns: Option<u64> = None;
    for worker in workers {
        // A worker panicking would be a bug here; its events then count as not accepted.
        if let Ok((t, ok, first)) = worker.await {
            tally.merge(t);
            for index in ok {
                accepted[index as usize] = true;
            }
            first_sent_ns = match (first_sent_ns, first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    pacer.abort();
    let elapsed = start.elapsed();
    Published {
        seconds: elapsed.as_secs_f64(),
        events_per_s: per_second(tally.accepted, elapsed),
        latency: tally.latencies.summary(),
        tally,
        accepted,
        first_sent_ns,
    }
}
