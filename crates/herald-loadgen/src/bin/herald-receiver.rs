//! `herald-receiver`: a webhook endpoint that checks Standard Webhooks signatures and prints
//! one JSON line per delivery — for the quickstart, for benchmarks, for trying herald out.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use axum::http::StatusCode;
use clap::Parser;
use herald_channels::webhook::SigningKey;
use herald_core::Secret;
use herald_loadgen::receiver::{self, ReceiverOptions};
use tokio::net::TcpListener;

/// Receive herald's webhooks: verify each signature (with --secret), print each delivery as
/// a JSON line `{"received_at", "webhook_id", "verified", "body"}` on stdout, and answer
/// --status. A bad signature is answered 401 with the reason. Stops on Ctrl-C or SIGTERM.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (see --print-port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The channel's signing secret (`whsec_…`); without it signatures are not checked.
    #[arg(long, env = "HERALD_RECEIVER_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// HTTP status to answer each delivery with (e.g. 500 or 503 to watch herald retry,
    /// 410 to watch it disable the channel).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    status: u16,
    /// Do not print deliveries (still verifies and answers).
    #[arg(long)]
    quiet: bool,
    /// Print the bound port on the first line of stdout before anything else.
    #[arg(long)]
    print_port: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = args.secret.map(Secret::new);
    if let Some(secret) = &secret {
        SigningKey::from_secret(secret).context("--secret")?;
    }
    let Ok(status) = StatusCode::from_u16(args.status) else {
        bail!("--status {} is not an HTTP status", args.status);
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if args.print_port {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", addr.port())?;
        out.flush()?;
    }
    eprintln!(
        "herald-receiver: listening on http://{addr}/ ({}; answering {status})",
        if secret.is_some() {
            "verifying signatures"
        } else {
            "signatures not checked"
        }
    );
    let options = ReceiverOptions {
        secret,
        status,
        print: !args.quiet,
        ..ReceiverOptions::default()
    };
    receiver::serve(listener, options, shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}
