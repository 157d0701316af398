//! The dispatcher: claims due deliveries within the worker and per-channel limits, runs
//! each attempt as a task, records its outcome, and on shutdown drains or releases.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use herald_channels::{Outgoing, SendOutcome};
use herald_store::{ChannelState, Claimed, NewAttempt, Next, StoreError};
use tokio::task::JoinSet;

use crate::engine::{Inner, Snapshot};
use crate::live::LiveMessage;
use crate::now;

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a delivery attempt task failed");
            }
        }
        if inner.stopping.load(Ordering::SeqCst) {
            break;
        }
        let snapshot = inner.snapshot();
        let workers = snapshot.config.delivery.workers;
        let per_channel = snapshot.config.delivery.concurrency_per_channel;
        let want = workers
            .saturating_sub(tasks.len())
            .min(inner.options.claim_batch);
        let mut more_due = false;
        if want > 0 {
            let exclude = excluded(&inner, per_channel);
            match inner
                .store
                .claim_due(now(), want, snapshot.lease(), &exclude)
                .await
            {
                Ok(claims) => {
                    more_due = claims.len() == want;
                    for claim in claims {
                        start(&inner, &snapshot, &mut tasks, claim, per_channel).await;
                    }
                }
                Err(e) => tracing::error!(error = %e, "claiming due deliveries failed"),
            }
        }
        if more_due && tasks.len() < workers {
            continue;
        }
        tokio::select! {
            () = inner.wake.notified() => {}
            () = inner.stop.notified() => {}
            () = tokio::time::sleep(inner.options.poll_interval) => {}
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "a delivery attempt task failed");
                }
            }
        }
    }
    drain(&inner, tasks).await;
}

/// Channels not to claim for now: those at their concurrency cap, and disabled ones.
fn excluded(inner: &Inner, per_channel: usize) -> Vec<(herald_core::TeamId, String)> {
    let mut out: Vec<_> = inner
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .per_channel
        .iter()
        .filter(|(_, n)| **n >= per_channel)
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(
        inner
            .disabled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned(),
    );
    out
}

/// Starts an attempt for `claim`, or hands the claim back if its channel is full.
async fn start(
    inner: &Arc<Inner>,
    snapshot: &Arc<Snapshot>,
    tasks: &mut JoinSet<()>,
    claim: Claimed,
    per_channel: usize,
) {
    let key = (claim.delivery.team.clone(), claim.delivery.channel.clone());
    let admitted = {
        let mut state = inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let n = state.per_channel.entry(key).or_default();
        if *n >= per_channel {
            false
        } else {
            *n += 1;
            state
                .leases
                .insert(claim.delivery.id.clone(), claim.lease.clone());
            true
        }
    };
    if !admitted {
        // One claim can return more deliveries of a channel than it has room for.
        if let Err(e) = inner.store.release(&claim.delivery.id, &claim.lease).await {
            tracing::warn!(delivery = %claim.delivery.id, error = %e, "releasing an over-cap claim failed");
        }
        return;
    }
    tasks.spawn(attempt(inner.clone(), snapshot.clone(), claim));
}

async fn attempt(inner: Arc<Inner>, snapshot: Arc<Snapshot>, claim: Claimed) {
    let Claimed {
        delivery,
        event,
        lease,
        ..
    } = claim;
    let key = (delivery.team.clone(), delivery.channel.clone());
    let number = delivery.attempts + 1;
    let started_at = now();
    let clock = Instant::now();
    let channel = snapshot.channels.get(&key);
    // A formatter plugin renders first; any failure falls back to the built-in formatter.
    let mut plugin_error = None;
    let mut skipped = None;
    let mut rendered = None;
    if let (Some(channel), Some((name, settings))) = (
        channel,
        snapshot
            .formatters
            .get(&(delivery.team.clone(), delivery.subscription as usize)),
    ) {
        let plugins = inner.plugins.clone();
        let (name, settings, kind) = (name.clone(), settings.clone(), channel.kind());
        let for_plugin = event.clone();
        let result = tokio::task::spawn_blocking(move || {
            plugins.format(&name, &for_plugin, kind, &settings)
        })
        .await;
        let name = &snapshot.formatters[&(delivery.team.clone(), delivery.subscription as usize)].0;
        match result {
            Ok(Ok(herald_plugins::PluginOutput::Rendered(r))) => rendered = Some(r),
            Ok(Ok(herald_plugins::PluginOutput::Skip(reason))) => {
                skipped = Some(format!("skipped by formatter `{name}`: {reason}"))
            }
            Ok(Err(e)) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed ({e}); sent with the built-in formatter"
                ))
            }
            Err(e) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed ({e}); sent with the built-in formatter"
                ))
            }
        }
        if let Some(error) = &plugin_error {
            tracing::warn!(delivery = %delivery.id, "{error}");
        }
    }
    let outcome = match (channel, &skipped) {
        (_, Some(_)) => None,
        (None, None) => Some(SendOutcome::Permanent {
            status: None,
            error: format!(
                "channel `{}` is no longer configured for team `{}`",
                delivery.channel, delivery.team
            ),
            response: None,
        }),
        (Some(channel), None) => {
            let msg = Outgoing {
                delivery_id: &delivery.id,
                event: &event,
                attempt: number,
                rendered: rendered.as_ref(),
            };
            // The channel enforces the configured timeout; this is a backstop.
            let limit = snapshot.attempt_limit();
            Some(
                match tokio::time::timeout(limit, channel.send(&msg)).await {
                    Ok(outcome) => outcome,
                    Err(_) => SendOutcome::Retry {
                        after: None,
                        status: None,
                        error: format!("timed out after {}s", limit.as_secs()),
                        response: None,
                    },
                },
            )
        }
    };
    let elapsed = clock.elapsed();
    let finished = now();
    let next = match &outcome {
        Some(outcome) => snapshot
            .policy
            .next(number, outcome, finished, fastrand::f64()),
        None => Next::Skipped,
    };
    if let Some(outcome) = &outcome {
        record_channel_health(&inner, &key, outcome, finished).await;
    }
    let label = match (&outcome, &next) {
        (_, Next::Succeeded) => "succeeded",
        (Some(SendOutcome::Disable { .. }), _) => "disabled",
        (_, Next::Dead) => "dead",
        (_, Next::Skipped) => "skipped",
        (_, Next::RetryAt(_)) => "retrying",
    };
    match &outcome {
        Some(SendOutcome::Delivered { .. }) => {
            tracing::debug!(delivery = %delivery.id, attempt = number, "delivered");
        }
        None => {
            tracing::info!(delivery = %delivery.id, attempt = number, "skipped by its formatter")
        }
        Some(other) => tracing::info!(
            delivery = %delivery.id, team = %delivery.team, channel = %delivery.channel,
            attempt = number, outcome = label, error = other.error().unwrap_or(""), "attempt failed"
        ),
    }
    let kind = channel.map_or("unknown", |c| c.kind());
    metrics::counter!("herald_deliveries_total", "team" => delivery.team.to_string(), "channel" => delivery.channel.clone(), "outcome" => label).increment(1);
    metrics::histogram!("herald_attempt_duration_seconds", "kind" => kind)
        .record(elapsed.as_secs_f64());
    // The attempt's error: the send's, the formatter's fallback, or the skip reason.
    let error = [
        outcome.as_ref().and_then(|o| o.error()).map(str::to_string),
        plugin_error,
        skipped,
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    let record = NewAttempt {
        started_at,
        duration_ms: elapsed.as_millis() as u64,
        status_code: outcome.as_ref().and_then(SendOutcome::status),
        error: (!error.is_empty()).then(|| error.join("; ")),
        response: outcome
            .as_ref()
            .and_then(|o| o.response())
            .map(str::to_string),
    };
    let record_error = record.error.clone();
    match inner
        .store
        .finish(&delivery.id, &lease, record, next, finished)
        .await
    {
        Ok(()) => {}
        Err(StoreError::LeaseLost { .. }) => {
            tracing::warn!(delivery = %delivery.id, "lease lost before the attempt was recorded; another worker owns it");
        }
        Err(e) => {
            tracing::error!(delivery = %delivery.id, error = %e, "recording an attempt failed")
        }
    }
    inner.bus.publish(LiveMessage::Delivery {
        team: delivery.team.clone(),
        delivery_id: delivery.id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        channel: delivery.channel.clone(),
        status: label,
        attempt: number,
        error: record_error,
    });
    {
        let mut state = inner.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = state.per_channel.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_channel.remove(&key);
            }
        }
        state.leases.remove(&delivery.id);
    }
    inner.wake.notify_one();
}

/// Waits for attempts in flight up to the grace period, then aborts the rest and releases
/// their leases so another process (or this one, restarted) claims them at once.
async fn drain(inner: &Inner, mut tasks: JoinSet<()>) {
    let grace = tokio::time::sleep(inner.options.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = &mut grace => break,
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let leases: Vec<_> = inner
        .in_flight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .leases
        .drain()
        .collect();
    for (id, lease) in leases {
        if let Err(e) = inner.store.release(&id, &lease).await {
            tracing::warn!(delivery = %id, error = %e, "releasing a lease at shutdown failed");
        }
    }
}

/// Keeps the channel's recorded health in step with what the attempt showed: a 410
/// disables it, a permanent failure marks it failing, a success clears "failing".
async fn record_channel_health(
    inner: &Inner,
    key: &(herald_core::TeamId, String),
    outcome: &SendOutcome,
    at: herald_core::Timestamp,
) {
    let (team, channel) = key;
    let change = match outcome {
        SendOutcome::Disable { error, .. } => {
            inner
                .disabled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            Some(("disabled", Some(error.clone())))
        }
        SendOutcome::Permanent { error, .. } => {
            inner
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone());
            Some(("failing", Some(error.clone())))
        }
        SendOutcome::Delivered { .. } => {
            let was = inner
                .failing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            was.then_some(("ok", None))
        }
        SendOutcome::Retry { .. } => None,
    };
    let Some((state, reason)) = change else {
        return;
    };
    let result = match state {
        "ok" => inner
            .store
            .clear_channel_state(team, channel)
            .await
            .map(|_| ()),
        _ => {
            inner
                .store
                .set_channel_state(ChannelState {
                    team: team.clone(),
                    channel: channel.clone(),
                    disabled: state == "disabled",
                    paused_until: None,
                    reason: reason.clone(),
                    since: at,
                })
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(%team, %channel, error = %e, "recording the channel state failed");
    }
    if state != "ok" {
        tracing::warn!(%team, %channel, state, reason = reason.as_deref().unwrap_or(""), "channel state changed");
    }
    inner.bus.publish(LiveMessage::Channel {
        team: team.clone(),
        channel: channel.clone(),
        state,
        reason,
    });
}
