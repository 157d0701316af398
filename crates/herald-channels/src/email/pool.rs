//! Idle SMTP connections kept for reuse.
//!
//! herald pools lettre's `AsyncSmtpConnection`s itself instead of using lettre's pooled
//! `AsyncSmtpTransport`: lettre's async client has no read timeout, and a send cancelled
//! by a timeout would return its connection, mid-command, to lettre's pool, where the next
//! send would read the stale reply as its own. Here a connection goes back to the pool only
//! after a completed, successful transaction; any failure or timeout drops (closes) it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

pub(super) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl Pool {
    pub(super) fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The vector stays consistent whatever panicked while holding the lock.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently parked connection still within the idle timeout, and how long it
    /// sat idle. Expired ones are dropped (closed) first.
    pub(super) fn take(&self) -> Option<(AsyncSmtpConnection, Duration)> {
        let mut idle = self.lock();
        idle.retain(|parked| parked.since.elapsed() < self.idle_timeout);
        idle.pop()
            .map(|parked| (parked.conn, parked.since.elapsed()))
    }

    /// Parks a connection that just completed a transaction, unless the pool is full.
    pub(super) fn put(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// `QUIT`s and closes every idle connection.
    pub(super) async fn close(&self) {
        let parked: Vec<Idle> = std::mem::take(&mut *self.lock());
        for mut parked in parked {
            parked.conn.abort().await;
        }
    }
}
