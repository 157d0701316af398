//! The live-stream client: `GET /v1/stream` (Server-Sent Events) as typed messages,
//! reconnecting with `Last-Event-ID` so that no durable event is missed across a reconnect
//! or a server restart (herald replays the durable events stored since that id).

use std::fmt;
use std::time::Duration;

use herald_core::{Pattern, RawEvent};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};

use crate::error::{Error, from_reply};
use crate::http;
use crate::retry::Backoff;

/// One message of the live stream.
///
/// ```
/// use herald_client::Message;
///
/// fn show(message: &Message) -> String {
///     match message {
///         Message::Event { durable: true, event } => format!("event {}", event.event),
///         Message::Event { durable: false, event } => format!("transient {}", event.event),
///         Message::Delivery(d) => format!("delivery {} to {}: {}", d.event_id, d.channel, d.status),
///         Message::Channel(c) => format!("channel {} is {}", c.channel, c.state),
///         Message::Lagged { missed } => format!("missed {missed} live messages"),
///         Message::Reset { reason } => format!("could not resume: {reason}"),
///         other => format!("{other:?}"), // kinds added by a newer herald
///     }
/// }
/// # let _ = show;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// An accepted event: durable (stored, delivered; it has an id to resume from) or
    /// transient (live only, never replayed). `id`, `timestamp` and `team_id` are set.
    Event {
        /// `false` for a transient event (live stream only, never replayed).
        durable: bool,
        /// The event as herald accepted it.
        event: RawEvent,
    },
    /// A delivery attempt ended.
    Delivery(DeliveryUpdate),
    /// A channel changed state.
    Channel(ChannelUpdate),
    /// This subscriber fell more than herald's bus capacity behind and missed `missed`
    /// live messages; the stream goes on.
    Lagged {
        /// How many live messages were skipped.
        missed: u64,
    },
    /// herald could not resume from the last event id (unknown or pruned): events between
    /// the disconnect and now may be missing.
    Reset {
        /// herald's explanation.
        reason: String,
    },
}

/// `event: delivery` — the outcome of one delivery attempt.
///
/// ```
/// let d: herald_client::DeliveryUpdate = serde_json::from_str(
///     r#"{"team":"acme","delivery_id":"dlv_1","event_id":"e1","event_type":"host.down","channel":"ops","status":"succeeded","attempt":1}"#,
/// ).unwrap();
/// assert_eq!(d.status, "succeeded");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct DeliveryUpdate {
    /// The team the delivery belongs to.
    pub team: String,
    /// The delivery's id (`dlv_…`), also the `webhook-id` of a webhook.
    pub delivery_id: String,
    /// The event delivered.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The channel delivered to.
    pub channel: String,
    /// `succeeded`, `retrying`, `dead`, `disabled`, `skipped`, or, when noise control
    /// stopped the delivery, `suppressed` or `silenced`.
    pub status: String,
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// Why the attempt failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// `event: channel` — a channel was disabled, started failing, or recovered.
///
/// ```
/// let c: herald_client::ChannelUpdate =
///     serde_json::from_str(r#"{"team":"acme","channel":"ops","state":"disabled","reason":"410"}"#).unwrap();
/// assert_eq!(c.state, "disabled");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[non_exhaustive]
pub struct ChannelUpdate {
    /// The team the channel belongs to.
    pub team: String,
    /// The channel's name.
    pub channel: String,
    /// `disabled`, `failing` or `ok`.
    pub state: String,
    /// Why, when herald says (e.g. the endpoint answered 410).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Follows herald's live stream. Call [`next`](Self::next) in a loop; connection losses
/// are handled inside it.
///
/// ```no_run
/// use herald_client::{Message, Subscriber};
///
/// # async fn demo() -> Result<(), herald_client::Error> {
/// let mut subscriber = Subscriber::new("http://127.0.0.1:8650", "dev-acme-key")?
///     .events(["capsule.*", "host.down"])?;
/// loop {
///     match subscriber.next().await? {
///         Message::Event { event, .. } => println!("{} {:?}", event.event, event.id),
///         other => println!("{other:?}"),
///     }
/// }
/// # }
/// ```
pub struct Subscriber {
    http: reqwest::Client,
    url: String,
    auth: HeaderValue,
    patterns: Vec<String>,
    last_event_id: Option<String>,
    backoff: Backoff,
    idle_timeout: Duration,
    connection: Option<Connection>,
    failures: u32,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("url", &self.url)
            .field("api_key", &"<redacted>")
            .field("patterns", &self.patterns)
            .field("last_event_id", &self.last_event_id)
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

struct Connection {
    response: reqwest::Response,
    parser: SseParser,
}

impl Subscriber {
    /// A subscriber for the herald at `url` with a team API key (its team's messages) or
    /// the admin token (every team's). Nothing connects until the first [`next`](Self::next).
    ///
    /// ```
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "dev-acme-key")?;
    /// assert!(!format!("{s:?}").contains("dev-acme-key"));
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn new(url: impl Into<String>, api_key: impl AsRef<str>) -> Result<Subscriber, Error> {
        let url = url.into();
        let base = http::base_url(&url)?;
        let auth = http::bearer(&url, api_key.as_ref())?;
        // No overall timeout: a stream is open for as long as it is read. The idle
        // timeout notices a dead connection instead (herald sends a heartbeat every 15 s).
        let http = http::client(None, Duration::from_secs(3))?;
        Ok(Subscriber {
            http,
            url: format!("{base}/v1/stream"),
            auth,
            patterns: Vec::new(),
            last_event_id: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            idle_timeout: Duration::from_secs(45),
            connection: None,
            failures: 0,
        })
    }

    /// Only messages about these types (herald's pattern syntax: `host.down`,
    /// `capsule.*`, `*`); channel messages always pass. Checked here, as herald would.
    ///
    /// ```
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?.events(["capsule.*"])?;
    /// assert!(herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?.events(["caps*"]).is_err());
    /// # let _ = s;
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn events<I, S>(mut self, patterns: I) -> Result<Subscriber, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for p in patterns {
            let p = p.as_ref();
            Pattern::parse(p)?;
            self.patterns.push(p.to_string());
        }
        Ok(self)
    }

    /// Starts after this durable event: herald first replays what was stored since.
    /// Keep [`last_event_id`](Self::last_event_id) somewhere durable to resume across
    /// restarts of your own process.
    ///
    /// ```
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?.resume_after("evt_41");
    /// assert_eq!(s.last_event_id(), Some("evt_41"));
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn resume_after(mut self, event_id: impl Into<String>) -> Subscriber {
        self.last_event_id = Some(event_id.into());
        self
    }

    /// The delays between reconnection attempts (default 100 ms doubling to 5 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?
    ///     .backoff(herald_client::Backoff::new(Duration::from_millis(50), Duration::from_secs(1)));
    /// # let _ = s;
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Subscriber {
        self.backoff = backoff;
        self
    }

    /// How long a silent connection is trusted before reconnecting (default 45 s, three
    /// of herald's heartbeats).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?.idle_timeout(Duration::from_secs(20));
    /// # let _ = s;
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Subscriber {
        self.idle_timeout = timeout;
        self
    }

    /// The id of the last durable event received: where a reconnect resumes.
    ///
    /// ```
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?;
    /// assert_eq!(s.last_event_id(), None);
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Whether a stream is open right now.
    ///
    /// ```
    /// let s = herald_client::Subscriber::new("http://127.0.0.1:8650", "k")?;
    /// assert!(!s.is_connected());
    /// # Ok::<(), herald_client::Error>(())
    /// ```
    pub fn is_connected(&self) -> bool {
        self.connection.is_some()
    }

    /// Connects now (if not connected) instead of at the first [`next`](Self::next), so
    /// that live messages sent from here on are seen. Fails only for refusals (a bad key,
    /// a bad pattern); unreachable servers are retried.
    ///
    /// ```no_run
    /// # async fn demo(mut s: herald_client::Subscriber) -> Result<(), herald_client::Error> {
    /// s.connect().await?;
    /// assert!(s.is_connected());
    /// # Ok(()) }
    /// ```
    pub async fn connect(&mut self) -> Result<(), Error> {
        while self.connection.is_none() {
            match self.open().await {
                Ok(connection) => {
                    self.connection = Some(connection);
                    self.failures = 0;
                }
                Err(e) if e.is_retryable() => self.wait().await,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next message. Waits for one; on a lost connection (server restart, network,
    /// silence past the idle timeout) reconnects with `Last-Event-ID` and goes on, so the
    /// durable events stored meanwhile come next. Errors only for refusals that retrying
    /// cannot fix (`unauthorized`, `invalid_query`).
    ///
    /// ```no_run
    /// # async fn demo(mut s: herald_client::Subscriber) -> Result<(), herald_client::Error> {
    /// while let herald_client::Message::Event { event, .. } = s.next().await? {
    ///     println!("{}", event.event);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Result<Message, Error> {
        loop {
            self.connect().await?;
            let connection = self.connection.as_mut().expect("connected above");
            if let Some(frame) = connection.parser.next_frame() {
                if let Some(message) = self.decode(frame) {
                    return Ok(message);
                }
                continue;
            }
            match tokio::time::timeout(self.idle_timeout, connection.response.chunk()).await {
                Ok(Ok(Some(bytes))) => connection.parser.push(&bytes),
                // The stream ended (herald shuts down), broke, or went silent: reconnect.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    self.connection = None;
                }
            }
        }
    }

    async fn open(&self) -> Result<Connection, Error> {
        let mut request = self
            .http
            .get(&self.url)
            .header(AUTHORIZATION, self.auth.clone())
            .header(ACCEPT, "text/event-stream");
        if !self.patterns.is_empty() {
            request = request.query(&[("events", self.patterns.join(","))]);
        }
        if let Some(id) = &self.last_event_id {
            request = request.header("last-event-id", id.as_str());
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::Transport(e.without_url()))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.bytes().await.unwrap_or_default();
            return Err(from_reply(status, &body));
        }
        Ok(Connection {
            response,
            parser: SseParser::default(),
        })
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.backoff.delay(self.failures)).await;
        self.failures = self.failures.saturating_add(1);
    }

    /// A frame as a message; frames of unknown kinds (a newer herald) are skipped.
    fn decode(&mut self, frame: Frame) -> Option<Message> {
        #[derive(serde::Deserialize)]
        struct EventData {
            durable: bool,
            event: RawEvent,
        }
        #[derive(serde::Deserialize)]
        struct Lagged {
            missed: u64,
        }
        #[derive(serde::Deserialize)]
        struct Reset {
            reason: String,
        }
        // Every data object carries `kind` too; drop it so the typed structs stay strict.
        let mut data: serde_json::Value = serde_json::from_str(&frame.data).ok()?;
        if let Some(object) = data.as_object_mut() {
            object.remove("kind");
        }
        let message = match frame.event.as_str() {
            "event" => {
                let e: EventData = serde_json::from_value(data).ok()?;
                Message::Event {
                    durable: e.durable,
                    event: e.event,
                }
            }
            "delivery" => Message::Delivery(serde_json::from_value(data).ok()?),
            "channel" => Message::Channel(serde_json::from_value(data).ok()?),
            "lagged" => Message::Lagged {
                missed: serde_json::from_value::<Lagged>(data).ok()?.missed,
            },
            "reset" => Message::Reset {
                reason: serde_json::from_value::<Reset>(data).ok()?.reason,
            },
            _ => return None,
        };
        // Only durable events carry `id:`; that is where a reconnect resumes.
        if let Some(id) = frame.id {
            self.last_event_id = Some(id);
        }
        Some(message)
    }
}

/// One dispatched SSE event.
#[derive(Debug, Default, PartialEq, Eq)]
struct Frame {
    event: String,
    data: String,
    id: Option<String>,
}

/// The text/event-stream format, incrementally: bytes in, frames out. Comments (herald's
/// `:heartbeat`) and `retry:` are skipped; lines end with `\n`, `\r\n` or `\r`.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    current: Frame,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let end = self
                .buffer
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')?;
            // A `\r` at the very end may be half of `\r\n`: wait for the next byte.
            if self.buffer[end] == b'\r' && end + 1 == self.buffer.len() {
                return None;
            }
            let skip = if self.buffer[end] == b'\r' && self.buffer[end + 1] == b'\n' {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_data {
                    self.has_data = false;
                    let mut frame = std::mem::take(&mut self.current);
                    if frame.event.is_empty() {
                        frame.event = "message".into();
                    }
                    return Some(frame);
                }
                self.current = Frame::default();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.current.event = value.to_string(),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                "id" if !value.contains('\0') => self.current.id = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&str]) -> Vec<Frame> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk.as_bytes());
            while let Some(f) = parser.next_frame() {
                out.push(f);
            }
        }
        out
    }

    #[test]
    fn parses_frames_split_anywhere() {
        let text = ":heartbeat\n\nevent: event\nid: e1\ndata: {\"a\":1}\n\nevent: lagged\r\ndata: {\"missed\":3}\r\n\r\n";
        let whole = frames(&[text]);
        assert_eq!(
            whole,
            vec![
                Frame {
                    event: "event".into(),
                    data: "{\"a\":1}".into(),
                    id: Some("e1".into())
                },
                Frame {
                    event: "lagged".into(),
                    data: "{\"missed\":3}".into(),
                    id: None
                },
            ]
        );
        // Byte by byte gives the same frames.
        let bytes: Vec<String> = text.chars().map(|c| c.to_string()).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(frames(&refs), whole);
        // Multi-line data joins with `\n`; a frame without data is not dispatched.
        assert_eq!(
            frames(&["event: x\n\ndata: a\ndata: b\n\n"]),
            vec![Frame {
                event: "message".into(),
                data: "a\nb".into(),
                id: None
            }]
        );
    }

    #[test]
    fn decodes_messages_and_remembers_durable_ids() {
        let mut s = Subscriber::new("http://127.0.0.1:1", "k").unwrap();
        let frame = |event: &str, data: &str, id: Option<&str>| Frame {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_string),
        };
        let m = s.decode(frame(
            "event",
            r#"{"kind":"event","durable":true,"event":{"id":"e1","event":"host.down","timestamp":"2026-01-01T00:00:00Z","team_id":"acme","metadata":{}}}"#,
            Some("e1"),
        ));
        match m {
            Some(Message::Event {
                durable: true,
                event,
            }) => {
                assert_eq!(event.id.as_deref(), Some("e1"));
                assert_eq!(event.team_id.as_deref(), Some("acme"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.last_event_id(), Some("e1"));
        assert_eq!(
            s.decode(frame("lagged", r#"{"kind":"lagged","missed":7}"#, None)),
            Some(Message::Lagged { missed: 7 })
        );
        assert_eq!(
            s.decode(frame(
                "reset",
                r#"{"kind":"reset","reason":"unknown"}"#,
                None
            )),
            Some(Message::Reset {
                reason: "unknown".into()
            })
        );
        assert_eq!(s.decode(frame("future-kind", "{}", None)), None);
        assert_eq!(s.last_event_id(), Some("e1"));
    }
}
