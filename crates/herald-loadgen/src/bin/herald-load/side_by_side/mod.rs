//! `herald-load side-by-side`: herald on its default configuration and Alertmanager, each
//! started here, driven in one run by the same publishers into the same receivers, workload
//! by workload (issue 9), with this machine's fsync latency for scale. Prints the Markdown
//! table of docs/BENCHMARKS.md.

mod alertmanager;
pub mod herald;
pub mod process;
mod table;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use herald_loadgen::fsync;
use herald_loadgen::pacer::Schedule;
use herald_loadgen::payload::{EventTemplate, RunIds};
use herald_loadgen::receiver::{self, ReceiverOptions, RunningReceiver, SENT_AT_KEY};
use herald_loadgen::stats::{LatencySummary, Micros};
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::drive::{self, BodyFn, Delivered, Waits};
use crate::ingest;
use crate::publish::{Publisher, Server};
use table::{Ratio, Row};

/// Publishers give up on a request after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause between two servers' runs, so one's leftovers (sockets closing, pages freed)
/// weigh less on the next.
const SETTLE: Duration = Duration::from_secs(1);
/// The fsync probe stops after this long whatever its count.
const FSYNC_BUDGET: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// A burst of events to one endpoint.
    W1,
    /// A burst of events, each to every one of several endpoints.
    W2,
    /// A steady rate to one endpoint.
    W3,
    /// A burst to a fast endpoint next to a slow one (herald only).
    W4,
    /// Durable ingest alone, events matched by nothing (herald only).
    W5,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The herald binary to measure (e.g. target/release/herald).
    #[arg(long)]
    herald: PathBuf,
    /// The Alertmanager binary to compare with (Debian's `prometheus-alertmanager`).
    #[arg(long, default_value = alertmanager::DEBIAN_BINARY)]
    alertmanager: PathBuf,
    /// Leave Alertmanager out (herald's rows only).
    #[arg(long)]
    no_alertmanager: bool,
    /// Which workloads to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "w1,w2,w3,w4,w5"
    )]
    workloads: Vec<Workload>,
    /// A `[delivery]` line (e.g. "concurrency_per_channel = 64") for an extra, labelled
    /// herald row next to the defaults; repeat for several lines.
    #[arg(long)]
    tuned: Vec<String>,
    /// Concurrent publishing clients, each on its own keep-alive connection (W1–W4).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// W1 and W4: events in the burst.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    w1_events: u64,
    /// W2: events in the burst.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    w2_events: u64,
    /// W2: endpoints each event goes to.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=64))]
    w2_endpoints: u16,
    /// W3: events per second.
    #[arg(long, default_value_t = 2_000.0)]
    w3_rate: f64,
    /// W3: how long to publish at that rate.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    w3_duration: Duration,
    /// W4: how long the slow endpoint takes to answer.
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    w4_slow: Duration,
    /// W5: concurrent clients.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    w5_clients: u32,
    /// W5: how long to measure, after a 2 s warm-up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    w5_duration: Duration,
    /// fsync probe: write + fsync this many 4 KiB blocks (at most 10 s).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    fsync_samples: u64,
    /// After the last publish, wait at most this long for the remaining deliveries.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// After everything arrived, keep listening this long to catch duplicates.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Scratch directory for the servers' data and logs, on the disk being measured (not a
    /// tmpfs); a fresh subdirectory per run. Default: a new directory under the system's temp dir.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the scratch directory (configurations, logs, stores) after a successful run.
    #[arg(long)]
    keep: bool,
    /// Print every figure as JSON after the table.
    #[arg(long)]
    json: bool,
}

/// A server a delivery workload runs against.
#[derive(Debug, Clone)]
enum Target {
    Herald { label: String, tuned: Vec<String> },
    Alertmanager,
}

impl Target {
    fn label(&self) -> &str {
        match self {
            Target::Herald { label, .. } => label,
            Target::Alertmanager => "Alertmanager",
        }
    }
}

/// The ingest-only workload's figures, herald only.
#[derive(Debug, Serialize)]
struct IngestRow {
    target: String,
    events_per_s: f64,
    latency: LatencySummary,
    publish_failures: u64,
}

#[derive(Debug, Serialize)]
struct Results {
    fsync: LatencySummary,
    deliveries: Vec<Row>,
    ratios: Vec<(String, Ratio)>,
    /// W4: the fast endpoint's deliveries/s as a percentage of its solo run (W1), per herald.
    fast_next_to_slow_percent: Vec<(String, f64)>,
    ingest: Vec<IngestRow>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !args.w3_rate.is_finite() || args.w3_rate <= 0.0 {
        bail!("--w3-rate must be a positive number of events per second");
    }
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("herald-side-by-side-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let mut targets = vec![Target::Herald {
        label: "herald (defaults)".to_string(),
        tuned: Vec::new(),
    }];
    if !args.tuned.is_empty() {
        targets.push(Target::Herald {
            label: format!("herald, tuned: {}", args.tuned.join(", ")),
            tuned: args.tuned.clone(),
        });
    }
    if !args.no_alertmanager {
        targets.push(Target::Alertmanager);
    }
    eprintln!("side-by-side: scratch space {}", work_dir.display());
    let mut bench = Bench {
        args: &args,
        work_dir: &work_dir,
        case: 0,
    };

    let probe_dir = work_dir.clone();
    let samples = args.fsync_samples;
    let fsync =
        tokio::task::spawn_blocking(move || fsync::probe(&probe_dir, samples, FSYNC_BUDGET))
            .await?
            .context("probing fsync latency")?;
    eprintln!("fsync (4 KiB write + fsync): {fsync}");

    let mut results = Results {
        fsync,
        deliveries: Vec::new(),
        ratios: Vec::new(),
        fast_next_to_slow_percent: Vec::new(),
        ingest: Vec::new(),
    };
    let mut out = String::new();
    let mut delivery_table = String::from(table::HEADER);
    for workload in &args.workloads {
        match workload {
            Workload::W1 | Workload::W2 | Workload::W3 => {
                let (name, endpoints, schedule) = bench.shape(*workload);
                let mut rows = Vec::new();
                for target in &targets {
                    let run = bench.deliver(target, endpoints, false, schedule).await?;
                    rows.push(Row::new(&name, target.label(), &run));
                }
                let ratio = ratio_of(&rows);
                if let Some(r) = ratio {
                    results.ratios.push((name.clone(), r));
                }
                delivery_table.push_str(&table::render(&rows, ratio));
                results.deliveries.extend(rows);
            }
            Workload::W4 => {
                let name = format!(
                    "W4 {} events → 1 endpoint, next to one answering after {}",
                    table::thousands(args.w1_events as f64),
                    humantime::format_duration(args.w4_slow)
                );
                let schedule = Schedule::new(args.w1_events, 0.0);
                let mut rows = Vec::new();
                for target in targets
                    .iter()
                    .filter(|t| matches!(t, Target::Herald { .. }))
                {
                    let solo = match results
                        .deliveries
                        .iter()
                        .find(|r| r.workload.starts_with("W1") && r.target == target.label())
                    {
                        Some(row) => row.deliveries_per_s,
                        None => {
                            bench
                                .deliver(target, 1, false, schedule)
                                .await?
                                .deliveries_per_s
                        }
                    };
                    let run = bench.deliver(target, 1, true, schedule).await?;
                    let label = format!("{}, fast endpoint", target.label());
                    let row = Row::new(&name, &label, &run);
                    let percent = 100.0 * row.deliveries_per_s / solo;
                    let _ = writeln!(
                        out,
                        "- W4, {}: the fast endpoint kept **{percent:.0} %** of its solo deliveries/s \
                         ({} vs {} alone); the slow one got {} meanwhile.",
                        target.label(),
                        table::thousands(row.deliveries_per_s),
                        table::thousands(solo),
                        run.unmeasured_arrivals
                    );
                    results
                        .fast_next_to_slow_percent
                        .push((target.label().to_string(), percent));
                    rows.push(row);
                }
                delivery_table.push_str(&table::render(&rows, None));
                results.deliveries.extend(rows);
            }
            Workload::W5 => {
                for target in targets
                    .iter()
                    .filter(|t| matches!(t, Target::Herald { .. }))
                {
                    let row = bench.ingest(target).await?;
                    let _ = writeln!(
                        out,
                        "- W5 durable ingest alone, {} clients, {}: **{} events/s**, reply p50 {} \
                         ({:.1}× fsync p50), p99 {} ({:.1}× fsync p99), {} refused.",
                        args.w5_clients,
                        row.target,
                        table::thousands(row.events_per_s),
                        Micros(row.latency.p50_us),
                        multiple(row.latency.p50_us, fsync.p50_us),
                        Micros(row.latency.p99_us),
                        multiple(row.latency.p99_us, fsync.p99_us),
                        row.publish_failures
                    );
                    results.ingest.push(row);
                }
            }
        }
    }

    println!(
        "fsync latency here (4 KiB append + fsync, {} samples in {}): p50 {}, p99 {}, max {}\n",
        fsync.count,
        work_dir.display(),
        Micros(fsync.p50_us),
        Micros(fsync.p99_us),
        Micros(fsync.max_us)
    );
    if !results.deliveries.is_empty() {
        println!("{delivery_table}");
    }
    print!("{out}");
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    Ok(())
}

/// herald's defaults over Alertmanager, when both rows are there.
fn ratio_of(rows: &[Row]) -> Option<Ratio> {
    let herald = rows.iter().find(|r| r.target == "herald (defaults)")?;
    let alertmanager = rows.iter().find(|r| r.target == "Alertmanager")?;
    Some(Ratio::of(herald, alertmanager))
}

fn multiple(us: u64, fsync_us: u64) -> f64 {
    if fsync_us == 0 {
        f64::NAN
    } else {
        us as f64 / fsync_us as f64
    }
}

/// The state of a run: its flags and a counter naming each case's scratch directory.
struct Bench<'a> {
    args: &'a Args,
    work_dir: &'a Path,
    case: u32,
}

impl Bench<'_> {
    /// A delivery workload's name, endpoint count and publishing schedule.
    fn shape(&self, workload: Workload) -> (String, usize, Schedule) {
        let a = self.args;
        match workload {
            Workload::W2 => (
                format!(
                    "W2 {} events → {} endpoints",
                    table::thousands(a.w2_events as f64),
                    a.w2_endpoints
                ),
                usize::from(a.w2_endpoints),
                Schedule::new(a.w2_events, 0.0),
            ),
            Workload::W3 => {
                let events = (a.w3_rate * a.w3_duration.as_secs_f64()).round().max(1.0) as u64;
                (
                    format!(
                        "W3 steady {} events/s → 1 endpoint for {}",
                        table::thousands(a.w3_rate),
                        humantime::format_duration(a.w3_duration)
                    ),
                    1,
                    Schedule::new(events, a.w3_rate),
                )
            }
            _ => (
                format!(
                    "W1 {} events → 1 endpoint",
                    table::thousands(a.w1_events as f64)
                ),
                1,
                Schedule::new(a.w1_events, 0.0),
            ),
        }
    }

    fn case_dir(&mut self, what: &str) -> PathBuf {
        self.case += 1;
        self.work_dir.join(format!("{:02}-{what}", self.case))
    }

    /// One delivery run: fresh receivers (`endpoints` fast ones, plus a slow one after them
    /// when `slow`), a fresh server pointed at all of them, the schedule published, the
    /// fast receivers' arrivals measured.
    async fn deliver(
        &mut self,
        target: &Target,
        endpoints: usize,
        slow: bool,
        schedule: Schedule,
    ) -> anyhow::Result<Delivered> {
        tokio::time::sleep(SETTLE).await;
        let (arrivals, arrived) = mpsc::unbounded_channel();
        let mut receivers: Vec<RunningReceiver> = Vec::new();
        for index in 0..endpoints + usize::from(slow) {
            let options = ReceiverOptions {
                index,
                arrivals: Some(arrivals.clone()),
                delay: if index >= endpoints {
                    self.args.w4_slow
                } else {
                    Duration::ZERO
                },
                ..ReceiverOptions::default()
            };
            let addr = SocketAddr::from(([127, 0, 0, 1], 0));
            receivers.push(receiver::start(addr, options).await?);
        }
        drop(arrivals);
        let urls: Vec<Url> = receivers
            .iter()
            .map(|r| Url::parse(&r.url()))
            .collect::<Result<_, _>>()?;

        let ids = RunIds::fresh(SystemTime::now());
        let body_ids = ids.clone();
        let dir = self.case_dir(&slug(target.label()));
        eprintln!(
            "{}: {} events → {} endpoint(s){} …",
            target.label(),
            schedule.total(),
            endpoints,
            if slow { " + a slow one" } else { "" }
        );
        let (server, url, auth, body): (_, Url, _, BodyFn) = match target {
            Target::Herald { tuned, .. } => {
                let (server, base) = herald::start(&self.args.herald, &dir, &urls, tuned).await?;
                let template = EventTemplate {
                    event_type: herald::DELIVERED.to_string(),
                    team: None,
                };
                let body: BodyFn = Arc::new(move |index, sent_ns| {
                    template.body(&body_ids.id(index), &[(SENT_AT_KEY, sent_ns.to_string())])
                });
                let auth = HeaderValue::from_str(&format!("Bearer {}", herald::KEY))?;
                (server, base.join("/v1/events")?, Some(auth), body)
            }
            Target::Alertmanager => {
                let (server, base) =
                    alertmanager::start(&self.args.alertmanager, &dir, &urls).await?;
                let body: BodyFn = Arc::new(move |index, sent_ns| {
                    alertmanager::alert_body(&body_ids.id(index), sent_ns)
                });
                (server, base.join("/api/v2/alerts")?, None, body)
            }
        };
        let publishers = (0..self.args.clients)
            .map(|_| Publisher::to(url.clone(), auth.clone(), REQUEST_TIMEOUT))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let waits = Waits {
            timeout: self.args.timeout,
            linger: self.args.linger,
            request_timeout: REQUEST_TIMEOUT,
            pid: Some(server.pid()),
        };
        let run = drive::drive(publishers, schedule, ids, body, endpoints, arrived, waits).await?;
        eprintln!(
            "  {} of {} delivered, {:.0}/s, publish → received {}",
            run.deliveries.delivered,
            run.deliveries.expected,
            run.deliveries_per_s,
            run.deliveries.latency
        );
        // The server goes first, so a slow endpoint's backlog stops with it.
        drop(server);
        drop(receivers);
        Ok(run)
    }

    /// W5: a fresh herald, events of a type no subscription matches, `ingest`'s clients.
    async fn ingest(&mut self, target: &Target) -> anyhow::Result<IngestRow> {
        let Target::Herald { tuned, label } = target else {
            bail!("durable ingest is measured on herald only");
        };
        tokio::time::sleep(SETTLE).await;
        let dir = self.case_dir(&format!("w5-{}", slug(label)));
        // The channel is never sent to (nothing matches), so nothing needs to listen there.
        let unused = [Url::parse("http://127.0.0.1:9/")?];
        let (server, base) = herald::start(&self.args.herald, &dir, &unused, tuned).await?;
        eprintln!(
            "{label}: durable ingest, {} clients …",
            self.args.w5_clients
        );
        let report = ingest::measure(&ingest::Args {
            server: Server {
                url: base,
                key: herald::KEY.to_string(),
                request_timeout: REQUEST_TIMEOUT,
            },
            spread: Vec::new(),
            clients: self.args.w5_clients,
            duration: self.args.w5_duration,
            warmup: Duration::from_secs(2),
            event_type: herald::INGEST_ONLY.to_string(),
            team: None,
            max_requests: 10_000_000,
            json: true,
        })
        .await?;
        drop(server);
        Ok(IngestRow {
            target: label.clone(),
            events_per_s: report.events_per_s,
            latency: report.latency,
            publish_failures: report.tally.rejected.values().sum::<u64>()
                + report.tally.errors.values().sum::<u64>(),
        })
    }
}

/// A label as a directory name: `herald (defaults)` → `herald-defaults`.
fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(40).collect()
}
