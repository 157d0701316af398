//! This machine's fsync latency: a small block appended and fsync'd in a loop in a given
//! directory, so a server's durable-ingest latency can be read as a multiple of it.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::stats::{Latencies, LatencySummary};

/// The block written before each fsync: about one small event with its WAL framing.
const BLOCK: [u8; 4096] = [0x5a; 4096];

/// Appends a block and fsyncs (`File::sync_all`) up to `count` times or until `budget` has
/// passed, in a scratch file in `dir` (removed after), and summarises the write + fsync times.
pub fn probe(dir: &Path, count: u64, budget: Duration) -> io::Result<LatencySummary> {
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let mut latencies = Latencies::default();
    let outcome = sync_blocks(&mut file, count, budget, &mut latencies);
    drop(file);
    let _ = fs::remove_file(&path);
    outcome.map(|()| latencies.summary())
}

fn sync_blocks(
    file: &mut fs::File,
    count: u64,
    budget: Duration,
    latencies: &mut Latencies,
) -> io::Result<()> {
    let started = Instant::now();
    for _ in 0..count {
        if started.elapsed() >= budget {
            break;
        }
        let began = Instant::now();
        file.write_all(&BLOCK)?;
        file.sync_all()?;
        latencies.record(began.elapsed());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_at_most_count_samples_and_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("herald-fsync-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let summary = probe(&dir, 3, Duration::from_secs(60)).unwrap();
        assert_eq!(summary.count, 3);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        let none = probe(&dir, 5, Duration::ZERO).unwrap();
        assert_eq!(none.count, 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
