//! One delivery attempt: render (a formatter plugin first, the built-in formatter as the
//! fallback), send through the channel, decide what follows, and hand the record to the
//! finisher; plus the channel health an attempt reveals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_channels::{Outgoing, SendOutcome};
use herald_store::{ChannelState, Finish, NewAttempt, Next};
use tokio::sync::mpsc;

use crate::concurrency::Signal;
use crate::live::LiveMessage;
use crate::now;
use crate::scheduler::{ChannelKey, Job};
use crate::state::{Inner, Snapshot};

/// Makes one attempt of `job` and hands its record to the finisher without waiting for
/// it to be written: the lane's slot is free as soon as the send is over.
pub(crate) async fn attempt(
    inner: Arc<Inner>,
    snapshot: Arc<Snapshot>,
    job: Job,
    finishes: mpsc::UnboundedSender<Finish>,
) -> Ended {
    let Job {
        delivery,
        event,
        lease,
        ..
    } = job;
    let key = (delivery.team.clone(), delivery.channel.clone());
    // A silence created after the delivery was queued (or while it waits for a retry)
    // stops it here, before anything is rendered or sent.
    if let Some(silence) = inner.silence_for(&event, &delivery.channel, now()) {
        return silenced(&inner, &delivery, &lease, &silence, key).await;
    }
    let number = delivery.attempts + 1;
    let started_at = now();
    let clock = Instant::now();
    let channel = snapshot.channels.get(&key);
    // A formatter plugin renders first; any failure falls back to the built-in formatter.
    let mut plugin_error = None;
    let mut skipped = None;
    let mut rendered = None;
    if let (Some(channel), Some((name, settings))) = (channel, snapshot.formatter(&delivery)) {
        let plugins = inner.plugins.clone();
        let (name, settings, kind) = (name.clone(), settings.clone(), channel.kind());
        let for_plugin = Arc::clone(&event);
        let result = tokio::task::spawn_blocking(move || {
            plugins.format(&name, &for_plugin, kind, &settings)
        })
        .await;
        let name = snapshot.formatter(&delivery).map_or("", |(name, _)| name);
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
    let mut rtt = Duration::ZERO;
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
            let sent = Instant::now();
            let outcome = match tokio::time::timeout(limit, channel.send(&msg)).await {
                Ok(outcome) => outcome,
                Err(_) => SendOutcome::Retry {
                    after: None,
                    status: None,
                    error: format!("timed out after {}s", limit.as_secs()),
                    response: None,
                },
            };
            rtt = sent.elapsed();
            Some(outcome)
        }
    };
    let signal = outcome.as_ref().map_or(Signal::Neutral, signal_of);
    let elapsed = clock.elapsed();
    let finished = now();
    let next = match &outcome {
        // The schedule counts from the start of the current budget: a manual retry of a
        // dead delivery gets the whole schedule again.
        Some(outcome) => snapshot.policy.next(
            number.saturating_sub(delivery.budget_start),
            outcome,
            finished,
            fastrand::f64(),
        ),
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
    let finish = Finish {
        delivery_id: delivery.id.clone(),
        lease,
        attempt: record,
        next,
        now: finished,
    };
    if finishes.send(finish).is_err() {
        // Only after the finisher stopped, which waits for every attempt: a bug.
        tracing::error!(delivery = %delivery.id, "the attempt could not be recorded; it will be made again after a restart");
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
    Ended { key, rtt, signal }
}

/// Records `delivery` as silenced instead of attempting it. Awaited (a short unsynced
/// write): silencing at dispatch is rare, and a lost record only means the delivery is
/// held again after a restart and silenced again.
async fn silenced(
    inner: &Inner,
    delivery: &herald_store::DeliveryRecord,
    lease: &herald_store::LeaseToken,
    silence: &str,
    key: ChannelKey,
) -> Ended {
    match inner
        .store
        .finish_silenced(&delivery.id, lease, silence, now())
        .await
    {
        Ok(()) => {
            tracing::info!(delivery = %delivery.id, %silence, "silenced before its attempt");
            metrics::counter!("herald_deliveries_total", "team" => delivery.team.to_string(), "channel" => delivery.channel.clone(), "outcome" => "silenced").increment(1);
            inner.bus.publish(LiveMessage::Delivery {
                team: delivery.team.clone(),
                delivery_id: delivery.id.clone(),
                event_id: delivery.event_id.clone(),
                event_type: delivery.event_type.clone(),
                channel: delivery.channel.clone(),
                status: "silenced",
                attempt: delivery.attempts,
                error: None,
            });
        }
        Err(e) => {
            tracing::warn!(delivery = %delivery.id, error = %e, "recording a silenced delivery failed; it is taken up again after a restart")
        }
    }
    Ended {
        key,
        rtt: Duration::ZERO,
        signal: Signal::Neutral,
    }
}

/// What an ended attempt tells the dispatcher about its channel.
#[derive(Debug)]
pub(crate) struct Ended {
    pub key: ChannelKey,
    /// How long the send took (not the rendering).
    pub rtt: Duration,
    pub signal: Signal,
}

/// Reads an outcome as load information: pushing back is a 429, a 5xx, a timeout or a
/// connection failure (no status); other failures say nothing about load.
fn signal_of(outcome: &SendOutcome) -> Signal {
    match outcome {
        SendOutcome::Delivered { .. } => Signal::Answered,
        SendOutcome::Retry { status, .. } => match status {
            None => Signal::BackPressure,
            Some(s) if *s == 429 || *s >= 500 => Signal::BackPressure,
            Some(_) => Signal::Neutral,
        },
        SendOutcome::Permanent { .. } | SendOutcome::Disable { .. } => Signal::Neutral,
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
    // `changed`: this attempt moved the channel into the state (attempts in flight at the
    // same time may all see the 410); the owner is alerted once per change.
    let mut changed = false;
    let change = match outcome {
        SendOutcome::Disable { error, .. } => {
            let mut scheduler = inner.scheduler();
            changed = !scheduler.is_disabled(key);
            scheduler.set_disabled(key, true);
            drop(scheduler);
            Some(("disabled", Some(error.clone())))
        }
        SendOutcome::Permanent { error, .. } => {
            changed = inner
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
        if changed {
            crate::alerts::channel_state_changed(
                inner,
                team,
                channel,
                state,
                reason.as_deref(),
                at,
            )
            .await;
        }
    }
    inner.bus.publish(LiveMessage::Channel {
        team: team.clone(),
        channel: channel.clone(),
        state,
        reason,
    });
}
