//! The records the store keeps and hands out: deliveries, attempts, leases, channel states.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use herald_core::{DigestKind, Event, TeamId, Timestamp};
use serde::{Deserialize, Serialize};

/// Page size of [`DeliveryFilter::default`].
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page [`crate::Store::list_deliveries`] returns, whatever the filter asks for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A delivery to create in the same transaction as its event: one per matching subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The delivery's id, made by the caller: `dlv_` followed by a UUID v7. Unique across
    /// all teams.
    pub id: String,
    /// The name of the event team's channel to deliver to.
    pub channel: String,
    /// Position of the matching subscription in its team's list when planned (kept for
    /// older readers; it changes meaning when the list changes).
    pub subscription: u32,
    /// The matching subscription's stable name (`Subscription::key`), which survives
    /// reloads that insert, remove or reorder subscriptions.
    pub subscription_name: Option<String>,
    /// The caller keeps this delivery in its own memory queue from the start: it is stored
    /// leased to the store's [`crate::Store::holder`] token, so [`crate::Store::claim_due`]
    /// never hands it out, until an attempt is finished or the store is reopened. Only for
    /// stores that have a holder (one process owns them); others refuse it.
    pub held: bool,
    /// Silenced at ingest by this silence (its id): stored as `silenced`, never sent.
    pub silence: Option<String>,
    /// The subscription's repeat suppression: the store decides, in the transaction that
    /// accepts the event, whether this key is inside a window opened by an earlier sent
    /// delivery (then this one is stored as `suppressed`, and not sent).
    pub dedup: Option<DedupClaim>,
    /// Where the store may fold this delivery into a digest instead of sending it on its
    /// own (the subscription groups, or is throttled). Decided after `silence` (a silenced
    /// delivery is never folded) and `dedup` (a suppressed one is neither folded nor
    /// counted), in the same transaction; see [`crate::Store::accept`].
    pub fold: Option<FoldClaim>,
}

/// Where the store may fold a delivery instead of sending it on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoldClaim {
    /// The subscription groups: the delivery always joins a digest, the open one of its
    /// group (team, subscription name, `key`) or a new one.
    Group {
        /// `herald_core::Grouping::key_for` of the event.
        key: String,
        kind: DigestKind,
        /// How long a new group's first digest waits to collect more (`group_wait`).
        wait: Duration,
        /// How often a live group's digests fall due at most (`group_interval`).
        interval: Duration,
        /// The id to give the digest delivery if this one opens a new digest (`dlv_` +
        /// UUID v7, made by the engine like every delivery id).
        digest_id: String,
    },
    /// The subscription (or its channel) is throttled: the store counts it in the scope's
    /// window; beyond `limit` it joins the window's digest.
    Throttle {
        /// `herald_core::ThrottleScope::store_key`.
        scope: String,
        kind: DigestKind,
        limit: u32,
        per: Duration,
        /// As for [`FoldClaim::Group`]: the id of the digest this one may open.
        digest_id: String,
    },
}

impl FoldClaim {
    /// The kind of digest the delivery joins.
    pub fn kind(&self) -> &DigestKind {
        match self {
            FoldClaim::Group { kind, .. } | FoldClaim::Throttle { kind, .. } => kind,
        }
    }

    /// The id of the digest this delivery opens if it opens one.
    pub fn digest_id(&self) -> &str {
        match self {
            FoldClaim::Group { digest_id, .. } | FoldClaim::Throttle { digest_id, .. } => digest_id,
        }
    }
}

/// The dedup key of a new delivery and its subscription's window. Windows are kept per
/// (team, subscription name, key): a delivery that is sent opens one for `window`; a
/// later delivery with the same key inside it is suppressed and opens nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupClaim {
    /// `herald_core::Dedup::key_for` of the event.
    pub key: String,
    pub window: Duration,
}

/// What became of one event handed to [`crate::Store::accept`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Accepted {
    /// Stored now, with its deliveries; `suppressed` lists those stored as `suppressed`
    /// (duplicates inside their dedup window), which are not to be sent.
    New {
        id: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        suppressed: Vec<String>,
        /// Stored `grouped` (folded into a digest): not to be dispatched.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        folded: Vec<String>,
        /// Digest deliveries this event's deliveries opened, with when they fall due.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        opened: Vec<OpenedDigest>,
    },
    /// The team already had an event with this id (stored earlier, or earlier in the same
    /// batch); nothing was stored.
    Duplicate { id: String },
}

/// A digest delivery that [`crate::Store::accept`] opened: pending, not held, due at `due`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenedDigest {
    pub id: String,
    pub channel: String,
    pub due: Timestamp,
}

/// What a digest delivery carries, read when it is attempted
/// ([`crate::Store::digest_members`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DigestMembers {
    /// The first members' events (at most the `limit` asked for), in the order they were
    /// folded.
    pub events: Vec<Event>,
    /// How many members the digest has in all.
    pub total: u64,
    /// When the first and the last member were folded (accepted).
    pub first_at: Timestamp,
    pub last_at: Timestamp,
}

impl Accepted {
    /// The event id, whichever the result.
    pub fn id(&self) -> &str {
        match self {
            Accepted::New { id, .. } | Accepted::Duplicate { id } => id,
        }
    }

    pub fn is_duplicate(&self) -> bool {
        matches!(self, Accepted::Duplicate { .. })
    }
}

/// Where a delivery stands. `pending` with `attempts > 0` means it is waiting to be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt, for a retry, or being attempted right now.
    Pending,
    Succeeded,
    /// Given up on: retries exhausted or a permanent failure.
    Dead,
    /// Not attempted, on purpose (e.g. its channel is disabled).
    Skipped,
    /// Not sent: a repeat of a delivery sent less than its subscription's
    /// `dedup_window` ago (`duplicate_of` names it).
    Suppressed,
    /// Not sent: a silence matched it (`silence_id` names it), at ingest or before an
    /// attempt.
    Silenced,
    /// Its channel no longer exists for its team (a reload renamed or removed it): held,
    /// not attempted and using no retry budget, until a channel of that name is back
    /// ([`crate::Store::reattach_orphans`]) or it is moved ([`crate::Store::move_deliveries`]).
    Orphaned,
    /// Not sent on its own: folded into a digest (grouping or throttle), the delivery
    /// `digest_id`, which carries it. Finished at ingest, never due, never retried alone.
    Grouped,
}

impl DeliveryStatus {
    /// Every status, for error messages.
    pub const NAMES: &'static str =
        "pending, succeeded, dead, skipped, suppressed, silenced, orphaned or grouped";

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Suppressed => "suppressed",
            DeliveryStatus::Silenced => "silenced",
            DeliveryStatus::Orphaned => "orphaned",
            DeliveryStatus::Grouped => "grouped",
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(DeliveryStatus::Pending),
            "succeeded" => Ok(DeliveryStatus::Succeeded),
            "dead" => Ok(DeliveryStatus::Dead),
            "skipped" => Ok(DeliveryStatus::Skipped),
            "suppressed" => Ok(DeliveryStatus::Suppressed),
            "silenced" => Ok(DeliveryStatus::Silenced),
            "orphaned" => Ok(DeliveryStatus::Orphaned),
            "grouped" => Ok(DeliveryStatus::Grouped),
            other => Err(format!(
                "unknown delivery status `{other}`; expected {}",
                DeliveryStatus::NAMES
            )),
        }
    }
}

/// One delivery of one event to one channel, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    pub id: String,
    pub event_id: String,
    pub team: TeamId,
    pub channel: String,
    pub subscription: u32,
    /// The subscription's stable name; `None` for deliveries stored by an older herald.
    pub subscription_name: Option<String>,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts that do not count against the current retry budget: those made before an
    /// operator last retried the delivery after it was dead or skipped, plus those that
    /// failed for a channel-wide reason ([`Next::Wait`]). The retry schedule applies to the
    /// other attempts, so a manual retry gets the whole schedule again.
    pub budget_start: u32,
    /// When the next attempt is due; set only while `pending`.
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub last_status_code: Option<u16>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// For a `silenced` delivery: the silence that stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_id: Option<String>,
    /// For a `suppressed` delivery: the sent delivery whose dedup window it fell in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// For a `grouped` delivery: the digest delivery that carries it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_id: Option<String>,
    /// For a digest delivery: why it groups (the claim's kind). A `grouped` delivery has
    /// its digest's kind here too (why it was folded); [`DeliveryRecord::is_digest`] tells
    /// the two apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<DigestKind>,
}

impl DeliveryRecord {
    /// Whether this delivery is a digest: one message standing for the `grouped`
    /// deliveries that name it ([`crate::Store::digest_members`]).
    pub fn is_digest(&self) -> bool {
        self.digest.is_some() && self.digest_id.is_none()
    }

    /// Why a delivery was not sent on its own, in words, for the suppressed, silenced and
    /// grouped ones.
    pub fn reason(&self) -> Option<String> {
        match (self.status, &self.silence_id, &self.duplicate_of) {
            (DeliveryStatus::Silenced, Some(silence), _) => Some(format!("silenced by {silence}")),
            (DeliveryStatus::Suppressed, _, Some(original)) => Some(format!(
                "duplicate of {original} (inside its subscription's dedup_window)"
            )),
            (DeliveryStatus::Grouped, _, _) => {
                let digest = self.digest_id.as_deref()?;
                Some(match self.digest {
                    Some(DigestKind::Throttle { .. }) => {
                        format!("folded by throttle into digest {digest}")
                    }
                    _ => format!("grouped into digest {digest}"),
                })
            }
            _ => None,
        }
    }
}

/// The outcome of one attempt, as a worker reports it to [`crate::Store::finish`]. The
/// store numbers attempts itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    pub started_at: Timestamp,
    pub duration_ms: u64,
    /// HTTP status (or the channel's equivalent), if the remote answered.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The start of the remote's answer; the caller truncates it (4 KiB) and strips secrets.
    pub response: Option<String>,
}

/// One recorded attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptRecord {
    /// 1 for the first attempt.
    pub number: u32,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
    /// Made because an operator asked (`retry`), not by the schedule.
    pub manual: bool,
}

/// Proof that a worker holds a claimed delivery; finishing or releasing it needs the token.
///
/// Deliberately not `Serialize`: it never leaves the process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken(String);

impl LeaseToken {
    /// A fresh random token.
    pub(crate) fn generate() -> LeaseToken {
        LeaseToken(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Rebuilds a token from its text, e.g. one kept by an out-of-process worker.
    pub fn from_string(token: String) -> LeaseToken {
        LeaseToken(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A delivery handed to a worker, with its event and the lease it holds it under.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The delivery as it was when claimed (`attempts` counts earlier attempts).
    pub delivery: DeliveryRecord,
    pub event: Event,
    pub lease: LeaseToken,
    /// When the lease runs out and the delivery becomes claimable by others again.
    pub lease_until: Timestamp,
}

/// One attempt's outcome for [`crate::Store::finish_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub delivery_id: String,
    pub lease: LeaseToken,
    pub attempt: NewAttempt,
    pub next: Next,
    pub now: Timestamp,
}

/// What a delivery becomes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    /// Stays pending, due again at this time.
    RetryAt(Timestamp),
    Dead,
    Skipped,
    /// Stays pending, due again at this time, and the attempt does not count against the
    /// retry budget (`budget_start` moves up with it): the channel as a whole failed
    /// (refused credentials, throttled without a hint), not this message.
    Wait(Timestamp),
}

/// Which deliveries [`crate::Store::move_deliveries`] re-points, by their status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveStatus {
    /// Waiting for a channel that no longer exists.
    Orphaned,
    /// Given up on (they get a fresh retry budget, as with a manual retry).
    Dead,
}

impl MoveStatus {
    pub fn as_status(self) -> DeliveryStatus {
        match self {
            MoveStatus::Orphaned => DeliveryStatus::Orphaned,
            MoveStatus::Dead => DeliveryStatus::Dead,
        }
    }
}

impl FromStr for MoveStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "orphaned" => Ok(MoveStatus::Orphaned),
            "dead" => Ok(MoveStatus::Dead),
            other => Err(format!(
                "deliveries that are `{other}` cannot be moved; expected orphaned or dead"
            )),
        }
    }
}

/// The deliveries of one team that [`crate::Store::move_deliveries`] re-points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveFilter {
    pub team: TeamId,
    /// The channel name they have now (usually one that no longer exists).
    pub from_channel: String,
    /// The team's channel they are to go to.
    pub to_channel: String,
    pub status: MoveStatus,
}

/// Which deliveries [`crate::Store::list_deliveries`] returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// The caller's scope: `None` for an admin, who sees every team.
    pub team: Option<TeamId>,
    pub status: Option<DeliveryStatus>,
    pub channel: Option<String>,
    pub event_type: Option<String>,
    pub event_id: Option<String>,
    /// Page size, clamped to `1..=MAX_PAGE_SIZE`.
    pub limit: usize,
    /// The `next_cursor` of the previous page; `None` for the first page.
    pub cursor: Option<String>,
}

impl Default for DeliveryFilter {
    fn default() -> Self {
        DeliveryFilter {
            team: None,
            status: None,
            channel: None,
            event_type: None,
            event_id: None,
            limit: DEFAULT_PAGE_SIZE,
            cursor: None,
        }
    }
}

/// Which deliveries a bulk replay ([`crate::Store::replay`]) takes, by their status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStatus {
    /// Given up on.
    Dead,
    /// Failed at their last attempt: dead, or pending and waiting for a retry (attempted
    /// at least once).
    Failed,
    /// Every delivery, succeeded ones included.
    All,
}

impl FromStr for ReplayStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dead" => Ok(ReplayStatus::Dead),
            "failed" => Ok(ReplayStatus::Failed),
            "all" => Ok(ReplayStatus::All),
            other => Err(format!(
                "unknown replay status `{other}`; expected dead, failed or all"
            )),
        }
    }
}

/// The deliveries of one team that a bulk replay re-queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFilter {
    pub team: TeamId,
    /// Only this channel's; all of the team's when `None`.
    pub channel: Option<String>,
    /// Created (their event accepted) at or after this time…
    pub since: Timestamp,
    /// …and before this one, when given.
    pub until: Option<Timestamp>,
    pub status: ReplayStatus,
}

/// One page of deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    /// Pass this as [`DeliveryFilter::cursor`] to get the next page; `None` on the last page.
    /// Opaque: its format may change.
    pub next_cursor: Option<String>,
}

/// A channel of a team that the engine must not (or not yet) deliver to, kept across
/// restarts: disabled after a `410 Gone`, or paused by throttling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelState {
    pub team: TeamId,
    pub channel: String,
    /// Disabled until an operator clears the state.
    pub disabled: bool,
    /// Paused until this time (e.g. a `Retry-After`), then usable again.
    pub paused_until: Option<Timestamp>,
    /// Why, in words for the operator.
    pub reason: Option<String>,
    /// When this state was set.
    pub since: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_in_snake_case() {
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Dead,
            DeliveryStatus::Skipped,
            DeliveryStatus::Suppressed,
            DeliveryStatus::Silenced,
            DeliveryStatus::Orphaned,
            DeliveryStatus::Grouped,
        ] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.as_str());
            assert_eq!(status.as_str().parse::<DeliveryStatus>(), Ok(status));
        }
        assert!("retrying".parse::<DeliveryStatus>().is_err());
    }

    #[test]
    fn accepted_serialises_with_its_result() {
        let json = serde_json::to_value(Accepted::Duplicate { id: "e1".into() }).unwrap();
        assert_eq!(json, serde_json::json!({"result": "duplicate", "id": "e1"}));
    }

    #[test]
    fn lease_tokens_are_random() {
        assert_ne!(LeaseToken::generate(), LeaseToken::generate());
        assert_eq!(LeaseToken::generate().as_str().len(), 32);
    }
}

/// What [`crate::Store::prune`] may remove, by age (measured back from its `now`) and,
/// optionally, by the store's size. Pending deliveries and their events are never removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneLimits {
    /// Events whose deliveries all succeeded or were skipped (or that have none), accepted
    /// longer ago than this, go with their deliveries and attempts.
    pub events: Duration,
    /// Attempt records of succeeded or skipped deliveries that finished longer ago.
    pub attempts: Duration,
    /// Dead deliveries (with their attempts) that died longer ago.
    pub dead: Duration,
    /// Above this many bytes of live data, the oldest finished events go, whatever their
    /// age.
    pub max_store_size: Option<u64>,
    /// Dedup windows opened longer ago than this are forgotten: the longest
    /// `dedup_window` configured (zero when none is).
    pub dedup: Duration,
}

/// Rows one [`crate::Store::prune`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub events: u64,
    /// Deliveries removed, dead letters included.
    pub deliveries: u64,
    /// Of those, dead letters past their age.
    pub dead: u64,
    pub attempts: u64,
    /// Dedup windows forgotten (opened longer ago than the longest window), and silences
    /// that ended longer ago than the events' age.
    pub dedup_windows: u64,
    pub silences: u64,
    /// Grouping and throttle rows forgotten: groups and windows with no open digest whose
    /// interval (or period) is over.
    pub fold_rows: u64,
    /// Whether the store was still above `max_store_size` when the call began.
    pub over_size: bool,
    /// Whether a batch limit was reached, so another call may remove more.
    pub more: bool,
}

impl PruneReport {
    /// Rows removed, of every kind.
    pub fn removed(&self) -> u64 {
        self.events
            + self.deliveries
            + self.attempts
            + self.dedup_windows
            + self.silences
            + self.fold_rows
    }
}

/// The store's size and contents, for the metrics and the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Bytes the store occupies (live data and free pages not yet given back).
    pub size_bytes: u64,
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending delivery was created; `None` when nothing is pending.
    pub oldest_pending: Option<Timestamp>,
}

/// A chat a bot was told had moved: a Telegram group upgraded to a supergroup
/// (`migrate_to_chat_id`). Kept per bot, by its public id (never its token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatMigration {
    pub from: i64,
    pub to: i64,
}

/// How far a delivery sent as several messages (a long Telegram message split in parts)
/// got: a retry resumes at part `delivered + 1` when the message still has `parts` parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitProgress {
    pub parts: u32,
    pub delivered: u32,
}

/// Which silences [`crate::Store::list_silences`] returns, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceFilter {
    /// The caller's scope: `None` for an admin, who sees every team.
    pub team: Option<TeamId>,
    /// Only silences in this state at `now`; all of them when `None`.
    pub state: Option<herald_core::SilenceState>,
    pub now: Timestamp,
}
