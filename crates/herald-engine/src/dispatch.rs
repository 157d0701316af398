//! The dispatcher: starts attempts from the scheduler's lanes within the worker and
//! per-channel limits, feeds what each attempt showed back into its channel's limit, and
//! reads the store only when it holds work nobody has in memory — at start-up, when a
//! retry falls due (a timer on the earliest due time), after a retry or re-enable
//! request, and to refill a lane that spilled. On a shared store (several nodes) it also
//! claims every `shared_poll` (work other nodes accepted or scheduled, leases of nodes
//! that died) and claims only as much as its workers can start, so that leases do not run
//! out in memory and the other nodes get their share. On shutdown it drains.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_store::{Claimed, Finish, LeaseToken, StoreError};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};

use crate::attempt::{Ended, attempt};
use crate::concurrency::Signal;
use crate::finisher::run_finisher;
use crate::now;
use crate::scheduler::{ChannelKey, Job};
use crate::state::Inner;

/// An attempt in flight, by task: what to give back if it dies or shutdown aborts it.
struct Running {
    key: ChannelKey,
    delivery_id: String,
    lease: LeaseToken,
    /// The delivery as it was when the attempt began, to record a panicked attempt.
    delivery: herald_store::DeliveryRecord,
}

pub(crate) async fn run(inner: Arc<Inner>) {
    let (finishes, finished) = mpsc::unbounded_channel();
    let finisher = tokio::spawn(run_finisher(inner.clone(), finished));
    let mut tasks: JoinSet<Ended> = JoinSet::new();
    let mut running: HashMap<Id, Running> = HashMap::new();
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        if store_is_due(&inner) {
            read_store(&inner).await;
        }
        start_ready(&inner, &mut tasks, &mut running, &finishes);
        let sleep = store_sleep(&inner);
        tokio::select! {
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(sleep.unwrap_or(Duration::MAX)), if sleep.is_some() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                ended(&inner, &mut running, done, &finishes);
                // Reap what else ended meanwhile before starting more.
                while let Some(done) = tasks.try_join_next_with_id() {
                    ended(&inner, &mut running, done, &finishes);
                }
            }
        }
    }
    drain(&inner, tasks, running, &finishes).await;
    // The finisher ends once every sender is gone: ours now, the attempts' with them.
    drop(finishes);
    if let Err(e) = finisher.await {
        tracing::error!(error = %e, "the finisher ended abnormally");
    }
    release_waiting(&inner).await;
}

/// Starts every attempt the lanes and the worker limit allow.
fn start_ready(
    inner: &Arc<Inner>,
    tasks: &mut JoinSet<Ended>,
    running: &mut HashMap<Id, Running>,
    finishes: &mpsc::UnboundedSender<Finish>,
) {
    let snapshot = inner.snapshot();
    let workers = snapshot.config.delivery.workers;
    let now = Instant::now();
    // A claimed delivery is attempted only while its lease outlives the attempt, with
    // room for the record to be written: else another node may take it over mid-send.
    let must_outlive = crate::after(
        crate::now(),
        snapshot.attempt_limit() + std::time::Duration::from_secs(5),
    );
    loop {
        let Some(job) = inner.scheduler().next(workers, now) else {
            break;
        };
        if job.lease_until.is_some_and(|until| until < must_outlive) {
            give_back(inner, job);
            continue;
        }
        let info = Running {
            key: job.key(),
            delivery_id: job.delivery.id.clone(),
            lease: job.lease.clone(),
            delivery: job.delivery.clone(),
        };
        let handle = tasks.spawn(attempt(
            inner.clone(),
            snapshot.clone(),
            job,
            finishes.clone(),
        ));
        running.insert(handle.id(), info);
    }
}

/// A claimed job whose lease is nearly over: not attempted, its lease given back so that
/// any node (this one included) claims it afresh.
fn give_back(inner: &Arc<Inner>, job: Job) {
    let key = job.key();
    inner
        .scheduler()
        .done(&key, Duration::ZERO, Signal::Neutral, Instant::now());
    tracing::debug!(delivery = %job.delivery.id, "lease nearly over before the attempt could start; giving it back");
    let inner = Arc::clone(inner);
    tokio::spawn(async move {
        if let Err(e) = inner.store.release(&job.delivery.id, &job.lease).await {
            tracing::debug!(delivery = %job.delivery.id, error = %e, "giving back a lease failed; it expires on its own");
        }
        inner.read_store_now();
    });
}

/// Feeds an ended attempt back into its lane. The JoinSet reports every task's end,
/// panicked or aborted ones too, so the slot an attempt took is always given back here: a
/// panicking attempt cannot eat it. A panicked attempt is recorded as a failed attempt
/// with the panic's message, so its delivery follows the schedule like any failure (never
/// stuck until a restart, never re-sent in a loop).
fn ended(
    inner: &Inner,
    running: &mut HashMap<Id, Running>,
    done: Result<(Id, Ended), tokio::task::JoinError>,
    finishes: &mpsc::UnboundedSender<Finish>,
) {
    let (id, key, rtt, signal) = match done {
        Ok((id, ended)) => (id, ended.key, ended.rtt, ended.signal),
        Err(e) => {
            let id = e.id();
            let Some(info) = running.get(&id) else {
                return;
            };
            let key = info.key.clone();
            if e.is_panic() {
                let why = panic_message(e.into_panic());
                tracing::error!(delivery = %info.delivery_id, panic = %why, "a delivery attempt panicked (a bug); recorded as a failed attempt");
                let _ = finishes.send(panicked(inner, info, &why));
            }
            (id, key, Duration::ZERO, Signal::Neutral)
        }
    };
    running.remove(&id);
    if let Some(limit) = inner.scheduler().done(&key, rtt, signal, Instant::now()) {
        tracing::debug!(team = %key.0, channel = %key.1, limit, "concurrency limit changed");
    }
    // A worker is free and the store may hold more due work than the last claim took.
    if inner.shared_backlog.swap(false, Ordering::SeqCst) {
        inner.read_store_now();
    }
}

/// The record of an attempt that panicked: a failure like a timeout, retried on the
/// schedule (or dead when it is spent).
fn panicked(inner: &Inner, info: &Running, why: &str) -> Finish {
    let at = now();
    let outcome = herald_channels::SendOutcome::Retry {
        after: None,
        status: None,
        error: format!("the attempt panicked: {why}"),
        response: None,
    };
    let number = info.delivery.attempts + 1;
    let next = inner.snapshot().policy.next(
        number.saturating_sub(info.delivery.budget_start),
        &outcome,
        at,
        fastrand::f64(),
    );
    Finish {
        delivery_id: info.delivery_id.clone(),
        lease: info.lease.clone(),
        attempt: herald_store::NewAttempt {
            started_at: at,
            duration_ms: 0,
            status_code: None,
            error: outcome.error().map(str::to_string),
            response: None,
        },
        next,
        now: at,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "no message".to_string(), |s| (*s).to_string()),
    }
}

fn store_is_due(inner: &Inner) -> bool {
    let refill = inner.scheduler().take_refill_wanted();
    let due = inner.store_due.lock().unwrap_or_else(|e| e.into_inner());
    refill || due.is_some_and(|at| at <= now())
}

/// How long until the store next holds due work, if it is known to.
fn store_sleep(inner: &Inner) -> Option<Duration> {
    let due = (*inner.store_due.lock().unwrap_or_else(|e| e.into_inner()))?;
    let nanos = due.unix_nanos() - now().unix_nanos();
    Some(Duration::from_nanos(
        u64::try_from(nanos.max(0)).unwrap_or(u64::MAX),
    ))
}

/// Takes the store's due work into the lanes, page by page, then learns when the next
/// falls due. Exclusive stores hold what they take; shared ones lease it, one page of at
/// most the free workers, and read again on their poll timer.
async fn read_store(inner: &Inner) {
    *inner.store_due.lock().unwrap_or_else(|e| e.into_inner()) = None;
    metrics::counter!("herald_store_reads_total").increment(1);
    let shared = inner.store.holder().is_none();
    if shared {
        inner.store_due_at(crate::after(now(), inner.options.shared_poll));
        inner.refresh_silences(now()).await;
    }
    let lease = inner.snapshot().lease();
    let mut exclude;
    loop {
        let mut batch = inner.options.claim_batch;
        if shared {
            let workers = inner.snapshot().config.delivery.workers;
            batch = batch.min(workers.saturating_sub(inner.scheduler().busy()));
            if batch == 0 {
                inner.shared_backlog.store(true, Ordering::SeqCst);
                return;
            }
        }
        exclude = inner.scheduler().exclusions();
        let now = now();
        let claims: Result<Vec<Claimed>, StoreError> = match inner.store.holder() {
            Some(_) => inner.store.hold_due(now, batch, &exclude).await,
            None => inner.store.claim_due(now, batch, lease, &exclude).await,
        };
        match claims {
            Ok(claims) => {
                let n = claims.len();
                let mut scheduler = inner.scheduler();
                for claim in claims {
                    scheduler.push(Job::from(claim));
                }
                if n < batch {
                    break;
                }
                if shared {
                    // One page: the rest is claimed as workers free up, by whichever
                    // node has them.
                    inner.shared_backlog.store(true, Ordering::SeqCst);
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reading due deliveries from the store failed; trying again in a second");
                inner.store_due_at(crate::after(now, Duration::from_secs(1)));
                return;
            }
        }
    }
    match inner.store.next_due(&exclude).await {
        Ok(Some(at)) => inner.store_due_at(at),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "finding the next due delivery failed; trying again in a second");
            inner.store_due_at(crate::after(now(), Duration::from_secs(1)));
        }
    }
}

/// Waits for attempts in flight up to the grace period, then aborts the rest. Their
/// deliveries are attempted again: at once after a restart (an exclusive store voids its
/// holds when opened), or when their lease is released (a shared store).
async fn drain(
    inner: &Inner,
    mut tasks: JoinSet<Ended>,
    mut running: HashMap<Id, Running>,
    finishes: &mpsc::UnboundedSender<Finish>,
) {
    let grace = tokio::time::sleep(inner.options.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next_with_id() => match next {
                None => break,
                Some(done) => ended(inner, &mut running, done, finishes),
            },
            () = &mut grace => break,
        }
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next_with_id().await {
        if let Ok((id, _)) = done {
            running.remove(&id);
        }
    }
    if inner.store.holder().is_none() {
        for info in running.into_values() {
            if let Err(e) = inner.store.release(&info.delivery_id, &info.lease).await {
                tracing::warn!(delivery = %info.delivery_id, error = %e, "releasing a lease at shutdown failed");
            }
        }
    }
}

/// A shared store gets back the leases of deliveries still waiting in memory, so another
/// node takes them at once; an exclusive store needs nothing (its holds end with it).
async fn release_waiting(inner: &Inner) {
    if inner.store.holder().is_some() {
        return;
    }
    let waiting = inner.scheduler().take_waiting();
    for job in waiting {
        if let Err(e) = inner.store.release(&job.delivery.id, &job.lease).await {
            tracing::warn!(delivery = %job.delivery.id, error = %e, "releasing a lease at shutdown failed");
        }
    }
}
