//! Publishers at a steady pace: `tasks` tasks each start one POST every `tasks / rate`
//! seconds, offset from one another, so together they publish `rate` events per second. A
//! POST runs as its own task, so a slow reply does not hold back the pace; at most
//! `max_in_flight` are outstanding at once (beyond that the pace slips, and the report's
//! achieved rate shows it). Each event carries its publish time (`metadata.sent_ns`, Unix
//! nanoseconds).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::sse::now_ns;

/// What the publishers achieved.
#[derive(Debug)]
pub struct Published {
    pub accepted: u64,
    pub failed: u64,
    /// The POST round trip (ingest, which for durable events includes the commit), µs.
    pub ingest_us: Histogram<u64>,
    pub first_error: Option<String>,
    /// From the first POST to the last reply.
    pub elapsed: Duration,
}

impl Published {
    fn new() -> Published {
        Published {
            accepted: 0,
            failed: 0,
            ingest_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("bounds"),
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(took) => {
                self.accepted += 1;
                self.ingest_us.saturating_record(took.as_micros() as u64);
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub rate: f64,
    pub tasks: u32,
    pub max_in_flight: usize,
    pub duration: Duration,
}

pub async fn run(addr: SocketAddr, key: &str, event_type: &str, plan: &Plan) -> Published {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(plan.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    let url: Arc<str> = format!("http://{addr}/v1/events").into();
    let key: Arc<str> = key.into();
    let event_type: Arc<str> = event_type.into();
    let in_flight = Arc::new(Semaphore::new(plan.max_in_flight));
    let total = Arc::new(Mutex::new(Published::new()));
    let period = Duration::from_secs_f64(f64::from(plan.tasks) / plan.rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + plan.duration;
    let mut publishers = JoinSet::new();
    for i in 0..plan.tasks {
        let (http, url, key, event_type) =
            (http.clone(), url.clone(), key.clone(), event_type.clone());
        let (in_flight, total) = (Arc::clone(&in_flight), Arc::clone(&total));
        let offset = Duration::from_secs_f64(f64::from(i) / plan.rate);
        publishers.spawn(async move {
            let mut ticks = tokio::time::interval_at(start + offset, period);
            // Ticks missed while waiting for a free slot are caught up on, so the average
            // rate holds as long as the server keeps up at all.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            let mut posts = JoinSet::new();
            loop {
                ticks.tick().await;
                if Instant::now() >= end {
                    break;
                }
                let permit = Arc::clone(&in_flight)
                    .acquire_owned()
                    .await
                    .expect("the semaphore stays open");
                let (http, url, key, event_type) =
                    (http.clone(), url.clone(), key.clone(), event_type.clone());
                let total = Arc::clone(&total);
                posts.spawn(async move {
                    let outcome = post(&http, &url, &key, &event_type).await;
                    drop(permit);
                    total.lock().expect("not poisoned").record(outcome);
                });
            }
            while posts.join_next().await.is_some() {}
        });
    }
    while publishers.join_next().await.is_some() {}
    let mut total = std::mem::replace(&mut *total.lock().expect("not poisoned"), Published::new());
    total.elapsed = start.elapsed();
    total
}

/// One event; `Ok` with the round trip when it was accepted.
async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    event_type: &str,
) -> Result<Duration, String> {
    let body = format!(
        r#"{{"event":"{event_type}","metadata":{{"sent_ns":"{}"}}}}"#,
        now_ns()
    );
    let sent = Instant::now();
    let reply = http
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    match reply.status().as_u16() {
        202 => Ok(sent.elapsed()),
        status => Err(format!("HTTP {status}")),
    }
}
