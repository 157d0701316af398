//! `herald-load e2e`: in-process webhook receivers, events published at a steady pace (or in
//! a burst), and every delivery matched to its event: throughput, publish → received
//! latency, missing and duplicate deliveries, and the server's memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use axum::http::StatusCode;
use herald_channels::webhook::SigningKey;
use herald_core::Secret;
use herald_loadgen::pacer::Schedule;
use herald_loadgen::payload::{EventTemplate, RunIds, TARGET_BYTES};
use herald_loadgen::receiver::{self, ReceiverOptions, SENT_AT_KEY};
use herald_loadgen::stats::Micros;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::drive::{self, BodyFn, Delivered, RSS_EVERY, Waits};
use crate::publish::{Publisher, Server};
/// At most this many expected deliveries per run (the ledger's memory is 16 bytes each).
const MAX_PAIRS: u64 = 20_000_000;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    server: Server,
    /// How many receivers to start (r1, r2, …): 1 by default, or as many as --receiver-ports lists.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    receivers: Option<u16>,
    /// Fixed ports for the receivers, r1 first, so a herald config can point at them
    /// (e.g. 19001,19002). Without it the receivers take free ports (see --delay).
    #[arg(long, value_delimiter = ',')]
    receiver_ports: Vec<u16>,
    /// Events to publish.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    events: u64,
    /// Events per second, paced by a ticker; 0 publishes as fast as the server accepts.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Concurrent publishing clients, each with its own connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    clients: u32,
    /// Event type; must be declared in the server's configuration.
    #[arg(long = "type", default_value = "bench.ping")]
    event_type: String,
    /// `team_id` of the events; omitted by default (the key's team is used).
    #[arg(long)]
    team: Option<String>,
    /// With more than one receiver, each event carries metadata KEY = "<receivers>", which
    /// the benchmark configuration's subscriptions use to fan it out to every receiver.
    #[arg(long, default_value = "fanout")]
    fanout_key: String,
    /// The channels' signing secret (`whsec_…`): receivers then refuse bad signatures.
    #[arg(long, env = "HERALD_RECEIVER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// After the last publish, wait at most this long for the remaining deliveries.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// After everything arrived, keep listening this long to catch duplicates.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Pause between starting the receivers and publishing (time to point herald at them).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// The herald server's process id: report its peak resident memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Print a JSON object instead of the human summary.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    url: String,
    receivers: Vec<String>,
    events: u64,
    event_bytes: usize,
    /// Events per second asked for; 0 = burst.
    rate: f64,
    clients: u32,
    #[serde(flatten)]
    run: Delivered,
    signature_failures: u64,
    pid: Option<u32>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ports = receiver_ports(args.receivers, &args.receiver_ports)?;
    // The ledger keeps one slot per (event, receiver).
    if args.events.saturating_mul(ports.len() as u64) > MAX_PAIRS {
        bail!("--events × receivers must be at most {MAX_PAIRS}");
    }
    let secret = args.secret.clone().map(Secret::new);
    if let Some(secret) = &secret {
        SigningKey::from_secret(secret).context("--secret")?;
    }
    let publishers = (0..args.clients)
        .map(|_| Publisher::new(&args.server))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let url = args.server.events_url()?;
    let schedule = Schedule::new(args.events, args.rate);

    let (arrivals, arrived) = mpsc::unbounded_channel();
    let signature_failures = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::with_capacity(ports.len());
    for (index, port) in ports.iter().enumerate() {
        let options = ReceiverOptions {
            secret: secret.clone(),
            status: StatusCode::OK,
            print: false,
            index,
            arrivals: Some(arrivals.clone()),
            rejected: Some(Arc::clone(&signature_failures)),
            accepted: None,
            delay: Duration::ZERO,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let running = receiver::start(addr, options)
            .await
            .with_context(|| format!("cannot start receiver r{} on {addr}", index + 1))?;
        eprintln!("receiver r{}: {}", index + 1, running.url());
        receivers.push(running);
    }
    drop(arrivals);

    if !args.delay.is_zero() {
        eprintln!("publishing in {}", humantime::format_duration(args.delay));
        tokio::time::sleep(args.delay).await;
    }
    let ids = RunIds::fresh(SystemTime::now());
    let fanout = (ports.len() > 1).then(|| (args.fanout_key.clone(), ports.len().to_string()));
    let template = EventTemplate {
        event_type: args.event_type.clone(),
        team: args.team.clone(),
    };
    eprintln!(
        "publishing {} events ({}) with {} clients to {url}",
        args.events,
        if schedule.is_burst() {
            "burst".to_string()
        } else {
            format!("{} events/s", args.rate)
        },
        args.clients
    );

    let body_ids = ids.clone();
    let body: BodyFn = Arc::new(move |index, sent_ns| {
        let mut metadata = vec![(SENT_AT_KEY, sent_ns.to_string())];
        if let Some((key, value)) = &fanout {
            metadata.push((key.as_str(), value.clone()));
        }
        template.body(&body_ids.id(index), &metadata)
    });
    let waits = Waits {
        timeout: args.timeout,
        linger: args.linger,
        request_timeout: args.server.request_timeout,
        pid: args.pid,
    };
    let run = drive::drive(publishers, schedule, ids, body, ports.len(), arrived, waits).await?;
    let urls = receivers.iter().map(|r| r.url()).collect();
    drop(receivers);

    let report = Report {
        url: url.to_string(),
        receivers: urls,
        events: args.events,
        event_bytes: TARGET_BYTES,
        rate: if schedule.is_burst() { 0.0 } else { args.rate },
        clients: args.clients,
        run,
        signature_failures: signature_failures.load(Ordering::Relaxed),
        pid: args.pid,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(())
}

/// The receivers' ports: the listed ones, or `count` free ones (port 0).
fn receiver_ports(count: Option<u16>, listed: &[u16]) -> anyhow::Result<Vec<u16>> {
    match (count, listed.len()) {
        (None, 0) => Ok(vec![0]),
        (Some(n), 0) => Ok(vec![0; usize::from(n)]),
        (None, _) => Ok(listed.to_vec()),
        (Some(n), len) if usize::from(n) == len => Ok(listed.to_vec()),
        (Some(n), len) => {
            bail!("--receivers {n} but --receiver-ports lists {len} ports; give one per receiver")
        }
    }
}

fn print_human(r: &Report) {
    let pace = if r.rate > 0.0 {
        format!("{} events/s", r.rate)
    } else {
        "burst".to_string()
    };
    println!(
        "e2e: {} events of {} bytes ({pace}), {} clients, {} receiver(s)",
        r.events,
        r.event_bytes,
        r.clients,
        r.receivers.len()
    );
    match &r.run.publish {
        Some(p) => {
            println!(
                "  published: {} accepted in {:.2} s ({:.0} events/s); reply latency {}",
                p.tally.accepted, p.seconds, p.events_per_s, p.latency
            );
            for line in p.tally.problems() {
                println!("  {line}");
            }
        }
        None => println!("  published: interrupted before publishing finished"),
    }
    let d = &r.run.deliveries;
    println!(
        "  delivered: {} of {} expected in {:.2} s (first publish → last receipt)  →  {:.0} deliveries/s",
        d.delivered, d.expected, r.run.delivery_seconds, r.run.deliveries_per_s
    );
    println!("  publish → received: {}", d.latency);
    println!(
        "  missing {}, duplicates (same webhook-id) {}, repeated (event, receiver) {}, unexpected {}, bad signatures {}",
        d.missing, d.duplicates, d.repeated_pairs, d.unexpected, r.signature_failures
    );
    if r.run.timed_out {
        println!("  stopped waiting: --timeout passed before every delivery arrived");
        if r.receivers.len() > 1 {
            println!(
                "  (each event asked for fan-out with metadata fanout = \"{}\": do the server's subscriptions match that?)",
                r.receivers.len()
            );
        }
    }
    if r.run.interrupted {
        println!("  interrupted");
    }
    if let (Some(pid), Some(m)) = (r.pid, &r.run.memory) {
        let mib = |kib: Option<u64>| {
            kib.map_or("unknown".to_string(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            })
        };
        println!(
            "  process {pid}: peak RSS (VmHWM) {}, max sampled VmRSS {} ({} samples every {})",
            mib(m.peak_kib),
            mib(m.max_sampled_kib),
            m.samples,
            Micros(RSS_EVERY.as_micros() as u64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_ports_follow_the_flags() {
        assert_eq!(receiver_ports(None, &[]).unwrap(), vec![0]);
        assert_eq!(receiver_ports(Some(3), &[]).unwrap(), vec![0, 0, 0]);
        assert_eq!(
            receiver_ports(None, &[19001, 19002]).unwrap(),
            vec![19001, 19002]
        );
        assert_eq!(receiver_ports(Some(1), &[19001]).unwrap(), vec![19001]);
        let err = receiver_ports(Some(2), &[19001]).unwrap_err().to_string();
        assert!(err.contains("--receivers 2"), "{err}");
    }
}
