//! Publish to a running herald: one durable event, one transient, a burst through the
//! background publisher; `--print-catalogue` prints the `[[event_types]]` block instead.
//!
//! ```sh
//! HERALD_URL=http://127.0.0.1:8650 HERALD_KEY=dev-acme-key \
//!     cargo run -p herald-client --example publish
//! ```

use herald_client::{Event, EventCatalogue, Outcome, Publisher, herald_events};

herald_events! {
    /// The event types of this example (a subset of config/herald.toml's registry).
    pub enum Events {
        CapsuleCreate = "capsule.create",
        HostDown = "host.down",
        transient CapsuleStateChanged = "capsule.state.changed",
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--print-catalogue") {
        print!("{}", Events::registry_toml());
        return Ok(());
    }
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8650".into());
    let key = std::env::var("HERALD_KEY").map_err(|_| "set HERALD_KEY to a team API key")?;
    let publisher = Publisher::builder(&url, key)
        .catalogue::<Events>()
        .build()?;

    let event = Event::builder(Events::CapsuleCreate)
        .outcome(Outcome::Error)
        .resource("sandbox", "sb_42")
        .actor_system()
        .metadata("region", "eu")
        .error("out of memory")
        .build();
    let published = publisher.publish(event).await?;
    println!("durable event accepted: {}", published.id);

    let blip = Event::builder(Events::CapsuleStateChanged)
        .resource("sandbox", "sb_42")
        .metadata("state", "booting")
        .build();
    let published = publisher.publish_transient(blip).await?;
    println!("transient event shown on the live stream: {}", published.id);

    let background = publisher.spawn();
    for i in 0..100 {
        background.publish(
            Event::builder(Events::HostDown)
                .metadata("host", format!("h{i}"))
                .build(),
        )?;
    }
    background.close().await?;
    let stats = background.stats();
    println!("background: {} sent, {} refused", stats.sent, stats.failed);
    Ok(())
}
