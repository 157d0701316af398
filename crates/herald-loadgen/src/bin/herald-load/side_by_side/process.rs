//! A server under test as a child process: started in its own scratch directory with its
//! output in a log file, waited for until its readiness URL answers, killed on drop.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::Url;
use tokio::time::Instant;

/// How long a server may take to answer its readiness URL.
const READY_WITHIN: Duration = Duration::from_secs(30);
const READY_POLL: Duration = Duration::from_millis(50);
/// How much of the log an error shows.
const LOG_TAIL: usize = 2_000;

/// A running server; killed (SIGKILL) and reaped on drop. Its directory is left for the
/// caller, which owns the whole run's scratch space.
#[derive(Debug)]
pub struct Target {
    child: Child,
    log: PathBuf,
}

impl Target {
    /// Spawns `command` with stdout and stderr to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Target> {
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {:?}", command.get_program()))?;
        Ok(Target {
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `url` with GET until it answers 2xx; fails when the process exits first or
    /// [`READY_WITHIN`] passes, showing the end of the log.
    pub async fn wait_ready(&mut self, url: &Url) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()?;
        let until = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "exited ({status}) before it was ready; log:\n{}",
                    self.log_tail()
                );
            }
            if let Ok(reply) = client.get(url.clone()).send().await
                && reply.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "not ready at {url} after {READY_WITHIN:?}; log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(LOG_TAIL);
        // Back up to a character boundary so slicing cannot panic.
        let start = (0..=start)
            .rev()
            .find(|i| log.is_char_boundary(*i))
            .unwrap_or(0);
        log[start..].to_string()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SIGKILL: each run has a fresh directory, so nothing needs a graceful stop, and a
        // server still working through a slow endpoint's backlog must not hold the run up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a server's scratch directory and finds it a port: one that was free a moment
/// ago on 127.0.0.1 (the servers must be told theirs in their configuration).
pub fn prepare(dir: &Path) -> anyhow::Result<u16> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `command` (a server `name` told to listen on 127.0.0.1:`port`) with its log in
/// `dir/NAME.log`, and waits until `ready_path` answers; returns it with its base URL.
pub async fn launch(
    name: &str,
    command: Command,
    dir: &Path,
    port: u16,
    ready_path: &str,
) -> anyhow::Result<(Target, Url)> {
    let mut target = Target::spawn(command, &dir.join(format!("{name}.log")))?;
    let base = Url::parse(&format!("http://127.0.0.1:{port}/"))?;
    target
        .wait_ready(&base.join(ready_path)?)
        .await
        .with_context(|| format!("{name} at {base}"))?;
    Ok((target, base))
}
