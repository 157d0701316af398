//! The single writer thread: it owns the write connection and commits queued requests in
//! groups, so that many concurrent callers share one fsync.
//!
//! Each request runs inside a savepoint of the group's transaction, so one failing request
//! is rolled back alone; callers are answered only after the group's commit.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;

/// Most requests committed in one transaction. Bounds the latency a request can add to
/// the others of its group.
pub(crate) const MAX_GROUP: usize = 512;
/// Requests that may wait for the writer before senders are made to wait too.
const QUEUE_CAPACITY: usize = 8 * MAX_GROUP;

/// How much group commit is batching, since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (or attempted) by the writer.
    pub transactions: u64,
    /// Write requests handled; `requests / transactions` is the mean group size.
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    requests: AtomicU64,
}

/// One queued write request.
trait Job: Send {
    /// Runs the request inside the group's transaction; `false` if it failed, so that its
    /// savepoint is rolled back.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the group's fate is known.
    fn complete(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>);
    /// Whether the group holding this request must be committed with a full sync.
    fn needs_sync(&self) -> bool;
}

struct Request<F, T> {
    sync: bool,
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<F, T> Job for Request<F, T>
where
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
    T: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            // A panicking request must not take the writer, and every other caller, down.
            Some(work) => catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or(Err(StoreError::Internal("a write request panicked"))),
            None => Err(StoreError::Internal("a write request ran twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn needs_sync(&self) -> bool {
        self.sync
    }

    fn complete(self: Box<Self>, commit: Result<(), &Arc<rusqlite::Error>>) {
        let result = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            // The request's own error explains more than the failed commit does.
            (Err(_), Some(Err(own))) => Err(own),
            (Err(commit), _) => Err(StoreError::Sqlite(Arc::clone(commit))),
            (Ok(()), None) => Err(StoreError::Internal("a write request was never run")),
        };
        // The caller may have gone away (request cancelled); the work is done regardless.
        let _ = self.reply.send(result);
    }
}

/// The handle to the writer thread. Dropping it lets the thread finish what is queued,
/// then waits for it.
pub(crate) struct Writer {
    sender: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("herald-store-writer".into())
            .spawn(move || writer_loop(conn, receiver, &thread_counters))
            .map_err(|_| StoreError::Open("cannot start the writer thread".into()))?;
        Ok(Writer {
            sender: Some(sender),
            thread: Some(thread),
            counters,
        })
    }

    /// Runs `work` in the writer's next group transaction and returns its result once that
    /// transaction is committed with a full sync. If `work` fails, its changes are rolled
    /// back and the rest of the group is unaffected.
    pub(crate) async fn run<F, T>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.run_with(true, work).await
    }

    /// Like [`Writer::run`], but a group made only of such requests is committed without
    /// waiting for the disk (`synchronous = NORMAL`): after a crash the last of them may be
    /// gone, never half applied, and the next fully synced commit makes them durable too
    /// (the WAL is written in order). For records whose loss only repeats work.
    pub(crate) async fn run_unsynced<F, T>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.run_with(false, work).await
    }

    async fn run_with<F, T>(&self, sync: bool, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let sender = self.sender.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Request {
            sync,
            work: Some(work),
            result: None,
            reply,
        });
        sender.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn stats(&self) -> WriteStats {
        WriteStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Kills the writer thread as a bug would (a panic outside any request), and waits
    /// until it is gone.
    #[cfg(test)]
    pub(crate) async fn kill_for_test(&self) {
        struct Poison;
        impl Job for Poison {
            fn run(&mut self, _: &Connection) -> bool {
                true
            }
            fn complete(self: Box<Self>, _: Result<(), &Arc<rusqlite::Error>>) {
                panic!("the writer thread is killed by a test");
            }
            fn needs_sync(&self) -> bool {
                false
            }
        }
        if let Some(sender) = &self.sender {
            let _ = sender.send(Box::new(Poison)).await;
            sender.closed().await;
        }
    }

    /// Requests waiting for the writer (not counting the group being committed).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.sender
            .as_ref()
            .map_or(0, |s| s.max_capacity() - s.capacity())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the loop once everything already queued is committed.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            // A panic of the thread itself has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Box<dyn Job>>,
    counters: &Counters,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    // The connection opens with synchronous = FULL.
    let mut synced = true;
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let sync = group.iter().any(|job| job.needs_sync());
        let commit = set_sync(&conn, &mut synced, sync)
            .and_then(|()| commit_group(&mut conn, &mut group))
            .map_err(Arc::new);
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        for job in group.drain(..) {
            job.complete(commit.as_ref().map(|_| ()));
        }
    }
}

/// Switches the connection between full and normal sync, only when it changes.
fn set_sync(conn: &Connection, synced: &mut bool, sync: bool) -> rusqlite::Result<()> {
    if *synced != sync {
        conn.execute_batch(if sync {
            "PRAGMA synchronous = FULL"
        } else {
            "PRAGMA synchronous = NORMAL"
        })?;
        *synced = sync;
    }
    Ok(())
}

fn commit_group(conn: &mut Connection, group: &mut [Box<dyn Job>]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for job in group.iter_mut() {
        tx.execute_batch("SAVEPOINT request")?;
        if job.run(&tx) {
            tx.execute_batch("RELEASE request")?;
        } else {
            tx.execute_batch("ROLLBACK TO request; RELEASE request")?;
        }
    }
    // With synchronous = FULL this is the one fsync the whole group shares.
    tx.commit()
}
