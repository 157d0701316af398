//! Publishing one event to `POST /v1/events` over a client's own keep-alive connection, and
//! tallying what came back.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use herald_loadgen::loopback;
use herald_loadgen::stats::Latencies;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;

/// How much of the first rejected reply is kept to show.
const REJECTION_SAMPLE: usize = 300;

/// The server and the credentials, common to every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Server {
    /// herald's base URL; must be a loopback address.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8650")]
    pub url: Url,
    /// A team API key (or the admin token).
    #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
    pub key: String,
    /// Give up on a request after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
}

impl Server {
    /// `POST /v1/events` of this server, refusing anything but loopback.
    pub fn events_url(&self) -> anyhow::Result<Url> {
        loopback::check(&self.url).context("--url")?;
        self.url
            .join("/v1/events")
            .context("--url cannot take a path")
    }
}

/// One HTTP/1.1 client holding one keep-alive connection.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: reqwest::Client,
    url: Url,
    auth: Option<HeaderValue>,
}

/// What one publish came to.
#[derive(Debug)]
pub enum Outcome {
    /// The server answered (any status); `rejection` is the start of a non-2xx body.
    Answered {
        status: u16,
        rejection: Option<String>,
    },
    /// No answer: `kind` is a short class (`connect`, `timeout`, …), `message` the detail.
    Failed { kind: &'static str, message: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Answered { status, .. } if (200..300).contains(status))
    }
}

impl Publisher {
    pub fn new(server: &Server) -> anyhow::Result<Publisher> {
        let auth = HeaderValue::from_str(&format!("Bearer {}", server.key))
            .context("--key is not a valid header value")?;
        Publisher::to(server.events_url()?, Some(auth), server.request_timeout)
    }

    /// A client POSTing to `url` (loopback only), with `auth` as its `Authorization` header.
    pub fn to(
        url: Url,
        auth: Option<HeaderValue>,
        request_timeout: Duration,
    ) -> anyhow::Result<Publisher> {
        loopback::check(&url)?;
        let client = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(request_timeout)
            // Load goes straight to loopback, never through a proxy from the environment.
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Publisher { client, url, auth })
    }

    pub async fn publish(&self, body: Vec<u8>) -> Outcome {
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let result = request.send().await;
        let response = match result {
            Ok(response) => response,
            Err(e) => return failed(&e),
        };
        let status = response.status().as_u16();
        // Reading the whole reply lets the connection be reused for the next request.
        match response.bytes().await {
            Ok(reply) => Outcome::Answered {
                status,
                rejection: (!(200..300).contains(&status)).then(|| {
                    String::from_utf8_lossy(&reply[..reply.len().min(REJECTION_SAMPLE)])
                        .into_owned()
                }),
            },
            Err(e) => failed(&e),
        }
    }
}

fn failed(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    Outcome::Failed { kind, message }
}

/// Counts of publish outcomes, and latencies of the accepted ones.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    /// 2xx replies.
    pub accepted: u64,
    /// Other replies by status.
    pub rejected: BTreeMap<u16, u64>,
    /// Requests without a reply, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// The start of the first non-2xx reply.
    pub first_rejection: Option<String>,
    /// The first error of each kind.
    pub first_errors: BTreeMap<&'static str, String>,
    #[serde(skip)]
    pub latencies: Latencies,
}

impl Tally {
    pub fn add(&mut self, outcome: Outcome, latency: Duration) {
        match outcome {
            Outcome::Answered { status, .. } if (200..300).contains(&status) => {
                self.accepted += 1;
                self.latencies.record(latency);
            }
            Outcome::Answered { status, rejection } => {
                *self.rejected.entry(status).or_default() += 1;
                if self.first_rejection.is_none() {
                    self.first_rejection = rejection;
                }
            }
            Outcome::Failed { kind, message } => {
                *self.errors.entry(kind).or_default() += 1;
                self.first_errors.entry(kind).or_insert(message);
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        for (status, n) in other.rejected {
            *self.rejected.entry(status).or_default() += n;
        }
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        if self.first_rejection.is_none() {
            self.first_rejection = other.first_rejection;
        }
        for (kind, message) in other.first_errors {
            self.first_errors.entry(kind).or_insert(message);
        }
        self.latencies.merge(&other.latencies);
    }

    /// The lines a human report shows about rejections and errors (none when all went well).
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.rejected.is_empty() {
            let by_status: Vec<String> = self
                .rejected
                .iter()
                .map(|(status, n)| format!("{status} ×{n}"))
                .collect();
            lines.push(format!("rejected (non-2xx): {}", by_status.join(", ")));
            if let Some(reply) = &self.first_rejection {
                lines.push(format!("  first rejection: {reply}"));
            }
        }
        for (kind, n) in &self.errors {
            lines.push(format!("errors ({kind}): {n}"));
            if let Some(message) = self.first_errors.get(kind) {
                lines.push(format!("  first: {message}"));
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, reply: &str) -> Outcome {
        Outcome::Answered {
            status,
            rejection: (!(200..300).contains(&status)).then(|| reply.to_string()),
        }
    }

    fn failed(kind: &'static str, message: &str) -> Outcome {
        Outcome::Failed {
            kind,
            message: message.to_string(),
        }
    }

    #[test]
    fn only_2xx_count_as_accepted_and_others_are_grouped() {
        let ms = Duration::from_millis;
        let mut a = Tally::default();
        a.add(answered(202, ""), ms(2));
        a.add(answered(200, ""), ms(4));
        a.add(answered(422, "first"), ms(1));
        a.add(failed("connect", "refused"), ms(1));
        let mut b = Tally::default();
        b.add(answered(422, "second"), ms(1));
        b.add(answered(503, "busy"), ms(1));
        b.add(failed("connect", "refused again"), ms(1));
        b.add(failed("timeout", "10s"), ms(1));
        a.merge(b);

        assert_eq!(a.accepted, 2);
        assert_eq!(a.latencies.count(), 2, "latency only of accepted events");
        assert_eq!(a.rejected, BTreeMap::from([(422, 2), (503, 1)]));
        assert_eq!(a.errors, BTreeMap::from([("connect", 2), ("timeout", 1)]));
        assert_eq!(
            a.problems(),
            [
                "rejected (non-2xx): 422 ×2, 503 ×1",
                "  first rejection: first",
                "errors (connect): 2",
                "  first: refused",
                "errors (timeout): 1",
                "  first: 10s",
            ]
        );
        assert!(Tally::default().problems().is_empty());
    }

    #[test]
    fn non_loopback_servers_are_refused() {
        let server = |url: &str| Server {
            url: Url::parse(url).unwrap(),
            key: "k".to_string(),
            request_timeout: Duration::from_secs(1),
        };
        assert_eq!(
            server("http://127.0.0.1:8650")
                .events_url()
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8650/v1/events"
        );
        assert!(server("http://10.1.2.3:8650").events_url().is_err());
    }
}
