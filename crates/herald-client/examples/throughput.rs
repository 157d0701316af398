//! Background-mode throughput against one running herald: publishes N events through one
//! `BackgroundPublisher`, closes it (everything sent), and prints events/s. The figure in
//! docs/BENCHMARKS.md comes from this program; the command is there.
//!
//! ```sh
//! cargo run --release -p herald-client --example throughput -- \
//!     --url http://127.0.0.1:8650 --key dev-acme-key --events 200000
//! ```

use std::time::Instant;

use herald_client::{BackgroundOptions, Event, Outcome, Publisher};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = arg("--url").unwrap_or_else(|| "http://127.0.0.1:8650".into());
    let key = arg("--key").ok_or("--key KEY is required (a team API key)")?;
    let events: u64 = arg("--events").unwrap_or_else(|| "100000".into()).parse()?;
    let event_type = arg("--type").unwrap_or_else(|| "capsule.create".into());

    let background =
        Publisher::new(url, key)?.spawn_with(BackgroundOptions::default().capacity(50_000));
    let started = Instant::now();
    for i in 0..events {
        let event = Event::builder(event_type.as_str())
            .outcome(Outcome::Error)
            .resource("sandbox", format!("sb_{i}"))
            .actor_system()
            .metadata("region", "eu")
            .error("out of memory")
            .build();
        // Waits for room when herald is behind, so the figure is the sustained rate.
        background.publish_or_wait(event).await?;
    }
    background.close().await?;
    let elapsed = started.elapsed();
    let stats = background.stats();
    println!(
        "{} events in {:.2} s: {:.0} events/s ({} sent, {} refused)",
        events,
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        stats.sent,
        stats.failed
    );
    if stats.sent != events {
        return Err(format!("only {} of {events} events were accepted", stats.sent).into());
    }
    Ok(())
}
