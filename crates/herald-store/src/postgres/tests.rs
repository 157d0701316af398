//! Tests of the PostgreSQL store against the real server on this machine (127.0.0.1:5432,
//! database `test`, or `HERALD_TEST_DATABASE_URL`): the shared conformance suite, then
//! what only a shared store promises — lease takeover after expiry, fenced finishes with
//! a stale token, concurrent claimers that never claim the same delivery, one event
//! accepted by two nodes stored once, one dedup key accepted by two nodes at once sent
//! once, one group fed by two nodes while a third claims its digests never losing a
//! member, migrations refusing a newer schema.
//!
//! Each test works in a schema of its own (`herald_test_<random>`), dropped at the end. A
//! server that is not there FAILS the test, naming it: never a silent skip.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use herald_core::{Event, Outcome, TeamId};

use super::{PostgresOptions, PostgresStore, SCHEMA_VERSION};
use crate::conformance::{Backend, at};
use crate::{Accepted, Finish, NewAttempt, NewDelivery, Next, Store, StoreError};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A schema of its own on the test server, dropped (with everything in it) when dropped.
struct TestSchema {
    options: PostgresOptions,
}

impl TestSchema {
    async fn new() -> TestSchema {
        let url = url();
        let schema = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
        // Fail loudly and say what to start when the server is not there.
        if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            panic!(
                "PostgreSQL not reachable at {} ({e}): start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 (trust auth, database `test`), or point HERALD_TEST_DATABASE_URL at one",
                url.split('@').next_back().unwrap_or(&url)
            );
        }
        TestSchema {
            options: PostgresOptions {
                url,
                pool_size: 4,
                schema,
            },
        }
    }

    async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.options).await.unwrap()
    }

    async fn sql(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&self.options.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.unwrap();
        drop(client);
        let _ = task.await;
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.options.url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.options.schema);
        // Off the runtime: a drop cannot await, and may run while a test unwinds.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                let task = tokio::spawn(conn);
                client.batch_execute(&sql).await?;
                drop(client);
                let _ = task.await;
                Ok::<(), tokio_postgres::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}", self.options.schema);
        }
    }
}

/// The conformance suite's backend: one schema per test, reopened as a restarted node.
struct PostgresBackend {
    schema: Option<TestSchema>,
}

impl PostgresBackend {
    fn new() -> PostgresBackend {
        PostgresBackend { schema: None }
    }

    fn block_on<T>(future: impl Future<Output = T>) -> T {
        tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
    }
}

impl Backend for PostgresBackend {
    fn open(&mut self) -> Arc<dyn Store> {
        let schema = Self::block_on(TestSchema::new());
        let store = Self::block_on(schema.open());
        self.schema = Some(schema);
        Arc::new(store)
    }

    fn reopen(&mut self, store: Arc<dyn Store>) -> Arc<dyn Store> {
        assert_eq!(Arc::strong_count(&store), 1, "close every handle first");
        drop(store);
        let schema = self.schema.as_ref().expect("opened before reopening");
        Arc::new(Self::block_on(schema.open()))
    }
}

mod conformance {
    use super::PostgresBackend;

    crate::store_conformance_tests!(PostgresBackend::new());
}

fn team(name: &str) -> TeamId {
    TeamId::parse(name).unwrap()
}

fn event(team_name: &str, id: &str) -> Event {
    Event {
        id: id.into(),
        event: "capsule.create".into(),
        outcome: Some(Outcome::Error),
        timestamp: at(-5),
        team_id: team(team_name),
        actor: None,
        resource: None,
        metadata: BTreeMap::new(),
        error: None,
    }
}

fn delivery(id: &str) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        channel: "hook".into(),
        subscription: 0,
        subscription_name: None,
        held: false,
        silence: None,
        dedup: None,
        fold: None,
    }
}

fn attempt() -> NewAttempt {
    NewAttempt {
        started_at: at(1),
        duration_ms: 2,
        status_code: Some(200),
        error: None,
        response: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off() {
    let schema = TestSchema::new().await;
    let node_a = schema.open().await;
    let node_b = schema.open().await;
    node_a
        .accept(vec![(event("acme", "e1"), vec![delivery("d1")])], at(0))
        .await
        .unwrap();
    let a = node_a.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].lease_until, at(30));
    // While A's lease runs, B finds nothing (and no retry is due).
    assert!(
        node_b
            .claim_due(at(29), 10, LEASE, &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(node_b.next_due(&[]).await.unwrap(), None);
    // A dies; at the lease's end B takes the delivery over under a new token.
    let b = node_b.claim_due(at(30), 10, LEASE, &[]).await.unwrap();
    assert_eq!(b.len(), 1, "an expired lease is due again");
    assert_eq!(b[0].delivery.id, "d1");
    assert_ne!(b[0].lease, a[0].lease);
    // A comes back with its stale token: nothing it reports is recorded.
    let stale = node_a
        .finish("d1", &a[0].lease, attempt(), Next::Succeeded, at(31))
        .await
        .unwrap_err();
    assert!(matches!(stale, StoreError::LeaseLost { .. }), "{stale}");
    let release = node_a.release("d1", &a[0].lease).await.unwrap_err();
    assert!(matches!(release, StoreError::LeaseLost { .. }), "{release}");
    node_b
        .finish("d1", &b[0].lease, attempt(), Next::Succeeded, at(32))
        .await
        .unwrap();
    let (record, attempts) = node_a.get_delivery(None, "d1").await.unwrap().unwrap();
    assert_eq!(
        (record.attempts, attempts.len()),
        (1, 1),
        "one attempt recorded"
    );
    assert_eq!(record.status, crate::DeliveryStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_with_a_stale_token_in_a_batch_changes_nothing() {
    let schema = TestSchema::new().await;
    let store = schema.open().await;
    store
        .accept(
            vec![(event("acme", "e1"), vec![delivery("d1"), delivery("d2")])],
            at(0),
        )
        .await
        .unwrap();
    let first = store.claim_due(at(0), 10, LEASE, &[]).await.unwrap();
    // Both leases expire and are taken again: the first tokens are stale now.
    let second = store.claim_due(at(31), 10, LEASE, &[]).await.unwrap();
    assert_eq!(second.len(), 2);
    let lease_of = |claims: &[crate::Claimed], id: &str| {
        claims
            .iter()
            .find(|c| c.delivery.id == id)
            .unwrap()
            .lease
            .clone()
    };
    let results = store
        .finish_many(vec![
            Finish {
                delivery_id: "d1".into(),
                lease: lease_of(&first, "d1"),
                attempt: attempt(),
                next: Next::Succeeded,
                now: at(32),
            },
            Finish {
                delivery_id: "d2".into(),
                lease: lease_of(&second, "d2"),
                attempt: attempt(),
                next: Next::Dead,
                now: at(32),
            },
        ])
        .await
        .unwrap();
    assert!(
        matches!(results[0], Err(StoreError::LeaseLost { .. })),
        "{results:?}"
    );
    assert!(results[1].is_ok(), "{results:?}");
    let (d1, attempts) = store.get_delivery(None, "d1").await.unwrap().unwrap();
    assert_eq!(
        (d1.status, d1.attempts, attempts.len()),
        (crate::DeliveryStatus::Pending, 0, 0)
    );
    let (d2, _) = store.get_delivery(None, "d2").await.unwrap().unwrap();
    assert_eq!(d2.status, crate::DeliveryStatus::Dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_claim_the_same_delivery() {
    const DELIVERIES: usize = 600;
    let schema = TestSchema::new().await;
    let setup = schema.open().await;
    let batch: Vec<_> = (0..DELIVERIES / 3)
        .map(|i| {
            let deliveries = (0..3).map(|j| delivery(&format!("d{i}_{j}"))).collect();
            (event("acme", &format!("e{i}")), deliveries)
        })
        .collect();
    setup.accept(batch, at(0)).await.unwrap();
    // Two nodes (two pools), each with several claimers, taking small pages at once.
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let mut tasks = tokio::task::JoinSet::new();
    for node in &nodes {
        for _ in 0..4 {
            let node = Arc::clone(node);
            tasks.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let claims = node.claim_due(at(1), 7, LEASE, &[]).await.unwrap();
                    if claims.is_empty() {
                        return mine;
                    }
                    mine.extend(claims.into_iter().map(|c| c.delivery.id));
                }
            });
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut claimers_with_work = 0;
    while let Some(claimed) = tasks.join_next().await {
        let claimed = claimed.unwrap();
        claimers_with_work += usize::from(!claimed.is_empty());
        total += claimed.len();
        for id in claimed {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!((total, seen.len()), (DELIVERIES, DELIVERIES));
    assert!(claimers_with_work > 1, "the work was shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_accepting_the_same_event_store_it_once() {
    let schema = TestSchema::new().await;
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);
    // Both nodes accept the same 50 events at the same time (a publisher retrying through
    // a load balancer), each with deliveries of its own making.
    let accept_all = |node: Arc<PostgresStore>, tag: &'static str| async move {
        let mut results = Vec::new();
        for i in 0..50 {
            let batch = vec![(
                event("acme", &format!("e{i}")),
                vec![delivery(&format!("d{i}_{tag}"))],
            )];
            results.push(node.accept(batch, at(0)).await.unwrap().remove(0));
        }
        results
    };
    let (a, b) = tokio::join!(
        tokio::spawn(accept_all(Arc::clone(&node_a), "a")),
        tokio::spawn(accept_all(Arc::clone(&node_b), "b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
        assert!(
            matches!(
                (a, b),
                (Accepted::New { .. }, Accepted::Duplicate { .. })
                    | (Accepted::Duplicate { .. }, Accepted::New { .. })
            ),
            "event e{i}: {a:?} and {b:?}"
        );
    }
    let stats = node_a.stats().await.unwrap();
    assert_eq!((stats.events, stats.deliveries), (50, 50), "{stats:?}");
    // The same id within one batch is a duplicate too.
    let twice = vec![
        (event("acme", "x"), vec![delivery("dx1")]),
        (event("acme", "x"), vec![delivery("dx2")]),
    ];
    let results = node_b.accept(twice, at(0)).await.unwrap();
    assert_eq!(
        results,
        [
            Accepted::New {
                id: "x".into(),
                suppressed: Vec::new(),
                folded: Vec::new(),
                opened: Vec::new(),
            },
            Accepted::Duplicate { id: "x".into() }
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_herald_is_refused_and_migrating_is_idempotent() {
    let schema = TestSchema::new().await;
    let report = PostgresStore::migrate_only(&schema.options).await.unwrap();
    assert_eq!((report.from, report.to), (0, SCHEMA_VERSION));
    let again = PostgresStore::migrate_only(&schema.options).await.unwrap();
    assert_eq!((again.from, again.to), (SCHEMA_VERSION, SCHEMA_VERSION));
    schema
        .sql(&format!(
            "INSERT INTO {}.schema_migrations (version) VALUES ({})",
            schema.options.schema,
            SCHEMA_VERSION + 1
        ))
        .await;
    let err = PostgresStore::open(&schema.options).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Open(_)), "{message}");
    assert!(
        message.contains(&format!("version {}", SCHEMA_VERSION + 1))
            && message.contains("newer herald"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_named_without_its_password() {
    // Port 1 on loopback: nothing listens there.
    let options = PostgresOptions {
        url: "postgres://herald:s3cret-pw@127.0.0.1:1/herald".into(),
        pool_size: 1,
        schema: "herald".into(),
    };
    let err = PostgresStore::open(&options).await.unwrap_err();
    let message = err.to_string();
    assert!(err.is_unavailable(), "{message}");
    assert!(message.contains("127.0.0.1:1/herald"), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
    assert!(!format!("{options:?}").contains("s3cret-pw"));
}

#[tokio::test]
async fn schema_names_must_be_plain_identifiers() {
    for good in ["herald", "herald_2", "_x"] {
        assert_eq!(super::valid_schema_name(good), Ok(()), "{good}");
    }
    for bad in ["", "Herald", "2x", "a-b", "a;drop", "pg_herald", "a b"] {
        assert!(super::valid_schema_name(bad).is_err(), "{bad}");
    }
}

/// `events_after` sees no gap: an accept in flight when it runs is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_waits_for_accepts_in_flight() {
    let schema = TestSchema::new().await;
    let store = Arc::new(schema.open().await);
    store
        .accept(vec![(event("acme", "e0"), vec![])], at(0))
        .await
        .unwrap();
    // An accept's transaction holds the events lock shared until it commits: simulate one
    // that is slow to commit, on a connection of its own.
    let (client, conn) = tokio_postgres::connect(&schema.options.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT pg_advisory_xact_lock_shared($1)",
            &[&super::schema::lock_key(&schema.options.schema, "events")],
        )
        .await
        .unwrap();
    let reader = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.events_after(None, "e0", 10).await })
    };
    // The reader waits for the open accept: its lock request shows up as not granted.
    let mut waiting = 0;
    for _ in 0..500 {
        waiting = client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        waiting, 1,
        "events_after did not wait for the accept in flight"
    );
    assert!(!reader.is_finished());
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), Vec::<Event>::new());
}

/// Two nodes accepting the same ids in opposite orders (a publisher's retries of a batch
/// reaching both) may deadlock on the unique key; both still answer, and each event is
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opposite_batches_of_the_same_events_on_two_nodes_both_succeed() {
    let schema = TestSchema::new().await;
    let node_a = Arc::new(schema.open().await);
    let node_b = Arc::new(schema.open().await);
    for round in 0..5 {
        let ids: Vec<String> = (0..1000).map(|i| format!("r{round}_e{i}")).collect();
        let batch = |ids: &[String], tag: &str| -> Vec<(Event, Vec<NewDelivery>)> {
            ids.iter()
                .map(|id| (event("acme", id), vec![delivery(&format!("{id}_{tag}"))]))
                .collect()
        };
        let forward = batch(&ids, "a");
        let mut reversed_ids = ids.clone();
        reversed_ids.reverse();
        let backward = batch(&reversed_ids, "b");
        let (a, b) = tokio::join!(
            {
                let node = Arc::clone(&node_a);
                tokio::spawn(async move { node.accept(forward, at(0)).await })
            },
            {
                let node = Arc::clone(&node_b);
                tokio::spawn(async move { node.accept(backward, at(0)).await })
            }
        );
        let (a, b) = (a.unwrap().unwrap(), b.unwrap().unwrap());
        let new = a.iter().chain(&b).filter(|r| !r.is_duplicate()).count();
        assert_eq!(new, 1000, "round {round}: each event new exactly once");
    }
    let stats = node_a.stats().await.unwrap();
    assert_eq!((stats.events, stats.deliveries), (5000, 5000), "{stats:?}");
}

/// Two nodes (two pools) accepting repeats of one dedup key at the same moment, many at
/// once, send it exactly once: the others are suppressed as duplicates of that one. A
/// check-then-insert without the window row's lock would send it more than once here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dedup_key_raced_on_two_nodes_is_sent_once() {
    const ROUNDS: usize = 10;
    const PER_NODE: usize = 8;
    let schema = TestSchema::new().await;
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for (n, node) in nodes.iter().enumerate() {
            for i in 0..PER_NODE {
                let node = Arc::clone(node);
                let id = format!("r{round}_n{n}_{i}");
                tasks.spawn(async move {
                    let deduped = NewDelivery {
                        subscription_name: Some("sub".into()),
                        dedup: Some(crate::DedupClaim {
                            key: format!("key{round}"),
                            window: Duration::from_secs(600),
                        }),
                        ..delivery(&format!("d_{id}"))
                    };
                    let result = node
                        .accept(vec![(event("acme", &id), vec![deduped])], at(0))
                        .await
                        .unwrap()
                        .remove(0);
                    match result {
                        Accepted::New { suppressed, .. } => (format!("d_{id}"), suppressed),
                        other => panic!("{other:?}"),
                    }
                });
            }
        }
        let mut sent = Vec::new();
        while let Some(outcome) = tasks.join_next().await {
            let (id, suppressed) = outcome.unwrap();
            if suppressed.is_empty() {
                sent.push(id);
            } else {
                assert_eq!(suppressed, [id]);
            }
        }
        assert_eq!(sent.len(), 1, "round {round}: sent {sent:?}");
        // Every other delivery names the one that was sent, and is never due.
        let page = nodes[0]
            .list_deliveries(&crate::DeliveryFilter {
                status: Some(crate::DeliveryStatus::Suppressed),
                limit: 1000,
                ..crate::DeliveryFilter::default()
            })
            .await
            .unwrap();
        let of_round: Vec<_> = page
            .deliveries
            .iter()
            .filter(|d| d.id.starts_with(&format!("d_r{round}_")))
            .collect();
        assert_eq!(of_round.len(), 2 * PER_NODE - 1);
        assert!(
            of_round
                .iter()
                .all(|d| d.duplicate_of.as_deref() == Some(sent[0].as_str())
                    && d.next_attempt_at.is_none()),
            "{of_round:?}"
        );
    }
    let due = nodes[1].claim_due(at(1), 1000, LEASE, &[]).await.unwrap();
    assert_eq!(due.len(), ROUNDS, "one sent delivery per key");
}

/// Two nodes fold many deliveries into one group while a third claims its digests as
/// they fall due (`group_wait` and `group_interval` zero: every digest is due at once, so
/// claims race the accepts all along). Whatever the interleaving, no two digests of the
/// group are open at once, a digest's members never change after its claim (what the
/// claimer read is what it holds at the end), and every member is in exactly one digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fed_by_two_nodes_while_a_third_claims_loses_no_member() {
    const PER_NODE: usize = 40;
    let schema = TestSchema::new().await;
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let claimer = Arc::new(schema.open().await);
    let grouped = |id: &str| NewDelivery {
        subscription_name: Some("sub".into()),
        fold: Some(crate::FoldClaim::Group {
            key: "[]".into(),
            kind: herald_core::DigestKind::Group { labels: vec![] },
            wait: Duration::ZERO,
            interval: Duration::ZERO,
            digest_id: format!("dig_{id}"),
        }),
        ..delivery(id)
    };
    let mut accepts = tokio::task::JoinSet::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..PER_NODE {
            let node = Arc::clone(node);
            let id = format!("n{n}_{i}");
            let d = grouped(&format!("d_{id}"));
            accepts.spawn(async move {
                node.accept(vec![(event("acme", &id), vec![d])], at(0))
                    .await
                    .unwrap()
            });
        }
    }
    // Claim (and read) digests until the accepts are done, then once more.
    let mut read_at_claim = std::collections::BTreeMap::new();
    let claim_round = async |read_at_claim: &mut std::collections::BTreeMap<String, u64>| {
        for claim in claimer.claim_due(at(0), 100, LEASE, &[]).await.unwrap() {
            let members = claimer
                .digest_members(&claim.delivery.id, 1000)
                .await
                .unwrap()
                .unwrap();
            read_at_claim.insert(claim.delivery.id.clone(), members.total);
            claimer
                .finish(
                    &claim.delivery.id,
                    &claim.lease,
                    NewAttempt {
                        started_at: at(0),
                        duration_ms: 1,
                        status_code: Some(200),
                        error: None,
                        response: None,
                    },
                    Next::Succeeded,
                    at(0),
                )
                .await
                .unwrap();
        }
    };
    while !accepts.is_empty() {
        claim_round(&mut read_at_claim).await;
        while let Some(done) = accepts.try_join_next() {
            let accepted = done.unwrap();
            assert!(
                matches!(&accepted[0], Accepted::New { folded, .. } if folded.len() == 1),
                "{accepted:?}"
            );
        }
    }
    claim_round(&mut read_at_claim).await;
    assert!(!read_at_claim.is_empty());
    let mut members = 0;
    for (digest, total_at_claim) in &read_at_claim {
        let now = claimer.digest_members(digest, 1000).await.unwrap().unwrap();
        assert_eq!(
            now.total, *total_at_claim,
            "{digest} gained members after its claim"
        );
        members += now.total;
    }
    assert_eq!(
        members,
        2 * PER_NODE as u64,
        "every member in exactly one digest"
    );
    assert_eq!(
        claimer.queue_depth().await.unwrap(),
        0,
        "no digest left open"
    );
}

/// A schema made by the first PostgreSQL herald (migration 1 only, with a delivery in it)
/// migrates to the current version: its rows read back, the status CHECK now admits the
/// later statuses, and it still refuses one that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_schema_migrates_and_its_status_check_widens_but_still_guards() {
    let schema = TestSchema::new().await;
    let name = &schema.options.schema;
    schema
        .sql(&format!(
            "CREATE SCHEMA {name}; SET search_path TO {name};
             CREATE TABLE schema_migrations (
                 version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
             {}
             INSERT INTO schema_migrations (version) VALUES (1);",
            super::schema::MIGRATIONS[0]
        ))
        .await;
    // Stored by that herald: an event with one pending delivery.
    let body = crate::codec::encode_event(&event("acme", "e1")).unwrap();
    schema
        .sql(&format!(
            "SET search_path TO {name};
             INSERT INTO events (id, team_id, event_type, body, accepted_at)
             VALUES ('e1', 'acme', 'capsule.create', '{}', 0);
             INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, status, next_attempt_at, due_at, created_at, updated_at)
             SELECT 'd1', seq, 'acme', 'e1', 'capsule.create', 'hook', 0, 'pending', 0, 0,
                    0, 0 FROM events;",
            body.replace('\'', "''")
        ))
        .await;
    let report = PostgresStore::migrate_only(&schema.options).await.unwrap();
    assert_eq!((report.from, report.to), (1, SCHEMA_VERSION));
    let store = schema.open().await;
    let (record, _) = store.get_delivery(None, "d1").await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.silence_id, record.duplicate_of),
        (crate::DeliveryStatus::Pending, None, None)
    );
    // Every status herald writes is admitted now …
    let client = store.client().await.unwrap();
    for status in ["suppressed", "silenced", "orphaned", "grouped", "pending"] {
        client
            .execute(
                "UPDATE deliveries SET status = $1 WHERE id = 'd1'",
                &[&status],
            )
            .await
            .unwrap_or_else(|e| panic!("{status}: {e}"));
    }
    // … and the CHECK still guards the column.
    let err = client
        .execute(
            "UPDATE deliveries SET status = 'retrying' WHERE id = 'd1'",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{err}"
    );
}
