//! The live stream: `GET /v1/stream` (Server-Sent Events) and `GET /v1/ws` (WebSocket),
//! the same messages for both, limited to the caller's team and optional type patterns.
//!
//! SSE resume: each durable event carries `id: <event id>`; a client reconnecting with
//! `Last-Event-ID` first gets the durable events stored since then (transient events are
//! never stored, so they cannot be replayed), then the live stream. A client that falls
//! more than the bus capacity behind gets a `lagged` message saying how many it missed and
//! keeps streaming.
//!
//! A stream lives no longer than its credentials: after each configuration reload it
//! checks its token again, and ends (with a `closed` message) when the key or admin
//! token was removed or now belongs to another team.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use herald_core::{Pattern, TeamId};
use herald_engine::{BusMessage, Caller, LiveMessage};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::auth::caller_from;
use crate::error::ApiError;
use crate::extract::ApiQuery;

/// Most stored events replayed after a `Last-Event-ID`.
const MAX_REPLAY: usize = 10_000;

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

/// Subscribes first, then reads the replay, so nothing committed in between is missed;
/// live messages already replayed are skipped.
async fn items(
    state: &AppState,
    filter: Filter,
    last_event_id: Option<String>,
    credentials: Credentials,
) -> impl Stream<Item = Item> + Send + 'static {
    let rx = state.engine.bus().subscribe();
    let mut replay: VecDeque<Item> = VecDeque::new();
    let mut replayed: HashSet<String> = HashSet::new();
    if let Some(last) = last_event_id {
        let mut after = last;
        loop {
            metrics::counter!("herald_stream_replay_pages_total").increment(1);
            match state
                .engine
                .store()
                .events_after(filter.team.as_ref(), &after, 500)
                .await
            {
                Ok(events) => {
                    let done = events.len() < 500 || replayed.len() >= MAX_REPLAY;
                    for event in events {
                        after = event.id.clone();
                        replayed.insert(event.id.clone());
                        let m = LiveMessage::Event {
                            durable: true,
                            event: Arc::new(event),
                        };
                        if filter.admits(&m) {
                            replay.push_back(Item::Message(Arc::new(BusMessage::new(m))));
                        }
                    }
                    if done {
                        break;
                    }
                }
                Err(herald_store::StoreError::NotFound) => {
                    replay.push_back(Item::Reset(format!(
                        "Last-Event-ID `{after}` is unknown; nothing was replayed"
                    )));
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "replaying events for a stream failed");
                    replay.push_back(Item::Reset("replay failed; see the server log".into()));
                    break;
                }
            }
        }
    }
    // The stream ends when the server begins shutting down, so an open stream cannot
    // hold a graceful shutdown open forever.
    let draining = state.engine.draining();
    let mut reloads = state.reloads.subscribe();
    reloads.mark_unchanged();
    let live = Live {
        state: state.clone(),
        credentials,
        reloads,
        closed: false,
    };
    stream::unfold(
        (rx, replay, replayed, filter, draining, live),
        |(mut rx, mut replay, replayed, filter, mut draining, mut live)| async move {
            if live.closed {
                return None;
            }
            if let Some(item) = replay.pop_front() {
                return Some((item, (rx, replay, replayed, filter, draining, live)));
            }
            loop {
                let received = tokio::select! {
                    received = rx.recv() => Some(received),
                    _ = draining.wait_for(|d| *d) => return None,
                    changed = live.reloads.changed() => {
                        if changed.is_ok() && live.credentials.still_valid(&live.state) {
                            continue;
                        }
                        None
                    }
                };
                let Some(received) = received else {
                    live.closed = true;
                    return Some((Item::Closed, (rx, replay, replayed, filter, draining, live)));
                };
                match received {
                    Ok(m) => {
                        if !filter.admits(&m.message) {
                            continue;
                        }
                        if let LiveMessage::Event {
                            durable: true,
                            event,
                        } = &m.message
                            && replayed.contains(&event.id)
                        {
                            continue;
                        }
                        return Some((
                            Item::Message(m),
                            (rx, replay, replayed, filter, draining, live),
                        ));
                    }
                    Err(RecvError::Lagged(missed)) => {
                        return Some((
                            Item::Lagged(missed),
                            (rx, replay, replayed, filter, draining, live),
                        ));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    )
}

/// What the live half of a stream watches besides the bus.
struct Live {
    state: AppState,
    credentials: Credentials,
    reloads: tokio::sync::watch::Receiver<u64>,
    /// `Item::Closed` was sent: the stream ends.
    closed: bool,
}

pub async fn sse(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
    let caller = caller_from(&state.engine.config(), &headers, q.access_token.as_deref())?;
    let filter = Filter::parse(&caller, q.events.as_deref())?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|s| !s.is_empty());
    let credentials = Credentials {
        headers,
        query_token: q.access_token,
        caller,
    };
    let items = items(&state, filter, last, credentials).await;
    let events = futures_util::StreamExt::map(items, |item| Ok::<_, Infallible>(item.to_sse()));
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
    let caller = caller_from(&state.engine.config(), &headers, q.access_token.as_deref())?;
    let filter = Filter::parse(&caller, q.events.as_deref())?;
    let credentials = Credentials {
        headers,
        query_token: q.access_token,
        caller,
    };
    Ok(upgrade.on_upgrade(move |socket| async move {
        let items = items(&state, filter, None, credentials).await;
        forward(socket, items).await;
    }))
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
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
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
