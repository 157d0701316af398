//! The in-process event bus: a small `Bus` trait, an in-memory implementation for single
//! processes and tests (a tokio broadcast: a slow subscriber is told how much it missed
//! instead of being dropped), and `HeraldBus`, the same interface over a real herald.
//!
//! Type filters use herald-core's `Pattern`, so `capsule.*` and `*` mean here exactly
//! what they mean in herald's subscriptions and stream filters.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use herald_core::{Pattern, RawEvent};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::background::BackgroundPublisher;
use crate::error::Error;
use crate::subscriber::{Message, Subscriber};

/// What a bus handler receives.
///
/// ```
/// use herald_client::Notice;
/// let handler = |notice: Notice| match notice {
///     Notice::Event(event) => println!("{}", event.event),
///     Notice::Lagged { missed } => println!("fell behind: {missed} events skipped"),
/// };
/// # let _ = handler;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// An event of a subscribed type.
    Event(Arc<RawEvent>),
    /// This subscriber fell behind and events were skipped; it keeps receiving.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

/// A boxed future, so that [`Bus`] stays usable as `dyn Bus`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler called once per [`Notice`], in order, on a task of its own subscription.
pub type Handler = Box<dyn Fn(Notice) + Send + Sync + 'static>;

/// An event bus: publish events, subscribe handlers by type, close.
///
/// ```
/// use herald_client::{Bus, Event, MemoryBus, Notice};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), herald_client::Error> {
/// async fn announce(bus: &dyn Bus) -> Result<(), herald_client::Error> {
///     bus.publish(Event::builder("capsule.create").build())
/// }
/// let bus = MemoryBus::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let _subscription = bus.subscribe(Box::new(move |n: Notice| { let _ = tx.send(n); }), &["capsule.*"])?;
/// announce(&bus).await?;
/// assert!(matches!(rx.recv().await, Some(Notice::Event(e)) if e.event == "capsule.create"));
/// # Ok(()) }
/// ```
pub trait Bus: Send + Sync {
    /// Publishes `event` to every subscriber of its type. Does not wait for handlers.
    fn publish(&self, event: RawEvent) -> Result<(), Error>;

    /// Calls `handler` for every event whose type matches one of `types` (herald's
    /// pattern syntax; empty = every type) until the returned [`Subscription`] is dropped.
    fn subscribe(&self, handler: Handler, types: &[&str]) -> Result<Subscription, Error>;

    /// Stops the bus: later publishes fail with [`Error::Closed`]; subscriptions end once
    /// they have handled what was published before.
    fn close(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// A live subscription; dropping it unsubscribes (its handler is dropped too).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), herald_client::Error> {
/// use herald_client::{Bus, MemoryBus};
/// let bus = MemoryBus::new();
/// let subscription = bus.subscribe(Box::new(|_| {}), &[])?;
/// drop(subscription); // unsubscribed
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    task: JoinHandle<()>,
    /// Cleared on drop, before the task is aborted: aborting takes effect only at the
    /// task's next await, and a handler must not be called for an event published after
    /// `drop` returned.
    active: Arc<AtomicBool>,
}

impl Subscription {
    /// Runs `body` as the subscription's task; `body` calls the handler only while the
    /// flag it gets is set.
    fn spawn<F, Fut>(body: F) -> Subscription
    where
        F: FnOnce(Arc<AtomicBool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let active = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(body(Arc::clone(&active)));
        Subscription { task, active }
    }

    /// Waits until the subscription ends by itself (its bus closed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), herald_client::Error> {
    /// use herald_client::{Bus, MemoryBus};
    /// let bus = MemoryBus::new();
    /// let subscription = bus.subscribe(Box::new(|_| {}), &[])?;
    /// bus.close().await?;
    /// subscription.finished().await;
    /// # Ok(()) }
    /// ```
    pub async fn finished(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.active.store(false, Ordering::SeqCst);
        self.task.abort();
    }
}

fn patterns(types: &[&str]) -> Result<Vec<Pattern>, Error> {
    types
        .iter()
        .map(|t| Pattern::parse(t).map_err(Error::from))
        .collect()
}

fn admits(patterns: &[Pattern], event_type: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(event_type))
}

/// The in-memory bus: one tokio broadcast channel. Publishing with nobody subscribed is
/// fine; a subscriber more than `capacity` events behind gets [`Notice::Lagged`] and goes
/// on with the oldest event still held.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), herald_client::Error> {
/// use herald_client::{Bus, Event, MemoryBus};
/// let bus = MemoryBus::with_capacity(16);
/// bus.publish(Event::builder("host.down").build())?; // nobody listens: not an error
/// assert_eq!(bus.subscriber_count(), 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBus {
    inner: Arc<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    tx: Mutex<Option<broadcast::Sender<Arc<RawEvent>>>>,
    closed: AtomicBool,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

impl MemoryBus {
    /// A bus holding up to 1,024 events for a slow subscriber (herald's own bus size).
    ///
    /// ```
    /// let bus = herald_client::MemoryBus::new();
    /// # let _ = bus;
    /// ```
    pub fn new() -> MemoryBus {
        MemoryBus::with_capacity(1024)
    }

    /// A bus holding up to `capacity` events (at least 1) for a slow subscriber.
    ///
    /// ```
    /// let bus = herald_client::MemoryBus::with_capacity(4);
    /// # let _ = bus;
    /// ```
    pub fn with_capacity(capacity: usize) -> MemoryBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        MemoryBus {
            inner: Arc::new(MemoryInner {
                tx: Mutex::new(Some(tx)),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// How many subscriptions are live.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), herald_client::Error> {
    /// use herald_client::{Bus, MemoryBus};
    /// let bus = MemoryBus::new();
    /// let _s = bus.subscribe(Box::new(|_| {}), &["*"])?;
    /// assert_eq!(bus.subscriber_count(), 1);
    /// # Ok(()) }
    /// ```
    pub fn subscriber_count(&self) -> usize {
        self.sender().map_or(0, |tx| tx.receiver_count())
    }

    fn sender(&self) -> Option<broadcast::Sender<Arc<RawEvent>>> {
        self.inner.tx.lock().expect("bus lock").clone()
    }
}

impl Bus for MemoryBus {
    fn publish(&self, event: RawEvent) -> Result<(), Error> {
        match self.sender() {
            Some(tx) if !self.inner.closed.load(Ordering::SeqCst) => {
                // An error only means nobody is subscribed: publishing to no one is fine.
                let _ = tx.send(Arc::new(event));
                Ok(())
            }
            _ => Err(Error::Closed {
                event: Some(Box::new(event)),
            }),
        }
    }

    fn subscribe(&self, handler: Handler, types: &[&str]) -> Result<Subscription, Error> {
        let patterns = patterns(types)?;
        let mut rx = self
            .sender()
            .ok_or(Error::Closed { event: None })?
            .subscribe();
        Ok(Subscription::spawn(|active| async move {
            loop {
                let notice = match rx.recv().await {
                    Ok(event) if admits(&patterns, &event.event) => Notice::Event(event),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => Notice::Lagged { missed },
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if !active.load(Ordering::SeqCst) {
                    break;
                }
                handler(notice);
            }
        }))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.closed.store(true, Ordering::SeqCst);
        // Dropping the sender ends each subscription after the events it still holds.
        self.inner.tx.lock().expect("bus lock").take();
        Box::pin(async { Ok(()) })
    }
}

/// The [`Bus`] over a real herald: `publish` queues on a background publisher (durable
/// and transient types alike; herald's registry tells them apart), and each subscription
/// follows herald's live stream with a [`Subscriber`] filtered by its types, resuming
/// with `Last-Event-ID` after a reconnect.
///
/// ```no_run
/// # async fn demo() -> Result<(), herald_client::Error> {
/// use herald_client::{Bus, Event, HeraldBus, Publisher};
/// let url = "http://127.0.0.1:8650";
/// let bus = HeraldBus::new(Publisher::new(url, "dev-acme-key")?.spawn(), url, "dev-acme-key");
/// let _s = bus.subscribe(Box::new(|n| println!("{n:?}")), &["host.*"])?;
/// bus.publish(Event::builder("host.down").build())?;
/// bus.close().await?;
/// # Ok(()) }
/// ```
pub struct HeraldBus {
    publisher: BackgroundPublisher,
    url: String,
    api_key: String,
}

impl fmt::Debug for HeraldBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeraldBus")
            .field("publisher", &self.publisher)
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl HeraldBus {
    /// A bus that publishes through `publisher` and subscribes to the live stream of the
    /// herald at `url` with `api_key` (a team key sees its own team's events).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), herald_client::Error> {
    /// let publisher = herald_client::Publisher::new("http://127.0.0.1:8650", "k")?.spawn();
    /// let bus = herald_client::HeraldBus::new(publisher, "http://127.0.0.1:8650", "k");
    /// # let _ = bus;
    /// # Ok(()) }
    /// ```
    pub fn new(
        publisher: BackgroundPublisher,
        url: impl Into<String>,
        api_key: impl Into<String>,
    ) -> HeraldBus {
        HeraldBus {
            publisher,
            url: url.into(),
            api_key: api_key.into(),
        }
    }

    /// Like [`Bus::subscribe`], but returns once the stream is open, so that every event
    /// published afterwards reaches `handler`.
    ///
    /// ```no_run
    /// # async fn demo(bus: herald_client::HeraldBus) -> Result<(), herald_client::Error> {
    /// let _s = bus.subscribe_connected(Box::new(|n| println!("{n:?}")), &[]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_connected(
        &self,
        handler: Handler,
        types: &[&str],
    ) -> Result<Subscription, Error> {
        let mut subscriber = Subscriber::new(self.url.clone(), &self.api_key)?.events(types)?;
        subscriber.connect().await?;
        Ok(follow(subscriber, handler))
    }
}

/// Feeds a subscriber's events and lag notices to `handler` until a refusal ends it.
fn follow(mut subscriber: Subscriber, handler: Handler) -> Subscription {
    Subscription::spawn(|active| async move {
        loop {
            let notice = match subscriber.next().await {
                Ok(Message::Event { event, .. }) => Notice::Event(Arc::new(event)),
                Ok(Message::Lagged { missed }) => Notice::Lagged { missed },
                Ok(_) => continue,
                // Only refusals reach here (a revoked key): nothing more will come.
                Err(_) => break,
            };
            if !active.load(Ordering::SeqCst) {
                break;
            }
            handler(notice);
        }
    })
}

impl Bus for HeraldBus {
    fn publish(&self, event: RawEvent) -> Result<(), Error> {
        self.publisher.publish(event).map(|_| ())
    }

    fn subscribe(&self, handler: Handler, types: &[&str]) -> Result<Subscription, Error> {
        let subscriber = Subscriber::new(self.url.clone(), &self.api_key)?.events(types)?;
        Ok(follow(subscriber, handler))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.publisher.close())
    }
}

#[cfg(test)]
mod tests;
