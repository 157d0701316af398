//! `herald plugin test`: load a formatter plugin, render one event with it, and show
//! the message, the time taken and the plugin's log lines — the plugin author's loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use herald_core::{Digest, DigestKind, RawEvent, Rendered, TeamId, Timestamp};
use herald_plugins::{HostOptions, Limits, PluginError, PluginHost, PluginOutput, Render};

#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Render one event with a plugin and print the message, timing and log lines.
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin component (`target/wasm32-wasip2/release/NAME.wasm`).
    path: PathBuf,
    /// The event as JSON: a file, or `-` for standard input.
    #[arg(long)]
    event: PathBuf,
    /// The channel kind to render for: webhook, telegram, email or file.
    #[arg(long)]
    channel: String,
    /// A plugin setting, `KEY=VALUE`; repeatable.
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// The render deadline, as in `[plugins.NAME] timeout`.
    #[arg(long, default_value = "50ms", value_parser = humantime_duration)]
    timeout: Duration,
    /// The memory cap in MiB, as in `[plugins.NAME] memory_limit`.
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    memory_limit_mib: u64,
    /// The team to assume when the event has no `team_id`.
    #[arg(long, default_value = "test")]
    team: String,
    /// Render a digest of COUNT copies of the event (all listed) with the plugin's
    /// `format-digest` instead (herald:formatter@0.2.0 plugins).
    #[arg(long, value_name = "COUNT", value_parser = clap::value_parser!(u16).range(1..))]
    digest: Option<u16>,
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}`: write e.g. 50ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => Err(format!("`{s}`: write e.g. 50ms or 2s")),
    }
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Test(args) => test(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let event = read_event(&args.event, &args.team)?;
    let limits = Limits {
        timeout: args.timeout,
        memory: args.memory_limit_mib * 1024 * 1024,
    };
    let host = PluginHost::new(HostOptions {
        max_concurrent_renders: 2,
        ..HostOptions::default()
    })?;
    let started = Instant::now();
    let plugin = match host.load(&plugin_name(&args.path), &args.path, limits) {
        Ok(plugin) => plugin,
        Err(e) => {
            eprintln!("error: {} cannot be loaded: {e}", args.path.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    let loaded_in = started.elapsed();
    let settings: BTreeMap<String, String> = args.settings.into_iter().collect();
    let (report, ok) = match args.digest {
        None => report(
            &plugin.render(&event, &args.channel, &settings),
            &args.channel,
        ),
        Some(count) => {
            let digest = digest_of(&event, count, &args.channel);
            let render = plugin.render_digest(&digest, &args.channel, &settings);
            report_digest(&render, &args.channel)
        }
    };
    let info = plugin.info();
    let kinds = if info.channel_kinds.is_empty() {
        "every channel kind".to_string()
    } else {
        info.channel_kinds.join(", ")
    };
    print!(
        "plugin:   {} {} ({}, renders for {kinds})\nloaded:   in {} (compile, checks, sample render)\n",
        info.name,
        info.version,
        plugin.interface(),
        fmt_elapsed(loaded_in)
    );
    print!("{report}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A group digest standing for `count` copies of `event` (ids `EVENT_ID-1`, …), all listed.
fn digest_of(event: &herald_core::Event, count: u16, channel: &str) -> Digest {
    let events: Vec<herald_core::Event> = (1..=count)
        .map(|i| {
            let mut e = event.clone();
            e.id = format!("{}-{i}", event.id);
            e
        })
        .collect();
    Digest {
        id: "dlv_test".to_string(),
        team: event.team_id.clone(),
        subscription: "test".to_string(),
        channel: channel.to_string(),
        kind: DigestKind::Group { labels: Vec::new() },
        total: u64::from(count),
        first_at: event.timestamp,
        last_at: event.timestamp,
        events,
    }
}

fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into())
}

fn read_event(path: &Path, team: &str) -> anyhow::Result<herald_core::Event> {
    let bytes = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the event from standard input")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let raw = RawEvent::from_json(&bytes).context("the event is not valid")?;
    let team = TeamId::parse(team).map_err(|e| anyhow::anyhow!("--team: {e}"))?;
    let now = Timestamp::from_unix_nanos(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128),
    );
    raw.into_event(Some(&team), now, || "evt_test".to_string())
        .context("the event is not valid")
}

/// The printed result of a render, and whether it succeeded (a skip counts as success).
pub fn report(render: &Render, channel: &str) -> (String, bool) {
    let shown = match &render.result {
        Ok(PluginOutput::Rendered(r)) => Ok(Shown::Rendered(r)),
        Ok(PluginOutput::Skip(reason)) => Ok(Shown::Skipped(reason)),
        Err(e) => Err(e),
    };
    report_of(shown, render, channel, "formatter")
}

/// [`report`] for a digest render (declining counts as success).
pub fn report_digest(render: &Render<Option<Rendered>>, channel: &str) -> (String, bool) {
    let shown = match &render.result {
        Ok(Some(r)) => Ok(Shown::Rendered(r)),
        Ok(None) => Ok(Shown::Declined),
        Err(e) => Err(e),
    };
    report_of(shown, render, channel, "digest")
}

enum Shown<'a> {
    Rendered(&'a Rendered),
    Skipped(&'a str),
    Declined,
}

fn report_of<T>(
    shown: Result<Shown<'_>, &PluginError>,
    render: &Render<T>,
    channel: &str,
    built_in: &str,
) -> (String, bool) {
    let mut out = String::new();
    let took = fmt_elapsed(render.elapsed);
    let ok = match shown {
        Ok(Shown::Rendered(r)) => {
            let format = serde_json::to_value(r.format)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(out, "rendered: for {channel} in {took}");
            let _ = writeln!(out, "format:   {format}");
            if let Some(subject) = &r.subject {
                let _ = writeln!(out, "subject:  {subject}");
            }
            let _ = writeln!(out, "--- body ({} bytes) ---\n{}", r.body.len(), r.body);
            if let Some(text) = &r.text_alternative {
                let _ = writeln!(
                    out,
                    "--- text alternative ({} bytes) ---\n{text}",
                    text.len()
                );
            }
            true
        }
        Ok(Shown::Skipped(reason)) => {
            let _ = writeln!(out, "skipped:  for {channel} in {took}: {reason}");
            true
        }
        Ok(Shown::Declined) => {
            let _ = writeln!(
                out,
                "declined: for {channel} in {took}: herald would render its built-in digest"
            );
            true
        }
        Err(e) => {
            let _ = writeln!(out, "FAILED:   for {channel} after {took}: {e}");
            let _ = writeln!(
                out,
                "          (herald would deliver with its built-in {built_in} and record this error)"
            );
            false
        }
    };
    if render.logs.is_empty() {
        let _ = writeln!(out, "--- log: none ---");
    } else {
        let _ = writeln!(out, "--- log ({} lines) ---", render.logs.len());
        for line in &render.logs {
            let _ = writeln!(out, "{:<5} {}", line.level.as_str(), line.message);
        }
    }
    if render.dropped_logs > 0 {
        let _ = writeln!(out, "({} more lines dropped)", render.dropped_logs);
    }
    (out, ok)
}

fn fmt_elapsed(d: Duration) -> String {
    if d >= Duration::from_millis(10) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}

#[cfg(test)]
mod tests;
