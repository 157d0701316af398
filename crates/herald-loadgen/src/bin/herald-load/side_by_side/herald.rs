//! herald as a side-by-side target: a generated configuration that leaves every delivery
//! setting at its default, started from a given binary in a fresh directory.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use reqwest::Url;

use super::process::{Target, launch, prepare};

/// The team key the publishers use.
pub const KEY: &str = "bench-key";
/// Delivered to every endpoint of the run.
pub const DELIVERED: &str = "bench.ping";
/// Matched by no subscription: durable ingest alone.
pub const INGEST_ONLY: &str = "bench.ingest";

/// herald's configuration for one run: team `bench`, one webhook channel per endpoint, each
/// subscribed to [`DELIVERED`]. `[delivery]` holds only `allow_private_networks` — needed
/// for loopback receivers and not a performance setting — plus any `tuned` `KEY = VALUE`
/// lines (for a labelled extra row).
pub fn config(port: u16, endpoints: &[Url], tuned: &[String]) -> String {
    let mut toml = format!(
        "# written by herald-load side-by-side\n\
         [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [store]\npath = \"data\"\n\n\
         [delivery]\n\
         allow_private_networks = true   # the receivers are on loopback\n"
    );
    for line in tuned {
        let _ = writeln!(toml, "{line}");
    }
    let _ = write!(
        toml,
        "\n[[event_types]]\nname = \"{DELIVERED}\"\n\n\
         [[event_types]]\nname = \"{INGEST_ONLY}\"\n\n\
         [teams.bench]\napi_keys = [\"{KEY}\"]\n"
    );
    for (n, url) in endpoints.iter().enumerate() {
        let _ = write!(
            toml,
            "\n[teams.bench.channels.r{r}]\ntype = \"webhook\"\nurl = \"{url}\"\n\n\
             [[teams.bench.subscriptions]]\nchannel = \"r{r}\"\nevents = [\"{DELIVERED}\"]\n",
            r = n + 1
        );
    }
    toml
}

/// `herald serve` on [`config`] in `dir` (which must be fresh: the store goes in it).
pub async fn start(
    binary: &Path,
    dir: &Path,
    endpoints: &[Url],
    tuned: &[String],
) -> anyhow::Result<(Target, Url)> {
    let port = prepare(dir)?;
    serve(
        binary,
        dir,
        "herald",
        port,
        &config(port, endpoints, tuned),
        "/healthz",
    )
    .await
}

/// `herald serve` on `config` (written to `dir/herald.toml`; it must listen on `port`), its
/// log in `dir/NAME.log`, once `ready_path` answers.
pub async fn serve(
    binary: &Path,
    dir: &Path,
    name: &str,
    port: u16,
    config: &str,
    ready_path: &str,
) -> anyhow::Result<(Target, Url)> {
    let path = dir.join("herald.toml");
    fs::write(&path, config)?;
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn");
    launch(name, command, dir, port, ready_path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> herald_config::LoadOutcome {
        let dir = std::env::temp_dir().join(format!("herald-sbs-config-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("herald.toml");
        fs::write(&path, text).unwrap();
        let outcome = herald_config::load_with_env(&path, &|_| None);
        fs::remove_dir_all(&dir).unwrap();
        outcome
    }

    #[test]
    fn the_generated_configuration_is_valid_and_leaves_delivery_at_its_defaults() {
        let endpoints: Vec<Url> = (1..=3)
            .map(|p| Url::parse(&format!("http://127.0.0.1:1900{p}/")).unwrap())
            .collect();
        let text = config(8650, &endpoints, &[]);
        let outcome = load(&text);
        assert!(
            !outcome.diagnostics.has_errors(),
            "{}",
            outcome.diagnostics.render_short()
        );
        let loaded = outcome.config.unwrap();
        let team = loaded.teams.values().next().unwrap();
        assert_eq!(team.channels.len(), 3);
        // The default configuration means: nothing under [delivery] but what loopback needs.
        let delivery: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "[delivery]")
            .skip(1)
            .take_while(|l| !l.is_empty())
            .collect();
        assert_eq!(
            delivery,
            ["allow_private_networks = true   # the receivers are on loopback"]
        );

        let tuned = config_with_tuning(&endpoints);
        assert!(!load(&tuned).diagnostics.has_errors());
    }

    fn config_with_tuning(endpoints: &[Url]) -> String {
        let text = config(
            8650,
            endpoints,
            &["concurrency_per_channel = 64".to_string()],
        );
        assert!(text.contains("\nconcurrency_per_channel = 64\n"));
        text
    }
}
