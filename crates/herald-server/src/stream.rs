//! The live stream: `GET /v1/stream` (Server-Sent Events) and `GET /v1/ws` (WebSocket),
//! the same messages for both, limited to the caller's team and optional type patterns.
//!
//! SSE resume: each durable event carries `id: <event id>`; a client reconnecting with
//! `Last-Event-ID` first gets every durable event stored since then, read a page at a
//! time as it takes them (transient events are never stored, so they cannot be
//! replayed), then the live stream. A client that falls more than the bus capacity behind
//! gets a `lagged` message saying how many it missed and keeps streaming.
//!
//! Every stream subscribes to the live bus before the response head is sent, replay or
//! not: the head goes out while the first store read is still running, so a client that
//! has it may publish at once, and what it publishes must reach it even when that read
//! ends in a `reset` (which reads nothing more).
//!
//! Each stream holds a slot against `[server] max_streams` and `max_streams_per_key`;
//! a WebSocket client's frames and messages are limited to 64 KiB (1009 closes it).
//!
//! A stream lives no longer than its credentials: after each configuration reload it
//! checks its token again, and ends (with a `closed` message) when the key or admin
//! token was removed or now belongs to another team.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use herald_core::{Pattern, TeamId};
use herald_engine::{BusMessage, Caller, LiveMessage};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::auth::{bearer_token, caller_from};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::replay::{PAGE, Page, Recent, Replay};
use crate::stream_slots::StreamSlot;

/// Largest WebSocket frame or message a client may send (it sends none that matter:
/// the stream goes one way).
const MAX_WS_MESSAGE: usize = 64 * 1024;
/// How long a socket closed for an oversized frame stays open for the client to read
/// the close frame.
const WS_CLOSE_LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Comma-separated patterns, e.g. `capsule.*,host.down`.
    events: Option<String>,
    /// For browsers' EventSource/WebSocket, which cannot set headers.
    access_token: Option<String>,
}

/// What a subscriber sees: its team (or all for the admin) and matching types.
struct Filter {
    team: Option<TeamId>,
    patterns: Vec<Pattern>,
}

impl Filter {
    fn parse(caller: &Caller, events: Option<&str>) -> Result<Filter, ApiError> {
        let patterns = events
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                Pattern::parse(p).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_query",
                        format!("events: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            team: caller.scope().cloned(),
            patterns,
        })
    }

    fn admits(&self, message: &LiveMessage) -> bool {
        if self.team.as_ref().is_some_and(|t| t != message.team()) {
            return false;
        }
        match message.event_type() {
            Some(t) => self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(t)),
            None => true,
        }
    }
}

/// One item of either stream.
enum Item {
    Message(Arc<BusMessage>),
    Lagged(u64),
    /// The `Last-Event-ID` is unknown (or pruned): nothing could be replayed.
    Reset(String),
    /// The stream's credentials were removed by a reload: the last item.
    Closed,
}

impl Item {
    /// The message as JSON text; bus messages were serialised once, at publish time.
    fn to_json(&self) -> String {
        match self {
            Item::Message(m) => m.json.clone(),
            Item::Lagged(missed) => json!({"kind": "lagged", "missed": missed}).to_string(),
            Item::Reset(reason) => json!({"kind": "reset", "reason": reason}).to_string(),
            Item::Closed => json!({
                "kind": "closed",
                "reason": "this stream's API key or admin token was removed by a configuration reload"
            })
            .to_string(),
        }
    }

    fn to_sse(&self) -> SseEvent {
        let name = match self {
            Item::Message(m) => match &m.message {
                LiveMessage::Event { .. } => "event",
                LiveMessage::Delivery { .. } => "delivery",
                LiveMessage::Channel { .. } => "channel",
            },
            Item::Lagged(_) => "lagged",
            Item::Reset(_) => "reset",
            Item::Closed => "closed",
        };
        let mut e = SseEvent::default().event(name).data(self.to_json());
        if let Item::Message(m) = self
            && let LiveMessage::Event {
                durable: true,
                event,
            } = &m.message
        {
            e = e.id(event.id.clone());
        }
        e
    }
}

/// The credentials a stream was opened with, checked again after every reload.
struct Credentials {
    headers: HeaderMap,
    query_token: Option<String>,
    caller: Caller,
}

impl Credentials {
    /// Whether the token still names the same caller in the configuration now in force.
    fn still_valid(&self, state: &AppState) -> bool {
        caller_from(
            &state.engine.config(),
            &self.headers,
            self.query_token.as_deref(),
        )
        .is_ok_and(|c| c == self.caller)
    }
}

/// The messages of one stream. It subscribes to the bus when it opens, before the
/// response head. With a replay, it reads the store a page at a time as the client takes
/// the events. A first page that comes back short was read after that subscription, so the
/// stream goes live at once, skipping live events it already replayed. A long replay lets
/// the subscription go at its first full page (it would only lag behind the store); when a
/// page comes back short it subscribes again, reads once more at once (what was committed
/// meanwhile), and goes live.
struct Feed {
    state: AppState,
    filter: Filter,
    replay: Option<Replay>,
    rx: Option<broadcast::Receiver<Arc<BusMessage>>>,
    buffered: VecDeque<Item>,
    recent: Recent,
    draining: tokio::sync::watch::Receiver<bool>,
    credentials: Credentials,
    reloads: tokio::sync::watch::Receiver<u64>,
    /// `Item::Closed` was sent: the stream ends.
    closed: bool,
    /// Held while the stream is open.
    _slot: StreamSlot,
}

impl Feed {
    fn new(
        state: &AppState,
        filter: Filter,
        last_event_id: Option<String>,
        credentials: Credentials,
        slot: StreamSlot,
    ) -> Feed {
        let replay = last_event_id.map(|last| Replay::new(filter.team.clone(), last));
        // Subscribe now, replay or not: the client is live once it has the head.
        let rx = Some(state.engine.bus().subscribe());
        let mut reloads = state.reloads.subscribe();
        reloads.mark_unchanged();
        Feed {
            state: state.clone(),
            filter,
            replay,
            rx,
            buffered: VecDeque::new(),
            recent: Recent::default(),
            // The stream ends when the server begins shutting down, so an open stream
            // cannot hold a graceful shutdown open forever.
            draining: state.engine.draining(),
            credentials,
            reloads,
            closed: false,
            _slot: slot,
        }
    }

    async fn next(&mut self) -> Option<Item> {
        loop {
            if self.closed {
                return None;
            }
            if let Some(item) = self.buffered.pop_front() {
                return Some(item);
            }
            if self.replay.is_some() {
                if *self.draining.borrow() {
                    return None;
                }
                if self.reloads.has_changed().unwrap_or(true) {
                    self.reloads.mark_unchanged();
                    if !self.credentials.still_valid(&self.state) {
                        self.closed = true;
                        return Some(Item::Closed);
                    }
                }
                self.read_page().await;
                continue;
            }
            return self.next_live().await;
        }
    }

    /// One page of the replay into `buffered`; at the end of the replay, goes live.
    async fn read_page(&mut self) {
        let store = Arc::clone(self.state.engine.store());
        loop {
            let Some(replay) = self.replay.as_mut() else {
                return;
            };
            match replay.next(store.as_ref()).await {
                Page::Events(events) => {
                    let caught_up = events.len() < PAGE;
                    for event in events {
                        self.recent.replayed(&event.id);
                        let m = LiveMessage::Event {
                            durable: true,
                            event: Arc::new(event),
                        };
                        if self.filter.admits(&m) {
                            self.buffered
                                .push_back(Item::Message(Arc::new(BusMessage::new(m))));
                        }
                    }
                    if !caught_up {
                        // More to replay: the store has it, and a subscription would only
                        // lag behind while the client takes the pages.
                        self.rx = None;
                        return;
                    }
                    if self.rx.is_some() {
                        // Subscribed before this read began: every event committed after it
                        // is published on the bus after the subscription.
                        self.replay = None;
                        return;
                    }
                    // Subscribe, then read once more at once (the events committed since
                    // the short page), before the client has the last replayed event.
                    self.rx = Some(self.state.engine.bus().subscribe());
                }
                Page::Unknown(after) => {
                    self.buffered.push_back(Item::Reset(format!(
                        "Last-Event-ID `{after}` is unknown; nothing was replayed"
                    )));
                    self.reset();
                    return;
                }
                Page::Failed => {
                    self.buffered
                        .push_back(Item::Reset("replay failed; see the server log".into()));
                    self.reset();
                    return;
                }
            }
        }
    }

    /// The replay ended without catching up: live from now on (still subscribed from the
    /// start unless a long replay let the subscription go).
    fn reset(&mut self) {
        self.replay = None;
        if self.rx.is_none() {
            self.rx = Some(self.state.engine.bus().subscribe());
        }
    }

    async fn next_live(&mut self) -> Option<Item> {
        let rx = self.rx.as_mut()?;
        loop {
            let received = tokio::select! {
                received = rx.recv() => received,
                _ = self.draining.wait_for(|d| *d) => return None,
                changed = self.reloads.changed() => {
                    if changed.is_ok() && self.credentials.still_valid(&self.state) {
                        continue;
                    }
                    self.closed = true;
                    return Some(Item::Closed);
                }
            };
            match received {
                Ok(m) => {
                    if !self.filter.admits(&m.message) {
                        continue;
                    }
                    if let LiveMessage::Event {
                        durable: true,
                        event,
                    } = &m.message
                        && self.recent.seen(&event.id)
                    {
                        continue;
                    }
                    return Some(Item::Message(m));
                }
                Err(RecvError::Lagged(missed)) => return Some(Item::Lagged(missed)),
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn into_stream(self) -> impl Stream<Item = Item> + Send + 'static {
        stream::unfold(self, |mut feed| async move {
            let item = feed.next().await?;
            Some((item, feed))
        })
    }
}

/// Checks the stream limits and opens the stream's feed.
fn open(
    state: &AppState,
    headers: HeaderMap,
    query: StreamQuery,
    last_event_id: Option<String>,
) -> Result<Feed, ApiError> {
    let config = state.engine.config();
    let caller = caller_from(&config, &headers, query.access_token.as_deref())?;
    let filter = Filter::parse(&caller, query.events.as_deref())?;
    let token = bearer_token(&headers, query.access_token.as_deref())?;
    let slot = state.streams.take(token, &caller, &config.server)?;
    let credentials = Credentials {
        headers,
        query_token: query.access_token,
        caller,
    };
    Ok(Feed::new(state, filter, last_event_id, credentials, slot))
}

pub async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty());
    let feed = open(&state, headers, q, last)?;
    let events = futures_util::StreamExt::map(feed.into_stream(), |item| {
        Ok::<_, Infallible>(item.to_sse())
    });
    Ok(Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("heartbeat"),
        )
        .into_response())
}

pub async fn ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let feed = open(&state, headers, q, None)?;
    Ok(upgrade
        .max_frame_size(MAX_WS_MESSAGE)
        .max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| forward(socket, feed.into_stream())))
}

async fn forward(mut socket: WebSocket, items: impl Stream<Item = Item> + Send + 'static) {
    use futures_util::StreamExt as _;
    let mut items = std::pin::pin!(items);
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            item = items.next() => {
                let Some(item) = item else { break };
                if socket.send(Message::Text(item.to_json().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    if let Some(close) = close_for(e) {
                        let _ = socket.send(Message::Close(Some(close))).await;
                        // The rest of the oversized frame is unread: closing the socket
                        // now would reset it before the client has read the close frame.
                        tokio::time::sleep(WS_CLOSE_LINGER).await;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// The close frame for a failed read: 1009 for a frame or message over the limit.
fn close_for(error: axum::Error) -> Option<CloseFrame> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(CloseFrame {
            code: close_code::SIZE,
            reason: format!("frames and messages are limited to {MAX_WS_MESSAGE} bytes").into(),
        }),
        _ => None,
    }
}
