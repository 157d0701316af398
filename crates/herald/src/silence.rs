//! `herald silence add|list|expire`: a client of `/v1/silences`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;
use herald_core::Timestamp;
use serde_json::{Value, json};

use crate::client::{Target, call, client};

#[derive(Debug, clap::Subcommand)]
pub enum SilenceCommand {
    /// Create a silence: matching deliveries are recorded as `silenced` and not sent.
    Add(AddArgs),
    /// List silences (newest first).
    List(ListArgs),
    /// End a silence now.
    Expire {
        #[command(flatten)]
        target: Target,
        /// The silence id (`sil_…`).
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    pub target: Target,
    /// The team to silence (required with the admin token; a team key silences its own).
    #[arg(long)]
    pub team: Option<String>,
    /// Only events of this type pattern (`capsule.*`, `host.down`, `*`).
    #[arg(long)]
    pub event: Option<String>,
    /// Only events with this outcome (success or error).
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only events with this metadata entry, `key=value`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Only deliveries to this channel of the team.
    #[arg(long)]
    pub channel: Option<String>,
    /// When it starts (RFC 3339); now when left out.
    #[arg(long)]
    pub starts_at: Option<String>,
    /// When it ends (RFC 3339).
    #[arg(
        long,
        required_unless_present = "duration",
        conflicts_with = "duration"
    )]
    pub ends_at: Option<String>,
    /// How long it lasts from its start, e.g. `2h`, `30m`.
    #[arg(long)]
    pub duration: Option<String>,
    /// Why (shown with the silence).
    #[arg(long)]
    pub comment: String,
    /// Who creates it.
    #[arg(long, env = "USER")]
    pub created_by: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// pending, active or expired; every state when left out.
    #[arg(long, value_parser = ["pending", "active", "expired"])]
    pub state: Option<String>,
    /// Only this team's (admin token).
    #[arg(long)]
    pub team: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(command: SilenceCommand) -> anyhow::Result<()> {
    match command {
        SilenceCommand::Add(args) => add(args).await,
        SilenceCommand::List(args) => list(args).await,
        SilenceCommand::Expire { target, id } => expire(target, id).await,
    }
}

fn base(target: &Target) -> String {
    format!("{}/v1/silences", target.url.trim_end_matches('/'))
}

/// `ends_at` from `--ends-at`, or `--duration` after the start (given, or now).
fn ends_at(args: &AddArgs) -> anyhow::Result<String> {
    if let Some(ends_at) = &args.ends_at {
        return Ok(ends_at.clone());
    }
    let duration = args.duration.as_deref().unwrap_or_default();
    let length = humantime::parse_duration(duration)
        .with_context(|| format!("--duration `{duration}`: write e.g. 30m, 2h, 1d"))?;
    let start = match &args.starts_at {
        Some(t) => Timestamp::parse(t).map_err(|e| anyhow::anyhow!("--starts-at: {e}"))?,
        None => herald_engine::now(),
    };
    let end = start.unix_nanos().saturating_add(length.as_nanos() as i128);
    Ok(Timestamp::from_unix_nanos(end).to_string())
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let mut metadata = BTreeMap::new();
    for entry in &args.meta {
        let (k, v) = entry
            .split_once('=')
            .with_context(|| format!("--meta `{entry}`: write key=value"))?;
        metadata.insert(k.to_string(), v.to_string());
    }
    let mut matchers = json!({});
    for (field, value) in [
        ("event", &args.event),
        ("outcome", &args.outcome),
        ("channel", &args.channel),
    ] {
        if let Some(v) = value {
            matchers[field] = json!(v);
        }
    }
    if !metadata.is_empty() {
        matchers["metadata"] = json!(metadata);
    }
    let mut body = json!({
        "matchers": matchers,
        "ends_at": ends_at(&args)?,
        "comment": args.comment,
        "created_by": args.created_by,
    });
    if let Some(team) = &args.team {
        body["team"] = json!(team);
    }
    if let Some(starts_at) = &args.starts_at {
        body["starts_at"] = json!(starts_at);
    }
    let reply = call(
        client()?
            .post(base(&args.target))
            .bearer_auth(&args.target.key)
            .json(&body),
    )
    .await?;
    let s = &reply["silence"];
    println!(
        "silence {} created ({}, team {}, {} until {})",
        s["id"].as_str().unwrap_or("?"),
        s["state"].as_str().unwrap_or("?"),
        s["team"].as_str().unwrap_or("?"),
        matchers_text(&s["matchers"]),
        s["ends_at"].as_str().unwrap_or("?"),
    );
    Ok(())
}

/// The matchers in one line: `event capsule.*, outcome error, region=eu, channel oncall`.
pub fn matchers_text(m: &Value) -> String {
    let mut parts = Vec::new();
    for field in ["event", "outcome"] {
        if let Some(v) = m[field].as_str() {
            parts.push(format!("{field} {v}"));
        }
    }
    if let Some(meta) = m["metadata"].as_object() {
        for (k, v) in meta {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(v) = m["channel"].as_str() {
        parts.push(format!("channel {v}"));
    }
    parts.join(", ")
}

/// The list as a table.
pub fn table(silences: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36} {:<8} {:<12} {:<22} {:<40} COMMENT",
        "ID", "STATE", "TEAM", "ENDS", "MATCHES"
    );
    for s in silences {
        let _ = writeln!(
            out,
            "{:<36} {:<8} {:<12} {:<22} {:<40} {} ({})",
            s["id"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["team"].as_str().unwrap_or(""),
            s["ends_at"].as_str().unwrap_or(""),
            matchers_text(&s["matchers"]),
            s["comment"].as_str().unwrap_or(""),
            s["created_by"].as_str().unwrap_or(""),
        );
    }
    if silences.is_empty() {
        out.push_str("(no silences)\n");
    }
    out
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(state) = &args.state {
        query.push(("state", state.clone()));
    }
    if let Some(team) = &args.team {
        query.push(("team", team.clone()));
    }
    let reply = call(
        client()?
            .get(base(&args.target))
            .bearer_auth(&args.target.key)
            .query(&query),
    )
    .await?;
    if args.json {
        println!("{reply}");
        return Ok(());
    }
    let silences = reply["silences"].as_array().cloned().unwrap_or_default();
    print!("{}", table(&silences));
    Ok(())
}

async fn expire(target: Target, id: String) -> anyhow::Result<()> {
    let url = format!("{}/{id}/expire", base(&target));
    let reply = call(client()?.post(url).bearer_auth(&target.key)).await?;
    println!(
        "silence {} is {} (ended {})",
        reply["silence"]["id"].as_str().unwrap_or(&id),
        reply["silence"]["state"].as_str().unwrap_or("?"),
        reply["silence"]["ends_at"].as_str().unwrap_or("?"),
    );
    Ok(())
}
