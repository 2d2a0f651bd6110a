//! Retention, expiry, counts and closing on PostgreSQL. SQL and row mapping only.

use async_trait::async_trait;
use kait_core::DeliveryStatus;
use kait_core::time::Millis;

use super::{PgStore, rows};
use crate::{Housekeeping, QueueDepth, StoreResult};

#[async_trait]
impl Housekeeping for PgStore {
    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64> {
        let client = self.client().await?;
        let responses = client
            .execute(
                "DELETE FROM idempotent_response WHERE created_at < $1",
                &[&(now - idempotency_lifetime)],
            )
            .await?;
        let tokens = client
            .execute("DELETE FROM app_token WHERE expires_at <= $1", &[&now])
            .await?;
        Ok(responses + tokens)
    }

    async fn purge_history(
        &self,
        messages_before: Option<Millis>,
        attempts_before: Option<Millis>,
        batch: usize,
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        let mut purged = 0;
        if let Some(before) = attempts_before {
            purged += client
                .execute(
                    "DELETE FROM attempt WHERE seq IN \
                     (SELECT seq FROM attempt WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                    &[&before, &(batch as i64)],
                )
                .await?;
            // A source's received log is history like the attempt log.
            purged += client
                .execute(
                    "DELETE FROM received_request WHERE id IN \
                     (SELECT id FROM received_request WHERE received_at < $1 LIMIT $2)",
                    &[&before, &(batch as i64)],
                )
                .await?;
            // So are device commands that ended (a waiting one stays until it ends).
            purged += client
                .execute(
                    "DELETE FROM device_command WHERE id IN \
                     (SELECT id FROM device_command WHERE finished_at < $1 LIMIT $2)",
                    &[&before, &(batch as i64)],
                )
                .await?;
            // And the plugins' audit log.
            purged += client
                .execute(
                    "DELETE FROM plugin_audit WHERE seq IN \
                     (SELECT seq FROM plugin_audit WHERE at < $1 ORDER BY seq LIMIT $2)",
                    &[&before, &(batch as i64)],
                )
                .await?;
        }
        if let Some(before) = messages_before {
            // A message goes with its finished deliveries and its Idempotency-Key; one still
            // being delivered stays until it is done.
            let rows = client
                .query(
                    "WITH doomed AS (SELECT m.seq, m.id FROM message m WHERE m.created_at < $1 \
                       AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.status IN (1, 3)) \
                       ORDER BY m.created_at LIMIT $2), \
                     deliveries AS (DELETE FROM delivery d USING doomed WHERE d.msg_seq = doomed.seq), \
                     keys AS (DELETE FROM idempotency_key i USING doomed WHERE i.msg_seq = doomed.seq), \
                     refs AS (DELETE FROM message_attachment r USING doomed WHERE r.msg_id = doomed.id) \
                     DELETE FROM message m USING doomed WHERE m.seq = doomed.seq RETURNING 1",
                    &[&before, &(batch as i64)],
                )
                .await?;
            purged += rows.len() as u64;
        }
        Ok(purged)
    }

    async fn delivery_counts(&self) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    rows::delivery_status(row, 0)?,
                    row.try_get::<_, i64>(1)? as u64,
                ))
            })
            .collect()
    }

    async fn queue_depth(&self, now: Millis) -> StoreResult<QueueDepth> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE due_at <= $1), count(*) FILTER (WHERE due_at > $1) \
                 FROM delivery WHERE status = 1",
                &[&now],
            )
            .await?;
        Ok(QueueDepth {
            due: row.try_get::<_, i64>(0)? as u64,
            scheduled: row.try_get::<_, i64>(1)? as u64,
        })
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop.cancel();
        super::cluster::leave(&self.shared).await?;
        // The notifier has stopped: tell the others directly that work is theirs now.
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_notify($1, '')",
                &[&format!("kait_{}_due", self.shared.options.schema)],
            )
            .await?;
        Ok(())
    }
}
