//! Follow a herald's live stream and print each message; reconnects (resuming after the
//! last durable event) when herald restarts.
//!
//! ```sh
//! HERALD_URL=http://127.0.0.1:8650 HERALD_KEY=dev-acme-key \
//!     cargo run -p herald-client --example subscribe -- 'capsule.*' host.down
//! ```

use herald_client::{Message, Subscriber};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8650".into());
    let key = std::env::var("HERALD_KEY").map_err(|_| "set HERALD_KEY to a team API key")?;
    let patterns: Vec<String> = std::env::args().skip(1).collect();
    let mut subscriber = Subscriber::new(url, key)?.events(&patterns)?;
    loop {
        match subscriber.next().await? {
            Message::Event { durable, event } => println!(
                "{} {} {}",
                if durable { "event" } else { "transient" },
                event.event,
                event.id.unwrap_or_default()
            ),
            Message::Delivery(d) => println!(
                "delivery {} of {} to {}: {}",
                d.delivery_id, d.event_id, d.channel, d.status
            ),
            Message::Channel(c) => println!("channel {} is {}", c.channel, c.state),
            Message::Lagged { missed } => println!("fell behind: missed {missed} live messages"),
            Message::Reset { reason } => println!("could not resume: {reason}"),
            other => println!("{other:?}"),
        }
    }
}
