//! Reloads keep queued work (issue 15, item 1): a delivery waiting for its retry keeps the
//! subscription it was planned for, whatever the new configuration's order.

use std::time::Duration;

use herald_plugins::build::plugin_wasm;
use serde_json::json;

use crate::harness::*;

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
