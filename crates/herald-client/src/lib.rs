//! herald-client: publish events to [herald](https://example.invalid/herald) from Rust and
//! follow its live stream.
//!
//! - [`Publisher`] sends events (`POST /v1/events`), one at a time or in batches, with ids
//!   generated on the client (UUIDv7) so a retried request is never stored twice.
//! - [`Publisher::spawn`] gives a [`BackgroundPublisher`] for hot paths: `publish` only
//!   queues; a task sends batches of up to 1,000 events after at most 5 ms, retries
//!   network errors and 5xx with the same ids, and [`flush`](BackgroundPublisher::flush) /
//!   [`close`](BackgroundPublisher::close) drain it. A full queue is an error that hands the
//!   event back; nothing is dropped silently.
//! - [`Subscriber`] reads `GET /v1/stream` as typed [`Message`]s and reconnects with
//!   `Last-Event-ID`, so no durable event is missed across a server restart.
//! - [`herald_events!`] declares a typed catalogue of event types and prints the
//!   `[[event_types]]` block of herald's configuration from the same list.
//! - [`Bus`] is a small publish/subscribe interface with an in-memory implementation
//!   ([`MemoryBus`]) for single processes and tests, and [`HeraldBus`] over a real herald.
//!
//! # Quick start
//!
//! ```no_run
//! use herald_client::{Event, Message, Outcome, Publisher, Subscriber, herald_events};
//!
//! herald_events! {
//!     pub enum Events {
//!         CapsuleCreate = "capsule.create",
//!         transient CapsuleStateChanged = "capsule.state.changed",
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), herald_client::Error> {
//!     let url = "http://127.0.0.1:8650";
//!     let publisher = Publisher::builder(url, "dev-acme-key").catalogue::<Events>().build()?;
//!
//!     // Durable: stored, matched against the team's subscriptions, delivered.
//!     let event = Event::builder(Events::CapsuleCreate)
//!         .outcome(Outcome::Error)
//!         .resource("sandbox", "sb_42")
//!         .actor_system()
//!         .metadata("region", "eu")
//!         .error("out of memory")
//!         .build();
//!     let published = publisher.publish(event).await?;
//!     println!("accepted {}", published.id);
//!
//!     // Hot path: queue and return at once; close() sends what is left.
//!     let background = publisher.spawn();
//!     background.publish(Event::builder(Events::CapsuleCreate).outcome(Outcome::Success).build())?;
//!     background.close().await?;
//!
//!     // Follow the live stream.
//!     let mut subscriber = Subscriber::new(url, "dev-acme-key")?.events(["capsule.*"])?;
//!     if let Message::Event { event, .. } = subscriber.next().await? {
//!         println!("{} {:?}", event.event, event.id);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Transient events
//!
//! herald's registry (`[[event_types]]` in its configuration) decides whether a type is
//! durable or transient (live stream only); the HTTP API has no separate "transient"
//! request. [`Publisher::publish_transient`] therefore sends the same request as
//! [`Publisher::publish`] and, with a catalogue, checks that the type is declared
//! transient. Print the catalogue's TOML with [`EventCatalogue::registry_toml`] so both
//! sides use one list.
//!
//! # Errors
//!
//! One [`Error`] type. herald's refusals keep its `code`, `message` and `field`
//! ([`Error::Api`]); [`Error::is_retryable`] tells network errors and 5xx from mistakes.
//! Neither errors nor `Debug` output contain the API key.

#![warn(missing_docs)]

mod background;
mod bus;
mod catalogue;
mod error;
mod http;
mod publisher;
mod retry;
mod subscriber;

pub use background::{BackgroundOptions, BackgroundPublisher, BackgroundStats, Metrics};
pub use bus::{BoxFuture, Bus, Handler, HeraldBus, MemoryBus, Notice, Subscription};
pub use catalogue::{EventCatalogue, registry_toml};
pub use error::Error;
pub use herald_core::{Actor, ActorType, EventBuilder, EventKind, Outcome, Resource};
pub use publisher::{BatchReply, MAX_BATCH, Published, Publisher, PublisherBuilder};
pub use retry::Backoff;
pub use subscriber::{ChannelUpdate, DeliveryUpdate, Message, Subscriber};

/// An event as published: herald-core's envelope (`RawEvent`). Build one with
/// [`Event::builder`]; `id`, `timestamp` and `team_id` may stay empty (the publisher
/// fills the id, herald the rest).
///
/// ```
/// use herald_client::{Event, Outcome};
/// let event = Event::builder("capsule.create")
///     .outcome(Outcome::Error)
///     .resource("sandbox", "sb_42")
///     .actor_system()
///     .metadata("region", "eu")
///     .error("out of memory")
///     .build();
/// assert_eq!(
///     serde_json::to_string(&event).unwrap(),
///     r#"{"event":"capsule.create","outcome":"error","actor":{"type":"system"},"resource":{"id":"sb_42","type":"sandbox"},"metadata":{"region":"eu"},"error":"out of memory"}"#
/// );
/// ```
pub type Event = herald_core::RawEvent;

// The README's example compiles as a doctest, so it cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
