//! The herald under test: the given binary started on a generated configuration in a
//! scratch directory, on an ephemeral loopback port; and what `/proc` says about it.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context as _, bail};

/// The team key the clients and publishers use.
pub const KEY: &str = "bench-key";
pub const DURABLE: &str = "bench.durable";
pub const TRANSIENT: &str = "bench.transient";

/// One team, no channels: the benchmark measures the stream, not deliveries.
const CONFIG: &str = r#"# written by herald-ssebench
[server]
listen = "127.0.0.1:0"
admin_token = "bench-admin-token"

[store]
path = "data"

[[event_types]]
name = "bench.durable"
[[event_types]]
name = "bench.transient"
transient = true

[teams.bench]
api_keys = ["bench-key"]
"#;

/// `herald serve`, killed (and its scratch directory removed) on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// Memory of a process, in KiB, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    /// The peak resident set (`VmHWM`).
    pub hwm_kib: u64,
}

impl Server {
    pub fn start(binary: &Path) -> anyhow::Result<Server> {
        let dir = std::env::temp_dir().join(format!("herald-ssebench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let config = dir.join("herald.toml");
        fs::write(&config, CONFIG)?;
        let log = fs::File::create(dir.join("herald.log"))?;
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        // Keep draining stdout so that herald never blocks on (or dies of) a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        let addr = line
            .trim()
            .strip_prefix("herald listening on http://")
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let log = fs::read_to_string(dir.join("herald.log")).unwrap_or_default();
            bail!("herald did not start (first line {line:?}); log:\n{log}");
        };
        Ok(Server { child, addr, dir })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn memory(&self) -> Memory {
        memory(self.pid())
    }

    /// CPU time (user + system) used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: a graceful stop would wait for the open streams.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub fn memory(pid: u32) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// User + system CPU seconds from a `/proc/.../stat` file.
pub fn cpu_seconds(path: &str) -> f64 {
    let stat = fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields of the whole line, in clock ticks (USER_HZ, 100 on Linux).
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds the whole machine spent busy so far (all processes), from `/proc/stat`.
pub fn machine_busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0);
    total.saturating_sub(idle) as f64 / 100.0
}
