//! The delivery queue on PostgreSQL: claims (see the module documentation of
//! [`super`]), outcomes and the manual ways back in. SQL and row mapping only; what the rows
//! mean is decided in [`crate::logic`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, Attempt, EndpointId, MessageId};
use tokio::sync::Notify;

use super::{PgStore, TRANSIENT_RETRIES, rows};
use crate::logic::claims::{self, ClaimedMessage, ClaimedRow};
use crate::logic::{health, redelivery, transitions};
use crate::{
    Claim, DeliveryQueue, DisabledEndpoint, Endpoints, Outcome, Redelivery, StoreError, StoreResult,
};

impl PgStore {
    /// One claim transaction; see the module documentation of [`super`].
    async fn claim_once(&self, now: Millis, limit: usize, skip: &[String]) -> StoreResult<Claim> {
        let client = self.client().await?;
        let result = self.claim_on(&client, now, limit, skip).await;
        if result.is_err() {
            // Back to the pool outside any transaction, however it failed.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }

    /// The claim in two pipelined round trips (see `ingest::write`): the lease check and
    /// the endpoints with pending work go out with `BEGIN`; taking the endpoints, marking
    /// their due deliveries and reading their messages (one statement), and the next due
    /// time, with `COMMIT`. The commit is not waited on for the disk, as on SQLite: a claim
    /// lost in a crash only makes its deliveries pending again (sent again, as any delivery
    /// in flight at a crash is), and the outcome written after it flushes it anyway.
    async fn claim_on(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        now: Millis,
        limit: usize,
        skip: &[String],
    ) -> StoreResult<Claim> {
        let node = self.shared.node.get();
        let node: &str = &node;
        let alive = client.prepare_cached(NODE_ALIVE).await?;
        let heads = client.prepare_cached(PENDING_HEADS).await?;
        let take = client.prepare_cached(CLAIM).await?;
        let next = client.prepare_cached(NEXT_DUE).await?;
        let (_, alive, heads) = tokio::try_join!(
            biased;
            client.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan",
            ),
            async { client.query_opt(&alive, &[&node]).await },
            async { client.query(&heads, &[&skip, &node]).await },
        )?;
        if alive.is_none() {
            return Err(StoreError::Database {
                kind: crate::DatabaseFailure::Unavailable,
                context: "this node's lease expired; it claims again once it has rejoined"
                    .to_owned(),
                source: None,
            });
        }
        let mut heads: Vec<(String, Millis)> = heads
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<StoreResult<_>>()?;
        heads.sort_unstable_by_key(|(_, head)| *head);
        let eligible: Vec<String> = heads.iter().map(|(id, _)| id.clone()).collect();
        let candidates: Vec<String> = heads
            .iter()
            .filter(|(_, head)| *head <= now)
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        let (claimed, next_due) = tokio::try_join!(
            biased;
            async {
                if candidates.is_empty() {
                    return Ok(Vec::new());
                }
                client
                    .query(&take, &[&now, &candidates, &node, &(limit as i64)])
                    .await
            },
            async { client.query_one(&next, &[&eligible]).await },
            // The next due time is read after the marking, so it leaves out what was claimed.
            async { client.batch_execute("COMMIT").await },
        )
        .map(|(claimed, next_due, ())| (claimed, next_due))?;
        let next_due_at: Option<Millis> = next_due.try_get(0)?;

        let mut rows = Vec::new();
        let mut messages: HashMap<i64, ClaimedMessage> = HashMap::new();
        for row in &claimed {
            if row.try_get::<_, i64>(0)? == CLAIMED_DELIVERY {
                rows.push(ClaimedRow {
                    delivery_id: row.try_get(1)?,
                    msg_seq: row.try_get(2)?,
                    endpoint_id: row.try_get(3)?,
                    attempts_made: row.try_get::<_, i64>(4)? as u32,
                    trigger_type: row.try_get(5)?,
                    due_at: row.try_get::<_, Option<i64>>(6)?.unwrap_or(now),
                });
                continue;
            }
            messages.insert(
                row.try_get(2)?,
                ClaimedMessage {
                    msg_id: MessageId::from_trusted(row.try_get(7)?),
                    app_id: AppId::from_trusted(row.try_get(8)?),
                    event_type: Arc::from(row.try_get::<_, &str>(9)?),
                    payload: Arc::from(row.try_get::<_, &str>(10)?),
                    ordering_key: row.try_get::<_, Option<&str>>(11)?.map(Arc::from),
                    created_at: row.try_get(12)?,
                    raw: rows::raw_payload(row, 13)?.map(Arc::new),
                    attachments: claims::shared_attachments(rows::attachments_at(row, 16)?),
                },
            );
        }
        let mut owned: Vec<String> = rows.iter().map(|row| row.endpoint_id.clone()).collect();
        owned.sort_unstable();
        owned.dedup();
        self.shared.idle.remove_all(&owned);
        Ok(Claim {
            deliveries: claims::assemble(rows, &messages),
            next_due_at,
        })
    }

    async fn record_once(
        &self,
        outcomes: &[Outcome],
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        let client = self.client().await?;
        let result = self.record_on(&client, outcomes, disable_after).await;
        if result.is_err() {
            // Back to the pool outside any transaction, however it failed.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        let (disabled, requeued) = result?;
        if requeued {
            self.shared.signals.deliveries_due();
        }
        if !disabled.is_empty() {
            self.config_changed();
        }
        Ok(disabled)
    }

    /// One outcome batch in one transaction, pipelined like the group commit (see
    /// `ingest::write`): one round trip, or two when an endpoint is failing and may have to
    /// be disabled. Not waited on for the disk, like a claim: a batch lost in a crash leaves
    /// its deliveries `Sending` for the dead node, and the reaper makes them due again.
    async fn record_on(
        &self,
        client: &deadpool_postgres::ClientWrapper,
        outcomes: &[Outcome],
        disable_after: Option<Millis>,
    ) -> StoreResult<(Vec<DisabledEndpoint>, bool)> {
        let node = self.shared.node.get();
        let node: &str = &node;
        let mut moves = DeliveryMoves::default();
        let mut columns = AttemptColumns::default();
        for outcome in outcomes {
            moves.push(outcome);
            columns.push(&outcome.attempt);
        }
        // Endpoints that answered, and those failing since when; in id order each, so that
        // concurrent batches lock endpoint rows in the same order.
        let (mut recovered, mut failing, mut failing_at): (Vec<&str>, Vec<&str>, Vec<Millis>) =
            Default::default();
        for (endpoint_id, verdict) in health::fold(outcomes) {
            match verdict {
                health::Health::Recovered => recovered.push(endpoint_id.as_str()),
                health::Health::Failing(at) => {
                    failing.push(endpoint_id.as_str());
                    failing_at.push(at);
                }
            }
        }
        let record = client.prepare_cached(RECORD_OUTCOMES).await?;
        let recover = client.prepare_cached(RECOVER_ENDPOINTS).await?;
        let fail = client.prepare_cached(FAIL_ENDPOINTS).await?;
        let mut params = moves.params(&node);
        params.extend(columns.params());
        let (_, requeued, _, failing_rows, _) = tokio::try_join!(
            biased;
            client.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan",
            ),
            // Only this node's own claims move on: if its lease expired meanwhile, the
            // delivery belongs to the cluster again and this attempt is not logged (it will
            // be resent).
            async { client.query_one(&record, &params).await },
            async {
                if recovered.is_empty() {
                    return Ok(0);
                }
                client.execute(&recover, &[&recovered]).await
            },
            async {
                if failing.is_empty() {
                    return Ok(Vec::new());
                }
                client.query(&fail, &[&failing, &failing_at]).await
            },
            async {
                if !failing.is_empty() {
                    return Ok(());
                }
                client.batch_execute("COMMIT").await
            },
        )?;
        let requeued = requeued.try_get::<_, i64>(0)? > 0;
        if failing.is_empty() {
            return Ok((Vec::new(), requeued));
        }

        let now = now_millis();
        let mut disabled = Vec::new();
        for row in failing_rows {
            let failing_since: Millis = row.try_get(2)?;
            if health::should_disable(failing_since, row.try_get(3)?, now, disable_after) {
                disabled.push(DisabledEndpoint {
                    endpoint_id: EndpointId::from_trusted(row.try_get(0)?),
                    app_id: AppId::from_trusted(row.try_get(1)?),
                    failing_since,
                });
            }
        }
        if !disabled.is_empty() {
            let ids: Vec<&str> = disabled.iter().map(|d| d.endpoint_id.as_str()).collect();
            client
                .execute(
                    "UPDATE endpoint SET disabled = TRUE, updated_at = $2, revision = revision + 1 \
                     WHERE id = ANY($1)",
                    &[&ids, &now],
                )
                .await?;
        }
        client.batch_execute("COMMIT").await?;
        Ok((disabled, requeued))
    }
}

/// This node's row, held `FOR SHARE` to the end of a claim, so that a node that was declared
/// dead (its row deleted) claims nothing and the reaper waits for a claim in progress.
const NODE_ALIVE: &str = "SELECT 1 FROM kait_node WHERE id = $1 FOR SHARE";
/// The endpoints with pending deliveries, found with a skip scan of `delivery_endpoint_due`
/// (one index seek per endpoint, however long each backlog is), with the due time of each
/// one's head; minus those this node's lanes are too full for (`$1`) and those another live
/// node runs.
const PENDING_HEADS: &str = "WITH RECURSIVE e AS ( \
       (SELECT endpoint_id FROM delivery WHERE status = 1 ORDER BY endpoint_id LIMIT 1) \
       UNION ALL \
       SELECT (SELECT d.endpoint_id FROM delivery d WHERE d.status = 1 \
               AND d.endpoint_id > e.endpoint_id ORDER BY d.endpoint_id LIMIT 1) \
       FROM e WHERE e.endpoint_id IS NOT NULL) \
     SELECT e.endpoint_id, (SELECT d.due_at FROM delivery d WHERE d.status = 1 \
       AND d.endpoint_id = e.endpoint_id ORDER BY d.due_at LIMIT 1) AS head \
     FROM e WHERE e.endpoint_id IS NOT NULL AND e.endpoint_id <> ALL($1) \
     AND NOT EXISTS (SELECT 1 FROM endpoint_owner o JOIN kait_node n ON n.id = o.node_id \
                     WHERE o.endpoint_id = e.endpoint_id AND o.node_id <> $2)";
/// A [`CLAIM`] row that is a delivery; the others are the claimed deliveries' messages.
const CLAIMED_DELIVERY: i64 = 0;
/// Takes ownership of the candidate endpoints (`$2`) that no other live node runs (in id
/// order, so that two nodes taking the same ones cannot deadlock), marks the oldest due
/// deliveries of those it took `Sending` for this node (`$3`; each endpoint's through its
/// own index range, then the oldest `$4` of those overall), and returns them, then each of
/// their messages once: rows of kind 0 (delivery id, message sequence, endpoint, attempts,
/// trigger, due) and kind 1 (message sequence at 2, then its fields from 7 on).
const CLAIM: &str = concat!(
    "WITH ",
    take_endpoints_sql!("$2", "$3"),
    ", marked AS (UPDATE delivery d SET status = 3, claimed_by = $3, updated_at = $1 \
       FROM (SELECT c.id FROM taken AS o \
             CROSS JOIN LATERAL (SELECT id, due_at FROM delivery \
               WHERE status = 1 AND endpoint_id = o.endpoint_id AND due_at <= $1 \
               ORDER BY due_at, id LIMIT $4 FOR UPDATE) c \
             ORDER BY c.due_at, c.id LIMIT $4) c \
       WHERE d.id = c.id \
       RETURNING d.id, d.msg_seq, d.endpoint_id, d.attempts, d.trigger_type, d.due_at) \
     SELECT 0::bigint, id, msg_seq, endpoint_id, attempts, trigger_type, due_at, \
       NULL::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::bigint, \
       NULL::text, NULL::bytea, NULL::text, NULL::text FROM marked \
     UNION ALL \
     SELECT 1::bigint, NULL::bigint, seq, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, \
       id, app_id, event_type, payload, ordering_key, created_at, \
       raw_content_type, raw_body, raw_headers, attachments \
     FROM message WHERE seq IN (SELECT msg_seq FROM marked)"
);
/// The earliest due time among the pending deliveries of the endpoints this node may run.
const NEXT_DUE: &str = "SELECT MIN(h.due_at) FROM unnest($1::text[]) AS e(endpoint_id) \
     CROSS JOIN LATERAL (SELECT due_at FROM delivery \
       WHERE status = 1 AND endpoint_id = e.endpoint_id ORDER BY due_at LIMIT 1) h";

/// Moves each delivery on after its attempt and logs the attempts of those that moved. Only
/// the deliveries this node (`$5`) still has claimed move. Counts those put back in the
/// queue (retries, waits, resends asked for meanwhile), for which claimers must be woken.
const RECORD_OUTCOMES: &str = "WITH advanced AS (UPDATE delivery d SET \
     status = CASE WHEN d.resend_requested AND o.status <> 3 THEN 1 ELSE o.status END, \
     attempts = CASE WHEN d.resend_requested AND o.status <> 3 THEN 0 ELSE d.attempts + o.counted END, \
     due_at = CASE WHEN d.resend_requested AND o.status <> 3 THEN o.at ELSE o.due_at END, \
     trigger_type = CASE WHEN d.resend_requested AND o.status <> 3 THEN 1 ELSE d.trigger_type END, \
     resend_requested = d.resend_requested AND o.status = 3, \
     updated_at = o.at, \
     claimed_by = CASE WHEN o.status = 3 THEN d.claimed_by END \
     FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $6::bigint[]) \
     AS o(id, status, due_at, at, counted) \
     WHERE d.id = o.id AND d.status = 3 AND d.claimed_by = $5 RETURNING d.id, d.msg_seq, d.status), \
     logged AS (INSERT INTO attempt (id, msg_seq, msg_id, endpoint_id, app_id, url, status, \
     response_status_code, response, response_duration_ms, trigger_type, created_at, sent) \
     SELECT a.id, advanced.msg_seq, a.msg_id, a.endpoint_id, a.app_id, a.url, a.status, \
     a.response_status_code, a.response, a.response_duration_ms, a.trigger_type, a.created_at, a.sent \
     FROM unnest($1::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
     $12::bigint[], $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], $18::text[]) \
     AS a(delivery_id, id, msg_id, endpoint_id, app_id, url, status, response_status_code, response, \
     response_duration_ms, trigger_type, created_at, sent) \
     JOIN advanced ON advanced.id = a.delivery_id) \
     SELECT count(*) FILTER (WHERE status = 1) FROM advanced";
/// Endpoints whose last attempt in a batch succeeded (writes only those that were failing).
const RECOVER_ENDPOINTS: &str =
    "UPDATE endpoint SET failing_since = NULL WHERE id = ANY($1) AND failing_since IS NOT NULL";
/// Endpoints whose last attempt in a batch failed: failing since then, unless they already were.
const FAIL_ENDPOINTS: &str = "UPDATE endpoint e SET failing_since = COALESCE(e.failing_since, f.at) \
     FROM unnest($1::text[], $2::bigint[]) AS f(id, at) WHERE e.id = f.id \
     RETURNING e.id, e.app_id, e.failing_since, e.disabled";

/// How each delivery moves on after its attempt, one vector per column (for `unnest`).
#[derive(Default)]
struct DeliveryMoves {
    id: Vec<i64>,
    status: Vec<i64>,
    due_at: Vec<Option<Millis>>,
    at: Vec<Millis>,
    counted: Vec<i64>,
}

impl DeliveryMoves {
    fn push(&mut self, outcome: &Outcome) {
        let (status, due_at) = transitions::after_attempt(outcome.next);
        self.id.push(outcome.delivery_id);
        self.status.push(status.code());
        self.due_at.push(due_at);
        self.at.push(outcome.attempt.created_at);
        self.counted.push(transitions::counted(outcome.next));
    }

    /// `$1`–`$6` of [`RECORD_OUTCOMES`].
    fn params<'a>(
        &'a self,
        node: &'a &'a str,
    ) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.id,
            &self.status,
            &self.due_at,
            &self.at,
            node,
            &self.counted,
        ]
    }
}

/// The columns of attempts to insert, one vector per column (for `unnest`), in the order
/// of their outcomes.
#[derive(Default)]
struct AttemptColumns {
    id: Vec<String>,
    msg_id: Vec<String>,
    endpoint_id: Vec<String>,
    app_id: Vec<String>,
    url: Vec<String>,
    status: Vec<i64>,
    response_status_code: Vec<i64>,
    response: Vec<String>,
    response_duration_ms: Vec<i64>,
    trigger_type: Vec<i64>,
    created_at: Vec<i64>,
    sent: Vec<Option<String>>,
}

impl AttemptColumns {
    fn push(&mut self, attempt: &Attempt) {
        self.id.push(attempt.id.as_str().to_owned());
        self.msg_id.push(attempt.msg_id.as_str().to_owned());
        self.endpoint_id
            .push(attempt.endpoint_id.as_str().to_owned());
        self.app_id.push(attempt.app_id.as_str().to_owned());
        self.url.push(attempt.url.clone());
        self.status.push(attempt.status.code());
        self.response_status_code
            .push(i64::from(attempt.response_status_code));
        self.response.push(attempt.response.clone());
        self.response_duration_ms.push(attempt.response_duration_ms);
        self.trigger_type.push(attempt.trigger_type.code());
        self.created_at.push(attempt.created_at);
        self.sent
            .push(attempt.sent.as_ref().map(crate::columns::to_json));
    }

    /// `$7`–`$18` of [`RECORD_OUTCOMES`].
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.id,
            &self.msg_id,
            &self.endpoint_id,
            &self.app_id,
            &self.url,
            &self.status,
            &self.response_status_code,
            &self.response,
            &self.response_duration_ms,
            &self.trigger_type,
            &self.created_at,
            &self.sent,
        ]
    }
}

/// The message fields every delivery of one message shares in a claim.
#[async_trait]
impl DeliveryQueue for PgStore {
    async fn claim_due(
        &self,
        now: Millis,
        limit: usize,
        skip_endpoints: Vec<EndpointId>,
    ) -> StoreResult<Claim> {
        let skip: Vec<String> = skip_endpoints
            .into_iter()
            .map(EndpointId::into_string)
            .collect();
        let mut tries = 0;
        loop {
            match self.claim_once(now, limit, &skip).await {
                Err(error) if error.is_retryable() && tries < TRANSIENT_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn record_outcomes(
        &self,
        outcomes: Arc<[Outcome]>,
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        let mut tries = 0;
        loop {
            match self.record_once(&outcomes, disable_after).await {
                Err(error) if error.is_retryable() && tries < TRANSIENT_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn resend(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        endpoint_id: &EndpointId,
    ) -> StoreResult<()> {
        let seq = self
            .message_seq(app_id, msg_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let now = now_millis();
        // A delivery in flight is being sent right now: the resend is remembered and applied
        // when its outcome is recorded (see `RECORD_OUTCOMES`).
        self.client()
            .await?
            .execute(
                "INSERT INTO delivery (msg_seq, endpoint_id, status, attempts, due_at, trigger_type, updated_at) \
                 VALUES ($1, $2, 1, 0, $3, 1, $3) \
                 ON CONFLICT (msg_seq, endpoint_id) DO UPDATE SET \
                 resend_requested = delivery.status = 3, \
                 status = CASE WHEN delivery.status = 3 THEN 3 ELSE 1 END, \
                 attempts = CASE WHEN delivery.status = 3 THEN delivery.attempts ELSE 0 END, \
                 due_at = CASE WHEN delivery.status = 3 THEN delivery.due_at ELSE $3 END, \
                 trigger_type = CASE WHEN delivery.status = 3 THEN delivery.trigger_type ELSE 1 END, \
                 claimed_by = CASE WHEN delivery.status = 3 THEN delivery.claimed_by END, \
                 updated_at = $3",
                &[&seq, &endpoint_id.as_str(), &now],
            )
            .await?;
        self.shared.signals.deliveries_due();
        Ok(())
    }

    async fn redeliver(
        &self,
        which: Redelivery,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let endpoint = self
            .get_endpoint(app_id, endpoint_id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        let until = until.unwrap_or(Millis::MAX);
        let client = self.client().await?;
        let now = now_millis();
        let made_due = match which {
            Redelivery::Failed => {
                client
                    .execute(
                        "UPDATE delivery SET status = 1, attempts = 0, due_at = $1, trigger_type = 1, \
                         updated_at = $1 WHERE endpoint_id = $2 AND status = 2 AND msg_seq IN \
                         (SELECT seq FROM message WHERE app_id = $3 AND created_at >= $4 AND created_at < $5)",
                        &[&now, &endpoint_id.as_str(), &app_id.as_str(), &since, &until],
                    )
                    .await?
            }
            Redelivery::Missing => {
                let missing = client
                    .query(
                        "SELECT m.seq, m.event_type, m.channels::text FROM message m WHERE m.app_id = $1 \
                         AND m.created_at >= $2 AND m.created_at < $3 AND NOT EXISTS \
                         (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.endpoint_id = $4) \
                         ORDER BY m.seq",
                        &[&app_id.as_str(), &since, &until, &endpoint_id.as_str()],
                    )
                    .await?;
                let mut seqs = Vec::new();
                for row in missing {
                    let channels = redelivery::stored_channels(row.try_get(2)?);
                    if redelivery::should_have_had(&endpoint, row.try_get(1)?, channels.as_ref()) {
                        seqs.push(row.try_get::<_, i64>(0)?);
                    }
                }
                if seqs.is_empty() {
                    return Ok(0);
                }
                client
                    .execute(
                        "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, trigger_type, updated_at) \
                         SELECT s, $2, 1, $3, 1, $3 FROM unnest($1::bigint[]) AS s ON CONFLICT DO NOTHING",
                        &[&seqs, &endpoint_id.as_str(), &now],
                    )
                    .await?
            }
        };
        if made_due > 0 {
            self.shared.signals.deliveries_due();
        }
        Ok(made_due)
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.shared.signals.due.clone()
    }

    fn endpoint_idle(&self, endpoint_id: &EndpointId) {
        self.shared.idle.add(endpoint_id.as_str());
    }

    fn handoff(
        &self,
        accepts: crate::HandoffFilter,
    ) -> Option<tokio::sync::mpsc::Receiver<crate::ClaimedDelivery>> {
        Some(self.shared.handoff.open(accepts))
    }
}
