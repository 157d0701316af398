//! The SQL behind each PostgreSQL store operation, as plain functions of a connection or
//! transaction (the search path is the store's schema). Claims take rows with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other nodes never wait for, nor
//! take, each other's rows; finishes are one statement fenced by the lease token.
//!
//! Long on purpose, like the embedded store's `queries.rs`: every statement of this
//! backend next to the row decoding it shares, so a schema change is reviewed in one file.

use deadpool_postgres::GenericClient;
use herald_core::{Event, TeamId, Timestamp};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::codec::{
    clamp_limit, decode_cursor, decode_digest_kind, decode_event, encode_cursor,
    encode_digest_kind, encode_event, nanos, timestamp,
};
use crate::error::StoreError;
use crate::model::{
    Accepted, AttemptRecord, ChannelState, Claimed, DeliveryFilter, DeliveryPage, DeliveryRecord,
    DeliveryStatus, Finish, LeaseToken, MAX_PAGE_SIZE, MoveFilter, NewAttempt, NewDelivery, Next,
    OpenedDigest, ReplayFilter, ReplayStatus,
};

/// The columns [`delivery_from_row`] reads, in its order; select them first.
const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.team_id, d.channel, d.subscription, \
     d.event_type, d.status, d.attempts, d.next_attempt_at, d.last_error, \
     d.last_status_code, d.created_at, d.updated_at, d.budget_start, d.subscription_name, \
     d.silence_id, d.duplicate_of, d.digest_id, d.digest_kind";
/// How many columns [`DELIVERY_COLUMNS`] names.
const DELIVERY_COLUMN_COUNT: usize = 19;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn rows(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

pub(super) async fn row_opt(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

pub(super) async fn execute(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

pub(super) fn corrupt(what: &str, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        message: message.into(),
    }
}

pub(super) fn small<T: TryFrom<i64>>(what: &str, n: i64) -> Result<T, StoreError> {
    T::try_from(n).map_err(|_| corrupt(what, format!("{n} is out of range")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn delivery_from_row(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let team: String = row.try_get(2)?;
    let status: String = row.try_get(6)?;
    let status_code: Option<i64> = row.try_get(10)?;
    Ok(DeliveryRecord {
        id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        team: TeamId::parse(&team).map_err(|m| corrupt("delivery team", m))?,
        channel: row.try_get(3)?,
        subscription: small("subscription", row.try_get(4)?)?,
        event_type: row.try_get(5)?,
        status: status
            .parse()
            .map_err(|m: String| corrupt("delivery status", m))?,
        attempts: small("attempts", row.try_get(7)?)?,
        next_attempt_at: row.try_get::<_, Option<i64>>(8)?.map(timestamp),
        last_error: row.try_get(9)?,
        last_status_code: status_code
            .map(|code| small("status code", code))
            .transpose()?,
        created_at: timestamp(row.try_get(11)?),
        updated_at: timestamp(row.try_get(12)?),
        budget_start: small("budget_start", row.try_get(13)?)?,
        subscription_name: row.try_get(14)?,
        silence_id: row.try_get(15)?,
        duplicate_of: row.try_get(16)?,
        digest_id: row.try_get(17)?,
        digest: row
            .try_get::<_, Option<String>>(18)?
            .map(|kind| decode_digest_kind(&kind).map_err(|m| corrupt("digest kind", m)))
            .transpose()?,
    })
}

fn attempt_from_row(row: &Row) -> Result<AttemptRecord, StoreError> {
    let status_code: Option<i64> = row.try_get(3)?;
    Ok(AttemptRecord {
        number: small("attempt number", row.try_get(0)?)?,
        started_at: timestamp(row.try_get(1)?),
        duration_ms: count(row.try_get(2)?),
        status_code: status_code
            .map(|code| small("status code", code))
            .transpose()?,
        error: row.try_get(4)?,
        response: row.try_get(5)?,
        manual: row.try_get(6)?,
    })
}

fn channel_state_from_row(row: &Row) -> Result<ChannelState, StoreError> {
    let team: String = row.try_get(0)?;
    Ok(ChannelState {
        team: TeamId::parse(&team).map_err(|m| corrupt("channel state team", m))?,
        channel: row.try_get(1)?,
        disabled: row.try_get(2)?,
        paused_until: row.try_get::<_, Option<i64>>(3)?.map(timestamp),
        reason: row.try_get(4)?,
        since: timestamp(row.try_get(5)?),
    })
}

/// Excluded `(team, channel)` pairs as two parallel arrays, for `unnest($a, $b)`.
fn excluded(exclude_channels: &[(TeamId, String)]) -> (Vec<String>, Vec<String>) {
    exclude_channels
        .iter()
        .map(|(team, channel)| (team.as_str().to_owned(), channel.clone()))
        .unzip()
}

/// Stores a batch of events and their deliveries inside `tx` (the caller commits):
/// two statements whatever the batch's size, plus one per deduplicated delivery.
/// `ON CONFLICT DO NOTHING` on `(id, team_id)` makes a repeat — from this batch, an
/// earlier one, or another node — a duplicate. A silenced delivery is stored finished; a
/// deduplicated one is decided in batch order on its window's row (`noise::claim_window`),
/// so one key of concurrent batches on several nodes is sent once; a folded one likewise
/// on its group's or throttle window's row (`fold::fold`), and the digests it opens are
/// stored with the batch's deliveries.
pub(super) async fn accept(
    tx: &impl GenericClient,
    batch: &[(Event, Vec<NewDelivery>)],
    now: Timestamp,
) -> Result<Vec<Accepted>, StoreError> {
    let now = nanos(now);
    let mut ids = Vec::with_capacity(batch.len());
    let mut teams = Vec::with_capacity(batch.len());
    let mut types = Vec::with_capacity(batch.len());
    let mut bodies = Vec::with_capacity(batch.len());
    for (event, deliveries) in batch {
        if deliveries.iter().any(|d| d.held) {
            return Err(StoreError::Unsupported(
                "a shared store holds no deliveries in memory: new deliveries must not be held"
                    .into(),
            ));
        }
        ids.push(event.id.clone());
        teams.push(event.team_id.as_str().to_owned());
        types.push(event.event.clone());
        bodies.push(encode_event(event)?);
    }
    let inserted = rows(
        tx,
        "INSERT INTO events (id, team_id, event_type, body, accepted_at)
         SELECT id, team_id, event_type, body, $5
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                WITH ORDINALITY AS t (id, team_id, event_type, body, n)
          ORDER BY n
         ON CONFLICT (id, team_id) DO NOTHING
         RETURNING id, team_id, seq",
        &[&ids, &teams, &types, &bodies, &now],
    )
    .await?;
    let mut new: std::collections::HashMap<(String, String), i64> = inserted
        .iter()
        .map(|row| Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?)))
        .collect::<Result<_, StoreError>>()?;

    let mut results = Vec::with_capacity(batch.len());
    let mut d_ids = Vec::new();
    let mut d_event_seqs = Vec::new();
    let mut d_teams = Vec::new();
    let mut d_event_ids = Vec::new();
    let mut d_types = Vec::new();
    let mut d_channels = Vec::new();
    let mut d_subscriptions = Vec::new();
    let mut d_names = Vec::new();
    let mut d_statuses = Vec::new();
    let mut d_silences = Vec::new();
    let mut d_originals = Vec::new();
    let mut d_dues: Vec<Option<i64>> = Vec::new();
    let mut d_digest_ids: Vec<Option<String>> = Vec::new();
    let mut d_digest_kinds: Vec<Option<String>> = Vec::new();
    let mut opened_here = std::collections::HashSet::new();
    for (event, deliveries) in batch {
        // The first occurrence in the batch takes the row; a later one is a duplicate.
        let key = (event.id.clone(), event.team_id.as_str().to_owned());
        let Some(seq) = new.remove(&key) else {
            results.push(Accepted::Duplicate {
                id: event.id.clone(),
            });
            continue;
        };
        let mut suppressed = Vec::new();
        let mut folded = Vec::new();
        let mut opened = Vec::new();
        for d in deliveries {
            let (mut status, original) = match (&d.silence, &d.dedup) {
                (Some(_), _) => (DeliveryStatus::Silenced, None),
                (None, Some(claim)) => {
                    let subscription = d.subscription_name.as_deref().unwrap_or("");
                    match super::noise::claim_window(tx, &key.1, subscription, claim, &d.id, now)
                        .await?
                    {
                        Some(original) => {
                            suppressed.push(d.id.clone());
                            (DeliveryStatus::Suppressed, Some(original))
                        }
                        None => (DeliveryStatus::Pending, None),
                    }
                }
                (None, None) => (DeliveryStatus::Pending, None),
            };
            // Neither silenced nor suppressed: the delivery may be folded into a digest.
            let mut digest = None;
            if let (DeliveryStatus::Pending, Some(claim)) = (status, &d.fold) {
                let subscription = d.subscription_name.as_deref().unwrap_or("");
                let into =
                    super::fold::fold(tx, &key.1, subscription, claim, now, &mut opened_here)
                        .await?;
                if let super::fold::Folded::Into {
                    digest_id,
                    opened: due,
                } = into
                {
                    let kind = Some(encode_digest_kind(claim.kind())?);
                    if let Some(due) = due {
                        // The digest's row, before its first member's.
                        d_statuses.push(DeliveryStatus::Pending.as_str());
                        d_silences.push(None);
                        d_originals.push(None);
                        d_dues.push(Some(due));
                        d_digest_ids.push(None);
                        d_digest_kinds.push(kind.clone());
                        d_ids.push(digest_id.clone());
                        d_event_seqs.push(seq);
                        d_teams.push(key.1.clone());
                        d_event_ids.push(event.id.clone());
                        d_types.push(event.event.clone());
                        d_channels.push(d.channel.clone());
                        d_subscriptions.push(i64::from(d.subscription));
                        d_names.push(d.subscription_name.clone());
                        opened.push(OpenedDigest {
                            id: digest_id.clone(),
                            channel: d.channel.clone(),
                            due: timestamp(due),
                        });
                    }
                    status = DeliveryStatus::Grouped;
                    folded.push(d.id.clone());
                    digest = Some((digest_id, kind));
                }
            }
            let (digest_id, digest_kind) = digest.unzip();
            d_dues.push(None);
            d_digest_ids.push(digest_id);
            d_digest_kinds.push(digest_kind.flatten());
            d_statuses.push(status.as_str());
            d_silences.push(d.silence.clone());
            d_originals.push(original);
            d_ids.push(d.id.clone());
            d_event_seqs.push(seq);
            d_teams.push(key.1.clone());
            d_event_ids.push(event.id.clone());
            d_types.push(event.event.clone());
            d_channels.push(d.channel.clone());
            d_subscriptions.push(i64::from(d.subscription));
            d_names.push(d.subscription_name.clone());
        }
        results.push(Accepted::New {
            id: event.id.clone(),
            suppressed,
            folded,
            opened,
        });
    }
    if !d_ids.is_empty() {
        execute(
            tx,
            "INSERT INTO deliveries (id, event_seq, team_id, event_id, event_type, channel,
                 subscription, subscription_name, status, attempts, next_attempt_at, due_at,
                 created_at, updated_at, silence_id, duplicate_of, digest_id, digest_kind)
             SELECT id, event_seq, team_id, event_id, event_type, channel, subscription,
                    subscription_name, status, 0,
                    -- finished at ingest (silenced, suppressed, grouped): never due; a
                    -- digest is due at its flush time
                    CASE WHEN status = 'pending' THEN coalesce(due, $9::int8) END,
                    CASE WHEN status = 'pending' THEN coalesce(due, $9::int8) END,
                    $9, $9, silence_id, duplicate_of, digest_id, digest_kind
               FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                           $6::text[], $7::int8[], $8::text[], $10::text[], $11::text[],
                           $12::text[], $13::int8[], $14::text[], $15::text[])
                    WITH ORDINALITY AS t (id, event_seq, team_id, event_id, event_type,
                                          channel, subscription, subscription_name, status,
                                          silence_id, duplicate_of, due, digest_id,
                                          digest_kind, n)
              ORDER BY n",
            &[
                &d_ids,
                &d_event_seqs,
                &d_teams,
                &d_event_ids,
                &d_types,
                &d_channels,
                &d_subscriptions,
                &d_names,
                &now,
                &d_statuses,
                &d_silences,
                &d_originals,
                &d_dues,
                &d_digest_ids,
                &d_digest_kinds,
            ],
        )
        .await?;
    }
    Ok(results)
}

/// Leases up to `limit` due deliveries, each under a fresh random token, until
/// `lease_until`. `SKIP LOCKED`: rows another node is claiming right now are not waited
/// for; a row whose lease ran out (`due_at` = its `lease_until`) is due again.
pub(super) async fn claim_due(
    tx: &impl GenericClient,
    now: Timestamp,
    limit: usize,
    lease_until: Timestamp,
    exclude_channels: &[(TeamId, String)],
) -> Result<Vec<Claimed>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let now = nanos(now);
    let until = nanos(lease_until);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (teams, channels) = excluded(exclude_channels);
    let claimed = rows(
        tx,
        &format!(
            "WITH due AS (
                 SELECT seq, due_at FROM deliveries
                  WHERE status = 'pending' AND due_at <= $1
                    AND (team_id, channel) NOT IN
                        (SELECT t, c FROM unnest($3::text[], $4::text[]) AS x (t, c))
                  ORDER BY due_at, seq
                  LIMIT $2
                  FOR UPDATE SKIP LOCKED)
             UPDATE deliveries d
                SET lease_token = replace(gen_random_uuid()::text, '-', ''),
                    lease_until = $5, due_at = $5,
                    -- claiming seals a digest: no member joins once an attempt may start
                    sealed = true
               FROM due, events e
              WHERE d.seq = due.seq AND e.seq = d.event_seq
             RETURNING {DELIVERY_COLUMNS}, d.seq, due.due_at, e.body, e.accepted_at,
                       d.lease_token"
        ),
        &[&now, &limit, &teams, &channels, &until],
    )
    .await?;
    let mut out = Vec::with_capacity(claimed.len());
    for row in &claimed {
        let delivery = delivery_from_row(row)?;
        let seq: i64 = row.try_get(DELIVERY_COLUMN_COUNT)?;
        let was_due: i64 = row.try_get(DELIVERY_COLUMN_COUNT + 1)?;
        let body: String = row.try_get(DELIVERY_COLUMN_COUNT + 2)?;
        let accepted_at: i64 = row.try_get(DELIVERY_COLUMN_COUNT + 3)?;
        let lease: String = row.try_get(DELIVERY_COLUMN_COUNT + 4)?;
        match decode_event(&body, timestamp(accepted_at)) {
            Ok(event) => out.push((
                (was_due, seq),
                Claimed {
                    delivery,
                    event,
                    lease: LeaseToken::from_string(lease),
                    lease_until,
                },
            )),
            Err(err) => {
                // A row that can never be sent must not block the queue by failing every
                // claim: give up on it, with the reason for the operator.
                execute(
                    tx,
                    "UPDATE deliveries SET status = 'dead', next_attempt_at = NULL,
                         due_at = NULL, lease_token = NULL, lease_until = NULL,
                         last_error = $2, updated_at = $3
                     WHERE seq = $1",
                    &[&seq, &err.to_string(), &now],
                )
                .await?;
            }
        }
    }
    // Oldest due first, as the trait promises (RETURNING has no order).
    out.sort_by_key(|(order, _)| *order);
    Ok(out.into_iter().map(|(_, claimed)| claimed).collect())
}

/// The earliest `due_at` of a pending delivery that nobody leases, outside the excluded
/// channels (a retry's time). Leased rows are left out, as the trait promises: the lease
/// of a node that died is found by the shared dispatcher's periodic claim instead.
pub(super) async fn next_due(
    c: &impl GenericClient,
    exclude_channels: &[(TeamId, String)],
) -> Result<Option<Timestamp>, StoreError> {
    let (teams, channels) = excluded(exclude_channels);
    let row = row_opt(
        c,
        "SELECT due_at FROM deliveries
          WHERE status = 'pending' AND due_at IS NOT NULL AND lease_token IS NULL
            AND (team_id, channel) NOT IN
                (SELECT t, c FROM unnest($1::text[], $2::text[]) AS x (t, c))
          ORDER BY due_at LIMIT 1",
        &[&teams, &channels],
    )
    .await?;
    Ok(row
        .map(|row| row.try_get::<_, i64>(0))
        .transpose()?
        .map(timestamp))
}

/// Records one attempt and the delivery's next state in one statement, only while the
/// delivery is pending under `lease` (the row lock makes a concurrent takeover wait, then
/// see the new token). `Ok(false)`: fenced off, nothing changed.
async fn finish_fenced(c: &impl GenericClient, finish: &Finish) -> Result<bool, StoreError> {
    let (status, next_attempt_at) = match finish.next {
        Next::Succeeded => (DeliveryStatus::Succeeded, None),
        Next::RetryAt(at) | Next::Wait(at) => (DeliveryStatus::Pending, Some(nanos(at))),
        Next::Dead => (DeliveryStatus::Dead, None),
        Next::Skipped => (DeliveryStatus::Skipped, None),
    };
    // A channel-wide failure is not the message's: its attempt leaves the budget alone.
    let uncounted = i64::from(matches!(finish.next, Next::Wait(_)));
    let attempt: &NewAttempt = &finish.attempt;
    let duration = i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX);
    let status_code = attempt.status_code.map(i64::from);
    let inserted = execute(
        c,
        "WITH old AS (
             SELECT seq, attempts, budget_start, manual_next FROM deliveries
              WHERE id = $1 AND status = 'pending' AND lease_token = $2
              FOR UPDATE),
         upd AS (
             UPDATE deliveries d
                SET status = $3, attempts = old.attempts + 1, next_attempt_at = $4,
                    due_at = $4, lease_token = NULL, lease_until = NULL, manual_next = false,
                    last_error = $5, last_status_code = $6, updated_at = $7,
                    budget_start = old.budget_start + $11
               FROM old WHERE d.seq = old.seq
             RETURNING d.seq, d.attempts, old.manual_next)
         INSERT INTO attempts (delivery_seq, number, started_at, duration_ms, status_code,
                               error, response, manual)
         SELECT seq, attempts, $8, $9, $6, $5, $10, manual_next FROM upd",
        &[
            &finish.delivery_id,
            &finish.lease.as_str(),
            &status.as_str(),
            &next_attempt_at,
            &attempt.error,
            &status_code,
            &nanos(finish.now),
            &nanos(attempt.started_at),
            &duration,
            &attempt.response,
            &uncounted,
        ],
    )
    .await?;
    Ok(inserted == 1)
}

/// Why a fenced statement changed nothing: the delivery is gone, or its lease is not ours.
async fn fenced_off(c: &impl GenericClient, delivery_id: &str) -> Result<StoreError, StoreError> {
    let exists = row_opt(c, "SELECT 1 FROM deliveries WHERE id = $1", &[&delivery_id]).await?;
    Ok(match exists {
        None => StoreError::NotFound,
        Some(_) => StoreError::LeaseLost {
            delivery: delivery_id.to_owned(),
        },
    })
}

/// Records many attempts in `tx`, pipelined on its connection; a fenced-off one is
/// reported and changes nothing. Any other error fails the whole request.
pub(super) async fn finish_many(
    tx: &impl GenericClient,
    finishes: &[Finish],
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let applied =
        futures_util::future::join_all(finishes.iter().map(|f| finish_fenced(tx, f))).await;
    let mut results = Vec::with_capacity(finishes.len());
    for (finish, applied) in finishes.iter().zip(applied) {
        if applied? {
            results.push(Ok(()));
        } else {
            results.push(Err(fenced_off(tx, &finish.delivery_id).await?));
        }
    }
    Ok(results)
}

pub(super) async fn release(
    c: &impl GenericClient,
    delivery_id: &str,
    lease: &LeaseToken,
) -> Result<(), StoreError> {
    // It was due when claimed, so its scheduled time is already past: due at once.
    let changed = execute(
        c,
        "UPDATE deliveries SET lease_token = NULL, lease_until = NULL, due_at = next_attempt_at
          WHERE id = $1 AND status = 'pending' AND lease_token = $2",
        &[&delivery_id, &lease.as_str()],
    )
    .await?;
    if changed == 1 {
        Ok(())
    } else {
        Err(fenced_off(c, delivery_id).await?)
    }
}

/// Finishes a claimed delivery as silenced by `silence_id`, without an attempt; fenced by
/// its lease like a finish.
pub(super) async fn finish_silenced(
    c: &impl GenericClient,
    delivery_id: &str,
    lease: &LeaseToken,
    silence_id: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let changed = execute(
        c,
        "UPDATE deliveries
            SET status = 'silenced', silence_id = $3, next_attempt_at = NULL, due_at = NULL,
                lease_token = NULL, lease_until = NULL, manual_next = false, updated_at = $4
          WHERE id = $1 AND status = 'pending' AND lease_token = $2",
        &[&delivery_id, &lease.as_str(), &silence_id, &nanos(now)],
    )
    .await?;
    if changed == 1 {
        Ok(())
    } else {
        Err(fenced_off(c, delivery_id).await?)
    }
}

/// Holds a leased delivery as orphaned (see `Store::orphan`): not due, no attempt, its
/// budget untouched; fenced by its lease like a finish.
pub(super) async fn orphan(
    c: &impl GenericClient,
    delivery_id: &str,
    lease: &LeaseToken,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let changed = execute(
        c,
        "UPDATE deliveries
            SET status = 'orphaned', next_attempt_at = NULL, due_at = NULL,
                lease_token = NULL, lease_until = NULL, last_error = $3, updated_at = $4
          WHERE id = $1 AND status = 'pending' AND lease_token = $2",
        &[&delivery_id, &lease.as_str(), &reason, &nanos(now)],
    )
    .await?;
    if changed == 1 {
        Ok(())
    } else {
        Err(fenced_off(c, delivery_id).await?)
    }
}

/// Orphans of the given channels become pending and due at `now` (`deliveries_orphaned`),
/// in one statement over the pairs.
pub(super) async fn reattach_orphans(
    c: &impl GenericClient,
    channels: &[(TeamId, String)],
    now: Timestamp,
) -> Result<u64, StoreError> {
    if channels.is_empty() {
        return Ok(0);
    }
    let (teams, names) = excluded(channels);
    execute(
        c,
        "UPDATE deliveries
            SET status = 'pending', next_attempt_at = $3, due_at = $3, updated_at = $3
          WHERE status = 'orphaned'
            AND (team_id, channel) IN
                (SELECT t, c FROM unnest($1::text[], $2::text[]) AS x (t, c))",
        &[&teams, &names, &nanos(now)],
    )
    .await
}

/// Re-points a team's deliveries of one channel and status to another channel, due now.
/// A dead one starts a fresh budget, as a manual retry does; an orphan's is untouched.
pub(super) async fn move_deliveries(
    c: &impl GenericClient,
    filter: &MoveFilter,
    now: Timestamp,
) -> Result<u64, StoreError> {
    execute(
        c,
        "UPDATE deliveries
            SET channel = $3, status = 'pending', next_attempt_at = $5, due_at = $5,
                lease_token = NULL, lease_until = NULL, manual_next = true, updated_at = $5,
                budget_start = CASE WHEN status = 'dead' THEN attempts ELSE budget_start END
          WHERE team_id = $1 AND channel = $2 AND status = $4",
        &[
            &filter.team.as_str(),
            &filter.from_channel,
            &filter.to_channel,
            &filter.status.as_status().as_str(),
            &nanos(now),
        ],
    )
    .await
}

pub(super) async fn retry_now(
    tx: &impl GenericClient,
    team: Option<&TeamId>,
    delivery_id: &str,
    now: Timestamp,
) -> Result<DeliveryRecord, StoreError> {
    let now = nanos(now);
    let team = team.map(TeamId::as_str);
    let row = row_opt(
        tx,
        "SELECT seq, status, lease_until, channel, digest_id FROM deliveries
          WHERE id = $1 AND ($2::text IS NULL OR team_id = $2)
          FOR UPDATE",
        &[&delivery_id, &team],
    )
    .await?
    .ok_or(StoreError::NotFound)?;
    let seq: i64 = row.try_get(0)?;
    let status: String = row.try_get(1)?;
    let lease_until: Option<i64> = row.try_get(2)?;
    let status: DeliveryStatus = status
        .parse()
        .map_err(|m: String| corrupt("delivery status", m))?;
    if status == DeliveryStatus::Orphaned {
        return Err(StoreError::Orphaned {
            delivery: delivery_id.to_owned(),
            channel: row.try_get(3)?,
        });
    }
    if matches!(status, DeliveryStatus::Succeeded | DeliveryStatus::Grouped) {
        // A grouped one is sent by its digest, which is what can be retried.
        return Err(StoreError::NotRetryable {
            delivery: delivery_id.to_owned(),
            status,
            digest: row.try_get(4)?,
        });
    }
    let in_flight = status == DeliveryStatus::Pending && lease_until.is_some_and(|t| t > now);
    if !in_flight {
        // Clearing the lease fences off a worker whose lease ran out but who is still
        // going. A delivery given up on starts a fresh retry budget; a pending one keeps
        // what is left of its own; either way the next attempt is recorded as manual. A
        // suppressed or silenced one is sent now (it forgets why it was not).
        let fresh_budget = status != DeliveryStatus::Pending;
        execute(
            tx,
            "UPDATE deliveries
                SET status = 'pending', next_attempt_at = $2, due_at = $2,
                    lease_token = NULL, lease_until = NULL, updated_at = $2, manual_next = true,
                    budget_start = CASE WHEN $3 THEN attempts ELSE budget_start END,
                    silence_id = NULL, duplicate_of = NULL
              WHERE seq = $1",
            &[&seq, &now, &fresh_budget],
        )
        .await?;
    }
    let row = rows(
        tx,
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.seq = $1"),
        &[&seq],
    )
    .await?;
    delivery_from_row(row.first().ok_or(StoreError::NotFound)?)
}

/// Counts, or re-queues, the deliveries a bulk replay selects (see `Store::replay`).
pub(super) async fn replay(
    c: &impl GenericClient,
    filter: &ReplayFilter,
    dry_run: bool,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let status = match filter.status {
        ReplayStatus::Dead => "status = 'dead'",
        ReplayStatus::Failed => "(status = 'dead' OR (status = 'pending' AND attempts > 0))",
        // Grouped deliveries are sent by their digests, which a replay selects instead.
        ReplayStatus::All => "status NOT IN ('orphaned', 'grouped')",
    };
    // $5 = now: a delivery being attempted (live lease) is left to its attempt.
    let selected = format!(
        "team_id = $1 AND ($2::text IS NULL OR channel = $2) AND created_at >= $3
         AND ($4::int8 IS NULL OR created_at < $4) AND {status}
         AND NOT (status = 'pending' AND lease_until IS NOT NULL AND lease_until > $5)"
    );
    let team = filter.team.as_str();
    let until = filter.until.map(nanos);
    let now = nanos(now);
    let params: Params<'_> = &[&team, &filter.channel, &nanos(filter.since), &until, &now];
    if dry_run {
        let row = rows(
            c,
            &format!("SELECT count(*) FROM deliveries WHERE {selected}"),
            params,
        )
        .await?;
        let n: i64 = row.first().map_or(Ok(0), |r| r.try_get(0))?;
        return Ok(count(n));
    }
    // Like retry_now: a finished delivery starts a fresh budget, a pending one keeps its
    // own; either way the next attempt is recorded as manual.
    execute(
        c,
        &format!(
            "UPDATE deliveries
                SET budget_start = CASE WHEN status = 'pending' THEN budget_start ELSE attempts END,
                    status = 'pending', next_attempt_at = $5, due_at = $5,
                    lease_token = NULL, lease_until = NULL, manual_next = true, updated_at = $5,
                    silence_id = NULL, duplicate_of = NULL
              WHERE {selected}"
        ),
        params,
    )
    .await
}

pub(super) async fn get_event(
    tx: &impl GenericClient,
    team: Option<&TeamId>,
    event_id: &str,
) -> Result<Option<(Event, Vec<DeliveryRecord>)>, StoreError> {
    let team = team.map(TeamId::as_str);
    let Some(row) = row_opt(
        tx,
        "SELECT seq, body, accepted_at FROM events
          WHERE id = $1 AND ($2::text IS NULL OR team_id = $2)
          ORDER BY seq LIMIT 1",
        &[&event_id, &team],
    )
    .await?
    else {
        return Ok(None);
    };
    let seq: i64 = row.try_get(0)?;
    let body: String = row.try_get(1)?;
    let event = decode_event(&body, timestamp(row.try_get(2)?))?;
    let deliveries = rows(
        tx,
        &format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE d.event_seq = $1 ORDER BY d.seq"
        ),
        &[&seq],
    )
    .await?
    .iter()
    .map(delivery_from_row)
    .collect::<Result<_, _>>()?;
    Ok(Some((event, deliveries)))
}

pub(super) async fn get_delivery(
    tx: &impl GenericClient,
    team: Option<&TeamId>,
    delivery_id: &str,
) -> Result<Option<(DeliveryRecord, Vec<AttemptRecord>)>, StoreError> {
    let team = team.map(TeamId::as_str);
    let Some(row) = row_opt(
        tx,
        &format!(
            "SELECT {DELIVERY_COLUMNS}, d.seq FROM deliveries d
              WHERE d.id = $1 AND ($2::text IS NULL OR d.team_id = $2)"
        ),
        &[&delivery_id, &team],
    )
    .await?
    else {
        return Ok(None);
    };
    let delivery = delivery_from_row(&row)?;
    let seq: i64 = row.try_get(DELIVERY_COLUMN_COUNT)?;
    let attempts = rows(
        tx,
        "SELECT number, started_at, duration_ms, status_code, error, response, manual
           FROM attempts WHERE delivery_seq = $1 ORDER BY number",
        &[&seq],
    )
    .await?
    .iter()
    .map(attempt_from_row)
    .collect::<Result<_, _>>()?;
    Ok(Some((delivery, attempts)))
}

pub(super) async fn list_deliveries(
    c: &impl GenericClient,
    filter: &DeliveryFilter,
) -> Result<DeliveryPage, StoreError> {
    // Only the conditions in use go into the SQL; every value is a bound parameter.
    let mut sql = format!("SELECT {DELIVERY_COLUMNS}, d.seq FROM deliveries d WHERE true");
    let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let mut condition = |part: &str, value: Box<dyn ToSql + Sync + Send>| {
        values.push(value);
        sql.push_str(&format!(" AND {part}${}", values.len()));
    };
    if let Some(team) = &filter.team {
        condition("d.team_id = ", Box::new(team.as_str().to_owned()));
    }
    if let Some(status) = filter.status {
        condition("d.status = ", Box::new(status.as_str()));
    }
    if let Some(channel) = &filter.channel {
        condition("d.channel = ", Box::new(channel.clone()));
    }
    if let Some(event_type) = &filter.event_type {
        condition("d.event_type = ", Box::new(event_type.clone()));
    }
    if let Some(event_id) = &filter.event_id {
        condition("d.event_id = ", Box::new(event_id.clone()));
    }
    if let Some(cursor) = &filter.cursor {
        condition("d.seq < ", Box::new(decode_cursor(cursor)?));
    }
    let limit = clamp_limit(filter.limit);
    // One more than a page, to learn whether another page follows.
    values.push(Box::new(limit + 1));
    sql.push_str(&format!(" ORDER BY d.seq DESC LIMIT ${}", values.len()));
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
    let found = rows(c, &sql, &params).await?;
    let mut page = found
        .iter()
        .map(|row| {
            Ok((
                delivery_from_row(row)?,
                row.try_get::<_, i64>(DELIVERY_COLUMN_COUNT)?,
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let size = usize::try_from(limit).unwrap_or(MAX_PAGE_SIZE);
    let next_cursor = if page.len() > size {
        page.truncate(size);
        page.last().map(|(_, seq)| encode_cursor(*seq))
    } else {
        None
    };
    Ok(DeliveryPage {
        deliveries: page.into_iter().map(|(delivery, _)| delivery).collect(),
        next_cursor,
    })
}

pub(super) async fn set_channel_state(
    c: &impl GenericClient,
    state: &ChannelState,
) -> Result<(), StoreError> {
    execute(
        c,
        "INSERT INTO channel_states (team_id, channel, disabled, paused_until, reason, since)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (team_id, channel) DO UPDATE SET
             disabled = excluded.disabled, paused_until = excluded.paused_until,
             reason = excluded.reason, since = excluded.since",
        &[
            &state.team.as_str(),
            &state.channel,
            &state.disabled,
            &state.paused_until.map(nanos),
            &state.reason,
            &nanos(state.since),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn clear_channel_state(
    c: &impl GenericClient,
    team: &TeamId,
    channel: &str,
) -> Result<bool, StoreError> {
    let removed = execute(
        c,
        "DELETE FROM channel_states WHERE team_id = $1 AND channel = $2",
        &[&team.as_str(), &channel],
    )
    .await?;
    Ok(removed > 0)
}

pub(super) async fn channel_states(
    c: &impl GenericClient,
    team: Option<&TeamId>,
) -> Result<Vec<ChannelState>, StoreError> {
    let team = team.map(TeamId::as_str);
    rows(
        c,
        "SELECT team_id, channel, disabled, paused_until, reason, since
           FROM channel_states WHERE $1::text IS NULL OR team_id = $1
          ORDER BY team_id, channel",
        &[&team],
    )
    .await?
    .iter()
    .map(channel_state_from_row)
    .collect()
}

/// One number from a one-row, one-column query.
pub(super) async fn number(
    c: &impl GenericClient,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, StoreError> {
    let found = rows(c, sql, params).await?;
    let n: Option<i64> = found.first().map_or(Ok(None), |row| row.try_get(0))?;
    Ok(n.map_or(0, count))
}

pub(super) async fn dead_count(
    c: &impl GenericClient,
    team: &TeamId,
    channel: &str,
) -> Result<u64, StoreError> {
    number(
        c,
        "SELECT count(*) FROM deliveries
          WHERE team_id = $1 AND status = 'dead' AND channel = $2",
        &[&team.as_str(), &channel],
    )
    .await
}

pub(super) async fn queue_depth(c: &impl GenericClient) -> Result<u64, StoreError> {
    number(
        c,
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        &[],
    )
    .await
}

/// Events in scope stored after `after_event_id`, in `seq` order. The caller holds the
/// events barrier (see `PostgresStore::events_after`), so no lower `seq` can still appear.
pub(super) async fn events_after(
    tx: &impl GenericClient,
    team: Option<&TeamId>,
    after_event_id: &str,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let team = team.map(TeamId::as_str);
    let after: i64 = row_opt(
        tx,
        "SELECT seq FROM events WHERE id = $1 AND ($2::text IS NULL OR team_id = $2)
          ORDER BY seq LIMIT 1",
        &[&after_event_id, &team],
    )
    .await?
    .ok_or(StoreError::NotFound)?
    .try_get(0)?;
    let limit = clamp_limit(limit);
    // Two statements, not `$2 IS NULL OR team_id = $2`, so a team's replay walks only its
    // own events (events_team_seq).
    let found = match team {
        Some(team) => {
            rows(
                tx,
                "SELECT body, accepted_at FROM events
                  WHERE team_id = $2 AND seq > $1 ORDER BY seq LIMIT $3",
                &[&after, &team, &limit],
            )
            .await?
        }
        None => {
            rows(
                tx,
                "SELECT body, accepted_at FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await?
        }
    };
    found
        .iter()
        .map(|row| {
            let body: String = row.try_get(0)?;
            decode_event(&body, timestamp(row.try_get(1)?))
        })
        .collect()
}
