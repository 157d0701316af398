//! herald-sources: where events come from besides `POST /v1/events` (`[[sources]]`).
//!
//! - `redis_stream`: a consumer group on a Redis stream. Each entry goes through the same
//!   ingest as an HTTP publish ([`herald_engine::Engine::ingest`]) and is acknowledged
//!   (XACK) only after ingest returned, i.e. after the commit holding the event; an
//!   entry that is not a valid event is copied to `<stream>:herald-dead` with its reason
//!   and acknowledged.
//! - `redis_pubsub`: a Pub/Sub channel whose messages go to the live stream only
//!   ([`herald_engine::Engine::publish_live`]).
//!
//! Each source runs as one task that reconnects on its own and reports its connection
//! state to the engine's [`herald_engine::Components`] (read by `/readyz`).

mod reason;
mod redis_pubsub;
mod redis_stream;

use herald_config::{SourceKind, SourceTeam};
use herald_engine::{Caller, Engine};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts every configured source; each task ends when `stop` turns true (an entry being
/// ingested finishes first, so it is acknowledged or left pending, never half-done).
pub fn start(engine: &Engine, stop: watch::Receiver<bool>) -> Result<Vec<JoinHandle<()>>, String> {
    let config = engine.config();
    let mut tasks = Vec::new();
    for source in &config.sources {
        let caller = match source_team(&source.kind) {
            SourceTeam::Payload => Caller::Admin,
            SourceTeam::Fixed(team) => Caller::Team(team.clone()),
        };
        let task = match &source.kind {
            SourceKind::RedisStream(c) => tokio::spawn(
                redis_stream::StreamSource::new(&source.name, c, caller, engine.clone())?
                    .run(stop.clone()),
            ),
            SourceKind::RedisPubSub(c) => tokio::spawn(
                redis_pubsub::PubSubSource::new(&source.name, c, caller, engine.clone())?
                    .run(stop.clone()),
            ),
        };
        tasks.push(task);
    }
    Ok(tasks)
}

fn source_team(kind: &SourceKind) -> &SourceTeam {
    match kind {
        SourceKind::RedisStream(c) => &c.team,
        SourceKind::RedisPubSub(c) => &c.team,
    }
}

/// A Redis client for `url`; the error never repeats the URL (it may hold a password).
fn client(name: &str, url: &herald_core::Secret) -> Result<redis::Client, String> {
    redis::Client::open(url.expose()).map_err(|e| {
        format!(
            "source `{name}`: the Redis url is not usable ({:?})",
            e.kind()
        )
    })
}

/// Waits `d`, or less when `stop` turns true; returns whether to stop.
async fn sleep_or_stop(d: std::time::Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        // An error means the sender is gone: the server is stopping.
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}
