//! The delivery queue on SQLite: claims, outcomes, hand-offs and the manual ways back in.
//! SQL and row mapping only; what the rows mean is decided in [`crate::logic`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, DeliveryStatus, EndpointId, MessageId};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::Notify;

use super::SqliteStore;
use super::messages::message_seq;
use super::rows;
use super::writer::Durability;
use crate::logic::claims::{self, ClaimedMessage, ClaimedRow};
use crate::logic::{health, redelivery, transitions};
use crate::{
    Claim, ClaimedDelivery, DeliveryQueue, DisabledEndpoint, Outcome, Redelivery, StoreError,
    StoreResult,
};

/// The columns a claim returns, in [`claimed_row`] order.
const CLAIMED: &str = "id, msg_seq, endpoint_id, attempts, trigger_type, due_at";

fn claimed_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
    Ok(ClaimedRow {
        delivery_id: row.get(0)?,
        msg_seq: row.get(1)?,
        endpoint_id: row.get(2)?,
        attempts_made: row.get(3)?,
        trigger_type: row.get(4)?,
        due_at: row.get(5)?,
    })
}

/// The claimed rows' messages, each read once.
fn claimed_messages(
    connection: &Connection,
    rows: &[ClaimedRow],
) -> StoreResult<HashMap<i64, ClaimedMessage>> {
    let mut lookup = connection.prepare_cached(
        "SELECT id, app_id, event_type, payload, ordering_key, created_at, raw_content_type, \
         raw_body, raw_headers, attachments FROM message WHERE seq = ?1",
    )?;
    let mut messages = HashMap::new();
    for seq in claims::message_seqs(rows) {
        let message = lookup
            .query_row([seq], |row| {
                Ok(ClaimedMessage {
                    msg_id: MessageId::from_trusted(row.get(0)?),
                    app_id: AppId::from_trusted(row.get(1)?),
                    event_type: Arc::<str>::from(row.get::<_, String>(2)?),
                    payload: Arc::<str>::from(row.get::<_, String>(3)?),
                    ordering_key: row.get::<_, Option<String>>(4)?.map(Arc::<str>::from),
                    created_at: row.get(5)?,
                    raw: rows::raw_payload(row, 6)?.map(Arc::new),
                    attachments: claims::shared_attachments(rows::attachments_at(row, 9)?),
                })
            })
            .optional()?;
        if let Some(message) = message {
            messages.insert(seq, message);
        }
    }
    Ok(messages)
}

#[async_trait]
impl DeliveryQueue for SqliteStore {
    async fn claim_due(
        &self,
        now: Millis,
        limit: usize,
        skip_endpoints: Vec<EndpointId>,
    ) -> StoreResult<Claim> {
        // No savepoint: an update and reads, which only I/O errors can fail.
        self.writer
            .write_unisolated(Durability::Unsynced, move |context| {
                let connection = context.connection;
                let (claimed, next_due_at) = if skip_endpoints.is_empty() {
                    // The common case: the oldest due deliveries, whoever they are for.
                    let claimed = connection
                        .prepare_cached(&format!(
                            "UPDATE delivery SET status = 3, updated_at = ?1 WHERE id IN \
                             (SELECT id FROM delivery WHERE status = 1 AND due_at <= ?1 \
                              ORDER BY due_at, id LIMIT ?2) RETURNING {CLAIMED}"
                        ))?
                        .query_map(params![now, limit as i64], claimed_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let next_due_at: Option<Millis> = connection
                        .prepare_cached("SELECT MIN(due_at) FROM delivery WHERE status = 1")?
                        .query_row([], |row| row.get(0))?;
                    (claimed, next_due_at)
                } else {
                    claim_around(connection, now, limit, &skip_endpoints)?
                };
                let messages = claimed_messages(connection, &claimed)?;
                Ok(Claim {
                    deliveries: claims::assemble(claimed, &messages),
                    next_due_at,
                })
            })
            .await
    }

    async fn record_outcomes(
        &self,
        outcomes: Arc<[Outcome]>,
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        // No savepoint: updates and inserts with fresh keys, which only I/O errors can fail.
        self.writer
            .write_unisolated(Durability::Unsynced, move |context| {
                let connection = context.connection;
                // A resend asked for while the attempt ran makes the delivery due again, as a
                // manual attempt with a fresh count, once the dispatcher lets go of it.
                let mut advance = connection.prepare_cached(
                    "UPDATE delivery SET \
                     status = CASE WHEN resend_requested = 1 AND ?2 <> 3 THEN 1 ELSE ?2 END, \
                     attempts = CASE WHEN resend_requested = 1 AND ?2 <> 3 THEN 0 ELSE attempts + ?5 END, \
                     due_at = CASE WHEN resend_requested = 1 AND ?2 <> 3 THEN ?4 ELSE ?3 END, \
                     trigger_type = CASE WHEN resend_requested = 1 AND ?2 <> 3 THEN 1 ELSE trigger_type END, \
                     resend_requested = CASE WHEN ?2 <> 3 THEN 0 ELSE resend_requested END, \
                     updated_at = ?4 \
                     WHERE id = ?1 AND status = 3 RETURNING msg_seq, status",
                )?;
                let mut insert_attempt = connection.prepare_cached(
                    "INSERT INTO attempt (id, msg_seq, msg_id, endpoint_id, app_id, url, status, \
                     response_status_code, response, response_duration_ms, trigger_type, created_at, sent) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                let mut requeued = false;
                for outcome in outcomes.iter() {
                    let (status, due_at) = transitions::after_attempt(outcome.next);
                    let attempt = &outcome.attempt;
                    let moved: Option<(i64, i64)> = advance
                        .query_row(
                            params![
                                outcome.delivery_id,
                                status.code(),
                                due_at,
                                attempt.created_at,
                                transitions::counted(outcome.next)
                            ],
                            |row| Ok((row.get(0)?, row.get(1)?)),
                        )
                        .optional()?;
                    // No row: the endpoint was deleted while the attempt ran; nothing to log.
                    let Some((msg_seq, now_status)) = moved else { continue };
                    requeued |= now_status == DeliveryStatus::Pending.code();
                    insert_attempt.execute(params![
                        attempt.id.as_str(),
                        msg_seq,
                        attempt.msg_id.as_str(),
                        attempt.endpoint_id.as_str(),
                        attempt.app_id.as_str(),
                        attempt.url,
                        attempt.status.code(),
                        attempt.response_status_code,
                        attempt.response,
                        attempt.response_duration_ms,
                        attempt.trigger_type.code(),
                        attempt.created_at,
                        attempt.sent.as_ref().map(crate::columns::to_json),
                    ])?;
                }
                if requeued {
                    context.deliveries_became_due = true;
                }
                let mut healthy = connection.prepare_cached(
                    "UPDATE endpoint SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
                )?;
                let mut failing = connection.prepare_cached(
                    "UPDATE endpoint SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1 \
                     RETURNING app_id, failing_since, disabled",
                )?;
                let mut disable = connection.prepare_cached(
                    "UPDATE endpoint SET disabled = 1, updated_at = ?2, revision = revision + 1 \
                     WHERE id = ?1",
                )?;
                let now = now_millis();
                let mut disabled = Vec::new();
                for (endpoint_id, verdict) in health::fold(&outcomes) {
                    let health::Health::Failing(at) = verdict else {
                        healthy.execute([endpoint_id.as_str()])?;
                        continue;
                    };
                    let state: Option<(String, Millis, bool)> = failing
                        .query_row(params![endpoint_id.as_str(), at], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        })
                        .optional()?;
                    let Some((app_id, failing_since, already_disabled)) = state else {
                        continue;
                    };
                    if health::should_disable(failing_since, already_disabled, now, disable_after) {
                        disable.execute(params![endpoint_id.as_str(), now])?;
                        disabled.push(DisabledEndpoint {
                            endpoint_id: endpoint_id.clone(),
                            app_id: AppId::from_trusted(app_id),
                            failing_since,
                        });
                    }
                }
                drop((advance, insert_attempt, healthy, failing, disable));
                for endpoint in &disabled {
                    context.forget_endpoints_of(endpoint.app_id.as_str());
                }
                Ok(disabled)
            })
            .await
    }

    async fn resend(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        endpoint_id: &EndpointId,
    ) -> StoreResult<()> {
        let (app_id, msg_id, endpoint_id) = (app_id.clone(), msg_id.clone(), endpoint_id.clone());
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let seq = message_seq(connection, app_id.as_str(), msg_id.as_str())?
                    .ok_or(StoreError::NotFound)?;
                let now = now_millis();
                // A delivery in flight is being sent right now: the resend is remembered and
                // applied when its outcome is recorded (see `record_outcomes`).
                connection
                    .prepare_cached(
                        "INSERT INTO delivery (msg_seq, endpoint_id, status, attempts, due_at, trigger_type, updated_at) \
                         VALUES (?1, ?2, 1, 0, ?3, 1, ?3) \
                         ON CONFLICT (msg_seq, endpoint_id) DO UPDATE SET \
                         resend_requested = CASE WHEN status = 3 THEN 1 ELSE 0 END, \
                         status = CASE WHEN status = 3 THEN 3 ELSE 1 END, \
                         attempts = CASE WHEN status = 3 THEN attempts ELSE 0 END, \
                         due_at = CASE WHEN status = 3 THEN due_at ELSE ?3 END, \
                         trigger_type = CASE WHEN status = 3 THEN trigger_type ELSE 1 END, \
                         updated_at = ?3",
                    )?
                    .execute(params![seq, endpoint_id.as_str(), now])?;
                context.deliveries_became_due = true;
                Ok(())
            })
            .await
    }

    async fn redeliver(
        &self,
        which: Redelivery,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let (app_id, endpoint_id) = (app_id.clone(), endpoint_id.clone());
        let until = until.unwrap_or(Millis::MAX);
        self.writer
            .write(move |context| {
                let endpoints = context.endpoints_of(app_id.as_str())?;
                let endpoint = endpoints
                    .iter()
                    .find(|endpoint| endpoint.id == endpoint_id)
                    .ok_or(StoreError::NotFound)?
                    .clone();
                let connection = context.connection;
                let now = now_millis();
                let made_due = match which {
                    Redelivery::Failed => connection
                        .prepare_cached(
                            "UPDATE delivery SET status = 1, attempts = 0, due_at = ?1, trigger_type = 1, \
                             updated_at = ?1 WHERE endpoint_id = ?2 AND status = 2 AND msg_seq IN \
                             (SELECT seq FROM message WHERE app_id = ?3 AND created_at >= ?4 AND created_at < ?5)",
                        )?
                        .execute(params![now, endpoint_id.as_str(), app_id.as_str(), since, until])?
                        as u64,
                    Redelivery::Missing => {
                        let missing = connection
                            .prepare_cached(
                                "SELECT m.seq, m.event_type, m.channels FROM message m WHERE m.app_id = ?1 \
                                 AND m.created_at >= ?2 AND m.created_at < ?3 AND NOT EXISTS \
                                 (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.endpoint_id = ?4) \
                                 ORDER BY m.seq",
                            )?
                            .query_map(
                                params![app_id.as_str(), since, until, endpoint_id.as_str()],
                                |row| {
                                    Ok((
                                        row.get::<_, i64>(0)?,
                                        row.get::<_, String>(1)?,
                                        row.get::<_, Option<String>>(2)?,
                                    ))
                                },
                            )?
                            .collect::<rusqlite::Result<Vec<_>>>()?;
                        let mut insert = connection.prepare_cached(
                            "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, trigger_type, updated_at) \
                             VALUES (?1, ?2, 1, ?3, 1, ?3)",
                        )?;
                        let mut replayed = 0u64;
                        for (seq, event_type, channels) in missing {
                            let channels = redelivery::stored_channels(channels.as_deref());
                            if redelivery::should_have_had(&endpoint, &event_type, channels.as_ref()) {
                                insert.execute(params![seq, endpoint_id.as_str(), now])?;
                                replayed += 1;
                            }
                        }
                        replayed
                    }
                };
                if made_due > 0 {
                    context.deliveries_became_due = true;
                }
                Ok(made_due)
            })
            .await
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.due.clone()
    }

    fn handoff(
        &self,
        accepts: crate::HandoffFilter,
    ) -> Option<tokio::sync::mpsc::Receiver<ClaimedDelivery>> {
        Some(self.handoff.open(accepts))
    }
}

/// A claim that must leave some endpoints alone (their lanes are full). Walking the due index
/// past their rows would cost as much as their backlog is long, so this visits endpoints
/// instead: the endpoints with pending deliveries come from a skip scan of
/// `delivery_endpoint_due` (one seek per endpoint), and each one not skipped gives up its
/// oldest due rows, earliest endpoint first, until `limit` is reached.
fn claim_around(
    connection: &Connection,
    now: Millis,
    limit: usize,
    skip: &[EndpointId],
) -> StoreResult<(Vec<ClaimedRow>, Option<Millis>)> {
    let skip: std::collections::HashSet<&str> = skip.iter().map(EndpointId::as_str).collect();
    let mut heads: Vec<(String, Millis)> = connection
        .prepare_cached(
            "WITH RECURSIVE e(id) AS ( \
               SELECT (SELECT endpoint_id FROM delivery WHERE status = 1 ORDER BY endpoint_id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT endpoint_id FROM delivery WHERE status = 1 AND endpoint_id > e.id \
                       ORDER BY endpoint_id LIMIT 1) FROM e WHERE e.id IS NOT NULL) \
             SELECT e.id, (SELECT due_at FROM delivery WHERE status = 1 AND endpoint_id = e.id \
                           ORDER BY due_at LIMIT 1) FROM e WHERE e.id IS NOT NULL",
        )?
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Millis>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    heads.retain(|(endpoint_id, _)| !skip.contains(endpoint_id.as_str()));
    heads.sort_unstable_by_key(|(_, due_at)| *due_at);
    let mut take = connection.prepare_cached(
        "UPDATE delivery SET status = 3, updated_at = ?1 WHERE id IN \
         (SELECT id FROM delivery WHERE status = 1 AND endpoint_id = ?3 AND due_at <= ?1 \
          ORDER BY due_at, id LIMIT ?2) \
         RETURNING id, msg_seq, endpoint_id, attempts, trigger_type, due_at",
    )?;
    let mut head_after = connection.prepare_cached(
        "SELECT due_at FROM delivery WHERE status = 1 AND endpoint_id = ?1 ORDER BY due_at LIMIT 1",
    )?;
    let mut claimed = Vec::new();
    let mut next_due_at: Option<Millis> = None;
    for (endpoint_id, due_at) in heads {
        let room = limit - claimed.len();
        let head = if room == 0 || due_at > now {
            Some(due_at)
        } else {
            let rows = take
                .query_map(params![now, room as i64, endpoint_id], claimed_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            claimed.extend(rows);
            head_after
                .query_row([&endpoint_id], |row| row.get(0))
                .optional()?
        };
        next_due_at = claims::earliest(next_due_at, head);
    }
    Ok((claimed, next_due_at))
}
