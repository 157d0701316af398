//! The live stream with Redis: a Pub/Sub source's messages shown live and never
//! delivered, and one live stream across two nodes sharing a Redis live bus (`[cluster]
//! live_bus`), with the same team isolation and filters as on one node. In the first tests
//! each node has its own embedded store; the resume test shares a PostgreSQL schema (see
//! `crate::cluster`), so a client resumes with `Last-Event-ID` on one node the events
//! another node accepted. The last one (one node on PostgreSQL, no Redis) holds a replay's
//! store read up with a table lock: a stream is live from its response head.

use super::*;
use crate::cluster::PgSchema;
use crate::redis::TestRedis;

/// Waits until `/readyz` of `h` shows `line`.
fn wait_ready_line(h: &Herald, line: &str) {
    wait_until(&format!("`{line}` in /readyz"), WAIT, || {
        let ready = h
            .client()
            .request(axum::http::Method::GET, "/readyz", None, None);
        if ready.status == 200 && ready.text.contains(line) {
            Ok(())
        } else {
            Err(ready.text)
        }
    });
}

#[test]
fn pubsub_messages_are_shown_live_and_never_delivered() {
    let mut r = TestRedis::connect("pubsub");
    let channel = r.key("live");
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "redis-pubsub",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"])
            .raw(&format!(
                "[[sources]]\nname = \"live\"\ntype = \"redis_pubsub\"\nurl = \"{}\"\nchannel = \"{channel}\"\n",
                r.url
            )),
    );
    wait_ready_line(&h, "live (redis_pubsub): connected");
    let mut acme = Client::sse(&h, "/v1/stream", &[bearer(ACME_KEY)]).unwrap();
    let mut globex = Client::sse(&h, "/v1/stream", &[bearer(GLOBEX_KEY)]).unwrap();

    // Invalid: counted and logged, nothing shown.
    let _: i64 = r.cmd(&[
        "PUBLISH",
        &channel,
        r#"{"event":"nope.nope","team_id":"acme"}"#,
    ]);
    // A transient event, and a durable type: both live only.
    let _: i64 = r.cmd(&[
        "PUBLISH",
        &channel,
        r#"{"id":"evt_ps1","event":"capsule.state.changed","team_id":"acme"}"#,
    ]);
    let _: i64 = r.cmd(&[
        "PUBLISH",
        &channel,
        r#"{"id":"evt_ps2","event":"host.down","team_id":"acme"}"#,
    ]);
    let _: i64 = r.cmd(&[
        "PUBLISH",
        &channel,
        r#"{"id":"evt_ps3","event":"host.down","team_id":"globex"}"#,
    ]);
    let seen = acme.read_until_event("evt_ps2");
    assert_eq!(
        shapes(&seen),
        ["event evt_ps1 transient", "event evt_ps2 transient"]
    );
    let seen = globex.read_until_event("evt_ps3");
    assert_eq!(shapes(&seen), ["event evt_ps3 transient"]);
    // Never stored, never delivered.
    h.get("/v1/events/evt_ps2", ADMIN_TOKEN)
        .expect_error(404, "not_found");
    rx.assert_stays(0, QUIET);
    let m = h.get("/metrics", ADMIN_TOKEN).text;
    assert!(
        m.contains("herald_source_invalid_total{source=\"live\"} 1"),
        "{m}"
    );
    assert!(
        h.logs().contains("event type `nope.nope` is not declared"),
        "{}",
        h.logs()
    );
}

#[test]
fn two_nodes_share_one_live_stream_with_team_isolation_and_filters() {
    let mut r = TestRedis::connect("cluster-bus");
    let channel = r.key("live");
    // Both nodes also subscribe to one Pub/Sub source, as identically configured nodes do.
    let cluster = |node: &str| {
        Conf::new().raw(&format!(
            "[cluster]\nlive_bus = \"{}\"\nchannel_prefix = \"{}\"\nnode_id = \"{node}\"\n\
             [[sources]]\nname = \"live\"\ntype = \"redis_pubsub\"\nurl = \"{}\"\nchannel = \"{channel}\"\n",
            r.url, r.prefix, r.url
        ))
    };
    let a = Herald::start("cluster-node-a", &cluster("a"));
    let b = Herald::start("cluster-node-b", &cluster("b"));
    wait_ready_line(&a, "live_bus (live_bus): connected");
    wait_ready_line(&b, "live_bus (live_bus): connected");
    wait_ready_line(&a, "live (redis_pubsub): connected");
    wait_ready_line(&b, "live (redis_pubsub): connected");

    let mut acme_all = Client::sse(&a, "/v1/stream", &[bearer(ACME_KEY)]).unwrap();
    let mut acme_host = Client::sse(&a, "/v1/stream?events=host.*", &[bearer(ACME_KEY)]).unwrap();
    let mut globex = Client::sse(&a, "/v1/stream", &[bearer(GLOBEX_KEY)]).unwrap();
    let mut admin = Client::sse(&a, "/v1/stream", &[bearer(ADMIN_TOKEN)]).unwrap();

    // Accepted by node B; seen on node A.
    publish(&b, ACME_KEY, "evt_x1", "capsule.create");
    publish(&b, ACME_KEY, "evt_x2", "host.down");
    publish(&b, ACME_KEY, "evt_x3", TRANSIENT);
    publish(&b, GLOBEX_KEY, "evt_g1", "host.down");
    // And one accepted by A itself: seen once (its own message coming back from Redis is
    // skipped).
    publish(&a, ACME_KEY, "evt_a1", "host.down");

    let seen = acme_all.read_until_event("evt_a1");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_x1 durable id=evt_x1",
            "event evt_x2 durable id=evt_x2",
            "event evt_x3 transient",
            "event evt_a1 durable id=evt_a1"
        ]
    );
    let seen = acme_host.read_until_event("evt_a1");
    assert_eq!(event_ids(&seen), ["evt_x2", "evt_a1"], "{}", tail(&seen));
    let seen = globex.read_until_event("evt_g1");
    assert_eq!(shapes(&seen), ["event evt_g1 durable id=evt_g1"]);
    let seen = admin.read_until_event("evt_a1");
    let ids = event_ids(&seen);
    for id in ["evt_x1", "evt_x2", "evt_x3", "evt_g1", "evt_a1"] {
        assert_eq!(ids.iter().filter(|i| **i == id).count(), 1, "{id}: {ids:?}");
    }

    // A Pub/Sub message reaches both nodes by itself: node A's clients see it once, not
    // once more relayed by node B. B relays in order, so once B has handled the message,
    // anything B accepts after it reaches A after any relayed copy would have.
    let _: i64 = r.cmd(&[
        "PUBLISH",
        &channel,
        r#"{"id":"evt_p1","event":"capsule.state.changed","team_id":"acme"}"#,
    ]);
    wait_until("node B handled the Pub/Sub message", WAIT, || {
        let m = b.get("/metrics", ADMIN_TOKEN).text;
        if m.contains("herald_source_events_total{source=\"live\",outcome=\"live\"} 1") {
            Ok(())
        } else {
            Err(m)
        }
    });
    publish(&b, ACME_KEY, "evt_x5", "host.down");
    let seen = acme_all.read_until_event("evt_x5");
    assert_eq!(
        shapes(&seen),
        ["event evt_p1 transient", "event evt_x5 durable id=evt_x5"]
    );

    // Team isolation holds after: globex's next message is its own, not acme's.
    publish(&b, ACME_KEY, "evt_x4", "host.down");
    publish(&b, GLOBEX_KEY, "evt_g2", "host.down");
    let seen = globex.read_until_event("evt_g2");
    assert!(seen.iter().all(|m| m.team() == "globex"), "{}", tail(&seen));
    assert_eq!(event_ids(&seen), ["evt_g2"]);
}

#[test]
fn sse_resume_on_one_node_replays_what_another_node_accepted_then_goes_live() {
    let schema = PgSchema::new();
    let r = TestRedis::connect("cluster-resume");
    let node = |name: &str| {
        Conf::new()
            .postgres(&schema.url, &schema.name)
            .raw(&format!(
                "[cluster]\nlive_bus = \"{}\"\nchannel_prefix = \"{}\"\nnode_id = \"{name}\"\n",
                r.url, r.prefix
            ))
    };
    let a = Herald::start("cluster-resume-a", &node("a"));
    let b = Herald::start("cluster-resume-b", &node("b"));
    wait_ready_line(&a, "live_bus (live_bus): connected");
    wait_ready_line(&b, "live_bus (live_bus): connected");

    // All accepted by node B before any client resumes on node A. B publishes them on the
    // bus after its replies (its relay to Redis runs on its own), so a live client of node
    // A waits until they all reached A: a client resuming on A then finds them in the store
    // and not still on their way to A's live stream.
    let mut watching = Client::sse(&a, "/v1/stream", &[bearer(ADMIN_TOKEN)]).unwrap();
    publish(&b, GLOBEX_KEY, "evt_g0", "host.down");
    publish(&b, ACME_KEY, "evt_c1", "capsule.create");
    publish(&b, ACME_KEY, "evt_c2", "host.down");
    publish(&b, ACME_KEY, "evt_t1", TRANSIENT);
    publish(&b, GLOBEX_KEY, "evt_g1", "host.down");
    publish(&b, ACME_KEY, "evt_c3", "capsule.destroy");
    let seen = watching.read_until_event("evt_c3");
    assert_eq!(
        event_ids(&seen),
        ["evt_g0", "evt_c1", "evt_c2", "evt_t1", "evt_g1", "evt_c3"]
    );
    drop(watching);

    // acme on node A resumes after evt_c1: node B's later durable acme events, in order;
    // not the transient one (never stored), not globex's.
    let resume = |key: &str, last: &str| vec![bearer(key), ("last-event-id", last.to_string())];
    let mut acme = Client::sse(&a, "/v1/stream", &resume(ACME_KEY, "evt_c1")).unwrap();
    let seen = acme.read_until_event("evt_c3");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_c2 durable id=evt_c2",
            "event evt_c3 durable id=evt_c3"
        ]
    );
    // globex resumes its own: after evt_g0, only evt_g1.
    let mut globex = Client::sse(&a, "/v1/stream", &resume(GLOBEX_KEY, "evt_g0")).unwrap();
    let seen = globex.read_until_event("evt_g1");
    assert_eq!(shapes(&seen), ["event evt_g1 durable id=evt_g1"]);
    // An id of another team's event is unknown to globex: a reset, nothing of acme's.
    let mut probing = Client::sse(&a, "/v1/stream", &resume(GLOBEX_KEY, "evt_c1")).unwrap();
    // The admin's replay spans the teams.
    let mut admin = Client::sse(&a, "/v1/stream", &resume(ADMIN_TOKEN, "evt_c1")).unwrap();
    let seen = admin.read_until_event("evt_c3");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_c2 durable id=evt_c2",
            "event evt_g1 durable id=evt_g1",
            "event evt_c3 durable id=evt_c3"
        ]
    );

    // Then live, still across nodes: node B's next events reach node A's clients, a
    // transient one included, each team seeing only its own.
    publish(&b, ACME_KEY, "evt_t2", TRANSIENT);
    publish(&b, GLOBEX_KEY, "evt_g2", "host.down");
    publish(&b, ACME_KEY, "evt_c4", "host.down");
    let seen = acme.read_until_event("evt_c4");
    assert_eq!(
        shapes(&seen),
        ["event evt_t2 transient", "event evt_c4 durable id=evt_c4"]
    );
    let seen = globex.read_until_event("evt_g2");
    assert_eq!(shapes(&seen), ["event evt_g2 durable id=evt_g2"]);
    let seen = probing.read_until_event("evt_g2");
    assert_eq!(shapes(&seen), ["reset", "event evt_g2 durable id=evt_g2"]);
    let reason = seen[0].data["reason"].as_str().expect("a reason");
    assert!(reason.contains("evt_c1"), "{reason}");
    let seen = admin.read_until_event("evt_c4");
    assert_eq!(
        event_ids(&seen),
        ["evt_t2", "evt_g2", "evt_c4"],
        "{}",
        tail(&seen)
    );

    // And the other way round: a client on node B resumes what node A accepted.
    publish(&a, ACME_KEY, "evt_a1", "capsule.create");
    let mut on_b = Client::sse(&b, "/v1/stream", &resume(ACME_KEY, "evt_c4")).unwrap();
    let seen = on_b.read_until_event("evt_a1");
    assert_eq!(shapes(&seen), ["event evt_a1 durable id=evt_a1"]);
    drop(r);
}

/// A stream is live from its response head even while its replay's first store read is
/// still running: what is published once the client has the head reaches it, after the
/// replay or after the `reset` of an unknown `Last-Event-ID` (which reads nothing more).
/// The read is held up by a lock on the events table, taken by the test.
#[test]
fn a_stream_is_live_from_its_head_while_its_replay_still_reads() {
    let schema = PgSchema::new();
    let h = Herald::start(
        "stream-slow-replay",
        &Conf::new().postgres(&schema.url, &schema.name),
    );
    publish(&h, ACME_KEY, "evt_s1", "host.down");

    let lock = block_on(async {
        let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .expect("connect to PostgreSQL");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {}.events IN ACCESS EXCLUSIVE MODE",
                schema.name
            ))
            .await
            .expect("lock the events table");
        client
    });
    let resume = |last: &str| vec![bearer(ACME_KEY), ("last-event-id", last.to_string())];
    let mut resumed = Client::sse(&h, "/v1/stream", &resume("evt_s1")).unwrap();
    let mut unknown = Client::sse(&h, "/v1/stream", &resume("evt_nope")).unwrap();
    // Both have their heads; neither replay can have read the store yet. A transient event
    // is never stored, so it is accepted while the table is locked.
    publish(&h, ACME_KEY, "evt_t1", TRANSIENT);
    block_on(lock.batch_execute("COMMIT")).expect("unlock the events table");
    publish(&h, ACME_KEY, "evt_s2", "capsule.create");

    let seen = resumed.read_until_event("evt_s2");
    assert_eq!(
        shapes(&seen),
        ["event evt_t1 transient", "event evt_s2 durable id=evt_s2"]
    );
    let seen = unknown.read_until_event("evt_s2");
    assert_eq!(
        shapes(&seen),
        [
            "reset",
            "event evt_t1 transient",
            "event evt_s2 durable id=evt_s2"
        ]
    );
}
