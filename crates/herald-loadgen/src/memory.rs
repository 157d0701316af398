//! Another process's memory, read from `/proc/PID/status` (Linux): its resident set now
//! (`VmRSS`) and its peak since it started (`VmHWM`).

use std::io;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

/// Both figures in KiB, as the kernel reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// `VmHWM` at the end: the peak resident set over the process's whole life.
    pub peak_kib: Option<u64>,
    /// The largest `VmRSS` sampled during the run.
    pub max_sampled_kib: Option<u64>,
    pub samples: u64,
}

/// The value of a `Name:   1234 kB` line of a `/proc/PID/status` text.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value = words.next()?.parse().ok()?;
        (words.next() == Some("kB")).then_some(value)
    })
}

/// Reads one field of `/proc/PID/status`.
pub fn read_kib(pid: u32, name: &str) -> io::Result<Option<u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_kib(&status, name))
}

/// Samples `VmRSS` of `pid` every `every` until told to stop or `max_samples` were taken.
#[derive(Debug)]
pub struct RssSampler {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<(Option<u64>, u64)>,
    pid: u32,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration, max_samples: u64) -> RssSampler {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            let mut max = None;
            let mut samples = 0;
            while samples < max_samples {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = &mut stopped => break,
                }
                // A process that has exited has nothing more to sample.
                let Ok(rss) = read_kib(pid, "VmRSS") else {
                    break;
                };
                samples += 1;
                max = max.max(rss);
            }
            (max, samples)
        });
        RssSampler { stop, task, pid }
    }

    /// Stops sampling and adds `VmHWM` as it is now.
    pub async fn finish(self) -> MemoryReport {
        let _ = self.stop.send(());
        let (max_sampled_kib, samples) = self.task.await.unwrap_or((None, 0));
        MemoryReport {
            peak_kib: read_kib(self.pid, "VmHWM").ok().flatten(),
            max_sampled_kib,
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\therald\nVmPeak:\t 1200000 kB\nVmHWM:\t   81234 kB\n\
                          VmRSS:\t   80000 kB\nThreads:\t6\n";

    #[test]
    fn reads_fields_in_kib() {
        let cases = [
            ("VmHWM", Some(81_234)),
            ("VmRSS", Some(80_000)),
            ("VmPeak", Some(1_200_000)),
            ("Threads", None), // no unit: not a memory figure
            ("VmSwap", None),
            ("Vm", None),
        ];
        for (name, want) in cases {
            assert_eq!(status_kib(STATUS, name), want, "{name}");
        }
    }

    #[tokio::test]
    async fn samples_this_process() {
        let sampler = RssSampler::start(std::process::id(), Duration::from_millis(1), 3);
        let report = sampler.finish().await;
        assert!(report.peak_kib.is_some_and(|kib| kib > 0));
        assert!(report.samples <= 3);
    }
}
