//! A Telegram Bot API double, faithful to the documented behaviour and error strings.
//!
//! A real HTTP server on `127.0.0.1` with an ephemeral port, serving
//! `/bot<token>/<method>` with method names matched case-insensitively (teloxide sends
//! `SendMessage`), parameters as JSON, as a form or in the query string, and replies in
//! Telegram's envelope: `{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":N,"description":"…","parameters":{…}}` with HTTP status N.
//!
//! Methods: `getMe`, `getUpdates` (long polling honouring `timeout`, `offset` confirming
//! updates; tests inject updates), `sendMessage` (text validated as Telegram does: 1–4096
//! UTF-16 code units after entity parsing, HTML and MarkdownV2 entity errors; see
//! [`parse_entities`]). Anything else is `404 Not Found`.
//!
//! Behaviours a test can set per chat ([`ChatBehaviour`]): blocked, kicked, not found,
//! migrated to a supergroup, failing with a 5xx or a 429 a number of times, after a
//! number of messages went through. Flood control enforces
//! [`RateLimits`] (Telegram's by default) and counts the 429s it sent.
//!
//! ```no_run
//! # async fn demo() {
//! use herald_testkit::telegram::{ChatBehaviour, TelegramDouble};
//! let double = TelegramDouble::start().await;
//! let (url, token) = (double.api_url(), double.token());
//! double.set_chat_behaviour(42, ChatBehaviour::Blocked);
//! // … point a bot at `url` with `token`, send, then:
//! assert!(double.messages(7).is_empty());
//! assert_eq!(double.too_many_requests_sent(), 0);
//! # }
//! ```
//!
//! Why this file is long (~690 lines): it is one HTTP double whose handlers (`getMe`,
//! `getUpdates`, `sendMessage`) share its state, error envelope and parameter parsing;
//! the independent parts already live in `telegram/limits.rs` and `telegram/markup.rs`.

mod limits;
mod markup;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::any;
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use limits::RateLimits;
pub use markup::{MARKDOWN_V2_RESERVED, ParseMode, parse_entities, telegram_len};

/// The token the double accepts unless told otherwise: shaped like a real one (bot id,
/// colon, 35 characters), so token-scrubbing code treats it as it would a real token.
pub const DEFAULT_TOKEN: &str = "4242424242:AAHerald-testkit_double-token-0123456";
/// The bot's user id (the part of the token before the colon).
pub const BOT_ID: i64 = 4_242_424_242;
pub const BOT_USERNAME: &str = "herald_test_bot";
/// Longest text `sendMessage` accepts, in UTF-16 code units after entity parsing.
pub const MAX_TEXT_LEN: usize = 4096;
/// Longest long-poll wait the double grants, whatever `timeout` asks for.
pub const MAX_POLL_TIMEOUT: Duration = Duration::from_secs(50);

/// How the double treats messages to one chat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChatBehaviour {
    #[default]
    Normal,
    /// 403 `Forbidden: bot was blocked by the user`.
    Blocked,
    /// 403 `Forbidden: bot was kicked from the supergroup chat` (or `group chat` for a
    /// basic group id).
    Kicked,
    /// 400 `Bad Request: chat not found`.
    NotFound,
    /// 400 `Bad Request: group chat was upgraded to a supergroup chat` with
    /// `parameters.migrate_to_chat_id`.
    MigratedTo(i64),
    /// Answers the next `times` messages with HTTP `status` (500, 502, …), then behaves.
    ServerError { status: u16, times: u32 },
    /// Answers the next `times` messages with `429 Too Many Requests: retry after
    /// {retry_after}` (and `parameters.retry_after`), whatever the flood control says,
    /// then behaves.
    TooManyRequests { retry_after: u32, times: u32 },
    /// Treats the next `ok` messages as [`ChatBehaviour::Normal`] does, then behaves as
    /// `then`: e.g. to fail the second part of a split message.
    After { ok: u32, then: Box<ChatBehaviour> },
    /// Answers the next `times` messages with 429 `Too Many Requests` *without*
    /// `parameters.retry_after` (a throttle that gives no hint), then behaves.
    Throttled { times: u32 },
}

/// A message the double accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub message_thread_id: Option<i32>,
    /// `text` as sent, markup included.
    pub text: String,
    /// What a user sees: `text` after entity parsing.
    pub visible_text: String,
    pub parse_mode: ParseMode,
    pub disable_notification: bool,
    /// Arrival, for benchmarks (tests should not assert on time).
    pub received_at: Instant,
}

/// One request the double answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Lower-cased (`sendmessage`).
    pub method: String,
    pub chat_id: Option<i64>,
    /// HTTP status of the reply.
    pub status: u16,
    /// `description` of an error reply.
    pub description: Option<String>,
}

/// The double's knobs, for [`TelegramDouble::start_with`].
#[derive(Debug, Clone)]
pub struct DoubleOptions {
    pub token: String,
    pub limits: RateLimits,
}

impl Default for DoubleOptions {
    fn default() -> Self {
        DoubleOptions {
            token: DEFAULT_TOKEN.to_string(),
            limits: RateLimits::telegram(),
        }
    }
}

/// A running Bot API double. The server stops when this is dropped.
#[derive(Debug)]
pub struct TelegramDouble {
    addr: SocketAddr,
    token: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    token: String,
    state: Mutex<DoubleState>,
    /// Woken when an update is injected, for long polls.
    updates_arrived: Notify,
}

#[derive(Debug, Default)]
struct DoubleState {
    limits: RateLimits,
    flood: limits::FloodControl,
    behaviours: HashMap<i64, ChatBehaviour>,
    messages: Vec<SentMessage>,
    next_message_id: i64,
    updates: Vec<(i64, Value)>,
    next_update_id: i64,
    requests: Vec<RequestRecord>,
    too_many_requests: u64,
}

impl Drop for TelegramDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TelegramDouble {
    /// Starts a double with [`DEFAULT_TOKEN`] and Telegram's limits.
    pub async fn start() -> TelegramDouble {
        TelegramDouble::start_with(DoubleOptions::default()).await
    }

    /// Starts a double on `127.0.0.1` with an ephemeral port.
    ///
    /// # Panics
    /// When no local port can be bound (a broken test machine).
    pub async fn start_with(options: DoubleOptions) -> TelegramDouble {
        let shared = Arc::new(Shared {
            token: options.token.clone(),
            state: Mutex::new(DoubleState {
                limits: options.limits,
                next_message_id: 1,
                next_update_id: 1,
                ..DoubleState::default()
            }),
            updates_arrived: Notify::new(),
        });
        let app = Router::new()
            .route("/{bot}/{method}", any(handle))
            .fallback(|| async { error_reply(404, "Not Found", None) })
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TelegramDouble {
            addr,
            token: options.token,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:PORT`: what a bot's `api_url` should be.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token the double accepts; any other gets `401 Unauthorized`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Messages accepted for `chat`, oldest first.
    pub fn messages(&self, chat: i64) -> Vec<SentMessage> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Every accepted message, in arrival order.
    pub fn all_messages(&self) -> Vec<SentMessage> {
        self.state().messages.clone()
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().requests.clone()
    }

    /// How many `429 Too Many Requests` the double has answered.
    pub fn too_many_requests_sent(&self) -> u64 {
        self.state().too_many_requests
    }

    pub fn set_chat_behaviour(&self, chat: i64, behaviour: ChatBehaviour) {
        self.state().behaviours.insert(chat, behaviour);
    }

    /// Changes the flood control from now on (history is kept).
    pub fn set_limits(&self, limits: RateLimits) {
        self.state().limits = limits;
    }

    /// Queues an update for `getUpdates`. `update` is the update without its id (for
    /// example `{"message": {…}}`); the double assigns and returns the `update_id`.
    pub fn inject_update(&self, update: Value) -> i64 {
        let id = {
            let mut state = self.state();
            let id = state.next_update_id;
            state.next_update_id += 1;
            let mut update = match update {
                Value::Object(map) => map,
                other => {
                    let mut map = Map::new();
                    map.insert("message".into(), other);
                    map
                }
            };
            update.insert("update_id".into(), json!(id));
            state.updates.push((id, Value::Object(update)));
            id
        };
        self.shared.updates_arrived.notify_waiters();
        id
    }

    /// Queues a text message from a user in `chat` (a private chat for positive ids, a
    /// supergroup for ids below -10^12, a basic group otherwise), in forum topic `thread`
    /// when given. Returns the `update_id`.
    pub fn inject_text(&self, chat: i64, thread: Option<i32>, text: &str) -> i64 {
        let message_id = {
            let mut state = self.state();
            let id = state.next_message_id;
            state.next_message_id += 1;
            id
        };
        let mut message = json!({
            "message_id": message_id,
            "date": unix_now(),
            "chat": chat_json(chat, thread.is_some()),
            "from": {"id": 1_000_001, "is_bot": false, "first_name": "Tester"},
            "text": text,
        });
        if let Some(command_len) = text
            .starts_with('/')
            .then(|| text.find(char::is_whitespace).unwrap_or(text.len()))
        {
            message["entities"] = json!([{
                "type": "bot_command",
                "offset": 0,
                "length": telegram_len(&text[..command_len]),
            }]);
        }
        if let Some(thread) = thread {
            message["message_thread_id"] = json!(thread);
            message["is_topic_message"] = json!(true);
        }
        self.inject_update(json!({ "message": message }))
    }

    /// Waits until `chat` has at least `count` messages or `limit` passes (a bounded
    /// wait for tests of background tasks), then returns the chat's messages.
    pub async fn wait_for_messages(
        &self,
        chat: i64,
        count: usize,
        limit: Duration,
    ) -> Vec<SentMessage> {
        let deadline = Instant::now() + limit;
        loop {
            let messages = self.messages(chat);
            if messages.len() >= count || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn state(&self) -> MutexGuard<'_, DoubleState> {
        self.shared.state()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, DoubleState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Supergroup and channel ids are `-100…` (below -10^12).
fn is_supergroup(chat: i64) -> bool {
    chat <= -1_000_000_000_000
}

fn chat_json(chat: i64, forum: bool) -> Value {
    if chat > 0 {
        json!({"id": chat, "type": "private", "first_name": "Tester"})
    } else if is_supergroup(chat) {
        let mut value = json!({"id": chat, "type": "supergroup", "title": format!("Group {chat}")});
        if forum {
            value["is_forum"] = json!(true);
        }
        value
    } else {
        json!({"id": chat, "type": "group", "title": format!("Group {chat}")})
    }
}

/// A reply: the envelope, HTTP status = `error_code`.
struct Reply {
    status: u16,
    body: Value,
}

fn ok(result: Value) -> Reply {
    Reply {
        status: 200,
        body: json!({"ok": true, "result": result}),
    }
}

fn error(code: u16, description: &str, parameters: Option<Value>) -> Reply {
    let mut body = json!({"ok": false, "error_code": code, "description": description});
    if let Some(parameters) = parameters {
        body["parameters"] = parameters;
    }
    Reply { status: code, body }
}

fn error_reply(code: u16, description: &str, parameters: Option<Value>) -> Response {
    into_response(error(code, description, parameters))
}

fn into_response(reply: Reply) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(reply.body.to_string()))
        .unwrap_or_default()
}

fn bad_request(detail: &str) -> Reply {
    error(400, &format!("Bad Request: {detail}"), None)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let method = method.to_ascii_lowercase();
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        let reply = error(401, "Unauthorized", None);
        record(&shared, &method, None, &reply);
        return into_response(reply);
    }
    let params = match Params::parse(uri.query(), &headers, &body) {
        Ok(params) => params,
        Err(detail) => {
            let reply = bad_request(&detail);
            record(&shared, &method, None, &reply);
            return into_response(reply);
        }
    };
    let chat = params.i64("chat_id");
    let reply = match method.as_str() {
        "getme" => ok(json!({
            "id": BOT_ID,
            "is_bot": true,
            "first_name": "herald test bot",
            "username": BOT_USERNAME,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        })),
        "getupdates" => get_updates(&shared, &params).await,
        "sendmessage" => send_message(&shared, &params),
        _ => error(404, "Not Found", None),
    };
    record(&shared, &method, chat, &reply);
    into_response(reply)
}

fn record(shared: &Shared, method: &str, chat_id: Option<i64>, reply: &Reply) {
    let description = reply.body["description"].as_str().map(str::to_string);
    let mut state = shared.state();
    if reply.status == 429 {
        state.too_many_requests += 1;
    }
    state.requests.push(RequestRecord {
        method: method.to_string(),
        chat_id,
        status: reply.status,
        description,
    });
}

async fn get_updates(shared: &Shared, params: &Params) -> Reply {
    let offset = params.i64("offset").unwrap_or(0);
    let limit = params
        .i64("limit")
        .unwrap_or(100)
        .clamp(1, 100)
        .try_into()
        .unwrap_or(100);
    let timeout = Duration::from_secs(params.i64("timeout").unwrap_or(0).max(0).unsigned_abs())
        .min(MAX_POLL_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Register for wake-ups before looking, so an injection in between is not missed.
        let arrived = shared.updates_arrived.notified();
        let pending: Vec<Value> = {
            let mut state = shared.state();
            // An offset confirms every update before it: they are never returned again.
            if offset > 0 {
                state.updates.retain(|(id, _)| *id >= offset);
            }
            state
                .updates
                .iter()
                .filter(|(id, _)| *id >= offset)
                .take(limit)
                .map(|(_, update)| update.clone())
                .collect()
        };
        if !pending.is_empty() || tokio::time::Instant::now() >= deadline {
            return ok(Value::Array(pending));
        }
        let _ = tokio::time::timeout_at(deadline, arrived).await;
    }
}

fn send_message(shared: &Shared, params: &Params) -> Reply {
    if params.get("chat_id").is_none() {
        return bad_request("chat_id is empty");
    }
    // `@channelusername` ids are not modelled.
    let Some(chat) = params.i64("chat_id") else {
        return bad_request("chat not found");
    };
    let Some(text) = params.str("text") else {
        return bad_request("message text is empty");
    };
    let Some(mode) = ParseMode::from_api(params.str("parse_mode")) else {
        return bad_request("unsupported parse_mode");
    };
    let thread = params
        .i64("message_thread_id")
        .and_then(|t| i32::try_from(t).ok());
    let disable_notification = params.bool("disable_notification");

    let mut state = shared.state();
    let behaviour = match state.behaviours.get(&chat).cloned().unwrap_or_default() {
        ChatBehaviour::After { ok: 0, then } => {
            state.behaviours.insert(chat, (*then).clone());
            *then
        }
        ChatBehaviour::After { ok, then } => {
            state
                .behaviours
                .insert(chat, ChatBehaviour::After { ok: ok - 1, then });
            ChatBehaviour::Normal
        }
        other => other,
    };
    match behaviour {
        ChatBehaviour::Normal => {}
        // Resolved above; a nested `After` waits for the next message.
        ChatBehaviour::After { .. } => {}
        ChatBehaviour::Blocked => {
            return error(403, "Forbidden: bot was blocked by the user", None);
        }
        ChatBehaviour::Kicked if is_supergroup(chat) => {
            return error(
                403,
                "Forbidden: bot was kicked from the supergroup chat",
                None,
            );
        }
        ChatBehaviour::Kicked => {
            return error(403, "Forbidden: bot was kicked from the group chat", None);
        }
        ChatBehaviour::NotFound => return bad_request("chat not found"),
        ChatBehaviour::MigratedTo(to) => {
            return error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                Some(json!({"migrate_to_chat_id": to})),
            );
        }
        ChatBehaviour::ServerError { status, times } => {
            let next = if times <= 1 {
                ChatBehaviour::Normal
            } else {
                ChatBehaviour::ServerError {
                    status,
                    times: times - 1,
                }
            };
            state.behaviours.insert(chat, next);
            let description = match status {
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                504 => "Gateway Timeout",
                _ => "Internal Server Error",
            };
            return error(status, description, None);
        }
        ChatBehaviour::TooManyRequests { retry_after, times } => {
            let next = if times <= 1 {
                ChatBehaviour::Normal
            } else {
                ChatBehaviour::TooManyRequests {
                    retry_after,
                    times: times - 1,
                }
            };
            state.behaviours.insert(chat, next);
            return error(
                429,
                &format!("Too Many Requests: retry after {retry_after}"),
                Some(json!({"retry_after": retry_after})),
            );
        }
        ChatBehaviour::Throttled { times } => {
            let next = if times <= 1 {
                ChatBehaviour::Normal
            } else {
                ChatBehaviour::Throttled { times: times - 1 }
            };
            state.behaviours.insert(chat, next);
            state.too_many_requests += 1;
            return error(429, "Too Many Requests", None);
        }
    }

    let visible_text = match parse_entities(text, mode) {
        Ok(visible) => visible,
        Err(reason) => return bad_request(&format!("can't parse entities: {reason}")),
    };
    if visible_text.trim().is_empty() {
        return bad_request("message text is empty");
    }
    if telegram_len(&visible_text) > MAX_TEXT_LEN {
        return bad_request("message is too long");
    }

    let now = Instant::now();
    let limits = state.limits;
    if let Err(wait) = state.flood.admit(&limits, chat, now) {
        let secs = limits::retry_after_secs(wait);
        return error(
            429,
            &format!("Too Many Requests: retry after {secs}"),
            Some(json!({"retry_after": secs})),
        );
    }

    let message_id = state.next_message_id;
    state.next_message_id += 1;
    state.messages.push(SentMessage {
        message_id,
        chat_id: chat,
        message_thread_id: thread,
        text: text.to_string(),
        visible_text: visible_text.clone(),
        parse_mode: mode,
        disable_notification,
        received_at: now,
    });
    let mut message = json!({
        "message_id": message_id,
        "date": unix_now(),
        "chat": chat_json(chat, thread.is_some()),
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "herald test bot", "username": BOT_USERNAME},
        "text": visible_text,
    });
    if let Some(thread) = thread {
        message["message_thread_id"] = json!(thread);
        message["is_topic_message"] = json!(true);
    }
    ok(message)
}

/// Request parameters, from the query string and a JSON or form body (the body wins).
#[derive(Debug, Default)]
struct Params(Map<String, Value>);

impl Params {
    fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Params, String> {
        let mut params = Map::new();
        if let Some(query) = query {
            params.extend(form_pairs(query));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !body.is_empty() {
            if content_type.starts_with("application/json") {
                match serde_json::from_slice::<Value>(body) {
                    Ok(Value::Object(map)) => params.extend(map),
                    _ => return Err("invalid JSON body".to_string()),
                }
            } else if content_type.starts_with("application/x-www-form-urlencoded") {
                let body = std::str::from_utf8(body).map_err(|_| "invalid form body")?;
                params.extend(form_pairs(body));
            } else {
                return Err(format!("unsupported content type `{content_type}`"));
            }
        }
        Ok(Params(params))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.as_str()
    }

    /// A number, or a string holding one (form bodies carry only strings).
    fn i64(&self, key: &str) -> Option<i64> {
        match self.0.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn bool(&self, key: &str) -> bool {
        match self.0.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
            _ => false,
        }
    }
}

/// `a=1&b=x%20y` → pairs of strings (`+` is a space).
fn form_pairs(s: &str) -> impl Iterator<Item = (String, Value)> + '_ {
    s.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), Value::String(percent_decode(v)))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
