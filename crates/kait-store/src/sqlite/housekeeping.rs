//! Retention, expiry and counts on SQLite. SQL and row mapping only.

use async_trait::async_trait;
use kait_core::DeliveryStatus;
use kait_core::time::Millis;
use rusqlite::params;

use super::SqliteStore;
use super::rows;
use crate::{Housekeeping, QueueDepth, StoreResult};

#[async_trait]
impl Housekeeping for SqliteStore {
    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |context| {
                let responses = context
                    .connection
                    .prepare_cached("DELETE FROM idempotent_response WHERE created_at < ?1")?
                    .execute([now - idempotency_lifetime])?;
                let tokens = context
                    .connection
                    .prepare_cached("DELETE FROM app_token WHERE expires_at <= ?1")?
                    .execute([now])?;
                Ok((responses + tokens) as u64)
            })
            .await
    }

    async fn purge_history(
        &self,
        messages_before: Option<Millis>,
        attempts_before: Option<Millis>,
        batch: usize,
    ) -> StoreResult<u64> {
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let mut purged = 0;
                if let Some(before) = attempts_before {
                    purged += connection
                        .prepare_cached(
                            "DELETE FROM attempt WHERE seq IN \
                             (SELECT seq FROM attempt WHERE created_at < ?1 ORDER BY seq LIMIT ?2)",
                        )?
                        .execute(params![before, batch as i64])?;
                    // A source's received log is history like the attempt log.
                    purged += connection
                        .prepare_cached(
                            "DELETE FROM received_request WHERE id IN \
                             (SELECT id FROM received_request WHERE received_at < ?1 LIMIT ?2)",
                        )?
                        .execute(params![before, batch as i64])?;
                    // So are device commands that ended (a waiting one stays until it ends).
                    purged += connection
                        .prepare_cached(
                            "DELETE FROM device_command WHERE id IN \
                             (SELECT id FROM device_command WHERE finished_at < ?1 LIMIT ?2)",
                        )?
                        .execute(params![before, batch as i64])?;
                    // And the plugins' audit log.
                    purged += connection
                        .prepare_cached(
                            "DELETE FROM plugin_audit WHERE seq IN \
                             (SELECT seq FROM plugin_audit WHERE at < ?1 ORDER BY seq LIMIT ?2)",
                        )?
                        .execute(params![before, batch as i64])?;
                }
                if let Some(before) = messages_before {
                    // A message goes with its finished deliveries and its Idempotency-Key; one
                    // still being delivered stays until it is done.
                    connection.execute_batch(
                        "CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY); DELETE FROM doomed",
                    )?;
                    connection
                        .prepare_cached(
                            "INSERT INTO doomed (seq) SELECT m.seq FROM message m WHERE m.created_at < ?1 \
                             AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.status IN (1, 3)) \
                             ORDER BY m.seq LIMIT ?2",
                        )?
                        .execute(params![before, batch as i64])?;
                    for sql in [
                        "DELETE FROM delivery WHERE msg_seq IN (SELECT seq FROM doomed)",
                        "DELETE FROM idempotency_key WHERE msg_seq IN (SELECT seq FROM doomed)",
                        // Its references to attachments: the last one gone frees the blob.
                        "DELETE FROM message_attachment WHERE msg_id IN \
                         (SELECT m.id FROM message m JOIN doomed d ON m.seq = d.seq)",
                    ] {
                        connection.prepare_cached(sql)?.execute([])?;
                    }
                    purged += connection
                        .prepare_cached("DELETE FROM message WHERE seq IN (SELECT seq FROM doomed)")?
                        .execute([])?;
                }
                Ok(purged as u64)
            })
            .await
    }

    async fn delivery_counts(&self) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        self.read(|connection| {
            let counts = connection
                .prepare_cached(
                    "SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status",
                )?
                .query_map([], |row| {
                    Ok((rows::delivery_status(row, 0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(counts)
        })
        .await
    }

    async fn queue_depth(&self, now: Millis) -> StoreResult<QueueDepth> {
        self.read(move |connection| {
            let (due, scheduled): (i64, i64) = connection
                .prepare_cached(
                    "SELECT COALESCE(SUM(due_at <= ?1), 0), COALESCE(SUM(due_at > ?1), 0) \
                     FROM delivery INDEXED BY delivery_due WHERE status = 1",
                )?
                .query_row([now], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(QueueDepth {
                due: due as u64,
                scheduled: scheduled as u64,
            })
        })
        .await
    }
}
