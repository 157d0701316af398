//! Grouping, digests and throttling end to end (issue 11), against real webhook
//! receivers: one signed `herald.digest` document per group and window, counts that add
//! up, open groups that survive a restart, throttles that fold the excess, dedup before
//! grouping, and tenancy. No timing is asserted beyond "not before it was due": a digest
//! never arrives before its group_wait (or window) has passed since the events were
//! published.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

/// A failed `capsule.create` in `region`.
fn failure(id: &str, region: &str) -> Value {
    json!({"id": id, "event": "capsule.create", "outcome": "error",
           "resource": {"type": "sandbox", "id": format!("sb_{id}")},
           "metadata": {"region": region}})
}

/// A subscription of acme's channel `hook` to `capsule.create`, with `extra` lines.
fn grouped(extra: &str) -> String {
    format!(
        "\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"capsule.create\"]\n{extra}\n"
    )
}

/// The requests that are digests and the event ids of the others (sorted).
fn split(requests: &[Request]) -> (Vec<&Request>, Vec<String>) {
    let (digests, singles): (Vec<&Request>, Vec<&Request>) = requests
        .iter()
        .partition(|r| r.json()["type"] == "herald.digest");
    let mut ids: Vec<String> = singles.iter().map(|r| r.event_id()).collect();
    ids.sort();
    (digests, ids)
}

/// The delivery of event `id` that is not a digest.
fn member(deliveries: &[Value]) -> &Value {
    deliveries
        .iter()
        .find(|d| d.get("digest_id").is_some() || d["status"] == "suppressed")
        .unwrap_or_else(|| panic!("no member delivery in {deliveries:?}"))
}

/// The ids of the events a digest body lists, in order.
fn listed_ids(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {body}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts `request` is a digest and returns its body.
fn digest(request: &Request) -> Value {
    let body = request.json();
    assert_eq!(body["type"], "herald.digest", "{body}");
    assert_eq!(request.webhook_id(), body["id"].as_str().unwrap(), "{body}");
    body
}

/// The deliveries of event `id` once none is pending.
fn settled(herald: &Herald, id: &str, key: &str) -> Vec<Value> {
    herald.wait_deliveries(id, key, "all settled", |d| {
        !d.is_empty() && d.iter().all(|d| d["status"] != "pending")
    })
}

#[test]
fn fifty_events_within_group_wait_are_one_digest_per_group() {
    let rx = Receiver::start("hook");
    let herald = Herald::start(
        "grouping-fifty",
        &Conf::new().webhook("acme", "hook", &rx).raw(&grouped(
            "group_by = [\"metadata.region\"]\ngroup_wait = \"1s\"\ngroup_interval = \"1m\"\nmax_group_size = 20",
        )),
    );
    // 30 in eu and 20 in us, interleaved, in one request: well within group_wait.
    let events: Vec<Value> = (0..50)
        .map(|i| failure(&format!("e{i:02}"), if i % 5 < 3 { "eu" } else { "us" }))
        .collect();
    let published = Instant::now();
    herald.post(&json!(events), ACME_KEY).expect(202);
    let requests = rx.wait_for(2, WAIT);
    rx.assert_stays(2, QUIET);
    let mut seen = BTreeSet::new();
    for request in &requests {
        assert!(
            request.at >= published + Duration::from_secs(1),
            "sent before group_wait"
        );
        let body = digest(request);
        let region = body["labels"][0][1].as_str().unwrap().to_string();
        assert_eq!(
            body["labels"],
            json!([["metadata.region", region]]),
            "{body}"
        );
        let expected: Vec<String> = (0..50)
            .filter(|i| (i % 5 < 3) == (region == "eu"))
            .map(|i| format!("e{i:02}"))
            .collect();
        assert_eq!(body["total"], expected.len(), "{region}");
        // The first max_group_size, in the order they were published; the rest counted.
        assert_eq!(listed_ids(&body), expected[..20], "{region}");
        assert_eq!(
            (&body["listed"], &body["more"]),
            (&json!(20), &json!(expected.len() - 20))
        );
        assert_eq!(body["team"], "acme");
        assert_eq!(body["kind"], "group");
        seen.insert(region);
    }
    assert_eq!(seen, BTreeSet::from(["eu".to_string(), "us".to_string()]));
    // Every event is recorded as grouped into the digest that was sent for its region.
    let digest_ids: BTreeSet<String> = requests
        .iter()
        .map(|r| r.webhook_id().to_string())
        .collect();
    for i in [0, 3, 49] {
        let deliveries = settled(&herald, &format!("e{i:02}"), ACME_KEY);
        let member = member(&deliveries);
        assert_eq!(member["status"], "grouped", "{member}");
        assert!(
            digest_ids.contains(member["digest_id"].as_str().unwrap()),
            "{member}"
        );
    }
}

#[test]
fn the_next_events_of_a_live_group_wait_for_group_interval() {
    let rx = Receiver::start("hook");
    let herald = Herald::start(
        "grouping-interval",
        &Conf::new().webhook("acme", "hook", &rx).raw(&grouped(
            "group_by = [\"event\"]\ngroup_wait = \"1s\"\ngroup_interval = \"2s\"",
        )),
    );
    let first = Instant::now();
    herald.post(&failure("a1", "eu"), ACME_KEY).expect(202);
    let requests = rx.wait_for(1, WAIT);
    assert!(requests[0].at >= first + Duration::from_secs(1));
    assert_eq!(listed_ids(&digest(&requests[0])), ["a1"]);
    // Two more at once: one more message, not before the interval after the first was due.
    herald
        .post(&json!([failure("a2", "eu"), failure("a3", "us")]), ACME_KEY)
        .expect(202);
    let requests = rx.wait_for(2, WAIT);
    rx.assert_stays(2, QUIET);
    let second = digest(&requests[1]);
    assert_eq!(listed_ids(&second), ["a2", "a3"]);
    assert_eq!(second["total"], 2);
    assert!(
        requests[1].at >= first + Duration::from_secs(1 + 2),
        "sent before group_interval"
    );
    assert_ne!(requests[0].webhook_id(), requests[1].webhook_id());
}

#[test]
fn a_pending_group_survives_a_restart_and_is_sent_once() {
    let rx = Receiver::start("hook");
    let mut herald = Herald::start(
        "grouping-restart",
        &Conf::new().webhook("acme", "hook", &rx).raw(&grouped(
            "group_by = [\"metadata.region\"]\ngroup_wait = \"3s\"\ngroup_interval = \"3s\"",
        )),
    );
    let published = Instant::now();
    let events: Vec<Value> = (0..5).map(|i| failure(&format!("r{i}"), "eu")).collect();
    herald.post(&json!(events), ACME_KEY).expect(202);
    // Killed with the digest still open and pending, then started again on the same data.
    herald.kill9();
    herald.restart();
    let requests = rx.wait_for(1, WAIT);
    rx.assert_stays(1, QUIET);
    assert!(
        requests[0].at >= published + Duration::from_secs(3),
        "sent before group_wait"
    );
    let body = digest(&requests[0]);
    assert_eq!(body["total"], 5);
    assert_eq!(listed_ids(&body), ["r0", "r1", "r2", "r3", "r4"]);
    // One more event after the restart opens (or joins) a digest of its own and is sent
    // too: the group lives on.
    herald.post(&failure("r5", "eu"), ACME_KEY).expect(202);
    let requests = rx.wait_for(2, WAIT);
    assert_eq!(listed_ids(&digest(&requests[1])), ["r5"]);
    rx.assert_stays(2, QUIET);
}

#[test]
fn a_throttle_folds_the_excess_into_a_digest_that_counts_it() {
    let rx = Receiver::start("hook");
    let shared = Receiver::start("shared");
    let herald = Herald::start(
        "grouping-throttle",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .raw(&grouped("throttle = \"3/2s\""))
            // A channel's throttle counts its subscriptions together.
            .webhook("acme", "shared", &shared)
            .raw("throttle = \"2/2s\"\n")
            .subscribe("acme", "shared", &["host.down"])
            .subscribe("acme", "shared", &["capsule.destroy"]),
    );
    let published = Instant::now();
    let events: Vec<Value> = (0..10).map(|i| failure(&format!("t{i}"), "eu")).collect();
    herald.post(&json!(events), ACME_KEY).expect(202);
    let others: Vec<Value> = (0..5)
        .map(|i| {
            json!({"id": format!("s{i}"),
                   "event": if i % 2 == 0 { "host.down" } else { "capsule.destroy" }})
        })
        .collect();
    herald.post(&json!(others), ACME_KEY).expect(202);

    // The first three one by one, the other seven in one digest at the window's end.
    let requests = rx.wait_for(4, WAIT);
    rx.assert_stays(4, QUIET);
    let (digests, singles) = split(&requests);
    assert_eq!(singles, ["t0", "t1", "t2"]);
    assert_eq!(digests.len(), 1);
    assert!(
        digests[0].at >= published + Duration::from_secs(2),
        "sent before the window ended"
    );
    let body = digest(digests[0]);
    assert_eq!(
        (&body["kind"], &body["limit"], &body["per_seconds"]),
        (&json!("throttle"), &json!(3), &json!(2))
    );
    assert_eq!(body["total"], 7);
    assert_eq!(
        listed_ids(&body),
        ["t3", "t4", "t5", "t6", "t7", "t8", "t9"]
    );
    let folded = settled(&herald, "t5", ACME_KEY);
    assert_eq!(member(&folded)["status"], "grouped", "{folded:?}");
    assert_eq!(member(&folded)["digest_id"], body["id"]);

    let requests = shared.wait_for(3, WAIT);
    shared.assert_stays(3, QUIET);
    let (digests, singles) = split(&requests);
    assert_eq!(singles, ["s0", "s1"]);
    assert_eq!(digests.len(), 1);
    assert_eq!(listed_ids(&digest(digests[0])), ["s2", "s3", "s4"]);
}

#[test]
fn repeats_are_suppressed_before_grouping() {
    let rx = Receiver::start("hook");
    let herald = Herald::start(
        "grouping-dedup",
        &Conf::new().webhook("acme", "hook", &rx).raw(&grouped(
            "dedup_window = \"1h\"\ndedup_key = [\"event\", \"resource.id\"]\ngroup_by = [\"event\"]\ngroup_wait = \"1s\"\ngroup_interval = \"1m\"",
        )),
    );
    let repeat = |id: &str, resource: &str| {
        json!({"id": id, "event": "capsule.create", "outcome": "error",
               "resource": {"type": "sandbox", "id": resource}})
    };
    herald
        .post(
            &json!([
                repeat("d1", "sb_1"),
                repeat("d2", "sb_1"),
                repeat("d3", "sb_2"),
                repeat("d4", "sb_1")
            ]),
            ACME_KEY,
        )
        .expect(202);
    let requests = rx.wait_for(1, WAIT);
    rx.assert_stays(1, QUIET);
    let body = digest(&requests[0]);
    // The repeats of sb_1 are recorded as suppressed and are neither listed nor counted.
    assert_eq!(listed_ids(&body), ["d1", "d3"]);
    assert_eq!(body["total"], 2);
    let first = settled(&herald, "d1", ACME_KEY);
    let first = member(&first);
    assert_eq!(first["digest_id"], body["id"]);
    for id in ["d2", "d4"] {
        let d = settled(&herald, id, ACME_KEY);
        assert_eq!(member(&d)["status"], "suppressed", "{d:?}");
        assert_eq!(member(&d)["duplicate_of"], first["id"], "{d:?}");
    }
}

#[test]
fn a_teams_events_never_reach_another_teams_digest() {
    let acme = Receiver::start("acme");
    let globex = Receiver::start("globex");
    // The same subscription in both teams: the same stable key, the same group keys.
    let sub = |team: &str| {
        format!(
            "\n[[teams.{team}.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\ngroup_by = [\"event\"]\ngroup_wait = \"1s\"\ngroup_interval = \"1m\"\n"
        )
    };
    let herald = Herald::start(
        "grouping-tenancy",
        &Conf::new()
            .webhook("acme", "hook", &acme)
            .webhook("globex", "hook", &globex)
            .raw(&sub("acme"))
            .raw(&sub("globex")),
    );
    let batch = |prefix: &str| -> Value {
        json!(
            (0..6)
                .map(|i| failure(&format!("{prefix}{i}"), "eu"))
                .collect::<Vec<_>>()
        )
    };
    herald.post(&batch("a"), ACME_KEY).expect(202);
    herald.post(&batch("g"), GLOBEX_KEY).expect(202);
    herald.post(&batch("b"), ACME_KEY).expect(202);
    for (rx, team, expected) in [(&acme, "acme", 12), (&globex, "globex", 6)] {
        // However the batches fell into digests: every one of the team's events listed
        // once, none of the other team's.
        let listed = |requests: &[Request]| -> Vec<String> {
            requests
                .iter()
                .flat_map(|r| listed_ids(&digest(r)))
                .collect()
        };
        let requests = wait_until(
            &format!("{expected} events in {team}'s digests"),
            WAIT,
            || {
                let requests = rx.requests();
                if listed(&requests).len() >= expected {
                    Ok(requests)
                } else {
                    Err(format!("{:?}", listed(&requests)))
                }
            },
        );
        rx.assert_stays(requests.len(), QUIET);
        for request in &requests {
            let body = digest(request);
            assert_eq!(body["team"], team, "{body}");
            for event in body["events"].as_array().unwrap() {
                assert_eq!(event["team_id"], team, "{event}");
            }
        }
        let ids = listed(&requests);
        let prefixes: &[&str] = if team == "acme" { &["a", "b"] } else { &["g"] };
        let wanted: BTreeSet<String> = prefixes
            .iter()
            .flat_map(|p| (0..6).map(move |i| format!("{p}{i}")))
            .collect();
        assert_eq!(
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            wanted,
            "{team}"
        );
        assert_eq!(ids.len(), expected, "{team}: listed twice: {ids:?}");
    }
    // Another team's digest is not found through the API either.
    let digest_id = globex.requests()[0].webhook_id().to_string();
    herald
        .get(&format!("/v1/deliveries/{digest_id}"), ACME_KEY)
        .expect(404);
}

#[test]
fn a_0_2_0_plugin_renders_digests_and_a_0_1_0_plugins_fall_back_to_the_built_in_one() {
    let modern = Receiver::start("modern");
    let legacy = Receiver::start("legacy");
    let plugin = |name: &str, crate_name: &str| {
        format!(
            "[plugins.{name}]\npath = \"{}\"\ntimeout = \"5s\"\n",
            herald_plugins::build::plugin_wasm(crate_name).display()
        )
    };
    let sub = |channel: &str, formatter: &str| {
        format!(
            "\n[[teams.acme.subscriptions]]\nchannel = \"{channel}\"\nevents = [\"capsule.create\"]\n\
             formatter = \"{formatter}\"\nformatter_settings = {{ format = \"json\" }}\n\
             group_by = [\"event\"]\ngroup_wait = \"1s\"\ngroup_interval = \"1m\"\n"
        )
    };
    let failing = Receiver::start("failing");
    let herald = Herald::start(
        "grouping-plugins",
        &Conf::new()
            .webhook("acme", "modern", &modern)
            .webhook("acme", "legacy", &legacy)
            .webhook("acme", "failing", &failing)
            .raw(&sub("modern", "echo"))
            .raw(&sub("legacy", "legacy"))
            .raw(&sub("failing", "echo").replace(
                "format = \"json\"",
                "format = \"json\", digest_fail = \"no digests today\"",
            ))
            .raw(&plugin("echo", "fixture-echo"))
            .raw(&plugin("legacy", "fixture-v0-1")),
    );
    let events: Vec<Value> = (0..3).map(|i| failure(&format!("p{i}"), "eu")).collect();
    herald.post(&json!(events), ACME_KEY).expect(202);

    // The 0.2.0 plugin's own digest body.
    let requests = modern.wait_for(1, WAIT);
    modern.assert_stays(1, QUIET);
    let body = requests[0].json();
    assert_eq!(body["digest"], requests[0].webhook_id(), "{body}");
    assert_eq!(body["total"], 3, "{body}");
    assert_eq!(body["events"], json!(["p0", "p1", "p2"]), "{body}");
    assert_eq!(body["channel"], "webhook", "{body}");

    // The 0.1.0 plugin cannot render digests: the built-in digest, with no error recorded.
    let requests = legacy.wait_for(1, WAIT);
    legacy.assert_stays(1, QUIET);
    let body = digest(&requests[0]);
    assert_eq!(listed_ids(&body), ["p0", "p1", "p2"]);
    let (delivery, attempts) =
        herald.wait_delivery(requests[0].webhook_id(), ACME_KEY, "succeeded", |d, _| {
            d["status"] == "succeeded"
        });
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert!(attempts[0]["error"].is_null(), "{attempts:?}");

    // A plugin failing on the digest: the built-in digest goes out, the failure recorded.
    let requests = failing.wait_for(1, WAIT);
    failing.assert_stays(1, QUIET);
    assert_eq!(listed_ids(&digest(&requests[0])), ["p0", "p1", "p2"]);
    let (_, attempts) =
        herald.wait_delivery(requests[0].webhook_id(), ACME_KEY, "succeeded", |d, _| {
            d["status"] == "succeeded"
        });
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("formatter `echo` failed on the digest")
            && error.contains("no digests today"),
        "{attempts:?}"
    );
}

#[test]
fn two_nodes_on_postgres_fold_into_shared_digests_listing_every_event_once() {
    let schema = crate::cluster::PgSchema::new();
    let rx = Receiver::start("hook");
    let conf = Conf::new()
        .postgres(&schema.url, &schema.name)
        .webhook("acme", "hook", &rx)
        .raw(&grouped(
            "group_by = [\"metadata.region\"]\ngroup_wait = \"2s\"\ngroup_interval = \"2s\"",
        ));
    let a = Herald::start("grouping-pg-a", &conf);
    let b = Herald::start("grouping-pg-b", &conf);
    let published = Instant::now();
    // Both nodes fold into the same groups at the same time.
    let threads: Vec<_> = [(a.client(), "a"), (b.client(), "b")]
        .into_iter()
        .map(|(client, node)| {
            std::thread::spawn(move || {
                for batch in 0..2 {
                    let events: Vec<Value> = (0..10)
                        .map(|i: u32| {
                            let region = if i.is_multiple_of(2) { "eu" } else { "us" };
                            failure(&format!("{node}{batch}_{i}"), region)
                        })
                        .collect();
                    client.post(&json!(events), ACME_KEY).expect(202);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // However the events fell into digests: each listed exactly once, in a digest of its
    // own region, none sent before its group_wait.
    let listed = |requests: &[Request]| -> usize {
        requests.iter().map(|r| listed_ids(&digest(r)).len()).sum()
    };
    let requests = wait_until("40 events in the digests", WAIT, || {
        let requests = rx.requests();
        if listed(&requests) >= 40 {
            Ok(requests)
        } else {
            Err(format!("{} listed", listed(&requests)))
        }
    });
    rx.assert_stays(requests.len(), QUIET);
    let mut seen = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for request in &requests {
        assert!(
            request.at >= published + Duration::from_secs(2),
            "sent before group_wait"
        );
        assert!(
            ids.insert(request.webhook_id().to_string()),
            "a digest sent twice"
        );
        let body = digest(request);
        let region = body["labels"][0][1].as_str().unwrap().to_string();
        let listed = listed_ids(&body);
        assert_eq!(body["total"], listed.len(), "{body}");
        for id in listed {
            let i: usize = id.rsplit('_').next().unwrap().parse().unwrap();
            assert_eq!(
                region,
                if i.is_multiple_of(2) { "eu" } else { "us" },
                "{id} in {region}"
            );
            assert!(seen.insert(id.clone()), "{id} listed twice");
        }
    }
    assert_eq!(seen.len(), 40);
}
