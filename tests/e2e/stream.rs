//! The live stream of `herald serve`: SSE resume with `Last-Event-ID`, the `lagged` message
//! of a client that stops reading, team isolation and `?events=` filters, and the
//! WebSocket's parity with SSE. The clients are raw (TCP for SSE, tungstenite for the
//! WebSocket) so that a test controls exactly when a client reads.
//!
//! Why this file is long (~960 lines): the raw SSE and WebSocket clients (the first half)
//! live here because only these tests use them, and each of the four scenarios drives
//! several clients step by step. A new client-side helper for other tests belongs in
//! `harness.rs` instead.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::harness::*;

mod cluster;

/// The transient type of the test configuration: mirrored to the stream, never stored.
pub(crate) const TRANSIENT: &str = "capsule.state.changed";

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// One message of the live stream as a client received it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Live {
    /// The SSE `event:` name, or the WebSocket frame's `kind`.
    pub(crate) kind: String,
    /// The SSE `id:` line (WebSocket frames have none).
    pub(crate) id: Option<String>,
    pub(crate) data: Value,
}

impl Live {
    pub(crate) fn event_id(&self) -> Option<&str> {
        match self.kind.as_str() {
            "event" => self.data["event"]["id"].as_str(),
            _ => None,
        }
    }

    /// The team the message is about.
    fn team(&self) -> &str {
        let team = match self.kind.as_str() {
            "event" => &self.data["event"]["team_id"],
            _ => &self.data["team"],
        };
        team.as_str()
            .unwrap_or_else(|| panic!("no team in {self:?}"))
    }

    /// One line saying what the message is, for comparing sequences.
    fn shape(&self) -> String {
        let d = &self.data;
        let id = self
            .id
            .as_ref()
            .map(|id| format!(" id={id}"))
            .unwrap_or_default();
        match self.kind.as_str() {
            "event" => {
                let durable = if d["durable"] == true {
                    "durable"
                } else {
                    "transient"
                };
                format!(
                    "event {} {durable}{id}",
                    d["event"]["id"].as_str().unwrap_or("?")
                )
            }
            "delivery" => format!(
                "delivery {} {}",
                d["event_id"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?")
            ),
            "channel" => format!(
                "channel {}/{} {}",
                d["team"].as_str().unwrap_or("?"),
                d["channel"].as_str().unwrap_or("?"),
                d["state"].as_str().unwrap_or("?")
            ),
            other => format!("{other}{id}"),
        }
    }
}

fn shapes(seen: &[Live]) -> Vec<String> {
    seen.iter().map(Live::shape).collect()
}

/// The end of a long sequence, for failure messages.
fn tail(seen: &[Live]) -> String {
    let skip = seen.len().saturating_sub(40);
    format!(
        "{} message(s), the last ones: {:#?}",
        seen.len(),
        &shapes(seen)[skip..]
    )
}

pub(crate) fn addr_of(h: &Herald) -> SocketAddr {
    h.url()
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("not an http://ADDR url: {}", h.url()))
}

pub(crate) fn bearer(key: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {key}"))
}

/// A loopback connection. `small_window` sets a small receive buffer (which also turns off
/// the kernel's autotuning), so a client that stops reading backs the server up after a
/// few kilobytes rather than megabytes.
pub(crate) async fn tcp(addr: SocketAddr, small_window: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    if small_window {
        socket
            .set_recv_buffer_size(16 * 1024)
            .expect("set SO_RCVBUF");
    }
    socket.connect(addr).await.expect("connect to herald")
}

/// An SSE client over HTTP/1.1: the request by hand, the chunked body decoded, messages
/// split at blank lines.
#[derive(Debug)]
pub(crate) struct Sse {
    body: BufReader<TcpStream>,
    /// Decoded body bytes not yet parsed into messages.
    pending: Vec<u8>,
}

impl Sse {
    /// `GET path`; a refusal comes back as the reply.
    pub(crate) async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&'static str, String)],
        small_window: bool,
    ) -> Result<Sse, ApiReply> {
        let mut request =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut body = BufReader::new(tcp(addr, small_window).await);
        body.get_mut()
            .write_all(request.as_bytes())
            .await
            .expect("send the request");

        let mut line = String::new();
        body.read_line(&mut line)
            .await
            .expect("read the status line");
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
        let (mut content_type, mut length, mut chunked) = (String::new(), 0, false);
        loop {
            line.clear();
            body.read_line(&mut line).await.expect("read a header");
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .unwrap_or_else(|| panic!("not a header line: {header:?}"));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-type" => content_type = value.to_string(),
                "content-length" => length = value.parse().expect("a content-length"),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        if status != 200 {
            let mut text = vec![0; length];
            body.read_exact(&mut text)
                .await
                .expect("read the error body");
            return Err(ApiReply {
                status,
                content_type,
                text: String::from_utf8_lossy(&text).into_owned(),
            });
        }
        assert!(
            content_type.starts_with("text/event-stream"),
            "GET {path}: content-type `{content_type}`"
        );
        assert!(chunked, "GET {path}: the stream is not chunked");
        Ok(Sse {
            body,
            pending: Vec::new(),
        })
    }

    /// The next message; comments (the heartbeat) are skipped.
    pub(crate) async fn next(&mut self) -> Result<Live, String> {
        loop {
            if let Some(cut) = self.pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..cut + 2).collect();
                let block = String::from_utf8(block).map_err(|e| format!("not UTF-8: {e}"))?;
                if let Some(live) = parse_sse(&block) {
                    return Ok(live);
                }
                continue;
            }
            self.read_chunk().await?;
        }
    }

    async fn read_chunk(&mut self) -> Result<(), String> {
        let mut line = String::new();
        let n = self
            .body
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading a chunk size: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        let size = line.trim_end().split(';').next().unwrap_or("");
        let size =
            usize::from_str_radix(size, 16).map_err(|e| format!("bad chunk size {line:?}: {e}"))?;
        if size == 0 {
            return Err("the server ended the stream".into());
        }
        let mut chunk = vec![0; size + 2];
        self.body
            .read_exact(&mut chunk)
            .await
            .map_err(|e| format!("reading a chunk: {e}"))?;
        self.pending.extend_from_slice(&chunk[..size]);
        Ok(())
    }
}

/// One SSE message block; `None` for a block of comments only.
fn parse_sse(block: &str) -> Option<Live> {
    let (mut kind, mut id, mut data, mut any) = ("message".to_string(), None, String::new(), false);
    for line in block
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(':'))
    {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        any = true;
        match field {
            "event" => kind = value.to_string(),
            "id" => id = Some(value.to_string()),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if !any {
        return None;
    }
    let data = serde_json::from_str(&data)
        .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {block:?}"));
    Some(Live { kind, id, data })
}

/// A WebSocket client of `/v1/ws`.
#[derive(Debug)]
pub(crate) struct Ws {
    socket: WebSocketStream<TcpStream>,
}

impl Ws {
    pub(crate) async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&'static str, String)],
        small_window: bool,
    ) -> Result<Ws, ApiReply> {
        let mut request = format!("ws://{addr}{path}")
            .into_client_request()
            .expect("a WebSocket request");
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value).unwrap());
        }
        match tokio_tungstenite::client_async(request, tcp(addr, small_window).await).await {
            Ok((socket, _)) => Ok(Ws { socket }),
            Err(tungstenite::Error::Http(response)) => Err(ApiReply {
                status: response.status().as_u16(),
                content_type: response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                text: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            }),
            Err(e) => panic!("WebSocket handshake on {path} failed: {e}"),
        }
    }

    /// The next text frame as JSON; pings and pongs are skipped.
    async fn next(&mut self) -> Result<Live, String> {
        loop {
            match self.socket.next().await {
                None => return Err("the server closed the WebSocket".into()),
                Some(Err(e)) => return Err(format!("WebSocket error: {e}")),
                Some(Ok(Message::Text(text))) => {
                    let data: Value = serde_json::from_str(&text)
                        .map_err(|e| format!("frame is not JSON ({e}): {text}"))?;
                    let kind = data["kind"]
                        .as_str()
                        .ok_or_else(|| format!("frame without a `kind`: {text}"))?
                        .to_string();
                    return Ok(Live {
                        kind,
                        id: None,
                        data,
                    });
                }
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(Message::Binary(b))) => return Err(format!("binary frame: {b:?}")),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Either stream, read the same way.
#[derive(Debug)]
enum Client {
    Sse(Sse),
    Ws(Box<Ws>),
}

impl Client {
    fn sse(h: &Herald, path: &str, headers: &[(&'static str, String)]) -> Result<Client, ApiReply> {
        block_on(Sse::open(addr_of(h), path, headers, false)).map(Client::Sse)
    }

    fn ws(h: &Herald, path: &str, headers: &[(&'static str, String)]) -> Result<Client, ApiReply> {
        block_on(Ws::open(addr_of(h), path, headers, false)).map(|ws| Client::Ws(Box::new(ws)))
    }

    fn name(&self) -> &'static str {
        match self {
            Client::Sse(_) => "SSE",
            Client::Ws(_) => "WebSocket",
        }
    }

    async fn next(&mut self) -> Result<Live, String> {
        match self {
            Client::Sse(s) => s.next().await,
            Client::Ws(w) => w.next().await,
        }
    }

    /// Reads messages until one satisfies `last` and returns them all, that one included.
    /// Panics when the stream ends or nothing satisfies `last` within [`WAIT`].
    fn read_until(&mut self, what: &str, mut last: impl FnMut(&Live) -> bool) -> Vec<Live> {
        let name = self.name();
        block_on(async {
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut seen = Vec::new();
            loop {
                match tokio::time::timeout_at(deadline, self.next()).await {
                    Ok(Ok(live)) => {
                        let done = last(&live);
                        seen.push(live);
                        if done {
                            return seen;
                        }
                    }
                    Ok(Err(e)) => panic!("{name} client waiting for {what}: {e}; {}", tail(&seen)),
                    Err(_) => panic!(
                        "{name} client: timed out after {WAIT:?} waiting for {what}; {}",
                        tail(&seen)
                    ),
                }
            }
        })
    }

    /// Reads until the event `id` arrives.
    fn read_until_event(&mut self, id: &str) -> Vec<Live> {
        self.read_until(&format!("event {id}"), |m| m.event_id() == Some(id))
    }

    /// Reads until a message of each of these [`Live::shape`]s has arrived. (Waiting on the
    /// stream itself, because the API shows a delivery's outcome a moment before the bus
    /// carries it.)
    fn read_until_shapes(&mut self, wanted: &[&str]) -> Vec<Live> {
        let mut missing: Vec<&str> = wanted.to_vec();
        self.read_until(&format!("{wanted:?}"), |m| {
            let shape = m.shape();
            missing.retain(|w| *w != shape);
            missing.is_empty()
        })
    }
}

/// Waits until every client is subscribed to the bus, then leaves their streams empty.
///
/// An SSE client is subscribed once it has the response head; a WebSocket client only
/// some moments after its upgrade. So markers (transient events of `key`'s team, ids
/// `evt_live_{tag}_N`) are published until each WebSocket client has seen one, then every
/// client reads up to the last marker, so that none is left over in its stream.
fn wait_live(h: &Herald, key: &str, tag: &str, clients: &mut [&mut Client]) {
    let prefix = format!("evt_live_{tag}_");
    let mut ready: Vec<bool> = clients
        .iter()
        .map(|c| matches!(c, Client::Sse(_)))
        .collect();
    let mut seen: Vec<Option<String>> = vec![None; clients.len()];
    for round in 0..60 {
        let marker = format!("{prefix}{round}");
        publish(h, key, &marker, TRANSIENT);
        for (i, client) in clients.iter_mut().enumerate() {
            let Client::Ws(ws) = &mut **client else {
                continue;
            };
            if ready[i] {
                continue;
            }
            // `next` is cancel-safe on a WebSocket, so a timeout loses nothing.
            let marker_seen = async {
                loop {
                    let m = ws.next().await?;
                    if let Some(id) = m.event_id().filter(|id| id.starts_with(&prefix)) {
                        return Ok::<_, String>(id.to_string());
                    }
                }
            };
            let got = block_on(async {
                tokio::time::timeout(Duration::from_millis(250), marker_seen).await
            });
            match got {
                Ok(Ok(id)) => {
                    ready[i] = true;
                    seen[i] = Some(id);
                }
                Ok(Err(e)) => panic!("WebSocket client going live: {e}"),
                Err(_) => {}
            }
        }
        if ready.iter().all(|r| *r) {
            for (client, seen) in clients.iter_mut().zip(&seen) {
                if seen.as_deref() != Some(marker.as_str()) {
                    client.read_until_event(&marker);
                }
            }
            return;
        }
    }
    panic!("a WebSocket client never received a marker");
}

pub(crate) fn publish(h: &Herald, key: &str, id: &str, event_type: &str) {
    h.post(&json!({"id": id, "event": event_type}), key)
        .expect(202);
}

/// Event ids of the `event` messages, in order.
fn event_ids(seen: &[Live]) -> Vec<&str> {
    seen.iter().filter_map(Live::event_id).collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn sse_resume_replays_the_missed_durable_events_then_goes_live() {
    let h = Herald::start("stream-resume", &Conf::new());
    let acme = |last: &str| vec![bearer(ACME_KEY), ("last-event-id", last.to_string())];

    let mut first = Client::sse(&h, "/v1/stream", &[bearer(ACME_KEY)]).unwrap();
    publish(&h, ACME_KEY, "evt_r1", "capsule.create");
    publish(&h, ACME_KEY, "evt_t1", TRANSIENT);
    publish(&h, ACME_KEY, "evt_r2", "host.down");
    let seen = first.read_until_event("evt_r2");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_r1 durable id=evt_r1",
            "event evt_t1 transient",
            "event evt_r2 durable id=evt_r2",
        ]
    );
    let event = &seen[0].data["event"];
    assert_eq!(event["event"], "capsule.create", "{event}");
    assert_eq!(event["team_id"], "acme", "{event}");
    assert_eq!(seen[1].data["event"]["event"], TRANSIENT);
    drop(first);

    // Missed while disconnected: two durable events of acme, a transient one (gone for
    // good), and an event of another team.
    publish(&h, ACME_KEY, "evt_r3", "capsule.create");
    publish(&h, ACME_KEY, "evt_t2", TRANSIENT);
    publish(&h, GLOBEX_KEY, "evt_g1", "capsule.create");
    publish(&h, ACME_KEY, "evt_r4", "host.down");

    let mut resumed = Client::sse(&h, "/v1/stream", &acme("evt_r2")).unwrap();
    let seen = resumed.read_until_event("evt_r4");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_r3 durable id=evt_r3",
            "event evt_r4 durable id=evt_r4"
        ]
    );
    // Then the live stream, transient events included again.
    publish(&h, ACME_KEY, "evt_t3", TRANSIENT);
    publish(&h, ACME_KEY, "evt_r5", "capsule.destroy");
    let seen = resumed.read_until_event("evt_r5");
    assert_eq!(
        shapes(&seen),
        ["event evt_t3 transient", "event evt_r5 durable id=evt_r5"]
    );

    // The admin's replay spans the teams.
    let mut admin = Client::sse(
        &h,
        "/v1/stream",
        &[bearer(ADMIN_TOKEN), ("last-event-id", "evt_r2".into())],
    )
    .unwrap();
    let seen = admin.read_until_event("evt_r5");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_r3 durable id=evt_r3",
            "event evt_g1 durable id=evt_g1",
            "event evt_r4 durable id=evt_r4",
            "event evt_r5 durable id=evt_r5",
        ]
    );

    // An id acme cannot know (another team's event): a `reset`, nothing replayed, then live.
    let mut unknown = Client::sse(&h, "/v1/stream", &acme("evt_g1")).unwrap();
    publish(&h, ACME_KEY, "evt_r6", "host.down");
    let seen = unknown.read_until_event("evt_r6");
    assert_eq!(shapes(&seen), ["reset", "event evt_r6 durable id=evt_r6"]);
    let reason = seen[0].data["reason"].as_str().expect("a reason");
    assert!(reason.contains("evt_g1"), "{reason}");
}

#[test]
fn a_client_that_stops_reading_gets_lagged_and_keeps_streaming() {
    let h = Herald::start("stream-lagged", &Conf::new());
    let addr = addr_of(&h);
    let auth = [bearer(ACME_KEY)];
    let mut clients = [
        Client::Sse(block_on(Sse::open(addr, "/v1/stream", &auth, true)).unwrap()),
        Client::Ws(Box::new(
            block_on(Ws::open(addr, "/v1/ws", &auth, true)).unwrap(),
        )),
    ];
    let [sse, ws] = &mut clients;
    wait_live(&h, ACME_KEY, "lag", &mut [sse, ws]);

    // Now neither reads while far more than the bus holds (1,024 messages) is published:
    // enough bytes to fill the server's socket buffer several times over as well.
    let filler: serde_json::Map<String, Value> = (0..4)
        .map(|i| (format!("filler_{i}"), Value::String("x".repeat(2000))))
        .collect();
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let message_bytes = 8_300;
    let batches = ((wmem_max + (8 << 20)) * 2 / message_bytes).div_ceil(100) + 12;
    for b in 0..batches {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("evt_fill_{b}_{i}"), "event": TRANSIENT, "metadata": filler}))
            .collect();
        h.post(&Value::Array(batch), ACME_KEY).expect(202);
    }
    let published = batches as u64 * 100 + 1;
    publish(&h, ACME_KEY, "evt_after_lag", "host.down");

    for client in &mut clients {
        let name = client.name();
        let seen = client.read_until_event("evt_after_lag");
        let lagged: Vec<&Live> = seen.iter().filter(|m| m.kind == "lagged").collect();
        assert!(
            !lagged.is_empty(),
            "{name}: no `lagged` message; {}",
            tail(&seen)
        );
        let first = seen.iter().position(|m| m.kind == "lagged").unwrap();
        assert!(first > 0, "{name}: `lagged` before the buffered events");
        assert!(
            seen[first + 1..].iter().any(|m| m.kind == "event"),
            "{name}: nothing streamed after `lagged`"
        );
        let mut missed = 0;
        for m in &lagged {
            let n = m.data["missed"].as_u64().unwrap_or(0);
            assert!(n > 0, "{name}: {:?}", m.data);
            assert_eq!(m.data, json!({"kind": "lagged", "missed": n}), "{name}");
            missed += n;
        }
        // Every message published is either received or counted as missed.
        let received = seen.iter().filter(|m| m.kind == "event").count() as u64;
        assert_eq!(
            received + missed,
            published,
            "{name}: {received} received + {missed} missed"
        );
    }

    // Still connected and streaming: a later event arrives on both.
    publish(&h, ACME_KEY, "evt_later", TRANSIENT);
    for client in &mut clients {
        let seen = client.read_until_event("evt_later");
        assert_eq!(
            shapes(&seen),
            ["event evt_later transient"],
            "{}",
            client.name()
        );
    }
}

#[test]
fn the_stream_shows_a_team_only_its_own_messages_and_honours_filters() {
    let acme_rx = Receiver::start("acme-hook");
    let globex_rx = Receiver::start("globex-hook");
    let h = Herald::start(
        "stream-teams",
        &Conf::new()
            .webhook("acme", "hook", &acme_rx)
            .subscribe("acme", "hook", &["host.down"])
            .webhook("globex", "hook", &globex_rx)
            .subscribe("globex", "hook", &["host.down"]),
    );

    // Refusals first: they are plain JSON errors, not streams.
    let client = h.client();
    let get =
        |path: &str, key: Option<&str>| client.request(axum::http::Method::GET, path, key, None);
    get("/v1/stream", None).expect_error(401, "unauthorized");
    get("/v1/stream", Some("not-a-key")).expect_error(401, "unauthorized");
    get("/v1/stream?access_token=not-a-key", None).expect_error(401, "unauthorized");
    for bad in ["cap*", "capsule.*.x", "*.down", "capsule.create,,host down"] {
        let error = get(&format!("/v1/stream?events={bad}"), Some(ACME_KEY))
            .expect_error(400, "invalid_query");
        assert!(
            error["message"].as_str().unwrap().contains("events"),
            "{error}"
        );
    }

    let mut acme = Client::sse(&h, "/v1/stream", &[bearer(ACME_KEY)]).unwrap();
    let mut globex = Client::sse(&h, "/v1/stream", &[bearer(GLOBEX_KEY)]).unwrap();
    let mut admin = Client::sse(&h, "/v1/stream", &[bearer(ADMIN_TOKEN)]).unwrap();
    // A browser's way: the token in the query string.
    let mut acme_capsules = Client::sse(
        &h,
        &format!("/v1/stream?access_token={ACME_KEY}&events=capsule.*"),
        &[],
    )
    .unwrap();
    let mut globex_capsules = Client::sse(
        &h,
        "/v1/stream?events=capsule.create,%20capsule.state.changed",
        &[bearer(GLOBEX_KEY)],
    )
    .unwrap();

    let published = [
        (ACME_KEY, "evt_a1", "capsule.create"),
        (ACME_KEY, "evt_a2", TRANSIENT),
        (ACME_KEY, "evt_a3", "host.down"),
        (GLOBEX_KEY, "evt_g1", "capsule.create"),
        (GLOBEX_KEY, "evt_g2", TRANSIENT),
        (GLOBEX_KEY, "evt_g3", "host.down"),
        (ACME_KEY, "evt_a4", "capsule.destroy"),
        (GLOBEX_KEY, "evt_g4", "capsule.destroy"),
    ];
    for (key, id, event_type) in published {
        publish(&h, key, id, event_type);
    }
    // Both deliveries done (the admin saw them), so they come before the end markers.
    let mut admin_seen =
        admin.read_until_shapes(&["delivery evt_a3 succeeded", "delivery evt_g3 succeeded"]);
    // End markers, interleaved so that each team's client reads past the other's.
    publish(&h, GLOBEX_KEY, "evt_end_g", TRANSIENT);
    publish(&h, ACME_KEY, "evt_end_a", TRANSIENT);
    publish(&h, GLOBEX_KEY, "evt_end_g2", TRANSIENT);

    let seen = acme.read_until_event("evt_end_a");
    assert!(
        seen.iter().all(|m| m.team() == "acme"),
        "{:#?}",
        shapes(&seen)
    );
    assert_eq!(
        event_ids(&seen),
        ["evt_a1", "evt_a2", "evt_a3", "evt_a4", "evt_end_a"]
    );
    assert!(
        shapes(&seen).contains(&"delivery evt_a3 succeeded".to_string()),
        "{:#?}",
        shapes(&seen)
    );

    let seen = globex.read_until_event("evt_end_g2");
    assert!(
        seen.iter().all(|m| m.team() == "globex"),
        "{:#?}",
        shapes(&seen)
    );
    assert_eq!(
        event_ids(&seen),
        [
            "evt_g1",
            "evt_g2",
            "evt_g3",
            "evt_g4",
            "evt_end_g",
            "evt_end_g2"
        ]
    );
    assert!(
        shapes(&seen).contains(&"delivery evt_g3 succeeded".to_string()),
        "{:#?}",
        shapes(&seen)
    );

    admin_seen.extend(admin.read_until_event("evt_end_g2"));
    let seen = admin_seen;
    let mut all: Vec<&str> = published.iter().map(|(_, id, _)| *id).collect();
    all.extend(["evt_end_g", "evt_end_a", "evt_end_g2"]);
    assert_eq!(event_ids(&seen), all);
    for id in ["evt_a3", "evt_g3"] {
        assert!(
            shapes(&seen).contains(&format!("delivery {id} succeeded")),
            "{:#?}",
            shapes(&seen)
        );
    }

    // Filters apply to events and to deliveries (theirs were about host.down).
    let seen = acme_capsules.read_until_event("evt_end_a");
    assert_eq!(
        shapes(&seen),
        [
            "event evt_a1 durable id=evt_a1",
            "event evt_a2 transient",
            "event evt_a4 durable id=evt_a4",
            "event evt_end_a transient",
        ]
    );
    let seen = globex_capsules.read_until_event("evt_end_g2");
    assert_eq!(
        event_ids(&seen),
        ["evt_g1", "evt_g2", "evt_end_g", "evt_end_g2"]
    );
    assert!(
        seen.iter().all(|m| m.kind == "event"),
        "{:#?}",
        shapes(&seen)
    );
}

#[test]
fn the_websocket_carries_the_same_messages_as_sse_with_the_same_auth_and_filters() {
    let ok = Receiver::start("ok");
    let gone = Receiver::scripted("gone", [], Answer::status(410));
    let h = Herald::start(
        "stream-ws",
        &Conf::new()
            .webhook("acme", "ok", &ok)
            .subscribe("acme", "ok", &["host.down"])
            .webhook("acme", "gone", &gone)
            .subscribe("acme", "gone", &["capsule.destroy"]),
    );

    // The same refusals as SSE.
    let refused =
        |path: &str, headers: &[(&'static str, String)]| match Client::ws(&h, path, headers) {
            Ok(_) => panic!("{path}: the WebSocket was accepted"),
            Err(reply) => reply,
        };
    refused("/v1/ws", &[]).expect_error(401, "unauthorized");
    refused("/v1/ws", &[bearer("not-a-key")]).expect_error(401, "unauthorized");
    refused("/v1/ws?events=cap*", &[bearer(ACME_KEY)]).expect_error(400, "invalid_query");

    let mut ws_globex = Client::ws(&h, "/v1/ws", &[bearer(GLOBEX_KEY)]).unwrap();
    wait_live(&h, GLOBEX_KEY, "globex", &mut [&mut ws_globex]);
    let mut sse = Client::sse(&h, "/v1/stream", &[bearer(ADMIN_TOKEN)]).unwrap();
    let mut ws = Client::ws(&h, "/v1/ws", &[bearer(ADMIN_TOKEN)]).unwrap();
    let mut ws_acme_capsules = Client::ws(
        &h,
        &format!("/v1/ws?access_token={ACME_KEY}&events=capsule.*"),
        &[],
    )
    .unwrap();
    wait_live(
        &h,
        ACME_KEY,
        "acme",
        &mut [&mut sse, &mut ws, &mut ws_acme_capsules],
    );

    publish(&h, ACME_KEY, "evt_ws_1", "host.down");
    publish(&h, ACME_KEY, "evt_ws_2", TRANSIENT);
    publish(&h, GLOBEX_KEY, "evt_ws_3", "capsule.create");
    publish(&h, ACME_KEY, "evt_ws_4", "capsule.destroy");
    // Every outcome on the bus (the admin's SSE stream saw them) before the end markers.
    let mut over_sse = sse.read_until_shapes(&[
        "delivery evt_ws_1 succeeded",
        "delivery evt_ws_4 disabled",
        "channel acme/gone disabled",
    ]);
    publish(&h, ACME_KEY, "evt_ws_end", TRANSIENT);
    publish(&h, GLOBEX_KEY, "evt_ws_end_g", TRANSIENT);

    // The admin's two streams: the same JSON, message for message.
    over_sse.extend(sse.read_until_event("evt_ws_end_g"));
    let over_ws = ws.read_until_event("evt_ws_end_g");
    let data = |seen: &[Live]| seen.iter().map(|m| m.data.clone()).collect::<Vec<_>>();
    assert_eq!(data(&over_ws), data(&over_sse));
    for m in &over_sse {
        assert_eq!(
            m.data["kind"],
            m.kind.as_str(),
            "SSE event name vs kind: {m:?}"
        );
    }
    let kinds: std::collections::BTreeSet<&str> = over_ws.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["channel", "delivery", "event"].into_iter().collect(),
        "{:#?}",
        shapes(&over_ws)
    );
    let shown = shapes(&over_ws);
    for expected in [
        "delivery evt_ws_1 succeeded",
        "delivery evt_ws_4 disabled",
        "channel acme/gone disabled",
    ] {
        assert!(
            shown.contains(&expected.to_string()),
            "{expected} in {shown:#?}"
        );
    }
    let delivery = over_ws
        .iter()
        .find(|m| m.kind == "delivery" && m.data["event_id"] == "evt_ws_1")
        .unwrap();
    for key in [
        "team",
        "delivery_id",
        "event_id",
        "event_type",
        "channel",
        "status",
        "attempt",
    ] {
        assert!(
            delivery.data.get(key).is_some(),
            "no `{key}` in {}",
            delivery.data
        );
    }

    // A team key with a filter over the WebSocket: its capsule events, the deliveries of
    // those, and its channel changes (which have no event type).
    let seen = ws_acme_capsules.read_until_event("evt_ws_end");
    assert!(
        seen.iter().all(|m| m.team() == "acme"),
        "{:#?}",
        shapes(&seen)
    );
    assert_eq!(event_ids(&seen), ["evt_ws_2", "evt_ws_4", "evt_ws_end"]);
    let shown = shapes(&seen);
    assert!(
        shown.contains(&"delivery evt_ws_4 disabled".to_string()),
        "{shown:#?}"
    );
    assert!(!shown.iter().any(|s| s.contains("evt_ws_1")), "{shown:#?}");

    let seen = ws_globex.read_until_event("evt_ws_end_g");
    assert_eq!(
        shapes(&seen),
        ["event evt_ws_3 durable", "event evt_ws_end_g transient"]
    );
}

#[test]
fn streams_end_when_a_reload_removes_their_key() {
    let conf = Conf::new();
    let h = Herald::start("stream-revoked", &conf);
    let mut acme_sse = Client::sse(&h, "/v1/stream", &[bearer(ACME_KEY)]).unwrap();
    let mut acme_ws = Client::ws(&h, "/v1/ws", &[bearer(ACME_KEY)]).unwrap();
    let mut admin = Client::sse(&h, "/v1/stream", &[bearer(ADMIN_TOKEN)]).unwrap();
    let mut globex = Client::sse(&h, "/v1/stream", &[bearer(GLOBEX_KEY)]).unwrap();
    wait_live(
        &h,
        ACME_KEY,
        "revoke",
        &mut [&mut acme_sse, &mut acme_ws, &mut admin],
    );
    wait_live(&h, GLOBEX_KEY, "revoke_g", &mut [&mut globex]);

    // Rotate acme's key and the admin token; globex's key stays.
    h.write_config(
        &conf
            .render()
            .replace(ACME_KEY, "acme-rotated-key")
            .replace(ADMIN_TOKEN, "admin-rotated-token"),
    );
    h.post_empty("/v1/admin/reload", ADMIN_TOKEN).expect(200);

    for client in [&mut acme_sse, &mut acme_ws, &mut admin] {
        let name = client.name();
        block_on(async {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match tokio::time::timeout_at(deadline, client.next()).await {
                    Ok(Err(_)) => break,
                    Ok(Ok(_)) => {}
                    Err(_) => panic!("{name}: the stream stayed open after its key was removed"),
                }
            }
        });
    }
    // A stream whose key is still configured keeps streaming.
    publish(&h, GLOBEX_KEY, "evt_after_rotation", "host.down");
    globex.read_until_event("evt_after_rotation");
}

/// Noise control shows on the stream: a delivery stopped by a silence, and one suppressed
/// as a repeat, each arrive as a `delivery` message with that status (no attempt made).
#[test]
fn silenced_and_suppressed_deliveries_show_on_the_stream() {
    let rx = Receiver::start("hook");
    let h = Herald::start(
        "stream-noise",
        &Conf::new().webhook("acme", "hook", &rx).raw(
            "[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\ndedup_window = \"1h\"\n",
        ),
    );
    let mut sse = Client::sse(&h, "/v1/stream", &[bearer(ACME_KEY)]).expect("SSE opens");
    let ends_at = herald_core::Timestamp::from_unix_nanos(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i128
            + 3_600_000_000_000,
    );
    let body = json!({"matchers": {"event": "host.down"}, "ends_at": ends_at.to_string(),
                      "comment": "quiet", "created_by": "ops"});
    h.client()
        .request(
            axum::http::Method::POST,
            "/v1/silences",
            Some(ACME_KEY),
            Some(("application/json", body.to_string().into_bytes())),
        )
        .expect(201);
    for id in ["n1", "n2"] {
        h.post(&json!({"id": id, "event": "capsule.create"}), ACME_KEY)
            .expect(202);
    }
    h.post(&json!({"id": "s1", "event": "host.down"}), ACME_KEY)
        .expect(202);
    let status_of = |seen: &[Live], id: &str| {
        seen.iter()
            .find(|m| m.kind == "delivery" && m.data["event_id"] == id)
            .map(|m| (m.data["status"].clone(), m.data["attempt"].clone()))
    };
    let mut waiting = vec!["s1", "n1", "n2"];
    let seen = sse.read_until("a delivery message of s1, n1 and n2", |m| {
        if m.kind == "delivery" {
            waiting.retain(|id| m.data["event_id"] != *id);
        }
        waiting.is_empty()
    });
    assert_eq!(
        status_of(&seen, "n1").map(|s| s.0),
        Some(json!("succeeded"))
    );
    assert_eq!(status_of(&seen, "s1"), Some((json!("silenced"), json!(0))));
    assert_eq!(
        status_of(&seen, "n2"),
        Some((json!("suppressed"), json!(0)))
    );
}
