//! `type = "redis_stream"`: a consumer group on a Redis stream.
//!
//! One task per source, one batch of entries at a time, in stream order:
//! 1. On (re)connecting, create the group if it is missing (`XGROUP CREATE … $ MKSTREAM`;
//!    `BUSYGROUP` is fine), then read this consumer's own pending entries (history,
//!    id `0`): what a previous run read and did not acknowledge.
//! 2. Then new entries (`>`), blocking up to a second between checks for shutdown.
//! 3. Every `claim_idle / 2`, take over entries idle past `claim_idle` in other
//!    consumers' pending lists (`XAUTOCLAIM`): consumers that died.
//!
//! Each entry is ingested exactly as an HTTP publish and acknowledged only once its
//! ingest returned (the event and its fan-out rows are committed); the entries of one
//! read are ingested concurrently, so the store commits them in one group. An entry that is not a valid
//! event, or was delivered more than `max_deliveries` times (`XPENDING`'s count), is
//! copied to `<stream>:herald-dead` with its reason and acknowledged, atomically
//! (`MULTI`). A store failure leaves the entry pending and retries it in process (its
//! delivery count does not grow); shutting down leaves it pending for the next run.
//! An entry without an `id` gets `<stream>:<entry id>` as its event id, so a redelivery
//! is recognised as a duplicate and stored once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use herald_config::RedisStreamConfig;
use herald_engine::{Caller, Engine, IngestError, IngestReply, next_backoff};
use redis::aio::MultiplexedConnection;
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamPendingCountReply, StreamReadReply,
};
use tokio::sync::watch;

use crate::{client, reason, sleep_or_stop};

/// Entries read per round trip.
const BATCH: usize = 100;
/// How long one `XREADGROUP` blocks waiting for new entries (also the longest a
/// shutdown waits for an idle source).
const BLOCK: Duration = Duration::from_secs(1);
/// How often the lag and pending gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);
const KIND: &str = "redis_stream";

pub struct StreamSource {
    name: String,
    config: RedisStreamConfig,
    consumer: String,
    caller: Caller,
    engine: Engine,
    client: redis::Client,
    /// The last entry id this process read: where a group that disappeared is
    /// recreated, so nothing after it is skipped and nothing before it is read again.
    last_read: Option<String>,
}

/// Why a session with Redis ended.
enum End {
    /// Shutdown asked.
    Stop,
    /// Redis failed (connection lost, server error): reconnect after a pause.
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for End {
    fn from(e: redis::RedisError) -> End {
        End::Redis(e)
    }
}

/// An entry refused before ingest: its payload (if it has one) and the reason.
type Refused = (Option<Vec<u8>>, String);

/// What happened to one entry.
enum Handled {
    Acked,
    /// Shutting down before the entry was committed: it stays pending.
    Stopped,
}

impl StreamSource {
    pub fn new(
        name: &str,
        config: &RedisStreamConfig,
        caller: Caller,
        engine: Engine,
    ) -> Result<StreamSource, String> {
        Ok(StreamSource {
            name: name.to_string(),
            consumer: config
                .consumer
                .clone()
                .unwrap_or_else(herald_engine::process_name),
            client: client(name, &config.url)?,
            config: config.clone(),
            caller,
            engine,
            last_read: None,
        })
    }

    fn set_state(&self, problem: Option<String>) {
        self.engine.components().set(&self.name, KIND, problem);
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::ZERO;
        self.set_state(Some("connecting".into()));
        tracing::info!(source = %self.name, stream = %self.config.stream, group = %self.config.group, consumer = %self.consumer, "redis stream source starting");
        loop {
            if *stop.borrow() {
                return;
            }
            match self.session(&mut stop, &mut backoff).await {
                End::Stop => return,
                End::Redis(e) => {
                    let problem = describe(&e);
                    tracing::warn!(source = %self.name, error = %problem, "redis stream source: Redis failed; reconnecting");
                    self.set_state(Some(problem));
                }
            }
            backoff = next_backoff(backoff);
            if sleep_or_stop(backoff, &mut stop).await {
                return;
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// Creates the group if missing: at the stream's end on first use, or after the last
    /// entry this process read when the group disappeared under it.
    async fn ensure_group(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), redis::RedisError> {
        let start = self.last_read.clone().unwrap_or_else(|| "$".to_string());
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&start)
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => {
                tracing::info!(source = %self.name, group = %self.config.group, from = %start, "created the consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn session(&mut self, stop: &mut watch::Receiver<bool>, backoff: &mut Duration) -> End {
        let mut conn = match self.connect().await {
            Ok(c) => c,
            Err(e) => return End::Redis(e),
        };
        if let Err(e) = self.ensure_group(&mut conn).await {
            return End::Redis(e);
        }
        self.set_state(None);
        *backoff = Duration::ZERO;
        tracing::info!(source = %self.name, "redis stream source connected");
        // Own pending entries first (history from `0`), then new ones.
        let mut history: Option<String> = Some("0".to_string());
        let claim_every = (self.config.claim_idle / 2).max(Duration::from_millis(200));
        let mut next_claim = Instant::now();
        let mut next_gauges = Instant::now();
        loop {
            if *stop.borrow() {
                return End::Stop;
            }
            let step = async {
                if Instant::now() >= next_gauges {
                    self.gauges(&mut conn).await;
                    next_gauges = Instant::now() + GAUGES_EVERY;
                }
                if Instant::now() >= next_claim {
                    if let Handled::Stopped = self.claim(&mut conn, stop).await? {
                        return Err(End::Stop);
                    }
                    next_claim = Instant::now() + claim_every;
                }
                let entries = self.read(&mut conn, history.as_deref()).await?;
                if entries.is_empty() {
                    // The history is done: from now on only new entries.
                    history = None;
                    return Ok(());
                }
                let counts = match &history {
                    Some(_) => self.delivery_counts(&mut conn, &entries).await?,
                    None => HashMap::new(),
                };
                let last = entries.last().map(|e| e.id.clone());
                if let Handled::Stopped = self.handle(&mut conn, entries, &counts, stop).await? {
                    return Err(End::Stop);
                }
                if history.is_some() {
                    history = last;
                }
                Ok(())
            };
            match step.await {
                Ok(()) => {}
                Err(End::Redis(e)) if e.code() == Some("NOGROUP") => {
                    tracing::warn!(source = %self.name, group = %self.config.group, "the consumer group disappeared; recreating it");
                    if let Err(e) = self.ensure_group(&mut conn).await {
                        return End::Redis(e);
                    }
                    history = Some("0".to_string());
                }
                Err(end) => return end,
            }
        }
    }

    /// Up to [`BATCH`] entries: history after `from`, or new ones (blocking briefly).
    async fn read(
        &mut self,
        conn: &mut MultiplexedConnection,
        from: Option<&str>,
    ) -> Result<Vec<StreamId>, End> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH);
        if from.is_none() {
            cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        cmd.arg("STREAMS")
            .arg(&self.config.stream)
            .arg(from.unwrap_or(">"));
        let reply: Option<StreamReadReply> = cmd.query_async(conn).await?;
        let entries: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if let Some(last) = entries.last()
            && from.is_none()
        {
            self.last_read = Some(last.id.clone());
        }
        Ok(entries)
    }

    /// How many times each entry was delivered, from the group's pending list.
    async fn delivery_counts(
        &self,
        conn: &mut MultiplexedConnection,
        entries: &[StreamId],
    ) -> Result<HashMap<String, usize>, End> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&self.consumer)
            .query_async(conn)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// Takes over entries idle past `claim_idle` (dead consumers') and handles them.
    async fn claim(
        &mut self,
        conn: &mut MultiplexedConnection,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Handled, End> {
        let mut cursor = "0-0".to_string();
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&self.consumer)
                .arg(self.config.claim_idle.as_millis() as u64)
                .arg(&cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(conn)
                .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(source = %self.name, entries = reply.claimed.len(), "took over entries idle past claim_idle from other consumers");
                let counts = self.delivery_counts(conn, &reply.claimed).await?;
                if let Handled::Stopped = self.handle(conn, reply.claimed, &counts, stop).await? {
                    return Ok(Handled::Stopped);
                }
            }
            if !reply.deleted_ids.is_empty() {
                // Redis dropped them from the pending list: deleted or trimmed from the
                // stream before anyone acknowledged them; there is nothing to ingest.
                tracing::warn!(source = %self.name, entries = ?reply.deleted_ids, "pending entries were deleted from the stream before being ingested; Redis dropped them");
            }
            if reply.next_stream_id == "0-0" {
                return Ok(Handled::Acked);
            }
            cursor = reply.next_stream_id;
        }
    }

    /// Screens one entry: its payload and the body to ingest, or why to dead-letter it.
    fn screen(
        &self,
        entry: &StreamId,
        times_delivered: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), Refused> {
        let payload = entry
            .map
            .get(&self.config.field)
            .and_then(|v| redis::from_redis_value_ref::<Vec<u8>>(v).ok());
        if times_delivered > self.config.max_deliveries as usize {
            let why = format!(
                "(entry): delivered {times_delivered} times, more than max_deliveries = {}",
                self.config.max_deliveries
            );
            return Err((payload, why));
        }
        let Some(payload) = payload else {
            let why = if entry.map.is_empty() {
                "(entry): the entry is gone from the stream (deleted or trimmed)".to_string()
            } else {
                format!(
                    "(entry): no field `{}` holding the event",
                    self.config.field
                )
            };
            return Err((None, why));
        };
        match with_event_id(&payload, &self.config.stream, &entry.id) {
            Ok(body) => Ok((payload, body)),
            Err(why) => Err((Some(payload), why)),
        }
    }

    /// Ingests a batch of entries and acknowledges each once committed, or dead-letters
    /// it. The ingests run concurrently, so the store commits them together (one fsync
    /// for the batch rather than one per entry); each is acknowledged only after its
    /// own ingest returned.
    async fn handle(
        &self,
        conn: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
        counts: &HashMap<String, usize>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Handled, End> {
        let mut ready = Vec::with_capacity(entries.len());
        for entry in &entries {
            let times = counts.get(&entry.id).copied().unwrap_or(1);
            match self.screen(entry, times) {
                Ok((payload, body)) => ready.push((entry.id.clone(), payload, body)),
                Err((payload, why)) => {
                    self.dead_letter(conn, &entry.id, payload.as_deref(), &why)
                        .await?;
                }
            }
        }
        let results = futures_util::future::join_all(
            ready
                .iter()
                .map(|(_, _, body)| self.engine.ingest(&self.caller, body)),
        )
        .await;
        let mut committed = Vec::new();
        let mut stopped = false;
        for ((id, payload, body), result) in ready.into_iter().zip(results) {
            if stopped {
                break;
            }
            let result = match result {
                Err(e) if !reason::is_permanent(&e) && !matches!(e, IngestError::ShuttingDown) => {
                    tracing::error!(source = %self.name, entry = %id, error = %e, "ingesting a stream entry failed; retrying it");
                    self.retry(&id, &body, stop).await
                }
                other => other,
            };
            match result {
                Ok(reply) => {
                    let duplicate = matches!(
                        reply,
                        IngestReply::One {
                            duplicate: true,
                            ..
                        }
                    );
                    let outcome = if duplicate { "duplicate" } else { "accepted" };
                    metrics::counter!("herald_source_events_total", "source" => self.name.clone(), "outcome" => outcome).increment(1);
                    committed.push(id);
                }
                Err(e) if reason::is_permanent(&e) => {
                    self.dead_letter(conn, &id, Some(&payload), &reason::of(&e))
                        .await?;
                }
                // Shutting down: this one and the rest stay pending.
                Err(_) => stopped = true,
            }
        }
        self.ack(conn, &committed).await?;
        tracing::debug!(source = %self.name, entries = committed.len(), "stream entries ingested and acknowledged");
        Ok(if stopped {
            Handled::Stopped
        } else {
            Handled::Acked
        })
    }

    /// Ingests `body` again until it is committed or refused for good. The store failed:
    /// nothing was committed; the entry stays pending and is tried again here, so its
    /// delivery count does not grow. `ShuttingDown` when asked to stop meanwhile.
    async fn retry(
        &self,
        id: &str,
        body: &[u8],
        stop: &mut watch::Receiver<bool>,
    ) -> Result<IngestReply, IngestError> {
        let mut backoff = Duration::ZERO;
        loop {
            backoff = next_backoff(backoff);
            if sleep_or_stop(backoff, stop).await {
                return Err(IngestError::ShuttingDown);
            }
            match self.engine.ingest(&self.caller, body).await {
                Err(e) if !reason::is_permanent(&e) && !matches!(e, IngestError::ShuttingDown) => {
                    tracing::error!(source = %self.name, entry = %id, error = %e, "ingesting a stream entry failed again; retrying it");
                }
                other => return other,
            }
        }
    }

    /// Acknowledges committed entries (one `XACK` for all).
    async fn ack(
        &self,
        conn: &mut MultiplexedConnection,
        ids: &[String],
    ) -> Result<(), redis::RedisError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 = redis::cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(ids)
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Copies the entry to the dead-letter stream with its reason and acknowledges it, in
    /// one transaction: it is never acknowledged without its copy.
    async fn dead_letter(
        &self,
        conn: &mut MultiplexedConnection,
        id: &str,
        payload: Option<&[u8]>,
        why: &str,
    ) -> Result<(), redis::RedisError> {
        let dead = self.config.dead_stream();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(&dead)
            .arg("*")
            .arg("id")
            .arg(id)
            .arg("payload")
            .arg(payload.unwrap_or_default())
            .arg("reason")
            .arg(why)
            .arg("source")
            .arg(&self.name)
            .ignore()
            .cmd("XACK")
            .arg(&self.config.stream)
            .arg(&self.config.group)
            .arg(id)
            .ignore();
        let _: () = pipe.query_async(conn).await?;
        metrics::counter!("herald_source_dead_lettered_total", "source" => self.name.clone())
            .increment(1);
        tracing::warn!(source = %self.name, entry = %id, reason = %why, dead_stream = %dead, "stream entry dead-lettered and acknowledged");
        Ok(())
    }

    /// Refreshes `herald_source_lag` and `herald_source_pending` from `XINFO GROUPS`.
    async fn gauges(&self, conn: &mut MultiplexedConnection) {
        let reply: redis::RedisResult<StreamInfoGroupsReply> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.config.stream)
            .query_async(conn)
            .await;
        let Ok(reply) = reply else {
            return;
        };
        if let Some(group) = reply.groups.iter().find(|g| g.name == self.config.group) {
            let label = [("source", self.name.clone())];
            metrics::gauge!("herald_source_pending", &label).set(group.pending as f64);
            if let Some(lag) = group.lag {
                metrics::gauge!("herald_source_lag", &label).set(lag as f64);
            }
        }
    }
}

/// The error as an operator should read it (never the URL: redis errors do not carry it).
fn describe(e: &redis::RedisError) -> String {
    if e.is_io_error() || e.is_connection_dropped() {
        format!("cannot reach Redis: {e}")
    } else {
        e.to_string()
    }
}

/// `payload` with `"id": "<stream>:<entry id>"` added when it is a JSON object without
/// an `id`, so a redelivered entry is the same event (idempotency by event id). A batch
/// (array) is refused: its events would get fresh ids on every redelivery. Anything else
/// is passed on unchanged for ingest to refuse with its reason.
pub(crate) fn with_event_id(
    payload: &[u8],
    stream: &str,
    entry_id: &str,
) -> Result<Vec<u8>, String> {
    match serde_json::from_slice(payload) {
        Ok(serde_json::Value::Object(mut object)) => {
            if object.contains_key("id") {
                return Ok(payload.to_vec());
            }
            object.insert(
                "id".to_string(),
                serde_json::Value::String(format!("{stream}:{entry_id}")),
            );
            Ok(serde_json::to_vec(&object).unwrap_or_else(|_| payload.to_vec()))
        }
        Ok(serde_json::Value::Array(_)) => {
            Err("(body): a stream entry holds one event object, not a batch".to_string())
        }
        _ => Ok(payload.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::with_event_id;

    #[test]
    fn an_event_without_id_gets_its_entry_id() {
        let cases = [
            (
                r#"{"event":"host.down"}"#,
                r#"{"event":"host.down","id":"wrenn:events:1-0"}"#,
            ),
            (
                r#"{"event":"host.down","id":"e1"}"#,
                r#"{"event":"host.down","id":"e1"}"#,
            ),
            // Not an object: left for ingest to refuse with its own reason.
            ("not json", "not json"),
            ("42", "42"),
            (
                r#"[{"event":"host.down"}]"#,
                "error: (body): a stream entry holds one event object, not a batch",
            ),
        ];
        for (payload, want) in cases {
            let got = match with_event_id(payload.as_bytes(), "wrenn:events", "1-0") {
                Ok(body) => String::from_utf8(body).unwrap(),
                Err(e) => format!("error: {e}"),
            };
            assert_eq!(got, want, "{payload}");
        }
    }
}
