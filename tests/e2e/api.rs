//! herald's HTTP API as docs/api.md defines it: ingest replies and idempotency, every
//! error code, tenancy, transient types, the operations endpoints.

use std::collections::BTreeSet;

use axum::http::Method;
use serde_json::{Value, json};

use crate::harness::*;

#[test]
fn the_same_id_twice_is_a_duplicate_even_after_a_restart() {
    let rx = Receiver::start("hook");
    let mut h = Herald::start(
        "api-idempotency",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let event = json!({"id": "evt_idem_1", "event": "capsule.create"});
    assert_eq!(
        h.post(&event, ACME_KEY).expect(202),
        json!({"id": "evt_idem_1"})
    );
    assert_eq!(
        h.post(&event, ACME_KEY).expect(200),
        json!({"id": "evt_idem_1", "duplicate": true})
    );
    rx.wait_for(1, WAIT);
    h.wait_deliveries("evt_idem_1", ACME_KEY, "one succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    rx.assert_stays(1, QUIET);

    // Concurrent publishers of one id: one is accepted, the others are told it is a duplicate.
    let publishers: Vec<_> = (0..8)
        .map(|_| {
            let client = h.client();
            std::thread::spawn(move || {
                client
                    .post(&json!({"id": "evt_race", "event": "host.down"}), ACME_KEY)
                    .status
            })
        })
        .collect();
    let mut statuses: Vec<u16> = publishers.into_iter().map(|p| p.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 202]);
    let requests = rx.wait_for(2, WAIT);
    assert_eq!(requests[1].event_id(), "evt_race");
    rx.assert_stays(2, QUIET);

    // In a batch, duplicates are named by index; a batch of duplicates only is a 200.
    let batch = json!([event, {"id": "evt_idem_2", "event": "host.down"}]);
    assert_eq!(
        h.post(&batch, ACME_KEY).expect(202),
        json!({"ids": ["evt_idem_1", "evt_idem_2"], "duplicates": [0]})
    );
    assert_eq!(
        h.post(&batch, ACME_KEY).expect(200),
        json!({"ids": ["evt_idem_1", "evt_idem_2"], "duplicates": [0, 1]})
    );
    let requests = rx.wait_for(3, WAIT);
    assert_eq!(requests[2].event_id(), "evt_idem_2");
    rx.assert_stays(3, QUIET);

    // Idempotency keys are per team: globex may use the same id.
    let mut globex = event.clone();
    globex["team_id"] = json!("globex");
    assert_eq!(
        h.post(&globex, GLOBEX_KEY).expect(202),
        json!({"id": "evt_idem_1"})
    );

    let status = h.terminate();
    assert!(status.success(), "SIGTERM exit: {status}");
    h.restart();
    assert_eq!(
        h.post(&event, ACME_KEY).expect(200),
        json!({"id": "evt_idem_1", "duplicate": true})
    );
    rx.assert_stays(3, std::time::Duration::from_secs(1));
    let deliveries = h.wait_deliveries("evt_idem_1", ACME_KEY, "one", |d| d.len() == 1);
    assert_eq!(deliveries[0]["status"], "succeeded");
}

#[test]
fn every_documented_error_has_its_status_code_and_shape_and_no_secret() {
    let h = Herald::start(
        "api-errors",
        &Conf::new()
            .max_body_bytes(1024)
            .file("acme", "audit", "audit.jsonl")
            .subscribe("acme", "audit", &["*"]),
    );
    let c = h.client();
    let json_body = |v: &Value| Some(("application/json", v.to_string().into_bytes()));
    let mut replies: Vec<ApiReply> = Vec::new();
    let mut check = |reply: ApiReply, status: u16, code: &str| -> Value {
        let error = reply.expect_error(status, code);
        replies.push(reply);
        error
    };
    let valid = json!({"event": "capsule.create"});

    // 400: not JSON; the message says where.
    let broken = "{\n  \"event\": \"capsule.create\",\n  oops\n}";
    let error = check(
        c.request(
            Method::POST,
            "/v1/events",
            Some(ACME_KEY),
            Some(("application/json", broken.as_bytes().to_vec())),
        ),
        400,
        "malformed_json",
    );
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("line 3") && message.contains("column"),
        "{message}"
    );

    // 401: no token, an unknown token (for ingest and for reads).
    check(
        c.request(Method::POST, "/v1/events", None, json_body(&valid)),
        401,
        "unauthorized",
    );
    check(
        c.request(
            Method::POST,
            "/v1/events",
            Some("not-a-key"),
            json_body(&valid),
        ),
        401,
        "unauthorized",
    );
    check(c.get("/v1/deliveries", "not-a-key"), 401, "unauthorized");

    // 403: a team key publishing for another team.
    check(
        c.post(
            &json!({"event": "capsule.create", "team_id": "globex"}),
            ACME_KEY,
        ),
        403,
        "forbidden",
    );

    // 413: over [server] max_body_bytes = 1024.
    let big = json!({"event": "capsule.create", "metadata": {"note": "x".repeat(2000)}});
    check(c.post(&big, ACME_KEY), 413, "payload_too_large");

    // 415: not application/json.
    check(
        c.request(
            Method::POST,
            "/v1/events",
            Some(ACME_KEY),
            Some(("text/plain", valid.to_string().into_bytes())),
        ),
        415,
        "unsupported_media_type",
    );
    check(
        c.request(
            Method::POST,
            "/v1/events",
            Some(ACME_KEY),
            Some(("", valid.to_string().into_bytes())),
        ),
        415,
        "unsupported_media_type",
    );
    // A parameter does not change the media type.
    let with_charset = c.request(
        Method::POST,
        "/v1/events",
        Some(ACME_KEY),
        Some((
            "application/json; charset=utf-8",
            valid.to_string().into_bytes(),
        )),
    );
    assert_eq!(with_charset.status, 202, "{}", with_charset.text);

    // 422: an undeclared type, a wrong field, a batch naming its bad element.
    check(
        c.post(&json!({"event": "volcano.erupted"}), ACME_KEY),
        422,
        "unknown_event_type",
    );
    let error = check(
        c.post(
            &json!({"event": "capsule.create", "actor": {"type": "robot"}}),
            ACME_KEY,
        ),
        422,
        "invalid_event",
    );
    assert_eq!(error["field"], "actor.type", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("robot"),
        "{error}"
    );
    let error = check(
        c.post(&json!({"id": "has space", "event": "host.down"}), ACME_KEY),
        422,
        "invalid_event",
    );
    assert_eq!(error["field"], "id", "{error}");
    let error = check(
        c.post(
            &json!([
                {"id": "evt_batch_bad_0", "event": "capsule.create"},
                {"id": "evt_batch_bad_1", "event": 42},
                {"id": "evt_batch_bad_2", "event": "host.down"}
            ]),
            ACME_KEY,
        ),
        422,
        "invalid_event",
    );
    assert_eq!(error["field"], "[1].event", "{error}");
    // The batch is atomic: its valid elements were not stored either.
    check(
        c.get("/v1/events/evt_batch_bad_0", ACME_KEY),
        404,
        "not_found",
    );

    // A good batch.
    let batch = json!([
        {"id": "evt_batch_0", "event": "capsule.create"},
        {"id": "evt_batch_1", "event": "capsule.destroy"},
        {"id": "evt_batch_2", "event": "host.down"}
    ]);
    assert_eq!(
        c.post(&batch, ACME_KEY).expect(202),
        json!({"ids": ["evt_batch_0", "evt_batch_1", "evt_batch_2"], "duplicates": []})
    );

    // 404: nothing of that id.
    check(c.get("/v1/events/evt_nope", ACME_KEY), 404, "not_found");
    check(c.get("/v1/deliveries/dlv_nope", ACME_KEY), 404, "not_found");
    check(
        c.post_empty("/v1/deliveries/dlv_nope/retry", ACME_KEY),
        404,
        "not_found",
    );

    // 409: retrying a delivery that succeeded.
    let deliveries = h.wait_deliveries("evt_batch_0", ACME_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    let id = deliveries[0]["id"].as_str().unwrap();
    check(
        c.post_empty(&format!("/v1/deliveries/{id}/retry"), ACME_KEY),
        409,
        "not_retryable",
    );

    for reply in &replies {
        assert_no_secret("an error reply", &reply.text);
    }
    assert_no_secret("the server log", &h.logs());
}

/// A body is one JSON value: anything but whitespace after it makes it malformed, and
/// none of it may be stored (a second concatenated event must not vanish silently).
#[test]
fn bytes_after_the_json_value_make_the_body_malformed() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "api-trailing",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let c = h.client();
    let post = |body: &str| {
        c.request(
            Method::POST,
            "/v1/events",
            Some(ACME_KEY),
            Some(("application/json", body.as_bytes().to_vec())),
        )
    };
    let cases = [
        r#"{"id": "evt_trail_1", "event": "host.down"}{"id": "evt_trail_2", "event": "host.down"}"#,
        r#"{"id": "evt_trail_3", "event": "host.down"} trailing"#,
        r#"[{"id": "evt_trail_4", "event": "host.down"}] x"#,
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|body| {
            let reply = post(body);
            let problem = match reply.error_shape(400) {
                Err(problem) => problem,
                Ok(error) if error["code"] != "malformed_json" => {
                    format!("want code \"malformed_json\", got {error}")
                }
                Ok(_) => return None,
            };
            Some(format!("{body}: {problem}"))
        })
        .collect();
    // Trailing whitespace is still JSON.
    post("{\"id\": \"evt_trail_ok\", \"event\": \"host.down\"}  \n").expect(202);
    assert!(problems.is_empty(), "{problems:#?}");
    rx.wait_for(1, WAIT);
    rx.assert_stays(1, QUIET);
    assert_eq!(rx.event_ids(), ["evt_trail_ok"]);
}

/// "Every error is JSON": also the replies no handler writes (no such route, a method the
/// route lacks, a query string that does not parse).
#[test]
fn errors_outside_the_handlers_are_json_too() {
    let h = Herald::start("api-errors-outside", &Conf::new());
    let c = h.client();
    let cases = [
        (
            "no such route",
            c.get("/v1/no-such-route", ACME_KEY),
            404,
            Some("not_found"),
        ),
        (
            "a method the route lacks",
            c.request(Method::DELETE, "/v1/events", Some(ACME_KEY), None),
            405,
            None,
        ),
        (
            "a query that does not parse",
            c.get("/v1/deliveries?limit=many", ACME_KEY),
            400,
            None,
        ),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(case, reply, status, code)| {
            let problem = match reply.error_shape(*status) {
                Err(problem) => problem,
                Ok(error) if code.is_some_and(|code| error["code"] != code) => {
                    format!("want code {code:?}, got {error}")
                }
                Ok(_) => return None,
            };
            Some(format!("{case}: {problem}"))
        })
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_team_sees_and_touches_only_its_own_rows() {
    let acme_rx = Receiver::start("acme");
    let globex_rx = Receiver::start("globex");
    let h = Herald::start(
        "api-tenancy",
        &Conf::new()
            .webhook("acme", "hook", &acme_rx)
            .subscribe("acme", "hook", &["*"])
            .webhook("globex", "hook", &globex_rx)
            .subscribe("globex", "hook", &["*"]),
    );
    h.post(
        &json!({"id": "evt_ten_acme", "event": "host.down"}),
        ACME_KEY,
    )
    .expect(202);
    h.post(
        &json!({"id": "evt_ten_globex", "event": "host.down"}),
        GLOBEX_KEY,
    )
    .expect(202);
    let acme = h.wait_deliveries("evt_ten_acme", ACME_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    let acme_delivery = acme[0]["id"].as_str().unwrap().to_string();
    let globex = h.wait_deliveries("evt_ten_globex", GLOBEX_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    let globex_delivery = globex[0]["id"].as_str().unwrap().to_string();

    // Another team's rows do not exist for globex.
    h.get("/v1/events/evt_ten_acme", GLOBEX_KEY)
        .expect_error(404, "not_found");
    h.get(&format!("/v1/deliveries/{acme_delivery}"), GLOBEX_KEY)
        .expect_error(404, "not_found");
    h.post_empty(&format!("/v1/deliveries/{acme_delivery}/retry"), GLOBEX_KEY)
        .expect_error(404, "not_found");
    let listed = h
        .get("/v1/deliveries?event_id=evt_ten_acme", GLOBEX_KEY)
        .expect(200);
    assert_eq!(listed["deliveries"], json!([]), "{listed}");
    let listed = h.get("/v1/deliveries", GLOBEX_KEY).expect(200);
    assert!(
        listed["next_cursor"].is_null() || listed["next_cursor"].is_string(),
        "{listed}"
    );
    let ids = delivery_ids(&listed);
    assert_eq!(ids, BTreeSet::from([globex_delivery.clone()]), "{listed}");

    // The admin sees both, and may narrow to one team.
    h.get("/v1/events/evt_ten_acme", ADMIN_TOKEN).expect(200);
    h.get(&format!("/v1/deliveries/{globex_delivery}"), ADMIN_TOKEN)
        .expect(200);
    let listed = h.get("/v1/deliveries", ADMIN_TOKEN).expect(200);
    assert_eq!(
        delivery_ids(&listed),
        BTreeSet::from([acme_delivery.clone(), globex_delivery.clone()]),
        "{listed}"
    );
    let listed = h.get("/v1/deliveries?team=acme", ADMIN_TOKEN).expect(200);
    assert_eq!(
        delivery_ids(&listed),
        BTreeSet::from([acme_delivery]),
        "{listed}"
    );

    // Channels: a team lists and enables only its own.
    let channels = h.get("/v1/channels", GLOBEX_KEY).expect(200);
    let teams: BTreeSet<&str> = channels["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no `channels` array: {channels}"))
        .iter()
        .map(|c| c["team"].as_str().expect("a team"))
        .collect();
    assert_eq!(teams, BTreeSet::from(["globex"]), "{channels}");
    h.post_empty("/v1/channels/acme/hook/enable", GLOBEX_KEY)
        .expect_error(404, "not_found");

    // The admin token acts for every team, ingest included.
    h.post(
        &json!({"id": "evt_ten_admin", "event": "host.down", "team_id": "globex"}),
        ADMIN_TOKEN,
    )
    .expect(202);
    globex_rx.wait_for(2, WAIT);

    // Each event reached its own team's receiver only.
    acme_rx.assert_stays(1, QUIET);
    globex_rx.assert_stays(2, QUIET);
    assert_eq!(acme_rx.event_ids(), ["evt_ten_acme"]);
    assert_eq!(globex_rx.event_ids(), ["evt_ten_globex", "evt_ten_admin"]);
}

fn delivery_ids(listed: &Value) -> BTreeSet<String> {
    listed["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no `deliveries` array: {listed}"))
        .iter()
        .map(|d| d["id"].as_str().expect("delivery id").to_string())
        .collect()
}

#[test]
fn transient_events_are_accepted_but_never_delivered() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "api-transient",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let reply = h
        .post(
            &json!({"id": "evt_blip", "event": "capsule.state.changed"}),
            ACME_KEY,
        )
        .expect(202);
    assert_eq!(reply["id"], "evt_blip", "{reply}");
    // A durable event after it: once that one is delivered, the transient one would have
    // been too.
    h.post(&json!({"id": "evt_after", "event": "host.down"}), ACME_KEY)
        .expect(202);
    rx.wait_for(1, WAIT);
    rx.assert_stays(1, QUIET);
    assert_eq!(rx.event_ids(), ["evt_after"]);
    let listed = h
        .get("/v1/deliveries?event_id=evt_blip", ACME_KEY)
        .expect(200);
    assert_eq!(listed["deliveries"], json!([]), "{listed}");
    h.get("/v1/events/evt_blip", ACME_KEY)
        .expect_error(404, "not_found");
}

#[test]
fn readiness_fails_with_a_reason_when_the_stores_disk_is_full() {
    // No test machine has 8 EiB free: the store's free-space check fails as on a full disk.
    let h = Herald::start(
        "api-ready-disk",
        &Conf::new().store_line("min_free_bytes = 9223372036854775807"),
    );
    let c = h.client();
    let ready = c.request(Method::GET, "/readyz", None, None);
    let body = ready.expect_error(503, "not_ready");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk"), "{body}");
    // Liveness is not readiness: the process still serves.
    let health = c.request(Method::GET, "/healthz", None, None);
    assert_eq!((health.status, health.text.trim()), (200, "ok"));
}

#[test]
fn metrics_need_the_admin_token_unless_made_public() {
    let h = Herald::start("api-metrics-auth", &Conf::new());
    let c = h.client();
    // Metrics name every team and channel: a team key must not read them.
    c.request(Method::GET, "/metrics", None, None)
        .expect_error(401, "unauthorized");
    c.request(Method::GET, "/metrics", Some(ACME_KEY), None)
        .expect_error(403, "forbidden");
    let admin = c.request(Method::GET, "/metrics", Some(ADMIN_TOKEN), None);
    assert_eq!(admin.status, 200, "{}", admin.text);
    assert!(admin.text.contains("herald_queue_depth"), "{}", admin.text);

    let public = Herald::start(
        "api-metrics-public",
        &Conf::new().server_line("metrics_public = true"),
    );
    let open = public.client().request(Method::GET, "/metrics", None, None);
    assert_eq!(open.status, 200, "{}", open.text);
    assert!(open.text.contains("herald_queue_depth"), "{}", open.text);
}

#[test]
fn health_readiness_metrics_and_openapi() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "api-ops",
        &Conf::new()
            .webhook("acme", "hook", &rx)
            .subscribe("acme", "hook", &["*"]),
    );
    let c = h.client();
    let health = c.request(Method::GET, "/healthz", None, None);
    assert_eq!((health.status, health.text.trim()), (200, "ok"));
    let ready = c.request(Method::GET, "/readyz", None, None);
    assert_eq!((ready.status, ready.text.trim()), (200, "ready"));

    h.post(
        &json!({"id": "evt_metrics", "event": "host.down"}),
        ACME_KEY,
    )
    .expect(202);
    rx.wait_for(1, WAIT);
    h.wait_deliveries("evt_metrics", ACME_KEY, "succeeded", |d| {
        d.len() == 1 && d[0]["status"] == "succeeded"
    });
    // Counted samples carry the team; the delivery one may lag the record briefly.
    let metrics = wait_until("the delivery in /metrics", WAIT, || {
        let m = c.request(Method::GET, "/metrics", Some(ADMIN_TOKEN), None);
        if m.status != 200 {
            return Err(format!("HTTP {}: {}", m.status, m.text));
        }
        let has = |name: &str| {
            m.text
                .lines()
                .any(|l| l.starts_with(name) && l.contains("team=\"acme\""))
        };
        if has("herald_events_accepted_total") && has("herald_deliveries_total") {
            Ok(m.text)
        } else {
            Err(m.text)
        }
    });
    for name in ["herald_queue_depth", "herald_attempt_duration_seconds"] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "no `{name}` in:\n{metrics}"
        );
    }
    assert_no_secret("/metrics", &metrics);

    let openapi = c.request(Method::GET, "/openapi.json", None, None);
    let spec = openapi.expect(200);
    assert!(spec["openapi"].is_string(), "{spec}");
    assert!(
        spec["paths"]
            .as_object()
            .is_some_and(|p| p.contains_key("/v1/events")),
        "{spec}"
    );
}
