//! Redis sources against the real binary and a real Redis (127.0.0.1:6379, or
//! `HERALD_TEST_REDIS_URL`): entries of a stream delivered and acknowledged only after
//! their commit, invalid ones dead-lettered with their reason, a crash between read and
//! commit, a dead consumer's entries taken over, poison entries, a Redis restart and a
//! deleted group, and Pub/Sub messages shown live and never delivered. Each test works
//! under its own key prefix and deletes it afterwards; a missing Redis fails the test.
//!
//! The Redis restart test runs its own `redis-server` (on a free port, with an
//! append-only file) so that it never restarts the Redis other tests share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use redis::streams::{StreamPendingCountReply, StreamRangeReply};
use serde_json::{Value, json};

use crate::harness::*;
use crate::support::Scratch;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A connection to the test Redis and a key prefix of one test; the prefix's keys are
/// deleted on drop.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
    conn: redis::Connection,
}

impl TestRedis {
    /// Connects to [`redis_url`]; FAILS (never skips) when Redis is not there.
    pub fn connect(test: &str) -> TestRedis {
        TestRedis::connect_to(&redis_url(), test)
    }

    pub fn connect_to(url: &str, test: &str) -> TestRedis {
        let conn = redis::Client::open(url)
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c).map(|_| c));
        let conn = conn.unwrap_or_else(|e| {
            panic!(
                "Redis not reachable at {url} ({e}); start it with: redis-server --daemonize yes \
                 (or set HERALD_TEST_REDIS_URL)"
            )
        });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestRedis {
            url: url.to_string(),
            prefix: format!("herald-test:{test}:{}:{nanos}", std::process::id()),
            conn,
        }
    }

    /// `<prefix>:<name>`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub fn cmd<T: redis::FromRedisValue>(&mut self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `XADD stream * payload <json>`; returns the entry id.
    pub fn xadd(&mut self, stream: &str, payload: &str) -> String {
        self.cmd(&["XADD", stream, "*", "payload", payload])
    }

    /// `XREADGROUP` of up to 10 new entries as `consumer`, as a consumer that then dies.
    pub fn read_as(&mut self, stream: &str, group: &str, consumer: &str) {
        let _: redis::Value = self.cmd(&[
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            "10",
            "STREAMS",
            stream,
            ">",
        ]);
    }

    /// How many entries of `group` are pending (read, not acknowledged).
    pub fn pending(&mut self, stream: &str, group: &str) -> Vec<(String, String, usize)> {
        let reply: StreamPendingCountReply =
            self.cmd(&["XPENDING", stream, group, "-", "+", "1000"]);
        reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.consumer, p.times_delivered))
            .collect()
    }

    /// Every entry of `stream` as (id, fields).
    pub fn entries(&mut self, stream: &str) -> Vec<(String, BTreeMap<String, String>)> {
        let reply: StreamRangeReply = self.cmd(&["XRANGE", stream, "-", "+"]);
        reply
            .ids
            .into_iter()
            .map(|e| {
                let fields = e
                    .map
                    .iter()
                    .map(|(k, v)| {
                        let v: String = redis::from_redis_value_ref(v).unwrap_or_default();
                        (k.clone(), v)
                    })
                    .collect();
                (e.id, fields)
            })
            .collect()
    }

    pub fn wait_no_pending(&mut self, stream: &str, group: &str) {
        wait_until(
            &format!("no entry pending in {stream}/{group}"),
            WAIT,
            || {
                let p = self.pending(stream, group);
                if p.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{p:?}"))
                }
            },
        );
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut self.conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query(&mut self.conn);
        }
    }
}

/// A `[[sources]]` entry for `stream` (team from the payload unless `extra` says so).
pub fn stream_source(url: &str, stream: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"events\"\ntype = \"redis_stream\"\nurl = \"{url}\"\nstream = \"{stream}\"\ngroup = \"herald\"\n{extra}"
    )
}

/// The configuration of most tests: an acme webhook for every durable event, and the
/// source.
fn conf(rx: &Receiver, source: &str) -> Conf {
    Conf::new()
        .webhook("acme", "hook", rx)
        .subscribe("acme", "hook", &["*"])
        .raw(source)
}

/// The deliveries stored for `event_id` once there are `n` and all succeeded.
fn succeeded(h: &Herald, event_id: &str, n: usize) -> Vec<Value> {
    h.wait_deliveries(event_id, ADMIN_TOKEN, "all succeeded", |d| {
        d.len() == n && d.iter().all(|d| d["status"] == "succeeded")
    })
}

fn metrics(h: &Herald) -> String {
    h.get("/metrics", ADMIN_TOKEN).text
}

fn wait_metric(h: &Herald, needle: &str) -> String {
    wait_until(&format!("`{needle}` in /metrics"), WAIT, || {
        let m = metrics(h);
        if m.contains(needle) { Ok(m) } else { Err(m) }
    })
}

#[test]
fn stream_entries_are_delivered_and_acknowledged_after_their_commit() {
    let mut r = TestRedis::connect("stream-basic");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "redis-basic",
        &conf(&rx, &stream_source(&r.url, &stream, "")),
    );
    wait_until("the source connected in /readyz", WAIT, || {
        let ready = h.client().request(Method::GET, "/readyz", None, None);
        if ready.status == 200 && ready.text.contains("events (redis_stream): connected") {
            Ok(())
        } else {
            Err(ready.text)
        }
    });

    r.xadd(
        &stream,
        r#"{"id":"evt_s1","event":"host.down","team_id":"acme"}"#,
    );
    let no_id = r.xadd(&stream, r#"{"event":"capsule.create","team_id":"acme"}"#);
    // A transient type read from the stream is shown live only, as over HTTP.
    r.xadd(
        &stream,
        r#"{"id":"evt_t","event":"capsule.state.changed","team_id":"acme"}"#,
    );
    let requests = rx.wait_for(2, WAIT);
    let ids: BTreeSet<String> = requests.iter().map(Request::event_id).collect();
    // An entry without an id is the event `<stream>:<entry id>`: a redelivery of it is
    // the same event.
    let derived = format!("{stream}:{no_id}");
    assert_eq!(ids, BTreeSet::from(["evt_s1".to_string(), derived.clone()]));
    succeeded(&h, "evt_s1", 1);
    succeeded(&h, &derived, 1);
    r.wait_no_pending(&stream, "herald");

    // The same event again (what a redelivery after a commit whose XACK was lost looks
    // like): acknowledged, stored once, not delivered again.
    r.xadd(
        &stream,
        r#"{"id":"evt_s1","event":"host.down","team_id":"acme"}"#,
    );
    wait_metric(
        &h,
        "herald_source_events_total{source=\"events\",outcome=\"duplicate\"} 1",
    );
    r.wait_no_pending(&stream, "herald");
    rx.assert_stays(2, QUIET);
    succeeded(&h, "evt_s1", 1);
    let m = metrics(&h);
    assert!(
        m.contains("herald_source_events_total{source=\"events\",outcome=\"accepted\"} 3"),
        "{m}"
    );
    let gauges = wait_metric(&h, "herald_source_pending{source=\"events\"} 0");
    assert!(
        gauges.contains("herald_source_lag{source=\"events\"} 0"),
        "{gauges}"
    );
    assert_no_secret("server log", &h.logs());
}

#[test]
fn invalid_entries_are_dead_lettered_with_their_reason_and_do_not_block_the_next() {
    let mut r = TestRedis::connect("stream-dead");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "redis-dead",
        &conf(&rx, &stream_source(&r.url, &stream, "")),
    );
    h.wait_for_log("redis stream source connected");

    let bad = [
        (
            "{not json",
            "malformed JSON at line 1 column 2: key must be a string",
        ),
        (
            r#"{"event":"disk.full","team_id":"acme"}"#,
            "event: event type `disk.full` is not declared in [[event_types]]",
        ),
        (
            r#"{"event":"host.down","team_id":"initech"}"#,
            "team_id: team `initech` is not configured",
        ),
        (
            r#"{"event":"host.down"}"#,
            "team_id: missing; this source takes each event's team from its `team_id` (team_from = \"payload\")",
        ),
        (
            r#"{"event":"host.down","team_id":"acme","actor":{"type":"bot"}}"#,
            "actor.type: unknown variant `bot`, expected one of `user`, `api_key`, `system`",
        ),
        (
            r#"[{"event":"host.down","team_id":"acme"}]"#,
            "(body): a stream entry holds one event object, not a batch",
        ),
    ];
    let mut ids = Vec::new();
    for (payload, _) in &bad {
        ids.push(r.xadd(&stream, payload));
    }
    let other_field: String = r.cmd(&["XADD", &stream, "*", "body", "{}"]);
    r.xadd(
        &stream,
        r#"{"id":"evt_after","event":"host.down","team_id":"acme"}"#,
    );

    let requests = rx.wait_for(1, WAIT);
    assert_eq!(requests[0].event_id(), "evt_after");
    r.wait_no_pending(&stream, "herald");
    // By original entry id (the order within one read is not promised).
    let dead: BTreeMap<String, BTreeMap<String, String>> = r
        .entries(&format!("{stream}:herald-dead"))
        .into_iter()
        .map(|(_, fields)| (fields["id"].clone(), fields))
        .collect();
    assert_eq!(dead.len(), bad.len() + 1, "{dead:#?}");
    for (i, (payload, reason)) in bad.iter().enumerate() {
        let fields = &dead[&ids[i]];
        assert_eq!(fields["payload"], *payload);
        assert!(
            fields["reason"].starts_with(reason),
            "entry {i}: reason {:?}, want {reason:?}",
            fields["reason"]
        );
        assert_eq!(fields["source"], "events");
    }
    assert_eq!(
        dead[&other_field]["reason"],
        "(entry): no field `payload` holding the event"
    );
    wait_metric(
        &h,
        &format!(
            "herald_source_dead_lettered_total{{source=\"events\"}} {}",
            bad.len() + 1
        ),
    );
    rx.assert_stays(1, QUIET);
}

#[test]
fn a_fixed_team_source_refuses_another_teams_event() {
    let mut r = TestRedis::connect("stream-team");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "redis-team",
        &conf(&rx, &stream_source(&r.url, &stream, "team = \"acme\"\n")),
    );
    h.wait_for_log("redis stream source connected");
    r.xadd(
        &stream,
        r#"{"id":"evt_g","event":"host.down","team_id":"globex"}"#,
    );
    r.xadd(&stream, r#"{"id":"evt_a","event":"host.down"}"#);
    assert_eq!(rx.wait_for(1, WAIT)[0].event_id(), "evt_a");
    r.wait_no_pending(&stream, "herald");
    let dead = r.entries(&format!("{stream}:herald-dead"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].1["reason"],
        "team_id: this source publishes for team `acme`, not `globex`"
    );
}

#[test]
fn an_entry_read_but_not_committed_before_a_crash_is_delivered_once_after_restart() {
    let mut r = TestRedis::connect("stream-crash");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let source = stream_source(&r.url, &stream, "consumer = \"node-1\"\n");

    // The state a kill -9 between XREADGROUP and the commit leaves: the entry is in
    // node-1's pending list and not in the store.
    let _: String = r.cmd(&["XGROUP", "CREATE", &stream, "herald", "$", "MKSTREAM"]);
    r.xadd(
        &stream,
        r#"{"id":"evt_c1","event":"host.down","team_id":"acme"}"#,
    );
    r.read_as(&stream, "herald", "node-1");
    assert_eq!(r.pending(&stream, "herald").len(), 1);

    let mut h = Herald::start("redis-crash", &conf(&rx, &source));
    assert_eq!(rx.wait_for(1, WAIT)[0].event_id(), "evt_c1");
    r.wait_no_pending(&stream, "herald");

    // A real kill -9 in the middle of a burst: wherever it lands (read, committed, acked),
    // after the restart every entry is stored once and delivered, and none stays pending.
    let burst: Vec<String> = (0..40).map(|i| format!("evt_b{i}")).collect();
    for id in &burst {
        r.xadd(
            &stream,
            &json!({"id": id, "event": "host.down", "team_id": "acme"}).to_string(),
        );
    }
    h.kill9();
    h.restart();
    r.wait_no_pending(&stream, "herald");
    for id in &burst {
        succeeded(&h, id, 1);
    }
    // At least once to the endpoint, and a repeat carries the same webhook-id.
    let mut webhook_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for req in rx.wait_for(burst.len() + 1, WAIT) {
        webhook_ids
            .entry(req.event_id())
            .or_default()
            .insert(req.webhook_id().to_string());
    }
    for id in &burst {
        assert_eq!(
            webhook_ids.get(id).map(BTreeSet::len),
            Some(1),
            "{id}: {webhook_ids:?}"
        );
    }
}

#[test]
fn entries_added_while_herald_is_down_are_all_delivered_once_after_it_starts() {
    let mut r = TestRedis::connect("stream-down");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let mut h = Herald::start(
        "redis-down",
        &conf(&rx, &stream_source(&r.url, &stream, "")),
    );
    // The first run creates the group (at the stream's end) and delivers one entry.
    h.wait_for_log("redis stream source connected");
    let event = |id: &str| json!({"id": id, "event": "host.down", "team_id": "acme"}).to_string();
    r.xadd(&stream, &event("evt_up"));
    rx.wait_for(1, WAIT);
    r.wait_no_pending(&stream, "herald");
    let status = h.terminate();
    assert!(status.success(), "herald exited with {status} on SIGTERM");

    // While herald is down the producer goes on: nobody reads, the group's lag grows.
    let down: Vec<String> = (0..50).map(|i| format!("evt_down_{i:02}")).collect();
    for id in &down {
        r.xadd(&stream, &event(id));
    }
    let groups: Vec<Vec<redis::Value>> = r.cmd(&["XINFO", "GROUPS", &stream]);
    let lag = groups[0]
        .chunks(2)
        .find(|kv| {
            redis::from_redis_value_ref::<String>(&kv[0])
                .ok()
                .as_deref()
                == Some("lag")
        })
        .and_then(|kv| redis::from_redis_value_ref::<i64>(&kv[1]).ok());
    assert_eq!(lag, Some(50), "{groups:?}");

    h.restart();
    let requests = rx.wait_for(1 + down.len(), WAIT);
    rx.assert_stays(1 + down.len(), QUIET);
    let got: Vec<String> = requests.iter().skip(1).map(Request::event_id).collect();
    let got: BTreeSet<String> = got.into_iter().collect();
    assert_eq!(got, down.iter().cloned().collect::<BTreeSet<_>>());
    r.wait_no_pending(&stream, "herald");
    for id in &down {
        succeeded(&h, id, 1);
    }
}

#[test]
fn a_dead_consumers_entries_are_taken_over_and_poison_entries_dead_lettered() {
    let mut r = TestRedis::connect("stream-claim");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let _: String = r.cmd(&["XGROUP", "CREATE", &stream, "herald", "$", "MKSTREAM"]);
    let orphan = r.xadd(
        &stream,
        r#"{"id":"evt_orphan","event":"host.down","team_id":"acme"}"#,
    );
    let poison = r.xadd(
        &stream,
        r#"{"id":"evt_poison","event":"host.down","team_id":"acme"}"#,
    );
    // A consumer that read both and died; the poison entry was delivered 5 times already
    // (it crashed consumers before).
    r.read_as(&stream, "herald", "ghost");
    let _: redis::Value = r.cmd(&[
        "XCLAIM",
        &stream,
        "herald",
        "ghost",
        "0",
        &poison,
        "RETRYCOUNT",
        "5",
    ]);
    let pending = r.pending(&stream, "herald");
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.1.as_str(), p.2))
            .collect::<Vec<_>>(),
        [("ghost", 1), ("ghost", 5)]
    );

    let h = Herald::start(
        "redis-claim",
        &conf(
            &rx,
            &stream_source(&r.url, &stream, "claim_idle = \"1s\"\nmax_deliveries = 3\n"),
        ),
    );
    assert_eq!(rx.wait_for(1, WAIT)[0].event_id(), "evt_orphan");
    r.wait_no_pending(&stream, "herald");
    let dead = r.entries(&format!("{stream}:herald-dead"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].1["id"], poison);
    assert_eq!(
        dead[0].1["reason"],
        "(entry): delivered 6 times, more than max_deliveries = 3"
    );
    rx.assert_stays(1, QUIET);
    assert!(
        h.logs().contains("took over entries idle past claim_idle"),
        "{}",
        h.logs()
    );
    let _ = orphan;
}

/// A `redis-server` of one test, on a free port, persisting to an append-only file in
/// `dir` (fsync always), so that a restart keeps every acknowledged write.
struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(dir: &std::path::Path) -> OwnRedis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut own = OwnRedis {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        own.spawn();
        own
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); install Redis (apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let url = self.url();
        wait_until("the test's own redis-server answering", WAIT, || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .map_err(|e| e.to_string())
        });
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[test]
fn herald_reconnects_after_a_redis_restart_and_recreates_a_deleted_group() {
    let scratch = Scratch::new("redis-own-server");
    let mut server = OwnRedis::start(&scratch.dir);
    let mut r = TestRedis::connect_to(&server.url(), "stream-restart");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "redis-restart",
        &conf(&rx, &stream_source(&server.url(), &stream, "")),
    );
    h.wait_for_log("redis stream source connected");
    let event = |id: &str| json!({"id": id, "event": "host.down", "team_id": "acme"}).to_string();
    r.xadd(&stream, &event("evt_before"));
    rx.wait_for(1, WAIT);

    // Redis dies (kill -9; the append-only file holds every write) and comes back.
    server.kill9();
    wait_until("/readyz showing the source disconnected", WAIT, || {
        let ready = h.client().request(Method::GET, "/readyz", None, None);
        if ready.text.contains("events (redis_stream): not connected") {
            Ok(())
        } else {
            Err(ready.text)
        }
    });
    server.spawn();
    let mut r = TestRedis::connect_to(&server.url(), "stream-restart-2");
    r.xadd(&stream, &event("evt_after_restart"));
    rx.wait_for(2, WAIT);

    // The group is deleted under herald: it recreates it and goes on.
    let _: i64 = r.cmd(&["XGROUP", "DESTROY", &stream, "herald"]);
    h.wait_for_log("the consumer group disappeared; recreating it");
    r.xadd(&stream, &event("evt_after_destroy"));
    let ids: Vec<String> = rx.wait_for(3, WAIT).iter().map(Request::event_id).collect();
    assert_eq!(
        ids,
        ["evt_before", "evt_after_restart", "evt_after_destroy"]
    );
    r.wait_no_pending(&stream, "herald");
    rx.assert_stays(3, QUIET);
}

#[test]
fn herald_check_locates_every_problem_of_sources_and_cluster_and_hides_passwords() {
    let s = Scratch::new("redis-check");
    let base = Conf::new().render();
    s.write(
        "herald.toml",
        &format!(
            "{base}
[[sources]]
type = \"redis_stream\"
url = \"redis://:hunter2@127.0.0.1:6379\"
stream = \"s\"
team = \"initech\"

[[sources]]
type = \"redis_stream\"
url = \"http://127.0.0.1\"
team_from = \"payload\"
team = \"acme\"

[[sources]]
type = \"kafka\"

[cluster]
live_bus = \"rediss://:hunter2@h\"
"
        ),
    );
    let base_lines = base.lines().count();
    let mut cmd = crate::support::herald();
    cmd.current_dir(&s.dir)
        .args(["check", "herald.toml", "--format", "short"]);
    let out = crate::support::run(cmd, "");
    assert_eq!(out.status.code(), Some(1), "{}", outputs(&out));
    let stderr = crate::support::text(&out.stderr);
    let at = |line: usize, col: usize| format!("herald.toml:{}:{col}: error: ", base_lines + line);
    for want in [
        format!("{}team `initech` is not configured", at(6, 8)),
        format!("{}this source has no `stream`", at(9, 8)),
        format!(
            "{}the Redis url of the source must start with redis://",
            at(10, 7)
        ),
        format!("{}set either `team`", at(11, 13)),
        format!("{}unknown source type `kafka`", at(15, 8)),
        format!(
            "{}the live bus url ([cluster] live_bus) uses TLS",
            at(18, 12)
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&want)),
            "missing `{want}` in:\n{stderr}"
        );
    }
    // The human format shows the source lines, with the URLs' passwords masked.
    let mut cmd = crate::support::herald();
    cmd.current_dir(&s.dir).args(["check", "herald.toml"]);
    let out = crate::support::run(cmd, "");
    let all = outputs(&out);
    assert!(all.contains("team = \"initech\""), "{all}");
    assert!(!all.contains("hunter2"), "a password was printed:\n{all}");
}

#[test]
fn a_pending_entry_deleted_from_the_stream_does_not_block_the_source() {
    let mut r = TestRedis::connect("stream-deleted");
    let stream = r.key("events");
    let rx = Receiver::start("hook");
    let _: String = r.cmd(&["XGROUP", "CREATE", &stream, "herald", "$", "MKSTREAM"]);
    let gone = r.xadd(
        &stream,
        r#"{"id":"evt_gone","event":"host.down","team_id":"acme"}"#,
    );
    r.read_as(&stream, "herald", "node-1");
    let _: i64 = r.cmd(&["XDEL", &stream, &gone]);
    r.xadd(
        &stream,
        r#"{"id":"evt_next","event":"host.down","team_id":"acme"}"#,
    );
    let h = Herald::start(
        "redis-deleted",
        &conf(
            &rx,
            &stream_source(&r.url, &stream, "consumer = \"node-1\"\n"),
        ),
    );
    assert_eq!(rx.wait_for(1, WAIT)[0].event_id(), "evt_next");
    // XAUTOCLAIM (at start, then every claim_idle / 2) drops it from the pending list.
    r.wait_no_pending(&stream, "herald");
    h.wait_for_log("pending entries were deleted from the stream before being ingested");
    assert!(h.logs().contains(&gone), "{}", h.logs());
    rx.assert_stays(1, QUIET);
}
