//! Cluster mode end to end: several `herald serve` processes on one PostgreSQL schema
//! (the real server on 127.0.0.1:5432, database `test`, or `HERALD_TEST_DATABASE_URL`),
//! with no load balancer in front — events are posted to the nodes directly.
//!
//! Each test makes its own schema (`herald_e2e_<random>`) and drops it at the end. A
//! PostgreSQL that is not there fails the test with what to start; never a skip.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    ACME_KEY, ADMIN_TOKEN, Answer, Conf, Herald, QUIET, Receiver, WAIT, block_on, wait_until,
};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A schema of its own on the test server, dropped with everything in it at the end.
pub(crate) struct PgSchema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl PgSchema {
    pub(crate) fn new() -> PgSchema {
        let url = database_url();
        let name = format!(
            "herald_e2e_{:016x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id()) << 32
        );
        block_on(async {
            if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                panic!(
                    "PostgreSQL not reachable at {} ({e}): start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                     (trust auth, database `test`), or point HERALD_TEST_DATABASE_URL at one",
                    url.split('@').next_back().unwrap_or(&url)
                );
            }
        });
        PgSchema { url, name }
    }

    /// One number from a query against this schema.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        let sql = sql.replace("{schema}", &self.name);
        block_on(async {
            let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0)
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        let url = self.url.clone();
        // Its own runtime: a drop may run while a test unwinds inside `block_on`.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

fn conf(schema: &PgSchema, url: &str, receiver: &Receiver) -> Conf {
    Conf::new()
        .postgres(url, &schema.name)
        .webhook("acme", "hook", receiver)
        .subscribe("acme", "hook", &["*"])
}

fn post_event(node: &Herald, id: &str) -> u16 {
    node.post(&json!({"id": id, "event": "capsule.create"}), ACME_KEY)
        .status
}

/// `requests` are events `evt_000`… `evt_{n-1}`, each exactly once, each with its own
/// `webhook-id`.
fn assert_each_delivered_once(requests: &[crate::harness::Request], n: usize) {
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for r in requests {
        *per_event.entry(r.event_id()).or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let expected: BTreeSet<String> = (0..n).map(|i| format!("evt_{i:03}")).collect();
    assert_eq!(per_event.keys().cloned().collect::<BTreeSet<_>>(), expected);
    let webhook_ids: BTreeSet<&str> = requests.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(webhook_ids.len(), n, "one webhook-id per delivery");
}

#[test]
fn two_nodes_deliver_each_event_exactly_once_and_store_a_repeat_once() {
    const EVENTS: usize = 60;
    let schema = PgSchema::new();
    let receiver = Receiver::start("cluster");
    let conf = conf(&schema, &schema.url, &receiver);
    let a = Herald::start("cluster-a", &conf);
    let b = Herald::start("cluster-b", &conf);
    for i in 0..EVENTS {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(post_event(node, &format!("evt_{i:03}")), 202, "event {i}");
    }
    // A publisher retrying through the other node: stored once, answered as a duplicate.
    let again = b.post(
        &json!({"id": "evt_000", "event": "capsule.create"}),
        ACME_KEY,
    );
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["duplicate"], true, "{}", again.text);

    let requests = receiver.wait_for(EVENTS, WAIT);
    receiver.assert_stays(EVENTS, QUIET);
    assert_each_delivered_once(&requests, EVENTS);
    assert_eq!(
        schema.count("SELECT count(*) FROM {schema}.events"),
        EVENTS as i64
    );
    // Both nodes read every delivery's record (one shared store).
    let id = requests[0].webhook_id().to_string();
    for node in [&a, &b] {
        let reply = node.get(&format!("/v1/deliveries/{id}"), ACME_KEY);
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(
            reply.json()["delivery"]["status"],
            "succeeded",
            "{}",
            reply.text
        );
    }
}

/// The successful attempts this node made itself, from its own `/metrics` (counters are
/// per process; the record is shared).
fn succeeded_here(node: &Herald) -> u64 {
    let reply = node.get("/metrics", ADMIN_TOKEN);
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply
        .text
        .lines()
        .filter(|l| {
            l.starts_with("herald_deliveries_total{")
                && l.contains("channel=\"hook\"")
                && l.contains("outcome=\"succeeded\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|n| n as u64)
        .sum()
}

#[test]
fn three_nodes_share_a_burst_each_event_delivered_once_and_every_node_works() {
    const EVENTS: usize = 300;
    let schema = PgSchema::new();
    let receiver = Receiver::start("cluster3");
    let conf = conf(&schema, &schema.url, &receiver);
    let nodes = [
        Herald::start("cluster3-a", &conf),
        Herald::start("cluster3-b", &conf),
        Herald::start("cluster3-c", &conf),
    ];
    // Posted round-robin from three publishers at once, so the nodes accept and claim
    // concurrently.
    let count = nodes.len();
    std::thread::scope(|scope| {
        for (n, node) in nodes.iter().enumerate() {
            scope.spawn(move || {
                for i in (n..EVENTS).step_by(count) {
                    assert_eq!(post_event(node, &format!("evt_{i:03}")), 202, "event {i}");
                }
            });
        }
    });

    let requests = receiver.wait_for(EVENTS, WAIT * 2);
    // No node was killed and no lease expired: not one duplicate is acceptable.
    receiver.assert_stays(EVENTS, QUIET);
    assert_each_delivered_once(&requests, EVENTS);
    assert_eq!(
        schema.count("SELECT count(*) FROM {schema}.deliveries WHERE status = 'succeeded'"),
        EVENTS as i64
    );
    assert_eq!(
        schema.count("SELECT count(*) FROM {schema}.attempts"),
        EVENTS as i64,
        "one attempt per delivery"
    );
    // Each node made some of the attempts, and together exactly one per delivery.
    let per_node = wait_until("every node's attempts in its /metrics", WAIT, || {
        let counts: Vec<u64> = nodes.iter().map(succeeded_here).collect();
        if counts.iter().sum::<u64>() == EVENTS as u64 {
            Ok(counts)
        } else {
            Err(format!("succeeded attempts per node: {counts:?}"))
        }
    });
    assert!(
        per_node.iter().all(|n| *n > 0),
        "a node did none of the work: {per_node:?}"
    );
}

#[test]
fn a_node_killed_mid_stream_has_its_leases_taken_over_after_expiry() {
    const EVENTS: usize = 24;
    let schema = PgSchema::new();
    // Slow answers keep most of node A's claimed deliveries waiting at the kill.
    let receiver = Receiver::scripted(
        "takeover",
        [],
        Answer::status(200).after(Duration::from_millis(300)),
    );
    let conf = conf(&schema, &schema.url, &receiver).concurrency_per_channel(2);
    let mut a = Herald::start("takeover-a", &conf);
    let b = Herald::start("takeover-b", &conf);
    for i in 0..EVENTS {
        assert_eq!(post_event(&a, &format!("evt_{i:03}")), 202, "event {i}");
    }
    receiver.wait_for(2, WAIT);
    a.kill9();
    let leased = schema.count(
        "SELECT count(*) FROM {schema}.deliveries WHERE status = 'pending' AND lease_token IS NOT NULL",
    );
    assert!(leased > 0, "node A held no lease when it was killed");
    // B takes every lease A held once it expires (4 × timeout + 30 s: 34 s here), and
    // every accepted event arrives; one in flight at the kill may arrive twice.
    let lease = Duration::from_secs(34);
    wait_until(
        "every accepted event delivered after the takeover",
        lease + WAIT * 2,
        || {
            let got: BTreeSet<String> = receiver.event_ids().into_iter().collect();
            if got.len() == EVENTS {
                Ok(())
            } else {
                Err(format!("{} of {EVENTS} events", got.len()))
            }
        },
    );
    wait_until("every delivery recorded as succeeded", WAIT, || {
        let pending =
            schema.count("SELECT count(*) FROM {schema}.deliveries WHERE status <> 'succeeded'");
        if pending == 0 {
            Ok(())
        } else {
            Err(format!("{pending} not succeeded"))
        }
    });
    drop(b);
}

/// A TCP proxy in front of PostgreSQL that can cut the database off (closing every
/// connection and refusing new ones) and let it back: "the database went away", without
/// touching the server other tests use.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    /// Bumped by `cut`: connections opened under an older generation close.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener = block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (open2, generation2) = (Arc::clone(&open), Arc::clone(&generation));
        crate::harness::spawn_on_runtime(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                // The generation is read before the open flag (`cut` clears the flag,
                // then bumps the generation): a connection accepted while a cut happens
                // is either refused or has an older generation and is closed.
                let born = generation2.load(Ordering::SeqCst);
                if !open2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let generation = Arc::clone(&generation2);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut c, mut s) = (client, server);
                    let copy = tokio::io::copy_bidirectional(&mut c, &mut s);
                    let watch = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = watch => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            open,
            generation,
        }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[test]
fn postgres_going_away_answers_503_and_loses_nothing_acknowledged() {
    let schema = PgSchema::new();
    let upstream = {
        let url = &schema.url;
        let host_port = url
            .split('@')
            .next_back()
            .and_then(|rest| rest.split('/').next())
            .unwrap_or("127.0.0.1:5432");
        host_port
            .parse::<SocketAddr>()
            .expect("HERALD_TEST_DATABASE_URL with an IP:port host")
    };
    let proxy = Proxy::start(upstream);
    let proxied = schema
        .url
        .replacen(&upstream.to_string(), &proxy.addr.to_string(), 1);
    // The first delivery is answered slowly: its attempt is in flight when the database
    // goes, so its record can only be written after it comes back.
    let receiver = Receiver::scripted(
        "outage",
        [Answer::status(200).after(Duration::from_millis(1500))],
        Answer::status(200),
    );
    let node = Herald::start("outage", &conf(&schema, &proxied, &receiver));
    let mut acknowledged = vec!["evt_in_flight".to_string()];
    assert_eq!(post_event(&node, "evt_in_flight"), 202);
    receiver.wait_for(1, WAIT);
    for i in 0..5 {
        let id = format!("evt_before_{i}");
        assert_eq!(post_event(&node, &id), 202);
        acknowledged.push(id);
    }
    assert_eq!(node.get("/readyz", "").status, 200);

    proxy.cut();
    let refused = wait_until("ingest refused with 503", WAIT, || {
        let reply = node.post(
            &json!({"id": "evt_during", "event": "capsule.create"}),
            ACME_KEY,
        );
        match reply.status {
            503 => Ok(reply),
            202 => {
                // Raced the cut: it was stored, so it counts as acknowledged.
                Err("accepted before the cut took effect".to_string())
            }
            other => Err(format!("HTTP {other}: {}", reply.text)),
        }
    });
    let body = refused.expect_error(503, "store_unavailable");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing was stored"), "{body}");
    // The proxy notices a cut within 20 ms per connection, so a probe may still get
    // through on a pooled connection for that long.
    let ready = wait_until("/readyz failing on the database", WAIT, || {
        let ready = node.get("/readyz", "");
        match ready.status {
            503 => Ok(ready),
            other => Err(format!("HTTP {other}: {}", ready.text)),
        }
    });
    assert!(ready.text.contains("database"), "{}", ready.text);

    // The slow attempt ends during the outage: its record waits, retried, in memory.
    node.wait_for_log("recording attempts failed; trying again");

    proxy.restore();
    wait_until("ready again", WAIT, || {
        match node.get("/readyz", "").status {
            200 => Ok(()),
            other => Err(format!("HTTP {other}")),
        }
    });
    // The refused event is sent again, as a publisher would.
    wait_until("the refused event accepted", WAIT, || {
        match post_event(&node, "evt_during") {
            202 | 200 => Ok(()),
            other => Err(format!("HTTP {other}")),
        }
    });
    acknowledged.push("evt_during".into());
    for i in 0..3 {
        let id = format!("evt_after_{i}");
        assert_eq!(post_event(&node, &id), 202);
        acknowledged.push(id);
    }
    // A claim or accept whose reply was lost in the cut may have committed: its row then
    // stays leased until the lease expires (4 × timeout + 30 s: 34 s here) and is sent
    // after that, as at-least-once allows. So the wait covers one lease.
    let lease = Duration::from_secs(34);
    wait_until(
        "every acknowledged event delivered",
        lease + WAIT * 2,
        || {
            let got: BTreeSet<String> = receiver.event_ids().into_iter().collect();
            let missing: Vec<_> = acknowledged
                .iter()
                .filter(|id| !got.contains(*id))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    );
    // Every delivery's record reached the store once it was back, the in-flight one too.
    wait_until(
        "every delivery recorded as succeeded",
        lease + WAIT * 2,
        || {
            let open = schema
                .count("SELECT count(*) FROM {schema}.deliveries WHERE status <> 'succeeded'");
            let total = schema.count("SELECT count(*) FROM {schema}.deliveries");
            if open == 0 && total == acknowledged.len() as i64 {
                Ok(())
            } else {
                Err(format!("{open} of {total} not succeeded"))
            }
        },
    );
}

#[test]
fn herald_migrate_upgrades_once_and_a_newer_schema_or_a_backup_is_refused_clearly() {
    use crate::harness::outputs;
    use crate::support::{Scratch, herald, run, text};

    let schema = PgSchema::new();
    let receiver = Receiver::start("migrate");
    let scratch = Scratch::new("cluster-migrate");
    let config = scratch.write(
        "herald.toml",
        &conf(&schema, &schema.url, &receiver).render(),
    );
    let command = |args: &[&str]| {
        let mut cmd = herald();
        cmd.args(args).arg("--config").arg(&config);
        run(cmd, "")
    };
    let first = command(&["migrate"]);
    assert!(first.status.success(), "{}", outputs(&first));
    assert_eq!(
        text(&first.stdout).trim(),
        format!(
            "schema `{}` migrated from version 0 to {}",
            schema.name,
            herald_store::POSTGRES_SCHEMA_VERSION
        )
    );
    let again = command(&["migrate"]);
    assert!(again.status.success(), "{}", outputs(&again));
    assert!(
        text(&again.stdout).contains("nothing to do"),
        "{}",
        outputs(&again)
    );

    // herald does not copy a PostgreSQL store: it says what to use instead.
    let backup = command(&["backup", "copy.db"]);
    assert!(!backup.status.success(), "{}", outputs(&backup));
    assert!(
        text(&backup.stderr).contains("pg_dump"),
        "{}",
        outputs(&backup)
    );

    // A schema a newer herald migrated: this one refuses to serve on it, and says why.
    block_on(async {
        let (client, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "INSERT INTO {}.schema_migrations (version) VALUES (99)",
                schema.name
            ))
            .await
            .unwrap();
    });
    let serve = command(&["serve"]);
    assert!(!serve.status.success(), "{}", outputs(&serve));
    let stderr = text(&serve.stderr);
    assert!(
        stderr.contains(&format!(
            "has version 99, newer than the {} this herald knows",
            herald_store::POSTGRES_SCHEMA_VERSION
        )),
        "{}",
        outputs(&serve)
    );
    crate::harness::assert_no_secret("herald serve's output", &stderr);
}

/// Node `node`'s only delivery of event `id` once it is no longer pending.
fn settled(node: &Herald, id: &str) -> serde_json::Value {
    node.wait_deliveries(id, ACME_KEY, "one delivery, settled", |d| {
        d.len() == 1 && d[0]["status"] != "pending"
    })[0]
        .clone()
}

/// Publishes events to `node` until one's delivery is `wanted`; every one before it must
/// have been `before`. Returns the one that was `wanted`. No timing is asserted: the other
/// node's change is waited for by publishing.
fn publish_until(node: &Herald, tag: &str, before: &str, wanted: &str) -> serde_json::Value {
    for n in 0..400 {
        let id = format!("evt_{tag}_{n:03}");
        assert_eq!(post_event(node, &id), 202, "{id}");
        let delivery = settled(node, &id);
        if delivery["status"] == wanted {
            return delivery;
        }
        assert_eq!(delivery["status"], before, "{delivery}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no delivery became {wanted} after 400 events");
}

/// A silence created on one node stops deliveries accepted by the other, and expiring it
/// on the first lets the other send again: each node reads the silences other nodes
/// changed from the shared store, without a restart.
#[test]
fn a_silence_created_or_expired_on_one_node_applies_on_the_other() {
    let schema = PgSchema::new();
    let receiver = Receiver::start("cluster-silence");
    let conf = conf(&schema, &schema.url, &receiver);
    let a = Herald::start("cluster-silence-a", &conf);
    let b = Herald::start("cluster-silence-b", &conf);
    // B is running and sending before the silence exists.
    assert_eq!(settled_after_post(&b, "evt_before"), "succeeded");
    let in_an_hour = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        herald_core::Timestamp::from_unix_nanos(now.as_nanos() as i128 + 3_600_000_000_000)
            .to_string()
    };
    let created = a
        .client()
        .request(
            axum::http::Method::POST,
            "/v1/silences",
            Some(ACME_KEY),
            Some((
                "application/json",
                json!({"matchers": {"event": "capsule.*"}, "ends_at": in_an_hour,
                       "comment": "maintenance", "created_by": "ops@acme"})
                .to_string()
                .into_bytes(),
            )),
        )
        .expect(201);
    let id = created["silence"]["id"].as_str().unwrap().to_owned();
    let silenced = publish_until(&b, "during", "succeeded", "silenced");
    assert_eq!(silenced["silence_id"], id.as_str(), "{silenced}");

    a.client()
        .post_empty(&format!("/v1/silences/{id}/expire"), ACME_KEY)
        .expect(200);
    publish_until(&b, "after", "silenced", "succeeded");
}

fn settled_after_post(node: &Herald, id: &str) -> serde_json::Value {
    assert_eq!(post_event(node, id), 202, "{id}");
    settled(node, id)["status"].clone()
}
