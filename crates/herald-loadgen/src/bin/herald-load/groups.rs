//! `herald-load groups`: the grouping benchmark of issue 11. It starts herald here (its
//! defaults, `[delivery] allow_private_networks` only) on a fresh embedded store twice, fed
//! by the same paced publishers:
//!
//! 1. **baseline**: R events/s that no subscription matches (durable ingest alone);
//! 2. **grouped**: R events/s matched by a subscription with `group_by =
//!    ["metadata.group"]` over G distinct values, with a `group_wait` longer than the
//!    publishing, so that all G groups are open at the end of it.
//!
//! Each phase reports herald's CPU time (user + system, from `/proc/PID/stat`) and resident
//! memory at the end of publishing, and the store's size on disk. The differences, divided
//! by G, are the cost of an open group. Then the grouped phase waits for the G digests to
//! arrive at a real receiver and checks that every accepted event is listed in exactly one
//! of them (`max_group_size` is set to hold a whole group).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use herald_loadgen::memory::read_kib;
use herald_loadgen::pacer::Schedule;
use herald_loadgen::payload::{EventTemplate, RunIds};
use herald_loadgen::receiver::{self, ReceiverOptions, SENT_AT_KEY};
use herald_loadgen::stats::Micros;
use reqwest::Url;
use reqwest::header::HeaderValue;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::drive::{self, BodyFn, Waits};
use crate::publish::Publisher;
use crate::side_by_side::herald::serve;
use crate::side_by_side::process::prepare;

const KEY: &str = "bench-key";
const GROUPED: &str = "bench.grouped";
const INGEST_ONLY: &str = "bench.ingest";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The herald binary (e.g. target/release/herald).
    #[arg(long)]
    herald: std::path::PathBuf,
    /// Events per second, in both phases.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// How long each phase publishes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct groups (values of `metadata.group`), events spread round-robin over them.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    groups: u64,
    /// Publishing clients (keep-alive, one event per POST).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1024))]
    clients: u32,
    /// After publishing, wait at most this long for the digests.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Scratch directory; default under the temp dir (removed afterwards).
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
    /// Print the figures as JSON after the table.
    #[arg(long)]
    json: bool,
}

/// What one phase cost herald.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Cost {
    events: u64,
    accepted: u64,
    publish_seconds: f64,
    /// CPU seconds (user + system) from start-up to the end of publishing, minus those
    /// spent before the first event.
    cpu_seconds: f64,
    rss_kib: u64,
    store_bytes: u64,
    reply_p99_us: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    rate: f64,
    groups: u64,
    baseline: Cost,
    grouped: Cost,
    cpu_us_per_event_baseline: f64,
    cpu_us_per_event_grouped: f64,
    /// Extra CPU per grouped event, over plain durable ingest.
    cpu_us_per_event_extra: f64,
    rss_bytes_per_open_group: f64,
    store_bytes_per_open_group: f64,
    digests: u64,
    events_in_digests: u64,
    missing: u64,
    duplicates: u64,
    flush_seconds: f64,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("herald-load-groups-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let total = (args.rate * args.duration.as_secs_f64()).round() as u64;
    if total < args.groups {
        bail!("{total} events cannot open {} groups", args.groups);
    }
    // Every group's digest must list all its events, so the receiver can check each one.
    let per_group = total.div_ceil(args.groups);
    if per_group > u64::from(herald_core::group::MAX_MAX_GROUP_SIZE) {
        bail!(
            "{per_group} events per group is more than max_group_size may be ({}); \
             use more groups or fewer events",
            herald_core::group::MAX_MAX_GROUP_SIZE
        );
    }
    // Open for the whole publishing (which may take longer than planned when herald
    // cannot keep the rate), then flushed.
    let wait = args.duration * 3 + Duration::from_secs(10);

    eprintln!("baseline: {total} unmatched events at {}/s …", args.rate);
    let (baseline, _) = phase(
        &args,
        &dir.join("baseline"),
        INGEST_ONLY,
        total,
        wait,
        per_group,
    )
    .await?;
    eprintln!(
        "grouped: {total} events at {}/s into {} groups (group_wait {}) …",
        args.rate,
        args.groups,
        humantime::format_duration(wait)
    );
    let (grouped, run) =
        phase(&args, &dir.join("grouped"), GROUPED, total, wait, per_group).await?;
    let run = run.context("the grouped phase waits for its digests")?;
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }

    let per_event = |c: &Cost| c.cpu_seconds * 1e6 / c.accepted.max(1) as f64;
    let groups = args.groups as f64;
    let d = &run.deliveries;
    let report = Report {
        rate: args.rate,
        groups: args.groups,
        baseline,
        grouped,
        cpu_us_per_event_baseline: per_event(&baseline),
        cpu_us_per_event_grouped: per_event(&grouped),
        cpu_us_per_event_extra: per_event(&grouped) - per_event(&baseline),
        rss_bytes_per_open_group: (grouped.rss_kib as f64 - baseline.rss_kib as f64) * 1024.0
            / groups,
        store_bytes_per_open_group: (grouped.store_bytes as f64 - baseline.store_bytes as f64)
            / groups,
        digests: run.digests,
        events_in_digests: d.delivered,
        missing: d.missing,
        duplicates: d.duplicates + d.repeated_pairs,
        flush_seconds: run.delivery_seconds,
    };
    print_table(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if report.missing > 0 || report.duplicates > 0 {
        bail!(
            "{} events missing from the digests, {} listed twice",
            report.missing,
            report.duplicates
        );
    }
    Ok(())
}

struct GroupedRun {
    deliveries: herald_loadgen::ledger::LedgerSummary,
    delivery_seconds: f64,
    digests: u64,
}

/// One herald, one publishing run of `event_type`; for [`GROUPED`], also waits for the
/// digests.
async fn phase(
    args: &Args,
    dir: &Path,
    event_type: &str,
    total: u64,
    wait: Duration,
    per_group: u64,
) -> anyhow::Result<(Cost, Option<GroupedRun>)> {
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let requests = Arc::new(AtomicU64::new(0));
    let options = ReceiverOptions {
        arrivals: Some(arrivals_tx),
        accepted: Some(Arc::clone(&requests)),
        ..ReceiverOptions::default()
    };
    let receiver = receiver::start(SocketAddr::from(([127, 0, 0, 1], 0)), options).await?;
    let endpoint = Url::parse(&receiver.url())?;
    let port = prepare(dir)?;
    let config = config(port, &endpoint, wait, per_group);
    let (target, base) = serve(&args.herald, dir, "herald", port, &config, "/readyz").await?;
    let pid = target.pid();
    let cpu_at_start = cpu_seconds(pid)?;
    let store_at_start = dir_bytes(&dir.join("data"));

    let auth = HeaderValue::from_str(&format!("Bearer {KEY}"))?;
    let publishers = (0..args.clients)
        .map(|_| {
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
        event_type: event_type.to_string(),
        team: None,
    };
    let groups = args.groups;
    let body: BodyFn = Arc::new(move |index, sent_ns| {
        template.body(
            &body_ids.id(index),
            &[
                (SENT_AT_KEY, sent_ns.to_string()),
                ("group", format!("g{}", index % groups)),
            ],
        )
    });
    let schedule = Schedule::new(total, args.rate);
    let grouped = event_type == GROUPED;

    // Publish, then read the cost at once, while every group is still open.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(async move {
        let _ = done_rx.await;
        (cpu_seconds(pid), read_kib(pid, "VmRSS"))
    });
    let waits = Waits {
        timeout: if grouped {
            wait + args.timeout
        } else {
            Duration::ZERO
        },
        linger: Duration::from_secs(1),
        request_timeout: REQUEST_TIMEOUT,
        pid: None,
    };
    let measured = usize::from(grouped);
    let run = drive::drive_notifying(
        publishers, schedule, ids, body, measured, arrivals, waits, done_tx,
    )
    .await?;
    let (cpu_end, rss) = sampler.await.context("the cost sampler")?;
    let published = run.publish.as_ref().context("publishing did not finish")?;
    let problems = published.tally.problems();
    if !problems.is_empty() {
        eprintln!("  publishing problems: {}", problems.join(", "));
    }
    let cost = Cost {
        events: total,
        accepted: published.tally.accepted,
        publish_seconds: published.seconds,
        cpu_seconds: cpu_end? - cpu_at_start,
        rss_kib: rss?.unwrap_or(0),
        store_bytes: dir_bytes(&dir.join("data")).saturating_sub(store_at_start),
        reply_p99_us: published.latency.p99_us,
    };
    let digests = requests.load(Ordering::Relaxed);
    drop(target);
    drop(receiver);
    let grouped_run = grouped.then_some(GroupedRun {
        deliveries: run.deliveries,
        delivery_seconds: run.delivery_seconds,
        digests,
    });
    Ok((cost, grouped_run))
}

/// herald on its defaults: team `bench`, one webhook channel `r1`, one grouped
/// subscription for [`GROUPED`]; [`INGEST_ONLY`] matches nothing.
fn config(port: u16, endpoint: &Url, wait: Duration, max_group_size: u64) -> String {
    let wait = humantime::format_duration(wait);
    format!(
        "# written by herald-load groups\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [store]\npath = \"data\"\n\n\
         [delivery]\nallow_private_networks = true   # the receiver is on loopback\n\n\
         [[event_types]]\nname = \"{GROUPED}\"\n\n\
         [[event_types]]\nname = \"{INGEST_ONLY}\"\n\n\
         [teams.bench]\napi_keys = [\"{KEY}\"]\n\n\
         [teams.bench.channels.r1]\ntype = \"webhook\"\nurl = \"{endpoint}\"\n\n\
         [[teams.bench.subscriptions]]\nchannel = \"r1\"\nevents = [\"{GROUPED}\"]\n\
         group_by = [\"metadata.group\"]\ngroup_wait = \"{wait}\"\ngroup_interval = \"{wait}\"\n\
         max_group_size = {max_group_size}\n"
    )
}

/// CPU seconds (user + system) `pid` has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_seconds(&stat, clock_ticks())
}

/// Fields 14 and 15 (utime, stime, in clock ticks) of a `/proc/PID/stat` line; the command
/// name (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_seconds(stat: &str, ticks_per_second: f64) -> anyhow::Result<f64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no `)` in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is at index 11.
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("/proc/PID/stat is too short")?
            .parse::<u64>()
            .context("a CPU time in /proc/PID/stat is not a number")? as f64)
    };
    Ok((tick(11)? + tick(12)?) / ticks_per_second)
}

/// `sysconf(_SC_CLK_TCK)` is 100 on every Linux this runs on (the kernel's USER_HZ).
fn clock_ticks() -> f64 {
    100.0
}

/// Bytes of every file under `dir` (the store with its WAL).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn print_table(r: &Report) {
    println!(
        "| phase ({} events/s, {} s) | accepted | CPU s | CPU µs / event | RSS at end | store on disk | reply p99 |",
        r.rate,
        r.baseline.publish_seconds.round()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, c, per_event) in [
        (
            "baseline: durable ingest, unmatched",
            &r.baseline,
            r.cpu_us_per_event_baseline,
        ),
        (
            &*format!("grouped into {} open groups", r.groups),
            &r.grouped,
            r.cpu_us_per_event_grouped,
        ),
    ] {
        println!(
            "| {name} | {} | {:.2} | {per_event:.1} | {:.1} MiB | {:.1} MiB | {} |",
            c.accepted,
            c.cpu_seconds,
            c.rss_kib as f64 / 1024.0,
            c.store_bytes as f64 / 1048576.0,
            Micros(c.reply_p99_us),
        );
    }
    println!();
    println!(
        "per open group: {:.0} bytes of RSS, {:.0} bytes of store; grouping adds {:.1} µs of CPU per event",
        r.rss_bytes_per_open_group, r.store_bytes_per_open_group, r.cpu_us_per_event_extra
    );
    println!(
        "flush: {} digests listed {} events in {:.1} s; missing {}, listed twice {}",
        r.digests, r.events_in_digests, r.flush_seconds, r.missing, r.duplicates
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as the kernel writes it.
        let stat =
            "4242 (herald (x) y) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat, 100.0).unwrap(), 3.0);
        assert!(parse_cpu_seconds("4242 (herald) S 1", 100.0).is_err());
    }

    #[test]
    fn the_generated_configuration_is_valid_and_groups_by_the_metadata_key() {
        let dir = std::env::temp_dir().join(format!("herald-groups-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        let endpoint = Url::parse("http://127.0.0.1:19001/").unwrap();
        std::fs::write(&path, config(8651, &endpoint, Duration::from_secs(15), 100)).unwrap();
        let outcome = herald_config::load_with_env(&path, &|_| None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            !outcome.diagnostics.has_errors(),
            "{}",
            outcome.diagnostics.render_short()
        );
        let config = outcome.config.unwrap();
        let group = config.matcher.subscriptions()[0]
            .group
            .as_ref()
            .expect("grouped");
        assert_eq!(group.field_names(), ["metadata.group"]);
        assert_eq!(group.wait, Duration::from_secs(15));
        assert_eq!(group.max_size, 100);
    }
}
