//! The `herald` binary: command-line wiring only; the work lives in the library crates.

mod backup;
mod check;
mod client;
mod explain;
mod migrate;
mod plugin;
mod serve;
mod silence;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "A multi-channel notification router"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CheckFormat {
    /// Each problem with its source line pointed at.
    Human,
    /// One `PATH:LINE:COL: severity: message` line per problem.
    Short,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// `--config`, for commands that only need to find the store.
#[derive(Debug, clap::Args)]
struct ConfigPath {
    #[arg(
        long,
        short,
        env = "HERALD_CONFIG",
        default_value = "config/herald.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: ingest, delivery workers and the HTTP API.
    Serve {
        #[arg(
            long,
            short,
            env = "HERALD_CONFIG",
            default_value = "config/herald.toml"
        )]
        config: PathBuf,
        /// Log lines as text or as JSON objects (`RUST_LOG` sets the level).
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Publish an event to a running herald.
    Send(client::SendArgs),
    /// List deliveries of a running herald.
    Deliveries(client::DeliveriesArgs),
    /// Make a dead or failing delivery due now.
    Retry {
        #[command(flatten)]
        target: client::Target,
        /// The delivery id (`dlv_…`).
        id: String,
    },
    /// Re-queue a team's dead or failed deliveries of a time window (bulk replay).
    Replay(client::ReplayArgs),
    /// Silence matching deliveries for a while (`add`), list silences, end one (`expire`).
    Silence {
        #[command(subcommand)]
        command: silence::SilenceCommand,
    },
    /// Validate the configuration and report every problem with its location.
    Check {
        /// The configuration file (same as --config).
        #[arg(value_name = "PATH", conflicts_with = "config")]
        path: Option<PathBuf>,
        #[arg(
            long,
            short,
            env = "HERALD_CONFIG",
            default_value = "config/herald.toml"
        )]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: CheckFormat,
    },
    /// Work on WASM formatter plugins (`herald plugin test PATH --event FILE --channel KIND`).
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
    /// Copy the embedded store to a new file, consistently, while herald may be serving.
    Backup {
        /// The backup file to create (never overwritten).
        path: PathBuf,
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Bring the PostgreSQL store's schema to this herald's version (serve does it too).
    Migrate {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Replace the embedded store with a backup (refused while a herald holds the store).
    Restore {
        /// The backup file (made by `herald backup`).
        path: PathBuf,
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Show which subscriptions an event matches, and why the others do not.
    Explain {
        #[arg(
            long,
            short,
            env = "HERALD_CONFIG",
            default_value = "config/herald.toml"
        )]
        config: PathBuf,
        /// The event as JSON: a file, or `-` for standard input.
        #[arg(long)]
        event: PathBuf,
        /// The team to assume when the event has no `team_id`.
        #[arg(long)]
        team: Option<String>,
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        /// A running herald to check the team's silences against (with --key); without
        /// it, silences are not checked.
        #[arg(long, requires = "key")]
        url: Option<String>,
        /// A team API key or the admin token for --url.
        #[arg(long, env = "HERALD_KEY", hide_env_values = true)]
        key: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, log_format } => {
            init_logging(log_format);
            runtime()
                .and_then(|rt| rt.block_on(serve::run(&config)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Send(args) => runtime()
            .and_then(|rt| rt.block_on(client::send(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Deliveries(args) => runtime()
            .and_then(|rt| rt.block_on(client::deliveries(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Retry { target, id } => runtime()
            .and_then(|rt| rt.block_on(client::retry(target, id)))
            .map(|()| ExitCode::SUCCESS),
        Command::Replay(args) => runtime()
            .and_then(|rt| rt.block_on(client::replay(args)))
            .map(|()| ExitCode::SUCCESS),
        Command::Silence { command } => runtime()
            .and_then(|rt| rt.block_on(silence::run(command)))
            .map(|()| ExitCode::SUCCESS),
        Command::Check {
            path,
            config,
            format,
        } => check::run(
            &path.unwrap_or(config),
            matches!(format, CheckFormat::Short),
        ),
        Command::Plugin { command } => plugin::run(command),
        Command::Backup { path, config } => {
            backup::backup(&config.config, &path).map(|()| ExitCode::SUCCESS)
        }
        Command::Migrate { config } => runtime()
            .and_then(|rt| rt.block_on(migrate::run(&config.config)))
            .map(|()| ExitCode::SUCCESS),
        Command::Restore { path, config } => {
            backup::restore(&config.config, &path).map(|()| ExitCode::SUCCESS)
        }
        Command::Explain {
            config,
            event,
            team,
            json,
            url,
            key,
        } => {
            let server = url.zip(key).map(|(url, key)| client::Target { url, key });
            explain::run(&config, &event, team.as_deref(), json, server.as_ref())
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}
