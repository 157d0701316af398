//! One delivery attempt: render (a formatter plugin first, the built-in formatter as the
//! fallback), send through the channel, decide what follows, and hand the record to the
//! finisher; plus the channel health an attempt reveals. A delivery whose channel no
//! longer exists is held as orphaned instead of attempted. A digest delivery first reads
//! its members (`Store::digest_members`) into a `herald_core::Digest`, which the
//! formatter renders if it renders digests (`format-digest`), else the channel.
//!
//! The whole attempt (plugin, send, a resend with the built-in rendering) runs against one
//! deadline on the monotonic clock, `Snapshot::attempt_limit` from its start, and its
//! record goes to the finisher before the channel's health is written, so the lease
//! (`Snapshot::lease`, longer than the limit) covers the attempt up to its record.

use std::sync::Arc;
use std::time::Duration;

use herald_channels::{Channel, Outgoing, SendOutcome};
use herald_core::{Digest, DigestKind, Event, Rendered};
use herald_store::{ChannelState, DeliveryRecord, Finish, LeaseToken, NewAttempt, Next};
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    // A digest carries the members the store sealed when it was first claimed: the same
    // on every attempt.
    let digest = if delivery.is_digest() {
        match read_digest(&inner, &snapshot, &delivery).await {
            Ok(digest) => Some(digest),
            Err(error) => {
                return unreadable_digest(&snapshot, delivery, lease, error, &finishes, key);
            }
        }
    } else {
        None
    };
    // A silence created after the delivery was queued (or while it waits for a retry)
    // stops it here, before anything is rendered or sent. A digest is silenced when one
    // silence stops every event it lists.
    let silence = match &digest {
        Some(digest) => inner.silence_for_all(&digest.events, &delivery.channel, now()),
        None => inner.silence_for(&event, &delivery.channel, now()),
    };
    if let Some(silence) = silence {
        return silenced(&inner, &delivery, &lease, &silence, key).await;
    }
    let Some(channel) = snapshot.channels.get(&key) else {
        return orphan(&inner, &delivery, &lease, key).await;
    };
    let number = delivery.attempts + 1;
    let started_at = now();
    let clock = Instant::now();
    let deadline = clock + snapshot.attempt_limit();
    // A formatter plugin renders first; any failure falls back to the built-in formatter.
    let mut plugin_error = None;
    let mut skipped = None;
    let mut rendered = None;
    let formatter = snapshot.formatter(&delivery).map(|(name, _)| name.clone());
    if let (Some((name, settings)), Some(digest)) = (snapshot.formatter(&delivery), &digest) {
        // A digest: the plugin renders it if it renders digests; otherwise (a 0.1.0
        // plugin, or one that declines) the channel's built-in digest is sent.
        let plugins = inner.plugins.clone();
        let (name, settings, kind) = (name.clone(), settings.clone(), channel.kind());
        let for_plugin = digest.clone();
        let render = tokio::task::spawn_blocking(move || {
            plugins.render_digest(&name, kind, &for_plugin, &settings)
        });
        let name = formatter.as_deref().unwrap_or("");
        match tokio::time::timeout_at(deadline, render).await {
            Ok(Ok(Ok(r))) => rendered = r,
            Ok(Ok(Err(e))) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed on the digest ({e}); sent with the built-in digest"
                ))
            }
            Ok(Err(e)) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed on the digest ({e}); sent with the built-in digest"
                ))
            }
            Err(_) => {
                plugin_error = Some(format!(
                    "formatter `{name}` did not render the digest within the attempt's limit; sent with the built-in digest"
                ))
            }
        }
        if let Some(error) = &plugin_error {
            tracing::warn!(delivery = %delivery.id, "{error}");
        }
    } else if let Some((name, settings)) = snapshot.formatter(&delivery) {
        let plugins = inner.plugins.clone();
        let (name, settings, kind) = (name.clone(), settings.clone(), channel.kind());
        let for_plugin = Arc::clone(&event);
        let render = tokio::task::spawn_blocking(move || {
            plugins.format(&name, &for_plugin, kind, &settings)
        });
        let name = formatter.as_deref().unwrap_or("");
        match tokio::time::timeout_at(deadline, render).await {
            Ok(Ok(Ok(herald_plugins::PluginOutput::Rendered(r)))) => rendered = Some(r),
            Ok(Ok(Ok(herald_plugins::PluginOutput::Skip(reason)))) => {
                skipped = Some(format!("skipped by formatter `{name}`: {reason}"))
            }
            Ok(Ok(Err(e))) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed ({e}); sent with the built-in formatter"
                ))
            }
            Ok(Err(e)) => {
                plugin_error = Some(format!(
                    "formatter `{name}` failed ({e}); sent with the built-in formatter"
                ))
            }
            Err(_) => {
                plugin_error = Some(format!(
                    "formatter `{name}` did not finish within the attempt's limit; sent with the built-in formatter"
                ))
            }
        }
        if let Some(error) = &plugin_error {
            tracing::warn!(delivery = %delivery.id, "{error}");
        }
    }
    let mut rtt = Duration::ZERO;
    let outcome = match &skipped {
        Some(_) => None,
        None => {
            let sent = Instant::now();
            let send = |rendered| {
                send_once(
                    channel.as_ref(),
                    &delivery,
                    &event,
                    digest.as_ref(),
                    rendered,
                    deadline,
                )
            };
            let mut outcome = send(rendered.as_ref()).await;
            if let SendOutcome::RenderingRefused { error, .. } = &outcome {
                // The channel refused the formatter's markup: the same attempt goes out
                // again with the built-in rendering, and records the formatter's fault.
                let name = formatter.as_deref().unwrap_or("");
                let fault = format!(
                    "formatter `{name}`'s output was refused by the channel ({error}); sent with the built-in formatter"
                );
                tracing::warn!(delivery = %delivery.id, "{fault}");
                plugin_error = Some(fault);
                outcome = send(None).await;
            }
            rtt = sent.elapsed();
            Some(outcome)
        }
    };
    let signal = outcome.as_ref().map_or(Signal::Neutral, signal_of);
    let elapsed = clock.elapsed();
    let finished = now();
    let next = match &outcome {
        // Every attempt counts towards a channel-wide wait's step, none towards the budget.
        Some(SendOutcome::ChannelFailure { after, .. }) => {
            snapshot
                .policy
                .wait(number, *after, finished, fastrand::f64())
        }
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
    let label = match (&outcome, &next) {
        (_, Next::Succeeded) => "succeeded",
        (Some(SendOutcome::Disable { .. }), _) => "disabled",
        (_, Next::Dead) => "dead",
        (_, Next::Skipped) => "skipped",
        (_, Next::RetryAt(_) | Next::Wait(_)) => "retrying",
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
    metrics::counter!("herald_deliveries_total", "team" => delivery.team.to_string(), "channel" => delivery.channel.clone(), "outcome" => label).increment(1);
    if let (Some(digest), Next::Succeeded) = (&digest, &next) {
        metrics::counter!("herald_digests_sent_total", "team" => delivery.team.to_string(), "channel" => delivery.channel.clone(), "kind" => digest_kind(&digest.kind)).increment(1);
    }
    metrics::histogram!("herald_attempt_duration_seconds", "kind" => channel.kind())
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
    // After the record is on its way: a slow health write (an owner alert's commit) never
    // delays the finish past the lease.
    if let Some(outcome) = &outcome {
        record_channel_health(&inner, &key, outcome, finished).await;
    }
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

/// One send of `delivery` through `channel`, within what is left of the attempt's
/// `deadline`. The channel enforces the configured timeout; this is a backstop.
async fn send_once(
    channel: &dyn Channel,
    delivery: &DeliveryRecord,
    event: &Event,
    digest: Option<&Digest>,
    rendered: Option<&Rendered>,
    deadline: Instant,
) -> SendOutcome {
    let msg = Outgoing {
        delivery_id: &delivery.id,
        // A digest's message is about its events; the first stands for them where a
        // channel needs one.
        event: digest.and_then(|d| d.events.first()).unwrap_or(event),
        attempt: delivery.attempts + 1,
        rendered,
        digest,
    };
    match tokio::time::timeout_at(deadline, channel.send(&msg)).await {
        Ok(outcome) => outcome,
        Err(_) => SendOutcome::Retry {
            after: None,
            status: None,
            error: "timed out: the attempt reached its time limit".to_string(),
            response: None,
        },
    }
}

/// The digest `delivery` stands for: its members as the store sealed them (the first
/// `max_group_size` of its subscription, 100 if the subscription is gone).
async fn read_digest(
    inner: &Inner,
    snapshot: &Snapshot,
    delivery: &DeliveryRecord,
) -> Result<Digest, String> {
    let limit = snapshot.max_group_size(delivery);
    let members = inner
        .store
        .digest_members(&delivery.id, limit)
        .await
        .map_err(|e| format!("reading the digest's members failed: {e}"))?
        .ok_or_else(|| "the store holds no members for this digest".to_string())?;
    Ok(Digest {
        id: delivery.id.clone(),
        team: delivery.team.clone(),
        subscription: delivery.subscription_name.clone().unwrap_or_default(),
        channel: delivery.channel.clone(),
        kind: delivery
            .digest
            .clone()
            .unwrap_or(DigestKind::Group { labels: Vec::new() }),
        events: members.events,
        total: members.total,
        first_at: members.first_at,
        last_at: members.last_at,
    })
}

/// Records a failed attempt of a digest whose members could not be read (a store
/// error): retried on the schedule like any failure, nothing sent.
fn unreadable_digest(
    snapshot: &Snapshot,
    delivery: DeliveryRecord,
    lease: LeaseToken,
    error: String,
    finishes: &mpsc::UnboundedSender<Finish>,
    key: ChannelKey,
) -> Ended {
    tracing::error!(delivery = %delivery.id, %error, "a digest could not be read; its attempt is retried");
    let at = now();
    let outcome = SendOutcome::Retry {
        after: None,
        status: None,
        error,
        response: None,
    };
    let number = delivery.attempts + 1;
    let next = snapshot.policy.next(
        number.saturating_sub(delivery.budget_start),
        &outcome,
        at,
        fastrand::f64(),
    );
    let finish = Finish {
        delivery_id: delivery.id.clone(),
        lease,
        attempt: NewAttempt {
            started_at: at,
            duration_ms: 0,
            status_code: None,
            error: outcome.error().map(str::to_string),
            response: None,
        },
        next,
        now: at,
    };
    if finishes.send(finish).is_err() {
        tracing::error!(delivery = %delivery.id, "the attempt could not be recorded; it will be made again after a restart");
    }
    Ended {
        key,
        rtt: Duration::ZERO,
        signal: Signal::Neutral,
    }
}

/// `group` or `throttle`: the `kind` label of the digest metrics.
fn digest_kind(kind: &DigestKind) -> &'static str {
    match kind {
        DigestKind::Group { .. } => "group",
        DigestKind::Throttle { .. } => "throttle",
    }
}

/// Holds a delivery whose channel no longer exists (a reload renamed or removed it) as
/// orphaned: not attempted, no budget used, until the name is back or it is moved.
async fn orphan(
    inner: &Inner,
    delivery: &DeliveryRecord,
    lease: &LeaseToken,
    key: ChannelKey,
) -> Ended {
    let reason = format!(
        "channel `{}` no longer exists for team `{}` (renamed or removed by a reload); the \
         delivery waits until a channel of that name is back, or is moved with POST \
         /v1/deliveries/move",
        delivery.channel, delivery.team
    );
    match inner
        .store
        .orphan(&delivery.id, lease, reason.clone(), now())
        .await
    {
        Ok(()) => {
            tracing::warn!(delivery = %delivery.id, team = %delivery.team, channel = %delivery.channel, "delivery orphaned: its channel no longer exists");
            // A reload that brought the channel back while this attempt ran on the older
            // configuration re-attached orphans before this one was written: do it again.
            if inner.snapshot().channels.contains_key(&key) {
                match inner
                    .store
                    .reattach_orphans(std::slice::from_ref(&key), now())
                    .await
                {
                    Ok(0) => {}
                    Ok(_) => inner.read_store_now(),
                    Err(e) => {
                        tracing::error!(delivery = %delivery.id, error = %e, "re-attaching an orphan failed; the next reload does it")
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(delivery = %delivery.id, error = %e, "holding a delivery as orphaned failed; it is looked at again after a restart")
        }
    }
    metrics::counter!("herald_deliveries_total", "team" => delivery.team.to_string(), "channel" => delivery.channel.clone(), "outcome" => "orphaned").increment(1);
    inner.bus.publish(LiveMessage::Delivery {
        team: delivery.team.clone(),
        delivery_id: delivery.id.clone(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        channel: delivery.channel.clone(),
        status: "orphaned",
        attempt: delivery.attempts,
        error: Some(reason),
    });
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
        SendOutcome::ChannelFailure {
            status: Some(429), ..
        } => Signal::BackPressure,
        SendOutcome::Permanent { .. }
        | SendOutcome::Disable { .. }
        | SendOutcome::ChannelFailure { .. }
        | SendOutcome::RenderingRefused { .. } => Signal::Neutral,
    }
}

/// Keeps the channel's recorded health in step with what the attempt showed: a 410
/// disables it, a permanent or channel-wide failure marks it failing, a success clears
/// "failing".
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
        SendOutcome::Permanent { error, .. } | SendOutcome::ChannelFailure { error, .. } => {
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
        SendOutcome::Retry { .. } | SendOutcome::RenderingRefused { .. } => None,
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
