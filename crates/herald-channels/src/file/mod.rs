//! The file channel: appends each message to a file as one JSON line (JSON Lines).
//!
//! Line shape: `{"delivery_id": "…", "event": <event envelope>, "rendered": <Rendered or null>}`;
//! a digest's line also carries `"digest": <Digest>` (its id, team, subscription, channel,
//! kind, the listed events, `total`, `first_at`, `last_at`), and its `event` is the
//! digest's first event.
//!
//! Durability choice: a line is written with a single `write_all` on a file opened for
//! appending, and `Delivered` is returned once the OS has it (no userspace buffer is left
//! to flush). There is no fsync: a line survives a crash of herald but not necessarily a
//! power loss. The file channel is for audit trails, debugging and tests, and an fsync per
//! line (3–4 ms on these disks) would serialise every delivery to the file behind the disk.
//!
//! The file is opened for each line, so an external log rotation (rename, then a new file)
//! takes effect at the next line.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex as StdMutex, Weak};

use herald_core::{Digest, Event, Rendered};
use serde::Serialize;
use tokio::sync::Mutex;

use crate::{Channel, Outgoing, SendFuture, SendOutcome};

/// One lock per file path for the whole process, so that two channels writing to the same
/// file (two subscriptions, say) still never interleave their lines. Entries die with the
/// last channel using them.
static FILE_LOCKS: LazyLock<StdMutex<HashMap<PathBuf, Weak<Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn lock_for(path: &Path) -> Arc<Mutex<()>> {
    // Relative paths are keyed by their absolute form; `absolute` does not touch the disk.
    // Two spellings of one file through symlinks or `..` still get separate locks.
    let key = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut locks = FILE_LOCKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
        return lock;
    }
    locks.retain(|_, lock| lock.strong_count() > 0);
    let lock = Arc::new(Mutex::new(()));
    locks.insert(key, Arc::downgrade(&lock));
    lock
}

#[derive(Serialize)]
struct Line<'a> {
    delivery_id: &'a str,
    event: &'a Event,
    rendered: Option<&'a Rendered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a Digest>,
}

/// Appends messages to one file, creating it and its directories as needed.
#[derive(Debug, Clone)]
pub struct FileChannel {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

impl FileChannel {
    /// Touches no disk: the file and its directories are created by the first send.
    pub fn new(path: PathBuf) -> FileChannel {
        let lock = lock_for(&path);
        FileChannel { path, lock }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn append(&self, msg: &Outgoing<'_>) -> SendOutcome {
        let line = Line {
            delivery_id: msg.delivery_id,
            event: msg.event,
            rendered: msg.rendered,
            digest: msg.digest,
        };
        let mut bytes = match serde_json::to_vec(&line) {
            Ok(bytes) => bytes,
            Err(e) => {
                return SendOutcome::Permanent {
                    status: None,
                    error: format!("cannot encode event {} as JSON: {e}", msg.event.id),
                    response: None,
                };
            }
        };
        bytes.push(b'\n');
        // The guard moves into the blocking task, so the lock is held until the write has
        // finished even if this future is dropped half-way.
        let guard = Arc::clone(&self.lock).lock_owned().await;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let result = append_line(&path, &bytes);
            drop(guard);
            result
        })
        .await;
        match written {
            Ok(Ok(())) => SendOutcome::Delivered {
                status: None,
                response: None,
            },
            Ok(Err(error)) => SendOutcome::Retry {
                after: None,
                status: None,
                error,
                response: None,
            },
            Err(join) => SendOutcome::Retry {
                after: None,
                status: None,
                error: format!(
                    "appending to {} did not finish: {join}",
                    self.path.display()
                ),
                response: None,
            },
        }
    }
}

/// Appends `line` to `path`; on a failed write, cuts the file back so that no partial
/// line is left for the next one to run into.
fn append_line(path: &Path, line: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} for appending: {e}", path.display()))?;
    let before = file.metadata().map(|m| m.len()).ok();
    if let Err(e) = file.write_all(line) {
        if let Some(len) = before {
            // Best effort: the write error is what gets reported.
            let _ = file.set_len(len);
        }
        return Err(format!("cannot append to {}: {e}", path.display()));
    }
    Ok(())
}

impl Channel for FileChannel {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn send<'a>(&'a self, msg: &'a Outgoing<'a>) -> SendFuture<'a> {
        Box::pin(self.append(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{Format, RawEvent, TeamId, Timestamp};

    fn event(id: &str) -> Event {
        let raw = RawEvent::from_json(
            br#"{"event": "host.down", "metadata": {"host": "h1"}, "error": "line\nbreak"}"#,
        )
        .unwrap();
        raw.into_event(
            Some(&TeamId::parse("acme").unwrap()),
            Timestamp::parse("2026-11-25T12:00:00Z").unwrap(),
            || id.to_string(),
        )
        .unwrap()
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn appends_one_json_line_per_message_creating_directories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/out.jsonl");
        let channel = FileChannel::new(path.clone());
        assert_eq!(channel.kind(), "file");
        let ev = event("evt_1");
        let outcome = channel
            .send(&Outgoing {
                delivery_id: "dlv_1",
                event: &ev,
                attempt: 1,
                rendered: None,
                digest: None,
            })
            .await;
        assert_eq!(
            outcome,
            SendOutcome::Delivered {
                status: None,
                response: None
            }
        );
        let rendered = Rendered {
            format: Format::Markdown,
            subject: Some("Host down".into()),
            body: "**h1** is down".into(),
            text_alternative: None,
        };
        let outcome = channel
            .send(&Outgoing {
                delivery_id: "dlv_2",
                event: &ev,
                attempt: 2,
                rendered: Some(&rendered),
                digest: None,
            })
            .await;
        assert_eq!(outcome.kind(), "delivered");

        let got = lines(&path);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            serde_json::json!({
                "delivery_id": "dlv_1",
                "event": serde_json::to_value(&ev).unwrap(),
                "rendered": null,
            })
        );
        assert_eq!(got[1]["delivery_id"], "dlv_2");
        assert_eq!(
            got[1]["rendered"],
            serde_json::json!({"format": "markdown", "subject": "Host down",
                "body": "**h1** is down", "text_alternative": null})
        );
    }

    #[tokio::test]
    async fn a_digest_line_carries_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let channel = FileChannel::new(path.clone());
        let digest = crate::digest_fixture::digest(2, 3);
        let outcome = channel
            .send(&Outgoing {
                delivery_id: &digest.id,
                event: &digest.events[0],
                attempt: 1,
                rendered: None,
                digest: Some(&digest),
            })
            .await;
        assert_eq!(outcome.kind(), "delivered");
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0],
            serde_json::json!({
                "delivery_id": "dlv_digest",
                "event": serde_json::to_value(&digest.events[0]).unwrap(),
                "rendered": null,
                "digest": serde_json::to_value(&digest).unwrap(),
            })
        );
        assert_eq!(got[0]["digest"]["total"], 3);
        assert_eq!(got[0]["digest"]["events"].as_array().unwrap().len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        // Two channels on one file share the lock.
        let channels = [
            Arc::new(FileChannel::new(path.clone())),
            Arc::new(FileChannel::new(path.clone())),
        ];
        let ev = Arc::new(event("evt_big"));
        let n = 200;
        let mut tasks = Vec::new();
        for i in 0..n {
            let channel = Arc::clone(&channels[i % 2]);
            let ev = Arc::clone(&ev);
            tasks.push(tokio::spawn(async move {
                // Large enough that a line takes more than one write on many systems.
                let rendered = Rendered {
                    format: Format::Text,
                    subject: None,
                    body: format!("{i}:").repeat(20_000),
                    text_alternative: None,
                };
                let id = format!("dlv_{i}");
                let msg = Outgoing {
                    delivery_id: &id,
                    event: &ev,
                    attempt: 1,
                    rendered: Some(&rendered),
                    digest: None,
                };
                channel.send(&msg).await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().kind(), "delivered");
        }
        let got = lines(&path);
        assert_eq!(got.len(), n);
        let mut ids: Vec<String> = got
            .iter()
            .map(|line| {
                let id = line["delivery_id"].as_str().unwrap().to_string();
                let i = id.strip_prefix("dlv_").unwrap();
                assert_eq!(
                    line["rendered"]["body"].as_str().unwrap(),
                    format!("{i}:").repeat(20_000)
                );
                id
            })
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }

    #[tokio::test]
    async fn io_errors_are_retried_and_name_the_path_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "x").unwrap();
        let path = blocker.join("out.jsonl");
        let channel = FileChannel::new(path.clone());
        let ev = event("evt_1");
        let outcome = channel
            .send(&Outgoing {
                delivery_id: "dlv_1",
                event: &ev,
                attempt: 1,
                rendered: None,
                digest: None,
            })
            .await;
        let SendOutcome::Retry { error, .. } = &outcome else {
            panic!("expected a retry, got {outcome:?}");
        };
        assert!(error.contains(&blocker.display().to_string()), "{error}");
        assert!(error.contains("os error"), "{error}");
    }
}
