//! The harness for tests against `herald serve`: scripted webhook receivers, one running
//! server per test (its own scratch and data directory, its own ports) and bounded waiting.
//!
//! Tests are plain `#[test]` threads; the receivers and the HTTP client run on one shared
//! tokio runtime that the tests `block_on`, so a test reads top to bottom and may block
//! (run the CLI, wait for a process) without starving any receiver.
//!
//! Why this file is long (~980 lines): it is the one harness every end-to-end test imports
//! (receivers, configuration builder, API client, the server process), and its parts share
//! the runtime and the scratch directory. If it grows further, the scripted receivers
//! (`Receiver`, `Answer`, `Request`) are the part to move to a file of their own.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use herald_channels::webhook::{DEFAULT_TOLERANCE, verify};
use herald_core::Secret;
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::support::{Scratch, herald, run, text};

/// The Standard Webhooks secret of every webhook channel in these tests.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ACME_KEY: &str = "acme-key";
pub const GLOBEX_KEY: &str = "globex-key";
pub const ADMIN_TOKEN: &str = "admin-token";
/// What must never appear in a reply or a log line.
pub const SECRETS: &[&str] = &[
    ACME_KEY,
    GLOBEX_KEY,
    ADMIN_TOKEN,
    WEBHOOK_SECRET,
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
];

/// How long a test waits for something that should happen promptly (a delivery, a state
/// change). Generous: the machine is small and other tests run alongside.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a test watches for something that must not happen (a second delivery).
pub const QUIET: Duration = Duration::from_millis(700);

/// The log filter of every server under test: our crates at debug, so that a failing
/// test shows what the server did (and the secret checks cover the chattiest level).
const LOG_FILTER: &str = "info,herald=debug,herald_server=debug,herald_engine=debug,\
                          herald_channels=debug,herald_store=debug,herald_config=debug";

/// The receivers and HTTP clients of every test in this process.
static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("start the test runtime")
});

/// Runs `future` to completion on the shared runtime. Call it from test threads only.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.block_on(future)
}

/// Runs `future` in the background on the shared runtime (a proxy, a fake server).
pub fn spawn_on_runtime<F>(future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    RUNTIME.spawn(future);
}

/// Polls `probe` every 25 ms until it gives `Ok`, for at most `within`; on timeout panics
/// naming `what` and the probe's last complaint.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Receiver
// ---------------------------------------------------------------------------------------

/// How a receiver answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    /// How long to wait before answering (cut short when the receiver is dropped).
    delay: Option<Duration>,
}

impl Answer {
    /// `status` with a short text body saying which receiver answered.
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            delay: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = Some(delay);
        self
    }

    /// Never answers (until the receiver is dropped).
    pub fn hang() -> Answer {
        Answer::status(503).after(Duration::from_secs(300))
    }
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When it arrived (before answering).
    pub at: Instant,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The Standard Webhooks check of the signature, with [`WEBHOOK_SECRET`].
    pub signature: Result<(), String>,
}

impl Request {
    /// A header's value; panics when it is absent or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header in {self:?}"))
            .to_str()
            .unwrap_or_else(|_| panic!("`{name}` header is not text in {self:?}"))
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `id` of the event in the body.
    pub fn event_id(&self) -> String {
        self.json()["id"]
            .as_str()
            .unwrap_or_else(|| panic!("body has no string `id`: {:?}", self.body))
            .to_string()
    }

    fn summary(&self) -> String {
        format!(
            "{} {} webhook-id={:?} body={}",
            self.method,
            self.uri,
            self.headers.get("webhook-id"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    requests: Mutex<Vec<Request>>,
    script: Mutex<VecDeque<Answer>>,
    default: Mutex<Answer>,
    /// Set on drop: releases hanging answers.
    stop: watch::Sender<bool>,
}

/// A real HTTP server on 127.0.0.1 that records every request and answers from a script,
/// then with a default answer. Stops on drop.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub fn start(name: &str) -> Receiver {
        Receiver::scripted(name, [], Answer::status(200))
    }

    /// Answers with `script` in order, then with `default`.
    pub fn scripted(
        name: &str,
        script: impl IntoIterator<Item = Answer>,
        default: Answer,
    ) -> Receiver {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(script.into_iter().collect()),
            default: Mutex::new(default),
            stop: watch::channel(false).0,
        });
        let listener = block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind a receiver on 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let task = RUNTIME.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    /// Where a webhook channel should point.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/{}", self.addr, self.shared.name)
    }

    /// Adds `answer` at the end of the script.
    pub fn push(&self, answer: Answer) {
        self.shared.script.lock().unwrap().push_back(answer);
    }

    /// The answer once the script is used up.
    pub fn set_default(&self, answer: Answer) {
        *self.shared.default.lock().unwrap() = answer;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived and checks that every request so far is a
    /// signed POST; returns all of them in arrival order.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Request> {
        let name = &self.shared.name;
        let requests = wait_until(
            &format!("{n} request(s) at receiver `{name}`"),
            within,
            || {
                let requests = self.requests();
                if requests.len() >= n {
                    Ok(requests)
                } else {
                    Err(format!(
                        "{} request(s): {:#?}",
                        requests.len(),
                        requests.iter().map(Request::summary).collect::<Vec<_>>()
                    ))
                }
            },
        );
        for r in &requests {
            assert_eq!(r.method, Method::POST, "receiver `{name}`: {}", r.summary());
            if let Err(e) = &r.signature {
                panic!("receiver `{name}`: bad signature ({e}) on {}", r.summary());
            }
        }
        requests
    }

    /// Watches for `period` that no more than `n` requests arrive.
    pub fn assert_stays(&self, n: usize, period: Duration) {
        let until = Instant::now() + period;
        while Instant::now() < until {
            let requests = self.requests();
            assert!(
                requests.len() <= n,
                "receiver `{}` expected to stay at {n} request(s), got {}: {:#?}",
                self.shared.name,
                requests.len(),
                requests.iter().map(Request::summary).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The event ids of every request, in arrival order.
    pub fn event_ids(&self) -> Vec<String> {
        self.requests().iter().map(Request::event_id).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = check_signature(&headers, &body);
    shared.requests.lock().unwrap().push(Request {
        at: Instant::now(),
        method,
        uri,
        headers,
        body,
        signature,
    });
    let answer = {
        let next = shared.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| shared.default.lock().unwrap().clone())
    };
    if let Some(delay) = answer.delay {
        let mut stop = shared.stop.subscribe();
        let _ = tokio::time::timeout(delay, stop.wait_for(|s| *s)).await;
    }
    let status = StatusCode::from_u16(answer.status).expect("a valid status code");
    let mut response = (status, format!("{} from {}", answer.status, shared.name)).into_response();
    for (name, value) in &answer.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    response
}

fn check_signature(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no `{name}` header"))
    };
    verify(
        &Secret::new(WEBHOOK_SECRET),
        get("webhook-id")?,
        get("webhook-timestamp")?,
        body,
        get("webhook-signature")?,
        SystemTime::now(),
        DEFAULT_TOLERANCE,
    )
    .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// A test configuration: the fixed part (loopback listener on port 0, a data directory
/// next to the file, short retries, the event types, teams `acme` and `globex`) plus the
/// channels and subscriptions a test adds.
#[derive(Debug, Clone)]
pub struct Conf {
    retry_schedule: Vec<String>,
    timeout: String,
    max_body_bytes: Option<u64>,
    concurrency_per_channel: Option<u32>,
    /// Extra lines at the end of `[delivery]`.
    delivery_lines: Vec<String>,
    /// Extra lines at the end of `[server]` and `[store]`.
    server_lines: Vec<String>,
    store_lines: Vec<String>,
    /// The whole `[store]` section instead of the embedded store in `data`.
    store_section: Option<String>,
    /// Extra `(team, line)` pairs at the end of `[teams.acme]` / `[teams.globex]`.
    team_lines: Vec<(String, String)>,
    channels: String,
}

impl Default for Conf {
    fn default() -> Self {
        Conf::new()
    }
}

impl Conf {
    pub fn new() -> Conf {
        Conf {
            retry_schedule: vec!["200ms".into(), "200ms".into(), "200ms".into()],
            timeout: "1s".into(),
            max_body_bytes: None,
            concurrency_per_channel: None,
            delivery_lines: Vec::new(),
            server_lines: Vec::new(),
            store_lines: Vec::new(),
            store_section: None,
            team_lines: Vec::new(),
            channels: String::new(),
        }
    }

    pub fn schedule(mut self, delays: &[&str]) -> Conf {
        self.retry_schedule = delays.iter().map(|d| d.to_string()).collect();
        self
    }

    /// `[delivery] timeout` (default `1s`).
    pub fn timeout(mut self, timeout: &str) -> Conf {
        self.timeout = timeout.to_string();
        self
    }

    pub fn max_body_bytes(mut self, bytes: u64) -> Conf {
        self.max_body_bytes = Some(bytes);
        self
    }

    pub fn concurrency_per_channel(mut self, n: u32) -> Conf {
        self.concurrency_per_channel = Some(n);
        self
    }

    /// A raw line appended to `[delivery]` (to break the file on purpose, say).
    pub fn delivery_line(mut self, line: &str) -> Conf {
        self.delivery_lines.push(line.to_string());
        self
    }

    /// A raw line appended to `[server]`.
    pub fn server_line(mut self, line: &str) -> Conf {
        self.server_lines.push(line.to_string());
        self
    }

    /// A raw line appended to `[store]`.
    pub fn store_line(mut self, line: &str) -> Conf {
        self.store_lines.push(line.to_string());
        self
    }

    /// The shared PostgreSQL store at `url` (its database URL), in `schema`.
    pub fn postgres(mut self, url: &str, schema: &str) -> Conf {
        self.store_section = Some(format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\npool_size = 4\n"
        ));
        self
    }

    /// A raw line in `[teams.TEAM]` (acme or globex), e.g. `alerts = "ops"`.
    pub fn team_line(mut self, team: &str, line: &str) -> Conf {
        self.team_lines.push((team.to_string(), line.to_string()));
        self
    }

    /// A signed webhook channel of `team` pointing at `receiver`.
    pub fn webhook(mut self, team: &str, name: &str, receiver: &Receiver) -> Conf {
        self.channels.push_str(&format!(
            "\n[teams.{team}.channels.{name}]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
            receiver.url()
        ));
        self
    }

    /// A file channel of `team`; `path` is relative to the configuration file.
    pub fn file(mut self, team: &str, name: &str, path: &str) -> Conf {
        self.channels.push_str(&format!(
            "\n[teams.{team}.channels.{name}]\ntype = \"file\"\npath = \"{path}\"\n"
        ));
        self
    }

    /// Raw TOML appended to the configuration (top-level sections such as `[telegram]`
    /// may follow the team tables).
    pub fn raw(mut self, toml: &str) -> Conf {
        self.channels.push('\n');
        self.channels.push_str(toml);
        self
    }

    pub fn subscribe(mut self, team: &str, channel: &str, events: &[&str]) -> Conf {
        let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
        self.channels.push_str(&format!(
            "\n[[teams.{team}.subscriptions]]\nchannel = \"{channel}\"\nevents = [{}]\n",
            events.join(", ")
        ));
        self
    }

    /// The extra lines of `team`'s table, each ending in a newline.
    fn lines_of(&self, team: &str) -> String {
        self.team_lines
            .iter()
            .filter(|(t, _)| t == team)
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }

    pub fn render(&self) -> String {
        let mut server =
            format!("[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{ADMIN_TOKEN}\"\n");
        if let Some(bytes) = self.max_body_bytes {
            server.push_str(&format!("max_body_bytes = {bytes}\n"));
        }
        for line in &self.server_lines {
            server.push_str(line);
            server.push('\n');
        }
        let mut store = self
            .store_section
            .clone()
            .unwrap_or_else(|| "[store]\npath = \"data\"\n".to_string());
        for line in &self.store_lines {
            store.push_str(line);
            store.push('\n');
        }
        let schedule: Vec<String> = self
            .retry_schedule
            .iter()
            .map(|d| format!("\"{d}\""))
            .collect();
        let mut delivery = format!(
            "[delivery]\nretry_schedule = [{}]\ntimeout = \"{}\"\nallow_private_networks = true\n",
            schedule.join(", "),
            self.timeout
        );
        if let Some(n) = self.concurrency_per_channel {
            delivery.push_str(&format!("concurrency_per_channel = {n}\n"));
        }
        for line in &self.delivery_lines {
            delivery.push_str(line);
            delivery.push('\n');
        }
        format!(
            "# written by tests/e2e/harness.rs\n{server}\n{store}\n{delivery}
[[event_types]]
name = \"capsule.create\"
[[event_types]]
name = \"capsule.destroy\"
[[event_types]]
name = \"host.down\"
[[event_types]]
name = \"capsule.state.changed\"
transient = true

[teams.acme]
api_keys = [\"{ACME_KEY}\"]
{}
[teams.globex]
api_keys = [\"{GLOBEX_KEY}\"]
{}{}",
            self.lines_of("acme"),
            self.lines_of("globex"),
            self.channels
        )
    }
}

// ---------------------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------------------

/// One reply of herald's HTTP API.
#[derive(Debug, Clone)]
pub struct ApiReply {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl ApiReply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| {
            panic!(
                "reply (HTTP {}) is not JSON ({e}): {}",
                self.status, self.text
            )
        })
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected reply: {}", self.text);
        self.json()
    }

    /// Asserts an error reply of the documented shape, `{"error": {"code", "message"}}`
    /// (plus `field` when one field is at fault), and returns the inner object.
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        let error = self.expect_error_shape(status);
        assert_eq!(error["code"], code, "error body: {}", self.text);
        error
    }

    /// Like [`ApiReply::expect_error`], for errors whose code docs/api.md leaves open.
    pub fn expect_error_shape(&self, status: u16) -> Value {
        self.error_shape(status)
            .unwrap_or_else(|problem| panic!("{problem}"))
    }

    /// The inner error object when this is an error reply of `status` in the documented
    /// shape; otherwise what is wrong with it.
    pub fn error_shape(&self, status: u16) -> Result<Value, String> {
        let reply = format!(
            "HTTP {} (content-type `{}`): {:?}",
            self.status, self.content_type, self.text
        );
        if self.status != status {
            return Err(format!("want HTTP {status}, got {reply}"));
        }
        if !self.content_type.starts_with("application/json") {
            return Err(format!("an error reply that is not JSON: {reply}"));
        }
        let body: Value = serde_json::from_str(&self.text)
            .map_err(|e| format!("an error body that does not parse ({e}): {reply}"))?;
        let top = body
            .as_object()
            .filter(|top| top.len() == 1)
            .ok_or_else(|| format!("want exactly {{\"error\": …}}: {reply}"))?;
        let error = top
            .get("error")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("`error` is not an object: {reply}"))?;
        if let Some(key) = error
            .keys()
            .find(|k| !["code", "message", "field"].contains(&k.as_str()))
        {
            return Err(format!("unexpected key `{key}` in the error: {reply}"));
        }
        for key in ["code", "message"] {
            if error
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(format!("no `{key}` string in the error: {reply}"));
            }
        }
        Ok(body["error"].clone())
    }
}

/// An HTTP client bound to one running server; cheap to clone into threads.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let http = reqwest::Client::builder()
            .no_proxy()
            // Under herald's `[server] header_timeout` (idle connections are closed then).
            .pool_idle_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client");
        Client {
            base: format!("http://{addr}"),
            http,
        }
    }

    /// Any request; `body` is `(content-type, bytes)`.
    pub fn try_request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<ApiReply, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        block_on(async move {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let text = response.text().await?;
            Ok(ApiReply {
                status,
                content_type,
                text,
            })
        })
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> ApiReply {
        self.try_request(method.clone(), path, key, body)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e:?}"))
    }

    /// `POST /v1/events` with a JSON body (one event or a batch).
    pub fn post(&self, body: &Value, key: &str) -> ApiReply {
        self.request(
            Method::POST,
            "/v1/events",
            Some(key),
            Some(("application/json", body.to_string().into_bytes())),
        )
    }

    pub fn get(&self, path: &str, key: &str) -> ApiReply {
        self.request(Method::GET, path, Some(key), None)
    }

    /// A POST without a body (retry, enable, reload).
    pub fn post_empty(&self, path: &str, key: &str) -> ApiReply {
        self.request(Method::POST, path, Some(key), None)
    }
}

/// `herald serve` on its own scratch directory; killed on drop. When the test is failing
/// (or `HERALD_E2E_LOGS` is set), drop prints the server's log.
#[derive(Debug)]
pub struct Herald {
    scratch: Scratch,
    config: PathBuf,
    child: Option<Child>,
    client: Client,
    logs: Arc<Mutex<String>>,
}

impl Herald {
    /// Writes `conf` to `<scratch>/herald.toml` and starts the server on it.
    pub fn start(name: &str, conf: &Conf) -> Herald {
        let scratch = Scratch::new(name);
        let config = scratch.write("herald.toml", &conf.render());
        let logs = Arc::new(Mutex::new(String::new()));
        let (child, addr) = spawn(&config, &scratch.dir, &logs);
        Herald {
            scratch,
            config,
            child: Some(child),
            client: Client::new(addr),
            logs,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.scratch.dir
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.client.base
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Everything the server wrote to stderr (and stdout after the first line), across
    /// restarts.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn post(&self, body: &Value, key: &str) -> ApiReply {
        self.client.post(body, key)
    }

    pub fn get(&self, path: &str, key: &str) -> ApiReply {
        self.client.get(path, key)
    }

    pub fn post_empty(&self, path: &str, key: &str) -> ApiReply {
        self.client.post_empty(path, key)
    }

    /// Replaces the configuration file (the server sees it at the next reload or restart).
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write the configuration");
    }

    /// Pins the listener to the port the server has now, so a restart keeps its URL:
    /// for clients that reconnect by themselves (herald-client's publisher, subscriber).
    pub fn keep_port(&self) {
        let port = self.url().rsplit(':').next().expect("a port in the URL");
        let text = std::fs::read_to_string(&self.config).expect("read the configuration");
        let pinned = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        assert_ne!(pinned, text, "no `listen = \"127.0.0.1:0\"` line to pin");
        self.write_config(&pinned);
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("poll herald").is_none(),
            None => false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("herald is not running").id()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("herald is not running");
        let _ = child.kill();
        let _ = child.wait();
        self.note("killed with SIGKILL");
    }

    /// SIGTERM, then waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let within = Duration::from_secs(20);
        self.terminate_within(within).unwrap_or_else(|()| {
            panic!(
                "herald did not exit within {within:?} of SIGTERM; log:\n{}",
                self.logs()
            )
        })
    }

    /// SIGTERM, then waits up to `within` for the process to exit; SIGKILL and `Err` if it
    /// did not.
    pub fn terminate_within(&mut self, within: Duration) -> Result<ExitStatus, ()> {
        signal(self.pid(), "TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("poll herald") {
                self.note(&format!("exited after SIGTERM: {status}"));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.note(&format!("still running {within:?} after SIGTERM: killed"));
                return Err(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts the server again on the same configuration and data directory (stopping it
    /// first with SIGTERM if it still runs). The port changes.
    pub fn restart(&mut self) {
        if self.is_running() {
            let status = self.terminate();
            assert!(status.success(), "herald exited with {status} on SIGTERM");
        }
        self.child = None;
        self.note("restarting");
        let (child, addr) = spawn(&self.config, &self.scratch.dir, &self.logs);
        self.child = Some(child);
        self.client = Client::new(addr);
    }

    /// SIGHUP: the server reloads its configuration.
    pub fn reload_sighup(&self) {
        signal(self.pid(), "HUP");
    }

    /// Waits until the server's log contains `needle`; returns the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_until(&format!("`{needle}` in the server log"), WAIT, || {
            let logs = self.logs();
            if logs.contains(needle) {
                Ok(logs)
            } else {
                Err(format!("log so far:\n{logs}"))
            }
        })
    }

    /// The deliveries of an event, as `GET /v1/events/{id}` lists them, once `ready` holds.
    pub fn wait_deliveries(
        &self,
        event_id: &str,
        key: &str,
        what: &str,
        ready: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        wait_until(&format!("deliveries of {event_id}: {what}"), WAIT, || {
            let reply = self.get(&format!("/v1/events/{event_id}"), key);
            if reply.status != 200 {
                return Err(format!("HTTP {}: {}", reply.status, reply.text));
            }
            let body = reply.json();
            let deliveries = body["deliveries"]
                .as_array()
                .cloned()
                .ok_or_else(|| format!("no `deliveries` array: {}", reply.text))?;
            if ready(&deliveries) {
                Ok(deliveries)
            } else {
                Err(reply.text)
            }
        })
    }

    /// `GET /v1/deliveries/{id}` as `(delivery, attempts)` once `ready` holds.
    pub fn wait_delivery(
        &self,
        delivery_id: &str,
        key: &str,
        what: &str,
        ready: impl Fn(&Value, &[Value]) -> bool,
    ) -> (Value, Vec<Value>) {
        wait_until(&format!("delivery {delivery_id}: {what}"), WAIT, || {
            let reply = self.get(&format!("/v1/deliveries/{delivery_id}"), key);
            if reply.status != 200 {
                return Err(format!("HTTP {}: {}", reply.status, reply.text));
            }
            let body = reply.json();
            let mut attempts = body["attempts"]
                .as_array()
                .cloned()
                .ok_or_else(|| format!("no `attempts` array: {}", reply.text))?;
            attempts.sort_by_key(|a| a["number"].as_u64());
            if ready(&body["delivery"], &attempts) {
                Ok((body["delivery"].clone(), attempts))
            } else {
                Err(reply.text)
            }
        })
    }

    /// Runs a client command of the binary (`send`, `deliveries`, `retry`) against this
    /// server: `--url` and `--key` come first, then `args`.
    pub fn cli(&self, command: &str, key: &str, args: &[&str], stdin: &str) -> Output {
        let mut cmd = herald();
        cmd.env_remove("HERALD_URL")
            .env_remove("HERALD_KEY")
            .arg(command)
            .args(["--url", self.url(), "--key", key])
            .args(args);
        run(cmd, stdin)
    }

    fn note(&self, what: &str) {
        self.logs
            .lock()
            .unwrap()
            .push_str(&format!("----- test harness: {what} -----\n"));
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("HERALD_E2E_LOGS").is_some() {
            eprintln!(
                "----- herald log ({}) -----\n{}----- end of herald log -----",
                self.config.display(),
                self.logs()
            );
        }
    }
}

/// Spawns `herald serve`, collects its output into `logs` and reads the bound address
/// from the first line of stdout.
fn spawn(config: &Path, dir: &Path, logs: &Arc<Mutex<String>>) -> (Child, SocketAddr) {
    let mut cmd = herald();
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", LOG_FILTER)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start herald serve");
    let (first_line, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stdout_logs = Arc::clone(logs);
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = first_line.send(line);
        }
        drop(first_line);
        collect(lines, &stdout_logs);
    });
    let stderr = child.stderr.take().unwrap();
    let stderr_logs = Arc::clone(logs);
    std::thread::spawn(move || collect(BufReader::new(stderr).lines(), &stderr_logs));

    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "herald serve printed no first line ({e}); exit: {status:?}; log:\n{}",
                logs.lock().unwrap()
            );
        }
    };
    let addr = line
        .strip_prefix("herald listening on http://")
        .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("first stdout line is not `herald listening on http://ADDR`: {line:?}")
        });
    (child, addr)
}

fn collect<R: Read>(lines: std::io::Lines<BufReader<R>>, logs: &Mutex<String>) {
    for line in lines.map_while(Result::ok) {
        let mut logs = logs.lock().unwrap();
        logs.push_str(&line);
        logs.push('\n');
    }
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

/// Asserts that `haystack` contains none of [`SECRETS`].
pub fn assert_no_secret(what: &str, haystack: &str) {
    for secret in SECRETS {
        assert!(
            !haystack.contains(secret),
            "{what} contains the secret `{secret}`:\n{haystack}"
        );
    }
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn outputs(out: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}
