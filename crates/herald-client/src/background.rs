//! Background mode for hot paths: `publish` puts the event on a bounded queue and returns;
//! one task sends the queue in batches (≤ 1,000 events, ≤ 1 MB, after a linger of ≤ 5 ms),
//! retrying network errors and 5xx with the same ids until herald accepts them.
//!
//! Nothing is dropped silently: a full queue hands the event back in the error, and an
//! event herald refuses (4xx) is reported to the [`Metrics`] hook with herald's error.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_core::RawEvent;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::publisher::{MAX_BATCH, Publisher};
use crate::retry::Backoff;

/// Hooks the background publisher calls as events move; every method has an empty
/// default, so implement only what you count. Called on the sender task: keep them quick.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use herald_client::{Error, Event, Metrics};
///
/// #[derive(Debug, Default)]
/// struct Counters { sent: AtomicU64, failed: AtomicU64 }
///
/// impl Metrics for Counters {
///     fn sent(&self, count: usize) {
///         self.sent.fetch_add(count as u64, Ordering::Relaxed);
///     }
///     fn failed(&self, events: &[Event], error: &Error) {
///         self.failed.fetch_add(events.len() as u64, Ordering::Relaxed);
///         eprintln!("herald refused {} event(s): {error}", events.len());
///     }
/// }
/// ```
pub trait Metrics: Send + Sync + 'static {
    /// `count` events entered the queue.
    fn queued(&self, count: usize) {
        let _ = count;
    }
    /// herald accepted `count` events (duplicates of earlier ones included).
    fn sent(&self, count: usize) {
        let _ = count;
    }
    /// herald refused these events for good (a 4xx such as `unknown_event_type`); they
    /// are not retried, and this hook is where they surface (without a hook they are
    /// only counted, in [`BackgroundStats::failed`]).
    fn failed(&self, events: &[RawEvent], error: &Error) {
        let _ = (events, error);
    }
    /// Sending `count` events failed in a retryable way; they will be sent again.
    fn retrying(&self, count: usize, error: &Error) {
        let _ = (count, error);
    }
}

/// Options of the background publisher.
///
/// ```
/// use std::time::Duration;
/// let options = herald_client::BackgroundOptions::default()
///     .capacity(50_000)
///     .max_batch(500)
///     .linger(Duration::from_millis(2));
/// # let _ = options;
/// ```
#[derive(Clone)]
#[must_use]
pub struct BackgroundOptions {
    capacity: usize,
    max_batch: usize,
    max_batch_bytes: usize,
    linger: Duration,
    backoff: Backoff,
    metrics: Option<Arc<dyn Metrics>>,
}

impl fmt::Debug for BackgroundOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundOptions")
            .field("capacity", &self.capacity)
            .field("max_batch", &self.max_batch)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("linger", &self.linger)
            .field("backoff", &self.backoff)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl Default for BackgroundOptions {
    /// A queue of 10,000 events, batches of up to 1,000 events and 1,000,000 bytes (under
    /// herald's default 1 MiB body limit), 5 ms linger, backoff from 50 ms to 2 s.
    fn default() -> Self {
        BackgroundOptions {
            capacity: 10_000,
            max_batch: MAX_BATCH,
            max_batch_bytes: 1_000_000,
            linger: Duration::from_millis(5),
            backoff: Backoff::default(),
            metrics: None,
        }
    }
}

impl BackgroundOptions {
    /// How many events may wait in the queue (at least 1).
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events.max(1);
        self
    }

    /// The most events in one request, 1 to 1,000.
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.clamp(1, MAX_BATCH);
        self
    }

    /// The largest request body; set it below the server's `[server] max_body_bytes`.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = bytes.max(1);
        self
    }

    /// How long the first event of a batch waits for company; at most 5 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger.min(Duration::from_millis(5));
        self
    }

    /// The delays between retries of a batch (retried until herald takes it).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The hooks to call as events are queued, sent, retried or refused.
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// Counts since the background publisher started.
///
/// ```
/// let stats = herald_client::BackgroundStats::default();
/// assert_eq!(stats.queued, stats.sent + stats.failed + stats.pending);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackgroundStats {
    /// Events accepted into the queue.
    pub queued: u64,
    /// Events herald accepted.
    pub sent: u64,
    /// Events herald refused for good (reported to [`Metrics::failed`]).
    pub failed: u64,
    /// Events queued or being sent.
    pub pending: u64,
}

/// The handle of a background publisher (from [`Publisher::spawn`]). Cheap to clone; when
/// the last clone is dropped the task still sends what is queued, then ends.
///
/// ```no_run
/// use herald_client::{Event, Publisher};
///
/// # async fn demo() -> Result<(), herald_client::Error> {
/// let background = Publisher::new("http://127.0.0.1:8650", "dev-acme-key")?.spawn();
/// for i in 0..10_000 {
///     // Never waits for the network: a full queue is an error that hands the event back.
///     background.publish(Event::builder("host.down").metadata("n", i.to_string()).build())?;
/// }
/// background.close().await?; // sends everything still queued
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BackgroundPublisher {
    inner: Arc<Handle>,
}

struct Handle {
    tx: mpsc::Sender<RawEvent>,
    publisher: Publisher,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for BackgroundPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundPublisher")
            .field("publisher", &self.inner.publisher)
            .field("stats", &self.stats())
            .finish()
    }
}

/// What the handles and the sender task share.
struct State {
    capacity: usize,
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    /// sent + failed, watched by `flush`.
    settled: watch::Sender<u64>,
    /// Cuts the linger short (flush, close).
    wake: Notify,
    closing: AtomicBool,
    metrics: Option<Arc<dyn Metrics>>,
}

impl State {
    fn settle(&self, sent: usize, failed: usize) {
        self.sent.fetch_add(sent as u64, Ordering::SeqCst);
        self.failed.fetch_add(failed as u64, Ordering::SeqCst);
        self.settled.send_modify(|s| *s += (sent + failed) as u64);
    }
}

impl Publisher {
    /// Starts a background publisher with the default options. Call it inside a tokio
    /// runtime; the task runs on it.
    ///
    /// ```no_run
    /// # async fn demo(publisher: herald_client::Publisher) {
    /// let background = publisher.spawn();
    /// # let _ = background;
    /// # }
    /// ```
    pub fn spawn(&self) -> BackgroundPublisher {
        self.spawn_with(BackgroundOptions::default())
    }

    /// Starts a background publisher with `options`.
    ///
    /// ```no_run
    /// # async fn demo(publisher: herald_client::Publisher) {
    /// let background = publisher.spawn_with(herald_client::BackgroundOptions::default().capacity(1_000));
    /// # let _ = background;
    /// # }
    /// ```
    pub fn spawn_with(&self, options: BackgroundOptions) -> BackgroundPublisher {
        let (tx, rx) = mpsc::channel(options.capacity);
        let state = Arc::new(State {
            capacity: options.capacity,
            queued: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            settled: watch::channel(0).0,
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            metrics: options.metrics.clone(),
        });
        let task = tokio::spawn(run(self.clone(), rx, Arc::clone(&state), options));
        BackgroundPublisher {
            inner: Arc::new(Handle {
                tx,
                publisher: self.clone(),
                state,
                task: Mutex::new(Some(task)),
            }),
        }
    }
}

impl BackgroundPublisher {
    /// Queues `event` and returns its id at once, without waiting for the network or for
    /// room in the queue. Either kind of event may be queued (the server's registry
    /// decides what is transient).
    ///
    /// Errors: the event breaks the envelope's rules ([`Error::InvalidEvent`], checked
    /// here so it cannot spoil a batch), the queue is full ([`Error::QueueFull`], with the
    /// event handed back), or the publisher was closed ([`Error::Closed`]).
    ///
    /// ```no_run
    /// # fn demo(background: herald_client::BackgroundPublisher) {
    /// use herald_client::{Error, Event};
    /// match background.publish(Event::builder("host.down").build()) {
    ///     Ok(id) => println!("queued {id}"),
    ///     Err(Error::QueueFull { event, .. }) => println!("herald is behind; kept {:?}", event.id),
    ///     Err(e) => println!("not queued: {e}"),
    /// }
    /// # }
    /// ```
    pub fn publish(&self, event: RawEvent) -> Result<String, Error> {
        let event = self.admit(event)?;
        let id = event.id.clone().unwrap_or_default();
        match self.inner.tx.try_send(event) {
            Ok(()) => {
                self.queued();
                Ok(id)
            }
            Err(mpsc::error::TrySendError::Full(event)) => Err(Error::QueueFull {
                capacity: self.inner.state.capacity,
                event: Box::new(event),
            }),
            Err(mpsc::error::TrySendError::Closed(event)) => Err(Error::Closed {
                event: Some(Box::new(event)),
            }),
        }
    }

    /// Like [`publish`](Self::publish), but when the queue is full waits for room
    /// instead of failing.
    ///
    /// ```no_run
    /// # async fn demo(background: herald_client::BackgroundPublisher) -> Result<(), herald_client::Error> {
    /// background.publish_or_wait(herald_client::Event::builder("host.down").build()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_or_wait(&self, event: RawEvent) -> Result<String, Error> {
        let event = self.admit(event)?;
        let id = event.id.clone().unwrap_or_default();
        match self.inner.tx.send(event).await {
            Ok(()) => {
                self.queued();
                Ok(id)
            }
            Err(mpsc::error::SendError(event)) => Err(Error::Closed {
                event: Some(Box::new(event)),
            }),
        }
    }

    fn admit(&self, event: RawEvent) -> Result<RawEvent, Error> {
        if self.inner.state.closing.load(Ordering::SeqCst) {
            return Err(Error::Closed {
                event: Some(Box::new(event)),
            });
        }
        self.inner.publisher.prepare_any(event)
    }

    fn queued(&self) {
        self.inner.state.queued.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = &self.inner.state.metrics {
            m.queued(1);
        }
    }

    /// Waits until every event queued before this call has been accepted by herald (or
    /// refused for good and reported to [`Metrics::failed`]). While herald is unreachable
    /// this waits; bound it with `tokio::time::timeout` if you must.
    ///
    /// ```no_run
    /// # async fn demo(background: herald_client::BackgroundPublisher) -> Result<(), herald_client::Error> {
    /// background.publish(herald_client::Event::builder("host.down").build())?;
    /// background.flush().await?;
    /// assert_eq!(background.stats().pending, 0);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), Error> {
        let state = &self.inner.state;
        let target = state.queued.load(Ordering::SeqCst);
        let mut settled = state.settled.subscribe();
        state.wake.notify_one();
        settled
            .wait_for(|s| *s >= target)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed { event: None })
    }

    /// Stops taking events, sends everything queued, and waits for the task to end.
    /// Later calls to `publish` fail with [`Error::Closed`], handing the event back.
    ///
    /// ```no_run
    /// # async fn demo(background: herald_client::BackgroundPublisher) -> Result<(), herald_client::Error> {
    /// background.close().await?;
    /// assert!(background.publish(herald_client::Event::builder("host.down").build()).is_err());
    /// # Ok(()) }
    /// ```
    pub async fn close(&self) -> Result<(), Error> {
        self.inner.state.closing.store(true, Ordering::SeqCst);
        self.inner.state.wake.notify_one();
        let task = self.inner.task.lock().expect("task lock").take();
        match task {
            Some(task) => task.await.map_err(|_| Error::Closed { event: None }),
            // Another clone is closing: wait for the same drain.
            None => self.flush().await,
        }
    }

    /// The counts so far.
    ///
    /// ```no_run
    /// # fn demo(background: herald_client::BackgroundPublisher) {
    /// let s = background.stats();
    /// println!("{} sent, {} refused, {} pending", s.sent, s.failed, s.pending);
    /// # }
    /// ```
    pub fn stats(&self) -> BackgroundStats {
        let s = &self.inner.state;
        let queued = s.queued.load(Ordering::SeqCst);
        let sent = s.sent.load(Ordering::SeqCst);
        let failed = s.failed.load(Ordering::SeqCst);
        BackgroundStats {
            queued,
            sent,
            failed,
            pending: queued.saturating_sub(sent + failed),
        }
    }
}

/// The sender task: gathers a batch, sends it until it is settled, repeats.
async fn run(
    publisher: Publisher,
    mut rx: mpsc::Receiver<RawEvent>,
    state: Arc<State>,
    options: BackgroundOptions,
) {
    let max = options.max_batch;
    let mut batch: Vec<RawEvent> = Vec::with_capacity(max);
    loop {
        if state.closing.load(Ordering::SeqCst) {
            // Refuse new events; what is already queued is still received below.
            rx.close();
        }
        if batch.is_empty() {
            tokio::select! {
                n = rx.recv_many(&mut batch, max) => if n == 0 { break },
                _ = state.wake.notified() => continue,
            }
        }
        if batch.len() < max && !state.closing.load(Ordering::SeqCst) {
            let deadline = tokio::time::Instant::now() + options.linger;
            while batch.len() < max {
                let room = max - batch.len();
                tokio::select! {
                    n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = state.wake.notified() => break,
                }
            }
        }
        let full = std::mem::replace(&mut batch, Vec::with_capacity(max));
        send(&publisher, full, &state, &options).await;
    }
}

/// What to do after herald refused a batch.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The event at this index is at fault; the rest were not stored (batches are atomic).
    Drop(usize),
    /// The body was too large: send the halves.
    Split,
    /// The whole batch is refused (bad key, wrong team, …).
    All,
}

fn refusal(error: &Error, len: usize) -> Refusal {
    if let Error::Api { status, field, .. } = error {
        if *status == 413 && len > 1 {
            return Refusal::Split;
        }
        let index = field
            .as_deref()
            .and_then(|f| f.strip_prefix('['))
            .and_then(|f| f.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        if let Some(i) = index.filter(|i| *i < len) {
            return Refusal::Drop(i);
        }
    }
    Refusal::All
}

/// Splits off the longest head of `events` whose JSON array fits `max_bytes` (at least
/// one event) and returns it encoded, with how many events it holds.
fn encode(events: &[RawEvent], max_bytes: usize) -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(events.len() * 256);
    body.push(b'[');
    let mut taken = 0;
    for event in events {
        let before = body.len();
        if taken > 0 {
            body.push(b',');
        }
        // Serialising our own RawEvent (strings and maps of strings) cannot fail.
        let _ = serde_json::to_writer(&mut body, event);
        if taken > 0 && body.len() + 1 > max_bytes {
            body.truncate(before);
            break;
        }
        taken += 1;
    }
    body.push(b']');
    (body, taken)
}

/// Sends `batch` until every event in it is accepted or refused for good.
async fn send(
    publisher: &Publisher,
    batch: Vec<RawEvent>,
    state: &State,
    options: &BackgroundOptions,
) {
    let mut work: VecDeque<Vec<RawEvent>> = VecDeque::from([batch]);
    while let Some(mut batch) = work.pop_front() {
        if batch.is_empty() {
            continue;
        }
        let (body, taken) = encode(&batch, options.max_batch_bytes);
        if taken < batch.len() {
            work.push_front(batch.split_off(taken));
        }
        let mut failures = 0;
        loop {
            match publisher.post_batch_body(body.clone(), batch.len()).await {
                Ok(()) => {
                    state.settle(batch.len(), 0);
                    if let Some(m) = &state.metrics {
                        m.sent(batch.len());
                    }
                    break;
                }
                Err(e) if e.is_retryable() => {
                    if let Some(m) = &state.metrics {
                        m.retrying(batch.len(), &e);
                    }
                    tokio::time::sleep(options.backoff.delay(failures)).await;
                    failures = failures.saturating_add(1);
                }
                Err(e) => {
                    match refusal(&e, batch.len()) {
                        Refusal::Drop(i) => {
                            let bad = batch.remove(i);
                            fail(state, &[bad], &e);
                            work.push_front(batch);
                        }
                        Refusal::Split => {
                            let tail = batch.split_off(batch.len() / 2);
                            work.push_front(tail);
                            work.push_front(batch);
                        }
                        Refusal::All => fail(state, &batch, &e),
                    }
                    break;
                }
            }
        }
    }
}

fn fail(state: &State, events: &[RawEvent], error: &Error) {
    state.settle(0, events.len());
    if let Some(m) = &state.metrics {
        m.failed(events, error);
    }
}

#[cfg(test)]
mod tests;
