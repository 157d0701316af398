//! The `herald` binary: command-line wiring only; the work lives in the library crates.

mod check;
mod explain;

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

#[derive(Debug, Subcommand)]
enum Command {
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            path,
            config,
            format,
        } => check::run(
            &path.unwrap_or(config),
            matches!(format, CheckFormat::Short),
        ),
        Command::Explain {
            config,
            event,
            team,
            json,
        } => explain::run(&config, &event, team.as_deref(), json),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
