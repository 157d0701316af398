//! `herald-load cluster` and `herald-load redis-stream`: the cluster-mode benchmarks of
//! issue 10. Both start herald here (its defaults, `[delivery] allow_private_networks`
//! only) on a fresh store — the embedded SQLite store or a fresh schema of a PostgreSQL
//! database — and remove it afterwards.
//!
//! - `cluster`: N nodes on one store; durable ingest with the clients spread round-robin
//!   over the nodes, then a burst to one receiver published round-robin over the nodes
//!   (deliveries/s, publish → received p50/p99, missing, duplicate `webhook-id`s).
//! - `redis-stream`: one node reading a Redis stream (`[[sources]] type = "redis_stream"`);
//!   a producer XADDs N events as fast as it can while the consumer group's lag is sampled
//!   (`XINFO GROUPS`); reports events/s committed by herald (acknowledged: herald XACKs an
//!   entry only after its commit) and the lag over time.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use herald_loadgen::pacer::Schedule;
use herald_loadgen::payload::{EventTemplate, RunIds};
use herald_loadgen::receiver::{self, ReceiverOptions, SENT_AT_KEY};
use herald_loadgen::stats::Micros;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::drive::{self, BodyFn, Waits};
use crate::ingest;
use crate::publish::{Publisher, Server};
use crate::side_by_side::herald::serve;
use crate::side_by_side::process::{Target, prepare};

const KEY: &str = "bench-key";
const ADMIN: &str = "bench-admin";
/// Delivered to the receiver.
const DELIVERED: &str = "bench.ping";
/// Matched by no subscription: durable ingest alone.
const INGEST_ONLY: &str = "bench.ingest";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// The embedded store (herald's default).
    Sqlite,
    /// `[store] backend = "postgres"`, a fresh schema per run.
    Postgres,
}

/// Where the nodes keep their store.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The store backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: Backend,
    /// The PostgreSQL database for `--store postgres` (each run gets its own schema,
    /// dropped at the end).
    #[arg(
        long,
        env = "HERALD_BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,
    /// Scratch directory (configurations, logs, SQLite stores); default under the temp dir.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the scratch directory and the PostgreSQL schema.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// The herald binary (e.g. target/release/herald).
    #[arg(long)]
    herald: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// herald nodes sharing the store (more than one needs `--store postgres`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    nodes: u16,
    /// Ingest: concurrent clients, spread round-robin over the nodes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    ingest_clients: u32,
    /// Ingest: how long to measure, after a 2 s warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ingest_duration: Duration,
    /// Burst: events, each delivered to the one receiver.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events: u64,
    /// Burst: publishing clients, spread round-robin over the nodes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// After the last publish, wait at most this long for the remaining deliveries.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print every figure as JSON after the summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RedisStreamArgs {
    /// The herald binary (e.g. target/release/herald).
    #[arg(long)]
    herald: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// The Redis the stream lives in (keys under `herald-load:<run>:`, deleted at the end).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Entries to XADD.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    events: u64,
    /// XADDs per pipeline (one round trip each).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pipeline: u64,
    /// How often to sample `XINFO GROUPS`.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// Give up when herald has not acknowledged everything this long after the last XADD.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print every sample as JSON after the table.
    #[arg(long)]
    json: bool,
}

/// One run's store: a directory per node (SQLite: one node only) or a schema.
struct Store<'a> {
    args: &'a StoreArgs,
    schema: Option<String>,
}

impl<'a> Store<'a> {
    async fn fresh(args: &'a StoreArgs, nodes: u16) -> anyhow::Result<Store<'a>> {
        let schema = match args.store {
            Backend::Sqlite if nodes > 1 => {
                bail!("several nodes share a store only on PostgreSQL: add --store postgres")
            }
            Backend::Sqlite => None,
            Backend::Postgres => {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)?
                    .as_nanos();
                let name = format!(
                    "herald_bench_{}_{}",
                    std::process::id(),
                    nanos % 1_000_000_000
                );
                // herald creates the schema; this only checks the server is there.
                postgres(&args.database_url, "SELECT 1").await?;
                Some(name)
            }
        };
        Ok(Store { args, schema })
    }

    fn section(&self) -> String {
        match &self.schema {
            None => "[store]\npath = \"data\"\n".to_string(),
            Some(schema) => format!(
                "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{schema}\"\n",
                self.args.database_url
            ),
        }
    }

    fn label(&self, nodes: u16) -> String {
        match self.args.store {
            Backend::Sqlite => "1 node, SQLite".to_string(),
            Backend::Postgres if nodes == 1 => "1 node, PostgreSQL".to_string(),
            Backend::Postgres => format!("{nodes} nodes, PostgreSQL"),
        }
    }

    async fn drop_schema(self) {
        if let (Some(schema), false) = (&self.schema, self.args.keep) {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            if let Err(e) = postgres(&self.args.database_url, &sql).await {
                eprintln!("could not drop schema {schema}: {e:#}");
            }
        }
    }
}

/// Runs `sql` on a connection of its own.
async fn postgres(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| {
            format!(
                "PostgreSQL not reachable at {} (start it, or set --database-url)",
                url.rsplit('@').next().unwrap_or(url)
            )
        })?;
    let conn = tokio::spawn(conn);
    client.batch_execute(sql).await?;
    drop(client);
    let _ = conn.await;
    Ok(())
}

/// herald's configuration: its defaults, the store, team `bench` with one webhook channel
/// `r1` for [`DELIVERED`], and `extra` (a source).
fn config(port: u16, store: &str, endpoint: &Url, extra: &str) -> String {
    format!(
        "# written by herald-load\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{ADMIN}\"\n\n\
         {store}\n\
         [delivery]\nallow_private_networks = true   # the receiver is on loopback\n\n\
         [[event_types]]\nname = \"{DELIVERED}\"\n\n\
         [[event_types]]\nname = \"{INGEST_ONLY}\"\n\n\
         [teams.bench]\napi_keys = [\"{KEY}\"]\n\n\
         [teams.bench.channels.r1]\ntype = \"webhook\"\nurl = \"{endpoint}\"\n\n\
         [[teams.bench.subscriptions]]\nchannel = \"r1\"\nevents = [\"{DELIVERED}\"]\n\n\
         {extra}"
    )
}

/// Starts `nodes` herald processes on `store`, one after the other (the first migrates).
async fn start_nodes(
    binary: &Path,
    dir: &Path,
    store: &Store<'_>,
    nodes: u16,
    endpoint: &Url,
    extra: &str,
) -> anyhow::Result<Vec<(Target, Url)>> {
    let mut started = Vec::new();
    for n in 0..nodes {
        let dir = dir.join(format!("node-{n}"));
        let port = prepare(&dir)?;
        let config = config(port, &store.section(), endpoint, extra);
        started.push(
            serve(
                binary,
                &dir,
                &format!("herald-{n}"),
                port,
                &config,
                "/readyz",
            )
            .await?,
        );
    }
    Ok(started)
}

fn work_dir(args: &StoreArgs, what: &str) -> anyhow::Result<PathBuf> {
    let dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("herald-load-{what}-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[derive(Debug, Serialize)]
struct ClusterReport {
    label: String,
    nodes: u16,
    ingest_events_per_s: f64,
    ingest_reply_p50_us: u64,
    ingest_reply_p99_us: u64,
    ingest_failures: u64,
    burst_events: u64,
    deliveries_per_s: f64,
    delivery_p50_us: u64,
    delivery_p99_us: u64,
    delivery_max_us: u64,
    missing: u64,
    duplicates: u64,
    publish_failures: u64,
}

pub async fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let dir = work_dir(&args.store, "cluster")?;
    let nodes = args.nodes;

    // 1. Durable ingest, events matched by nothing, clients spread over the nodes.
    let store = Store::fresh(&args.store, nodes).await?;
    let label = store.label(nodes);
    let unused = Url::parse("http://127.0.0.1:9/")?;
    eprintln!("{label}: durable ingest, {} clients …", args.ingest_clients);
    let ingest = {
        let running = start_nodes(
            &args.herald,
            &dir.join("ingest"),
            &store,
            nodes,
            &unused,
            "",
        )
        .await?;
        let servers: Vec<Server> = running
            .iter()
            .map(|(_, base)| Server {
                url: base.clone(),
                key: KEY.to_string(),
                request_timeout: REQUEST_TIMEOUT,
            })
            .collect();
        let report = ingest::measure(&ingest::Args {
            server: servers[0].clone(),
            spread: servers[1..].to_vec(),
            clients: args.ingest_clients,
            duration: args.ingest_duration,
            warmup: Duration::from_secs(2),
            event_type: INGEST_ONLY.to_string(),
            team: None,
            max_requests: 10_000_000,
            json: true,
        })
        .await;
        drop(running);
        store.drop_schema().await;
        report?
    };
    tokio::time::sleep(SETTLE).await;

    // 2. A burst to one receiver, published round-robin over the nodes.
    let store = Store::fresh(&args.store, nodes).await?;
    eprintln!("{label}: {} events → 1 endpoint …", args.events);
    let (arrivals, arrived) = mpsc::unbounded_channel();
    let options = ReceiverOptions {
        arrivals: Some(arrivals),
        ..ReceiverOptions::default()
    };
    let receiver = receiver::start(SocketAddr::from(([127, 0, 0, 1], 0)), options).await?;
    let endpoint = Url::parse(&receiver.url())?;
    let running = start_nodes(
        &args.herald,
        &dir.join("burst"),
        &store,
        nodes,
        &endpoint,
        "",
    )
    .await;
    let run = match running {
        Ok(running) => {
            let auth = HeaderValue::from_str(&format!("Bearer {KEY}"))?;
            let publishers = (0..args.clients as usize)
                .map(|n| {
                    let base = &running[n % running.len()].1;
                    Publisher::to(
                        base.join("/v1/events")?,
                        Some(auth.clone()),
                        REQUEST_TIMEOUT,
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let ids = RunIds::fresh(SystemTime::now());
            let body_ids = ids.clone();
            let template = EventTemplate {
                event_type: DELIVERED.to_string(),
                team: None,
            };
            let body: BodyFn = Arc::new(move |index, sent_ns| {
                template.body(&body_ids.id(index), &[(SENT_AT_KEY, sent_ns.to_string())])
            });
            let waits = Waits {
                timeout: args.timeout,
                linger: Duration::from_secs(1),
                request_timeout: REQUEST_TIMEOUT,
                pid: None,
            };
            let schedule = Schedule::new(args.events, 0.0);
            let run = drive::drive(publishers, schedule, ids, body, 1, arrived, waits).await;
            drop(running);
            run
        }
        Err(e) => Err(e),
    };
    drop(receiver);
    store.drop_schema().await;
    let run = run?;
    if !args.store.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let d = &run.deliveries;
    let report = ClusterReport {
        label: label.clone(),
        nodes,
        ingest_events_per_s: ingest.events_per_s,
        ingest_reply_p50_us: ingest.latency.p50_us,
        ingest_reply_p99_us: ingest.latency.p99_us,
        ingest_failures: ingest.tally.rejected.values().sum::<u64>()
            + ingest.tally.errors.values().sum::<u64>(),
        burst_events: args.events,
        deliveries_per_s: run.deliveries_per_s,
        delivery_p50_us: d.latency.p50_us,
        delivery_p99_us: d.latency.p99_us,
        delivery_max_us: d.latency.max_us,
        missing: d.missing,
        duplicates: d.duplicates + d.repeated_pairs,
        publish_failures: run.publish.as_ref().map_or(0, |p| {
            p.tally.rejected.values().sum::<u64>() + p.tally.errors.values().sum::<u64>()
        }),
    };
    println!(
        "| store, nodes | ingest events/s ({} clients) | ingest reply p50 / p99 | \
         burst deliveries/s ({} events, {} clients) | publish → received p50 / p99 / max | missing | duplicates |",
        args.ingest_clients, args.events, args.clients
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {} / {} | {:.0} | {} / {} / {} | {} | {} |",
        report.label,
        report.ingest_events_per_s,
        Micros(report.ingest_reply_p50_us),
        Micros(report.ingest_reply_p99_us),
        report.deliveries_per_s,
        Micros(report.delivery_p50_us),
        Micros(report.delivery_p99_us),
        Micros(report.delivery_max_us),
        report.missing,
        report.duplicates
    );
    if report.ingest_failures + report.publish_failures > 0 || run.timed_out {
        println!(
            "(ingest refusals/errors: {}, burst publish failures: {}, timed out: {})",
            report.ingest_failures, report.publish_failures, run.timed_out
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One `XINFO GROUPS` sample.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the first XADD.
    t_s: f64,
    /// Entries the producer had added.
    added: u64,
    /// Entries not yet read by the group.
    lag: u64,
    /// Read, not acknowledged.
    pending: u64,
    /// Read and acknowledged: committed by herald.
    acked: u64,
}

/// `XINFO GROUPS stream` → (entries-read, lag, pending) of `group`.
async fn group_info(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> anyhow::Result<Option<(u64, u64, u64)>> {
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    for g in groups {
        let mut name = None;
        let (mut read, mut lag, mut pending) = (0, 0, 0);
        for kv in g.chunks(2) {
            let [k, v] = kv else { continue };
            let key: String = redis::from_redis_value_ref(k).unwrap_or_default();
            let num = || redis::from_redis_value_ref::<u64>(v).unwrap_or(0);
            match key.as_str() {
                "name" => name = redis::from_redis_value_ref::<String>(v).ok(),
                "entries-read" => read = num(),
                "lag" => lag = num(),
                "pending" => pending = num(),
                _ => {}
            }
        }
        if name.as_deref() == Some(group) {
            return Ok(Some((read, lag, pending)));
        }
    }
    Ok(None)
}

pub async fn redis_stream(args: RedisStreamArgs) -> anyhow::Result<()> {
    let dir = work_dir(&args.store, "redis-stream")?;
    let client = redis::Client::open(args.redis_url.as_str()).context("--redis-url")?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| {
            format!(
                "Redis not reachable at {} (start it: redis-server --daemonize yes)",
                args.redis_url
            )
        })?;
    let run = RunIds::fresh(SystemTime::now());
    let prefix = format!("herald-load:{}", run.prefix());
    let stream = format!("{prefix}:events");
    let group = "herald";
    let source = format!(
        "[[sources]]\nname = \"events\"\ntype = \"redis_stream\"\nurl = \"{}\"\nstream = \"{stream}\"\n\
         group = \"{group}\"\nteam = \"bench\"\n",
        args.redis_url
    );
    let store = Store::fresh(&args.store, 1).await?;
    let label = store.label(1);
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let options = ReceiverOptions {
        arrivals: Some(arrivals),
        ..ReceiverOptions::default()
    };
    let receiver = receiver::start(SocketAddr::from(([127, 0, 0, 1], 0)), options).await?;
    let endpoint = Url::parse(&receiver.url())?;
    let result = async {
        let running = start_nodes(&args.herald, &dir, &store, 1, &endpoint, &source).await?;
        let base = running[0].1.clone();
        wait_source_connected(&base).await?;
        eprintln!(
            "{label}: XADD {} entries to {stream} (pipelines of {}) …",
            args.events, args.pipeline
        );
        let measured = produce_and_sample(&args, &client, &stream, group).await?;
        let metrics = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(base.join("/metrics")?)
            .bearer_auth(ADMIN)
            .send()
            .await?
            .text()
            .await?;
        drop(running);
        Ok::<_, anyhow::Error>((measured, metrics))
    }
    .await;
    let mut delivered = 0u64;
    while arrived.try_recv().is_ok() {
        delivered += 1;
    }
    drop(receiver);
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(&stream)
        .arg(format!("{stream}:herald-dead"))
        .query_async(&mut conn)
        .await;
    store.drop_schema().await;
    let ((samples, produced_s, done_s), metrics) = result?;
    if !args.store.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let accepted = metrics
        .lines()
        .find(|l| {
            l.starts_with("herald_source_events_total{") && l.contains("outcome=\"accepted\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or("?")
        .to_string();
    let committed = samples.last().map_or(0, |s| s.acked);
    println!(
        "{label}, {} entries ({} bytes each), one producer, pipelines of {}:",
        args.events,
        herald_loadgen::payload::TARGET_BYTES,
        args.pipeline
    );
    println!(
        "- producer: {:.0} XADDs/s ({:.2} s for all)",
        args.events as f64 / produced_s,
        produced_s
    );
    match done_s {
        Some(done) => println!(
            "- herald: {committed} committed and acknowledged in {done:.2} s from the first XADD: \
             **{:.0} events/s**; herald's own count of accepted entries: {accepted}",
            committed as f64 / done
        ),
        None => println!(
            "- herald: only {committed} of {} acknowledged within --timeout",
            args.events
        ),
    }
    println!(
        "- webhook deliveries received meanwhile: {delivered} (none expected: `bench.ingest` is matched by nothing)"
    );
    println!();
    println!("| t (s) | XADDed | lag | pending | committed (acked) |");
    println!("|---:|---:|---:|---:|---:|");
    // At most ~30 rows: every k-th sample, and the last.
    let every = samples.len().div_ceil(30).max(1);
    let mut table = String::new();
    for (i, s) in samples.iter().enumerate() {
        if i % every == 0 || i + 1 == samples.len() {
            let _ = writeln!(
                table,
                "| {:.2} | {} | {} | {} | {} |",
                s.t_s, s.added, s.lag, s.pending, s.acked
            );
        }
    }
    print!("{table}");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&samples)?);
    }
    Ok(())
}

/// Polls `/readyz` until the stream source says it is connected.
async fn wait_source_connected(base: &Url) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = match http.get(base.join("/readyz")?).send().await {
            Ok(reply) => reply.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains("events (redis_stream): connected") {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("the stream source did not connect within 30 s; /readyz: {text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// XADDs `args.events` entries as fast as one connection can (pipelined) while another
/// samples the group every `args.sample`; returns the samples, the producer's time and the
/// time until every entry was acknowledged (`None`: not within the timeout).
async fn produce_and_sample(
    args: &RedisStreamArgs,
    client: &redis::Client,
    stream: &str,
    group: &str,
) -> anyhow::Result<(Vec<Sample>, f64, Option<f64>)> {
    let total = args.events;
    let added = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let producer = {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let (added, stream) = (Arc::clone(&added), stream.to_string());
        let pipeline = args.pipeline;
        let ids = RunIds::fresh(SystemTime::now());
        let template = EventTemplate {
            event_type: INGEST_ONLY.to_string(),
            team: None,
        };
        tokio::spawn(async move {
            let mut next = 0;
            while next < total {
                let mut pipe = redis::pipe();
                let end = (next + pipeline).min(total);
                for i in next..end {
                    pipe.cmd("XADD")
                        .arg(&stream)
                        .arg("*")
                        .arg("payload")
                        .arg(template.body(&ids.id(i), &[]))
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await?;
                next = end;
                added.store(next, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, redis::RedisError>(start.elapsed())
        })
    };
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut samples = Vec::new();
    let mut produced: Option<Duration> = None;
    let mut producer = Some(producer);
    let mut ticker = tokio::time::interval(args.sample);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let done = loop {
        ticker.tick().await;
        if let Some(p) = producer.as_ref()
            && p.is_finished()
        {
            let p = producer.take().expect("checked above");
            produced = Some(p.await?.context("XADD")?);
        }
        let t = start.elapsed();
        let added_now = added.load(std::sync::atomic::Ordering::Relaxed);
        let (read, lag, pending) = group_info(&mut conn, stream, group)
            .await?
            .unwrap_or((0, added_now, 0));
        let acked = read.saturating_sub(pending);
        samples.push(Sample {
            t_s: t.as_secs_f64(),
            added: added_now,
            lag,
            pending,
            acked,
        });
        if acked >= total {
            break Some(t.as_secs_f64());
        }
        if let Some(p) = produced
            && t > p + args.timeout
        {
            break None;
        }
    };
    let produced = match (produced, producer) {
        (Some(p), _) => p,
        (None, Some(p)) => p.await?.context("XADD")?,
        (None, None) => start.elapsed(),
    };
    Ok((samples, produced.as_secs_f64(), done))
}
