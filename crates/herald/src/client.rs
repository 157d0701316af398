//! `herald send`, `herald deliveries`, `herald retry`, `herald replay`: small clients of the
//! HTTP API.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::{Value, json};

/// Where the server is and who we are.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The server's base URL.
    #[arg(long, env = "HERALD_URL", default_value = "http://127.0.0.1:8650")]
    pub url: String,
    /// A team API key or the admin token.
    #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
    pub key: String,
}

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub target: Target,
    /// The event as JSON (a file, or `-` for standard input).
    #[arg(long, conflicts_with_all = ["event_type", "outcome", "meta", "id", "team"])]
    pub event: Option<PathBuf>,
    /// Build the event from flags instead: its type.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "event")]
    pub event_type: Option<String>,
    #[arg(long)]
    pub outcome: Option<String>,
    /// A metadata entry, `key=value`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
}

pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

/// Sends the request; prints the JSON reply; fails with the server's message on non-2xx.
pub(crate) async fn call(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await.context("contacting herald")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        let code = body["error"]["code"].as_str().unwrap_or("error");
        anyhow::bail!("HTTP {status}: {code}: {message}");
    }
    Ok(body)
}

pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let body: Vec<u8> = match &args.event {
        Some(path) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the event from standard input")?;
            buf
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => {
            let mut metadata = BTreeMap::new();
            for entry in &args.meta {
                let (k, v) = entry
                    .split_once('=')
                    .with_context(|| format!("--meta `{entry}`: write key=value"))?;
                metadata.insert(k.to_string(), v.to_string());
            }
            let mut event = json!({ "event": args.event_type, "metadata": metadata });
            for (field, value) in [
                ("outcome", &args.outcome),
                ("id", &args.id),
                ("team_id", &args.team),
            ] {
                if let Some(v) = value {
                    event[field] = json!(v);
                }
            }
            serde_json::to_vec(&event)?
        }
    };
    let url = format!("{}/v1/events", args.target.url.trim_end_matches('/'));
    let reply = call(
        client()?
            .post(url)
            .bearer_auth(&args.target.key)
            .header("content-type", "application/json")
            .body(body),
    )
    .await?;
    println!("{reply}");
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DeliveriesArgs {
    #[command(flatten)]
    pub target: Target,
    /// pending, succeeded, dead, skipped, suppressed, silenced, orphaned or grouped.
    #[arg(long)]
    pub status: Option<String>,
    /// Only the deliveries of this event.
    #[arg(long)]
    pub event: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print the raw JSON page.
    #[arg(long)]
    pub json: bool,
}

pub async fn deliveries(args: DeliveriesArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("status", &args.status),
        ("event_id", &args.event),
        ("channel", &args.channel),
    ] {
        if let Some(v) = value {
            query.push((name, v.clone()));
        }
    }
    let url = format!("{}/v1/deliveries", args.target.url.trim_end_matches('/'));
    let page = call(
        client()?
            .get(url)
            .bearer_auth(&args.target.key)
            .query(&query),
    )
    .await?;
    if args.json {
        println!("{page}");
        return Ok(());
    }
    let rows = page["deliveries"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36} {:<10} {:<8} {:<16} {:<20} LAST ERROR / WHY NOT SENT",
        "ID", "STATUS", "ATTEMPTS", "CHANNEL", "EVENT TYPE"
    );
    for d in &rows {
        println!(
            "{:<36} {:<10} {:<8} {:<16} {:<20} {}",
            d["id"].as_str().unwrap_or(""),
            d["status"].as_str().unwrap_or(""),
            d["attempts"],
            d["channel"].as_str().unwrap_or(""),
            d["event_type"].as_str().unwrap_or(""),
            d["last_error"]
                .as_str()
                .map(str::to_string)
                .or_else(|| d["silence_id"].as_str().map(|s| format!("silenced by {s}")))
                .or_else(|| d["duplicate_of"]
                    .as_str()
                    .map(|s| format!("duplicate of {s}")))
                .unwrap_or_default()
        );
    }
    if rows.is_empty() {
        println!("(no deliveries)");
    }
    Ok(())
}

pub async fn retry(target: Target, id: String) -> anyhow::Result<()> {
    let url = format!(
        "{}/v1/deliveries/{id}/retry",
        target.url.trim_end_matches('/')
    );
    let reply = call(client()?.post(url).bearer_auth(&target.key)).await?;
    println!(
        "delivery {} is {} (due now)",
        reply["delivery"]["id"].as_str().unwrap_or(&id),
        reply["delivery"]["status"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub target: Target,
    /// The team whose deliveries to replay (a team key may name only its own).
    #[arg(long)]
    pub team: String,
    /// Only this channel's deliveries.
    #[arg(long)]
    pub channel: Option<String>,
    /// Deliveries created at or after this RFC 3339 time.
    #[arg(long)]
    pub since: String,
    /// …and before this RFC 3339 time.
    #[arg(long)]
    pub until: Option<String>,
    /// dead, failed (dead, or waiting for a retry) or all.
    #[arg(long, default_value = "failed", value_parser = ["dead", "failed", "all"])]
    pub status: String,
    /// Only count what would be replayed.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let url = format!("{}/v1/replay", args.target.url.trim_end_matches('/'));
    let mut body = json!({
        "team": args.team,
        "since": args.since,
        "status": args.status,
        "dry_run": args.dry_run,
    });
    if let Some(channel) = args.channel {
        body["channel"] = channel.into();
    }
    if let Some(until) = args.until {
        body["until"] = until.into();
    }
    let reply = call(
        client()?
            .post(url)
            .bearer_auth(&args.target.key)
            .json(&body),
    )
    .await?;
    let count = reply["count"].as_u64().unwrap_or(0);
    if args.dry_run {
        println!("{count} deliveries would be replayed (dry run)");
    } else {
        println!("{count} deliveries replayed (due now, same delivery ids)");
    }
    Ok(())
}
