//! Reloads keep queued work (issue 15, item 1): a delivery waiting for its retry keeps the
//! subscription it was planned for, whatever the new configuration's order.

use std::time::Duration;

use herald_plugins::build::plugin_wasm;
use serde_json::json;

use crate::harness::*;
use crate::support::text;

const SLACK_SUB: &str = "[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.*\"]\nformatter = \"slack\"\n";

/// A Slack-formatted body has `blocks` and no herald envelope; the built-in one is the
/// envelope.
fn slack_shaped(request: &Request) -> bool {
    let body = request.json();
    body.get("event").is_none() && body["blocks"].as_array().is_some_and(|b| !b.is_empty())
}

#[test]
fn a_subscription_inserted_at_the_top_does_not_change_a_queued_deliverys_formatter() {
    // The first attempt fails, so the delivery waits for its retry across the reload.
    let hook = Receiver::scripted("reload-order", [Answer::status(503)], Answer::status(200));
    let plugin = format!(
        "[plugins.slack]\npath = \"{}\"\ntimeout = \"2s\"\n",
        plugin_wasm("slack").display()
    );
    let before = Conf::new()
        .schedule(&["3s"])
        .webhook("acme", "hook", &hook)
        .raw(SLACK_SUB)
        .raw(&plugin);
    let h = Herald::start("reload-order", &before);
    h.post(
        &json!({"id": "evt_order", "event": "capsule.create", "outcome": "error"}),
        ACME_KEY,
    )
    .expect(202);
    let first = hook.wait_for(1, WAIT);
    assert!(slack_shaped(&first[0]), "{}", first[0].json());

    // A new subscription (no formatter) at the top of the list: the queued delivery's
    // subscription is now the second one.
    let after = Conf::new()
        .schedule(&["3s"])
        .webhook("acme", "hook", &hook)
        .subscribe("acme", "hook", &["host.down"])
        .raw(SLACK_SUB)
        .raw(&plugin);
    h.write_config(&after.render());
    assert_eq!(
        h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200),
        json!({"reloaded": true})
    );
    let both = hook.wait_for(2, Duration::from_secs(20));
    assert!(
        slack_shaped(&both[1]),
        "the retry was rendered by another subscription's formatter: {}",
        both[1].json()
    );
    // The delivery names its subscription by a stable name, not a position.
    wait_until("the delivery succeeded", WAIT, || {
        let event = h.get("/v1/events/evt_order", ACME_KEY).expect(200);
        let delivery = &event["deliveries"][0];
        let named = delivery["subscription_name"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        if delivery["status"] == "succeeded" && named {
            Ok(())
        } else {
            Err(event.to_string())
        }
    });
}

/// Team acme's channel `hook` (at `receiver`) with one subscription, and `extra` TOML.
fn hook_conf(channel: &str, receiver: &Receiver, extra: &str) -> Conf {
    Conf::new()
        .schedule(&["200ms", "200ms", "200ms"])
        .webhook("acme", channel, receiver)
        .subscribe("acme", channel, &["capsule.*"])
        .raw(extra)
}

/// Reloads `conf` through the API and asserts it was taken.
fn reload(h: &Herald, conf: &Conf) {
    h.write_config(&conf.render());
    assert_eq!(
        h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200),
        json!({"reloaded": true})
    );
}

/// The deliveries `GET /v1/deliveries?…` lists for `key`.
fn deliveries(h: &Herald, query: &str, key: &str) -> Vec<serde_json::Value> {
    h.get(&format!("/v1/deliveries?{query}"), key).expect(200)["deliveries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Publishes `n` acme events, waits until the failing `hook` saw each once, renames the
/// channel away (a reload), and waits until all `n` deliveries are `orphaned`.
fn orphan_deliveries(h: &Herald, hook: &Receiver, renamed: &Conf, n: usize) -> Vec<String> {
    for i in 0..n {
        h.post(
            &json!({"id": format!("evt_orphan_{i}"), "event": "capsule.create"}),
            ACME_KEY,
        )
        .expect(202);
    }
    hook.wait_for(n, WAIT);
    reload(h, renamed);
    wait_until("every delivery orphaned", WAIT, || {
        let all = deliveries(h, "channel=hook", ACME_KEY);
        let orphaned: Vec<String> = all
            .iter()
            .filter(|d| d["status"] == "orphaned")
            .map(|d| d["id"].as_str().unwrap_or_default().to_string())
            .collect();
        if orphaned.len() == n {
            Ok(orphaned)
        } else {
            Err(serde_json::to_string_pretty(&all).unwrap_or_default())
        }
    })
}

#[test]
fn a_renamed_channel_keeps_its_queued_deliveries_as_orphaned_until_the_name_returns() {
    // The endpoint fails, so the deliveries are waiting for retries when the reload lands.
    let hook = Receiver::scripted("orphans", [], Answer::status(503));
    let before = hook_conf("hook", &hook, "");
    let h = Herald::start("reload-orphans", &before);
    let renamed = hook_conf("renamed", &hook, "");
    let ids = orphan_deliveries(&h, &hook, &renamed, 3);

    // Held, not attempted, no budget used: the attempt count stays, nothing is dead.
    let counts: Vec<u64> = ids
        .iter()
        .map(|id| {
            let body = h.get(&format!("/v1/deliveries/{id}"), ACME_KEY).expect(200);
            assert_eq!(body["delivery"]["status"], "orphaned", "{body}");
            let error = body["delivery"]["last_error"].as_str().unwrap_or_default();
            assert!(
                error.contains("`hook`"),
                "the reason names the channel: {body}"
            );
            body["delivery"]["attempts"].as_u64().unwrap()
        })
        .collect();
    let seen = hook.count();
    hook.assert_stays(seen, QUIET);
    assert!(deliveries(&h, "status=dead", ACME_KEY).is_empty());
    // The CLI lists them too.
    let out = h.cli("deliveries", ACME_KEY, &["--status", "orphaned"], "");
    assert!(out.status.success(), "{}", outputs(&out));
    for id in &ids {
        assert!(text(&out.stdout).contains(id.as_str()), "{}", outputs(&out));
    }

    // The name comes back: the orphans are re-attached and delivered.
    hook.set_default(Answer::status(200));
    reload(&h, &before);
    wait_until("the orphans delivered", WAIT, || {
        let done = deliveries(&h, "channel=hook&status=succeeded", ACME_KEY);
        if done.len() == ids.len() {
            Ok(())
        } else {
            Err(format!("{done:?}"))
        }
    });
    for (id, before) in ids.iter().zip(counts) {
        let body = h.get(&format!("/v1/deliveries/{id}"), ACME_KEY).expect(200);
        assert_eq!(
            body["delivery"]["attempts"].as_u64(),
            Some(before + 1),
            "one more attempt, the one that delivered: {body}"
        );
    }
}

#[test]
fn orphaned_deliveries_move_to_another_channel_and_retry_names_the_missing_one() {
    let hook = Receiver::scripted("orphans-move", [], Answer::status(503));
    let other = Receiver::start("orphans-move-other");
    let before = hook_conf("hook", &hook, "");
    let h = Herald::start("reload-orphans-move", &before);
    let renamed = hook_conf("newhook", &other, "");
    let ids = orphan_deliveries(&h, &hook, &renamed, 2);

    // A retry cannot send to a channel that does not exist: 409, naming it.
    let reply = h.post_empty(&format!("/v1/deliveries/{}/retry", ids[0]), ACME_KEY);
    let error = reply.expect_error(409, "orphaned");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("`hook`"), "{error}");
    assert!(message.contains("/v1/deliveries/move"), "{error}");

    // The target must be one of the team's channels.
    let bad = json!({"from_channel": "hook", "to_channel": "nowhere"});
    let error = h
        .client()
        .request(
            axum::http::Method::POST,
            "/v1/deliveries/move",
            Some(ACME_KEY),
            Some(("application/json", bad.to_string().into_bytes())),
        )
        .expect_error(422, "invalid_move");
    assert_eq!(error["field"], "to_channel", "{error}");

    let moved = move_deliveries(
        &h,
        ACME_KEY,
        json!({"from_channel": "hook", "to_channel": "newhook", "status": "orphaned"}),
    )
    .expect(200);
    assert_eq!(moved["moved"], 2, "{moved}");
    let got = other.wait_for(2, WAIT);
    let mut delivered: Vec<String> = got.iter().map(|r| r.webhook_id().to_string()).collect();
    delivered.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(delivered, want, "same delivery ids, now through `newhook`");
    wait_until("the moved deliveries succeeded", WAIT, || {
        let done = deliveries(&h, "channel=newhook&status=succeeded", ACME_KEY);
        if done.len() == 2 {
            Ok(())
        } else {
            Err(format!("{done:?}"))
        }
    });
}

fn move_deliveries(h: &Herald, key: &str, body: serde_json::Value) -> ApiReply {
    h.client().request(
        axum::http::Method::POST,
        "/v1/deliveries/move",
        Some(key),
        Some(("application/json", body.to_string().into_bytes())),
    )
}

#[test]
fn a_team_can_move_only_its_own_orphaned_deliveries() {
    let hook = Receiver::scripted("orphans-tenancy", [], Answer::status(503));
    let other = Receiver::start("orphans-tenancy-other");
    // globex has a channel named like acme's target, so a leak would have somewhere to go.
    let globex = format!(
        "[teams.globex.channels.newhook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
        other.url()
    );
    let before = hook_conf("hook", &hook, &globex);
    let h = Herald::start("reload-orphans-tenancy", &before);
    let renamed = hook_conf("newhook", &other, &globex);
    orphan_deliveries(&h, &hook, &renamed, 2);

    // Another team's key may not name acme…
    let error = move_deliveries(
        &h,
        GLOBEX_KEY,
        json!({"team": "acme", "from_channel": "hook", "to_channel": "newhook"}),
    )
    .expect_error(403, "forbidden");
    assert_eq!(error["field"], "team", "{error}");
    // …and without naming it, moves only its own (none).
    let moved = move_deliveries(
        &h,
        GLOBEX_KEY,
        json!({"from_channel": "hook", "to_channel": "newhook"}),
    )
    .expect(200);
    assert_eq!(moved["moved"], 0, "{moved}");
    other.assert_stays(0, QUIET);
    assert_eq!(deliveries(&h, "status=orphaned", ACME_KEY).len(), 2);
    // The admin must say which team.
    let error = move_deliveries(
        &h,
        ADMIN_TOKEN,
        json!({"from_channel": "hook", "to_channel": "newhook"}),
    )
    .expect_error(422, "invalid_move");
    assert_eq!(error["field"], "team", "{error}");
    let moved = move_deliveries(
        &h,
        ADMIN_TOKEN,
        json!({"team": "acme", "from_channel": "hook", "to_channel": "newhook"}),
    )
    .expect(200);
    assert_eq!(moved["moved"], 2, "{moved}");
    other.wait_for(2, WAIT);
}
