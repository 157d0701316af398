//! herald's Telegram flood control: waits so that the Bot API never has to say 429.
//!
//! Three rules, all of which a send must satisfy before it leaves (Telegram's FAQ; the
//! exact numbers are [`Limits`]):
//!
//! - per chat, a token bucket: one message per `per_chat_interval`, bursts of
//!   `per_chat_burst` after a quiet spell;
//! - per group (negative chat id), at most `per_group` messages in any `group_window`;
//! - per bot, at most `overall` messages in any `overall_window`.
//!
//! Why not teloxide's `Throttle` adaptor: it applies its per-minute chat limit to private
//! chats as well (20/min where Telegram allows 60), has no bursts, decides on a 250 ms
//! tick, and retries 429s without bound. This limiter is exact instead:
//!
//! - Sends to one chat take turns (a fair FIFO lock held until Telegram has answered),
//!   so a chat's messages leave in order and one chat's backlog never holds up another's.
//! - It accounts for the network: a request counts as in flight, occupying its window
//!   slot, until its reply arrives, and its window then runs from the reply. Telegram saw
//!   the request somewhere between the send and the reply, so the server's windows can
//!   only be emptier than ours and no latency can turn our count into a 429.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Telegram's message limits as herald applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_chat_interval: Duration,
    pub per_chat_burst: u32,
    pub per_group: u32,
    pub group_window: Duration,
    pub overall: u32,
    pub overall_window: Duration,
}

impl Limits {
    /// One message per second per chat with bursts of 3, 20 per minute per group, 30 per
    /// second per bot.
    pub const TELEGRAM: Limits = Limits {
        per_chat_interval: Duration::from_secs(1),
        per_chat_burst: 3,
        per_group: 20,
        group_window: Duration::from_secs(60),
        overall: 30,
        overall_window: Duration::from_secs(1),
    };

    /// The same counts over spans `factor` times shorter, for benchmarks against a double
    /// scaled the same way.
    pub fn scaled(self, factor: f64) -> Limits {
        Limits {
            per_chat_interval: self.per_chat_interval.div_f64(factor),
            group_window: self.group_window.div_f64(factor),
            overall_window: self.overall_window.div_f64(factor),
            ..self
        }
    }

    /// No limits (tests that want Telegram's own 429s).
    pub fn unlimited() -> Limits {
        Limits {
            per_chat_interval: Duration::ZERO,
            per_chat_burst: u32::MAX,
            per_group: u32::MAX,
            group_window: Duration::ZERO,
            overall: u32::MAX,
            overall_window: Duration::ZERO,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::TELEGRAM
    }
}

/// Chats idle this long are forgotten (their bucket is full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug)]
pub(super) struct Limiter {
    limits: Limits,
    state: Mutex<State>,
    /// Woken when a request completes, freeing a window slot.
    completed: Notify,
}

#[derive(Debug, Default)]
struct State {
    chats: HashMap<i64, ChatState>,
    overall: Window,
}

#[derive(Debug)]
struct ChatState {
    /// Whose turn it is to send to this chat.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Theoretical arrival time of the next message (GCRA), an upper bound of Telegram's.
    tat: Instant,
    group: Window,
    last_used: Instant,
}

/// A sliding-window count: requests in flight plus completion times, oldest first.
#[derive(Debug, Default)]
struct Window {
    in_flight: usize,
    completed: VecDeque<Instant>,
}

impl Window {
    /// When one more request may start under `limit` per `window`; `None` when only a
    /// completion can free a slot.
    fn next_slot(&mut self, limit: u32, window: Duration, now: Instant) -> Option<Instant> {
        while let Some(&oldest) = self.completed.front() {
            if oldest + window <= now {
                self.completed.pop_front();
            } else {
                break;
            }
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if self.in_flight + self.completed.len() < limit {
            return Some(now);
        }
        if self.in_flight >= limit {
            return None;
        }
        // Slots free up as the oldest completions leave the window.
        let excess = self.in_flight + self.completed.len() - limit;
        self.completed.get(excess).map(|&t| t + window)
    }

    fn complete(&mut self, at: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.completed.push_back(at);
    }
}

/// Permission to send one message; hand it back with [`Limiter::complete`] once the reply
/// (or the failure) is in. Holds the chat's turn.
#[derive(Debug)]
pub(super) struct Permit {
    chat: i64,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Limiter {
    pub(super) fn new(limits: Limits) -> Limiter {
        Limiter {
            limits,
            state: Mutex::new(State::default()),
            completed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until a message to `chat` is allowed, then counts it as in flight.
    pub(super) async fn acquire(&self, chat: i64) -> Permit {
        let turn = {
            let mut state = self.state();
            let now = Instant::now();
            if state.chats.len() > 1024 {
                state.chats.retain(|_, c| {
                    c.last_used + FORGET_AFTER > now || Arc::strong_count(&c.turn) > 1
                });
            }
            Arc::clone(
                &state
                    .chats
                    .entry(chat)
                    .or_insert_with(|| ChatState::new(now))
                    .turn,
            )
        };
        let turn = turn.lock_owned().await;
        loop {
            // Register before checking, so a completion in between is not missed.
            let completed = self.completed.notified();
            let wait_until = {
                let mut state = self.state();
                let now = Instant::now();
                match self.try_take(&mut state, chat, now) {
                    Ok(()) => {
                        return Permit { chat, _turn: turn };
                    }
                    Err(until) => until,
                }
            };
            match wait_until {
                Some(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = completed => {}
                    }
                }
                None => completed.await,
            }
        }
    }

    /// Takes a slot for `chat` at `now`, or says when to look again (`None`: at the next
    /// completion).
    fn try_take(&self, state: &mut State, chat: i64, now: Instant) -> Result<(), Option<Instant>> {
        let limits = &self.limits;
        let overall = state
            .overall
            .next_slot(limits.overall, limits.overall_window, now);
        let entry = state
            .chats
            .entry(chat)
            .or_insert_with(|| ChatState::new(now));
        let tolerance = limits
            .per_chat_interval
            .saturating_mul(limits.per_chat_burst.saturating_sub(1));
        let bucket = entry.tat.checked_sub(tolerance).unwrap_or(now).max(now);
        let group = if chat < 0 {
            entry
                .group
                .next_slot(limits.per_group, limits.group_window, now)
        } else {
            Some(now)
        };
        let (Some(overall), Some(group)) = (overall, group) else {
            return Err(None);
        };
        let at = bucket.max(overall).max(group);
        if at > now {
            return Err(Some(at));
        }
        entry.tat = entry.tat.max(now) + limits.per_chat_interval;
        entry.last_used = now;
        if chat < 0 {
            entry.group.in_flight += 1;
        }
        state.overall.in_flight += 1;
        Ok(())
    }

    /// Records that the request sent under `permit` has been answered (or failed), and
    /// hands the chat's turn to the next sender.
    pub(super) fn complete(&self, permit: Permit) {
        let now = Instant::now();
        {
            let mut state = self.state();
            state.overall.complete(now);
            if let Some(chat) = state.chats.get_mut(&permit.chat) {
                // Telegram saw the request at the latest now: its bucket is at most here.
                chat.tat = chat.tat.max(now + self.limits.per_chat_interval);
                chat.last_used = now;
                if permit.chat < 0 {
                    chat.group.complete(now);
                }
            }
        }
        drop(permit);
        self.completed.notify_waiters();
    }

    /// Telegram said to wait `after` before sending to `chat` again (a 429).
    pub(super) fn hold(&self, chat: i64, after: Duration) {
        let now = Instant::now();
        let mut state = self.state();
        let entry = state
            .chats
            .entry(chat)
            .or_insert_with(|| ChatState::new(now));
        // The bucket allows the next message once `tat - tolerance` is reached.
        let tolerance = self
            .limits
            .per_chat_interval
            .saturating_mul(self.limits.per_chat_burst.saturating_sub(1));
        entry.tat = entry.tat.max(now + after + tolerance);
    }
}

impl ChatState {
    fn new(now: Instant) -> ChatState {
        ChatState {
            turn: Arc::new(tokio::sync::Mutex::new(())),
            tat: now,
            group: Window::default(),
            last_used: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_requests_in_flight_and_recent_completions() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut window = Window::default();
        assert_eq!(window.next_slot(2, second, t0), Some(t0));
        window.in_flight = 2;
        assert_eq!(window.next_slot(2, second, t0), None);
        window.complete(t0);
        assert_eq!(window.next_slot(2, second, t0), Some(t0 + second));
        window.complete(t0 + second / 2);
        assert_eq!(window.next_slot(2, second, t0), Some(t0 + second));
        // Once the first completion has left the window, a slot is free.
        assert_eq!(window.next_slot(2, second, t0 + second), Some(t0 + second));
        window.in_flight = 1;
        assert_eq!(
            window.next_slot(2, second, t0 + second),
            Some(t0 + 3 * second / 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_chat_gets_its_burst_then_one_message_per_interval() {
        let limiter = Limiter::new(Limits::TELEGRAM);
        let t0 = Instant::now();
        let mut granted = Vec::new();
        for _ in 0..5 {
            let permit = limiter.acquire(7).await;
            granted.push(Instant::now() - t0);
            limiter.complete(permit);
        }
        let secs: Vec<u64> = granted.iter().map(Duration::as_secs).collect();
        // Paused time: the burst of three leaves at once, then one per second.
        assert_eq!(secs, [0, 0, 0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_chat_waits_for_retry_after() {
        let limiter = Limiter::new(Limits::TELEGRAM);
        let t0 = Instant::now();
        limiter.hold(-5, Duration::from_secs(7));
        let permit = limiter.acquire(-5).await;
        assert_eq!((Instant::now() - t0).as_secs(), 7);
        limiter.complete(permit);
        // Other chats are not held.
        let permit = limiter.acquire(6).await;
        assert_eq!((Instant::now() - t0).as_secs(), 7);
        limiter.complete(permit);
    }
}
