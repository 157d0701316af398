//! `[retention]` through `herald serve`: finished events are pruned in the background
//! while ingest goes on; a retrying delivery and its event stay; `/metrics` reports it.

use serde_json::json;

use crate::harness::*;

fn publish(h: &Herald, id: &str, event: &str) {
    let reply = h.post(&json!({"id": id, "event": event}), ACME_KEY);
    assert_eq!(reply.status, 202, "{id}: {}", reply.text);
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len() + 1..].trim().parse().ok())
}

#[test]
fn finished_events_are_pruned_in_the_background_and_pending_ones_stay() {
    let ok = Receiver::start("retention-ok");
    let down = Receiver::scripted("retention-down", [], Answer::status(500));
    let h = Herald::start(
        "retention",
        &Conf::new()
            // A failed attempt is retried only in an hour: the delivery stays pending.
            .schedule(&["1h"])
            .webhook("acme", "ok", &ok)
            .webhook("acme", "down", &down)
            .subscribe("acme", "ok", &["capsule.create", "host.down"])
            .subscribe("acme", "down", &["capsule.create"])
            .raw(
                "[retention]\nevents = \"1s\"\nattempts = \"1s\"\ndead = \"1s\"\ninterval = \"300ms\"\nbatch = 2\n",
            ),
    );
    publish(&h, "evt_retrying", "capsule.create");
    let finished: Vec<String> = (0..6).map(|i| format!("evt_done_{i}")).collect();
    for id in &finished {
        publish(&h, id, "host.down");
    }
    let deliveries = h.wait_deliveries("evt_retrying", ACME_KEY, "one failed attempt", |d| {
        d.len() == 2 && d.iter().all(|d| d["attempts"] == 1)
    });
    let retrying = deliveries
        .iter()
        .find(|d| d["channel"] == "down")
        .expect("the delivery to the failing channel");
    assert_eq!(retrying["status"], "pending", "{retrying}");
    let retrying_id = retrying["id"].as_str().unwrap().to_string();

    // The finished events go, in batches of 2, while events keep arriving.
    let mut n = 0;
    wait_until("every finished event pruned", WAIT, || {
        publish(&h, &format!("evt_new_{n}"), "capsule.destroy");
        n += 1;
        let left: Vec<&String> = finished
            .iter()
            .filter(|id| h.get(&format!("/v1/events/{id}"), ACME_KEY).status != 404)
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still stored: {left:?}"))
        }
    });
    h.wait_for_log("retention: pruned finished rows");

    // The retrying delivery, its attempt and its event are all still there.
    let (delivery, attempts) = h.wait_delivery(&retrying_id, ACME_KEY, "still pending", |d, _| {
        d["status"] == "pending"
    });
    assert_eq!(attempts.len(), 1, "{delivery}: its attempt was pruned");
    assert_eq!(h.get("/v1/events/evt_retrying", ACME_KEY).status, 200);

    let metrics = wait_until("the store gauges", WAIT, || {
        let text = h.get("/metrics", ADMIN_TOKEN).text;
        match metric(&text, "herald_oldest_pending_delivery_age_seconds") {
            Some(age) if age > 0.0 => Ok(text),
            _ => Err(text),
        }
    });
    let pruned = metric(&metrics, "herald_pruned_rows_total{table=\"events\"}").unwrap_or(0.0);
    assert!(pruned >= finished.len() as f64, "{metrics}");
    assert!(
        metric(&metrics, "herald_store_size_bytes").is_some_and(|b| b > 0.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "herald_store_rows{table=\"events\"}").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "herald_store_pending_deliveries").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}
