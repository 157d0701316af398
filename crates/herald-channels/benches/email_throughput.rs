//! Email throughput: messages per second through one pooled `Mailer` to a local SMTP
//! server on 127.0.0.1, with bounded concurrency.
//!
//! Two servers: the aiosmtpd test fixture (`tests/support/smtp_server.py`; single-threaded
//! Python, so it is the bottleneck) and Postfix's `smtp-sink` (C; installed by
//! `scripts/setup` with the `postfix` package), which measures herald's side.
//!
//! `cargo bench -p herald-channels --bench email_throughput` runs the full measurement
//! (2,000 messages per scenario; `-- --messages N --concurrency C` to change it). Under
//! `cargo test --benches` (no `--bench` argument) it sends a few messages to aiosmtpd only,
//! as a smoke test.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herald_channels::{Channel, EmailChannel, Mailer, MailerOptions, Outgoing, SendOutcome};
use herald_core::{Event, RawEvent, TeamId, Timestamp};
use herald_testkit::smtp::{SmtpOptions, SmtpServer};

#[derive(Clone, Copy)]
enum Server {
    /// The test fixture; `store`: write each message as an `.eml` file (its normal mode).
    Aiosmtpd {
        store: bool,
    },
    SmtpSink,
}

struct Scenario {
    name: &'static str,
    server: Server,
    /// Reuse connections (the default) or open one per message.
    pooled: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "aiosmtpd, pooled, discarding",
        server: Server::Aiosmtpd { store: false },
        pooled: true,
    },
    Scenario {
        name: "aiosmtpd, pooled, writing .eml files",
        server: Server::Aiosmtpd { store: true },
        pooled: true,
    },
    Scenario {
        name: "aiosmtpd, one connection per message",
        server: Server::Aiosmtpd { store: false },
        pooled: false,
    },
    Scenario {
        name: "smtp-sink, pooled",
        server: Server::SmtpSink,
        pooled: true,
    },
    Scenario {
        name: "smtp-sink, one connection per message",
        server: Server::SmtpSink,
        pooled: false,
    },
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let flag = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let messages = flag("--messages", if bench { 2000 } else { 20 });
    let concurrency = flag("--concurrency", 16);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("email throughput: {messages} messages per scenario, concurrency {concurrency}");
    for scenario in SCENARIOS {
        if !bench && matches!(scenario.server, Server::SmtpSink) {
            continue;
        }
        let rate = runtime.block_on(run(scenario, messages, concurrency));
        println!("  {:<40} {rate:>7.0} messages/s", scenario.name);
    }
}

async fn run(scenario: &Scenario, messages: usize, concurrency: usize) -> f64 {
    // Kept alive until the end of the run.
    let (url, fixture, _sink) = match scenario.server {
        Server::Aiosmtpd { store } => {
            let server = SmtpServer::start(SmtpOptions {
                discard: !store,
                ..SmtpOptions::default()
            });
            (server.url(), Some((server, store)), None)
        }
        Server::SmtpSink => {
            let sink = SmtpSink::start();
            (format!("smtp://127.0.0.1:{}", sink.port), None, Some(sink))
        }
    };
    let mailer = Mailer::with_options(
        &url,
        "Herald <herald@example.com>",
        None,
        None,
        MailerOptions {
            timeout: Duration::from_secs(30),
            max_connections: concurrency,
            max_idle_connections: if scenario.pooled { concurrency } else { 0 },
            ..MailerOptions::default()
        },
    )
    .expect("mailer");
    let team = TeamId::parse("acme").unwrap();
    let channel = Arc::new(
        EmailChannel::new(
            mailer,
            team.clone(),
            vec!["Ops <ops@acme.example>".into()],
            vec!["oncall@acme.example".into()],
            Some("[bench]".into()),
        )
        .expect("channel"),
    );
    let event = Arc::new(event(&team));

    // Warm up: open the pool's connections and fault everything in.
    send_all(&channel, &event, concurrency * 2, concurrency, "warm").await;
    let started = Instant::now();
    send_all(&channel, &event, messages, concurrency, "dlv").await;
    let elapsed = started.elapsed();
    if let Some((server, true)) = &fixture {
        let stored = server.wait_for(messages + concurrency * 2, Duration::from_secs(30));
        assert_eq!(stored.len(), messages + concurrency * 2);
    }
    messages as f64 / elapsed.as_secs_f64()
}

/// Postfix's `smtp-sink` on a free port of 127.0.0.1. Killed on drop.
struct SmtpSink {
    child: Child,
    port: u16,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let mut command = Command::new("smtp-sink");
        if is_root() {
            // smtp-sink refuses to keep running as root.
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run smtp-sink ({e}): run scripts/setup (apt-get install postfix)")
            });
        let sink = SmtpSink { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        sink
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Sends `count` messages with `concurrency` tasks; panics on any failed send.
async fn send_all(
    channel: &Arc<EmailChannel>,
    event: &Arc<Event>,
    count: usize,
    concurrency: usize,
    prefix: &'static str,
) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (channel, event, next) = (Arc::clone(channel), Arc::clone(event), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let delivery_id = format!("{prefix}_{i}");
                let outcome = channel
                    .send(&Outgoing {
                        delivery_id: &delivery_id,
                        event: &event,
                        attempt: 1,
                        rendered: None,
                        digest: None,
                    })
                    .await;
                if !matches!(outcome, SendOutcome::Delivered { .. }) {
                    panic!("send {delivery_id} failed: {outcome}");
                }
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("sender task");
    }
}

fn event(team: &TeamId) -> Event {
    RawEvent::from_json(
        br#"{"event": "capsule.create", "outcome": "error",
             "actor": {"type": "user", "id": "u_1", "name": "Alice"},
             "resource": {"id": "sb_42", "type": "capsule"},
             "metadata": {"reason": "oom", "region": "eu-west", "image": "python:3.12"},
             "error": "out of memory: the capsule used 512 MiB of its 512 MiB limit"}"#,
    )
    .unwrap()
    .into_event(
        Some(team),
        Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
        || "evt_bench".to_string(),
    )
    .unwrap()
}
