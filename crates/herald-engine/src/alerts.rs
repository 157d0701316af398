//! Owner alerts: when one of a team's channels is disabled (410), marked failing or its
//! dead letters reach the team's `alert_dead_letters`, one message to the team's alert
//! channel (`[teams.T] alerts`), stored as an internal event with one delivery, so it is
//! retried and listed like any other.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use herald_core::{Event, Outcome, Resource, TeamId, Timestamp};
use herald_store::NewDelivery;

use crate::now;
use crate::state::Inner;

/// The internal event types of alerts; never published by anyone else (`herald.` is ours).
pub(crate) const CHANNEL_DISABLED: &str = "herald.channel.disabled";
pub(crate) const CHANNEL_FAILING: &str = "herald.channel.failing";
pub(crate) const CHANNEL_DEAD_LETTERS: &str = "herald.channel.dead_letters";

/// The subscription index an alert delivery carries: no subscription made it, so no
/// formatter plugin applies.
const NO_SUBSCRIPTION: u32 = u32::MAX;

/// Sends one alert that `channel` of `team` is now `state` ("disabled" or "failing") for
/// `reason`. The caller calls this once per state change. Nothing happens when the team
/// has no alert channel; when the alert channel is the failing one, the alert is logged
/// instead (it would go nowhere).
pub(crate) async fn channel_state_changed(
    inner: &Inner,
    team: &TeamId,
    channel: &str,
    state: &str,
    reason: Option<&str>,
    at: Timestamp,
) {
    let snapshot = inner.snapshot();
    let Some(alerts) = snapshot
        .config
        .teams
        .get(team)
        .and_then(|t| t.alerts.clone())
    else {
        return;
    };
    let how = how_to_enable(team, channel, state);
    if alerts == channel {
        tracing::error!(%team, %channel, state, reason = reason.unwrap_or(""),
            "the alert channel itself is {state}, so no alert can be sent; {how}");
        return;
    }
    let event_type = match state {
        "disabled" => CHANNEL_DISABLED,
        "failing" => CHANNEL_FAILING,
        _ => CHANNEL_DEAD_LETTERS,
    };
    let event = Event {
        id: format!("alert_{}", uuid::Uuid::now_v7().simple()),
        event: event_type.to_string(),
        outcome: Some(Outcome::Error),
        timestamp: at,
        team_id: team.clone(),
        actor: None,
        resource: Some(Resource {
            id: channel.to_string(),
            kind: "channel".to_string(),
        }),
        metadata: BTreeMap::from([
            ("channel".to_string(), channel.to_string()),
            ("state".to_string(), state.to_string()),
            ("how_to_fix".to_string(), how.clone()),
        ]),
        error: Some(format!(
            "channel `{channel}` of team `{team}` is {state}: {}",
            reason.unwrap_or("no reason given")
        )),
    };
    let delivery = NewDelivery {
        id: format!("dlv_{}", uuid::Uuid::now_v7().simple()),
        channel: alerts.clone(),
        subscription: NO_SUBSCRIPTION,
        // Not held: the dispatcher reads it from the store like a retry falling due, which
        // works the same for exclusive and shared stores.
        held: false,
        silence: None,
        dedup: None,
        fold: None,
        // Alerts belong to no subscription, so no formatter applies.
        subscription_name: None,
    };
    match inner.store.accept(vec![(event, vec![delivery])], at).await {
        Ok(_) => {
            tracing::warn!(%team, %channel, alert_channel = %alerts, state, "owner alert queued");
            inner.read_store_now();
        }
        Err(e) => {
            tracing::error!(%team, %channel, state, error = %e, "the owner alert could not be stored; {how}");
        }
    }
}

/// Alerts, once per crossing, for each channel whose dead letters reached its team's
/// `alert_dead_letters` with the deliveries `dead` (just recorded as dead); forgets a
/// channel that fell back under it (e.g. after a replay), so the next crossing alerts again.
pub(crate) async fn dead_letters_added(inner: Arc<Inner>, dead: Vec<String>) {
    let snapshot = inner.snapshot();
    let teams = &snapshot.config.teams;
    if teams.values().all(|t| t.alert_dead_letters.is_none()) {
        return;
    }
    let mut seen = HashSet::new();
    for id in dead {
        let delivery = match inner.store.get_delivery(None, &id).await {
            Ok(Some((delivery, _))) => delivery,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(delivery = %id, error = %e, "reading a dead delivery for the alert threshold failed");
                continue;
            }
        };
        let key = (delivery.team.clone(), delivery.channel.clone());
        let Some(threshold) = teams.get(&key.0).and_then(|t| t.alert_dead_letters) else {
            continue;
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        let count = match inner.store.dead_count(&key.0, &key.1).await {
            Ok(count) => count,
            Err(e) => {
                tracing::error!(team = %key.0, channel = %key.1, error = %e, "counting dead letters failed");
                continue;
            }
        };
        let crossed = {
            let mut alerted = inner.dead_alerted.lock().unwrap_or_else(|e| e.into_inner());
            if count >= threshold {
                alerted.insert(key.clone())
            } else {
                alerted.remove(&key);
                false
            }
        };
        if crossed {
            let reason = format!("{count} dead deliveries (alert_dead_letters = {threshold})");
            channel_state_changed(&inner, &key.0, &key.1, "dead_letters", Some(&reason), now())
                .await;
        }
    }
}

/// What an operator does about it, in words.
fn how_to_enable(team: &TeamId, channel: &str, state: &str) -> String {
    if state == "disabled" {
        format!(
            "fix the endpoint, then re-enable it: POST /v1/channels/{team}/{channel}/enable \
             (or reload the configuration); its deliveries wait until then"
        )
    } else if state == "dead_letters" {
        format!(
            "list them with `herald deliveries --status dead --channel {channel}`, fix the \
             endpoint, then send them again with `herald replay --team {team} --channel \
             {channel} --since TIME --status dead` (POST /v1/replay)"
        )
    } else {
        format!(
            "fix the channel's settings or endpoint; it recovers by itself at its next successful \
             delivery; retry its dead deliveries with `herald replay --team {team} --channel \
             {channel} --since TIME --status dead`"
        )
    }
}
