//! The message log on PostgreSQL: accepting goes through the group commit in [`super::ingest`];
//! the rest reads messages, attempts and delivery states back. SQL and row mapping only.

use async_trait::async_trait;
use kait_core::{AppId, Attempt, AttemptId, DeliveryState, DeliveryStatus, EndpointId, MessageId};
use tokio::sync::oneshot;

use super::{PgStore, ingest, rows};
use crate::columns;
use crate::logic::query::Dialect;
use crate::logic::{listings, transitions};
use crate::{
    AcceptedMessage, AttemptFilter, EndpointMessage, MessageFilter, MessageLog, NewMessage, Page,
    PageRequest, StoreError, StoreResult,
};

impl PgStore {
    pub(super) async fn message_seq(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
    ) -> StoreResult<Option<i64>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT seq FROM message WHERE id = $1 AND app_id = $2",
                &[&msg_id.as_str(), &app_id.as_str()],
            )
            .await?
            .map(|row| row.get(0)))
    }
}

#[async_trait]
impl MessageLog for PgStore {
    async fn create_message(&self, new_message: NewMessage) -> StoreResult<AcceptedMessage> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send(ingest::Job {
                message: new_message,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_message(
        &self,
        app_id: &AppId,
        id_or_event_id: &str,
    ) -> StoreResult<Option<kait_core::Message>> {
        let column = if MessageId::has_prefix(id_or_event_id) {
            "id"
        } else {
            "event_id"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM message m WHERE m.app_id = $1 AND m.{column} = $2",
                    rows::MESSAGE_COLUMNS
                ),
                &[&app_id.as_str(), &id_or_event_id],
            )
            .await?;
        row.as_ref().map(rows::message).transpose()
    }

    async fn list_messages(
        &self,
        app_id: &AppId,
        filter: MessageFilter,
        page: PageRequest,
    ) -> StoreResult<Page<kait_core::Message>> {
        let query = listings::messages(
            Dialect::Postgres,
            rows::MESSAGE_COLUMNS,
            app_id,
            &filter,
            &page,
        );
        self.run_page(query, rows::message).await
    }

    async fn list_attempts(
        &self,
        app_id: &AppId,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let query = listings::attempts(Dialect::Postgres, app_id, filter, &page);
        self.run_page(query, rows::attempt).await
    }

    async fn get_attempt(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<Option<Attempt>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM attempt a WHERE a.id = $1 AND a.app_id = $2 AND a.msg_id = $3",
                    columns::ATTEMPT
                ),
                &[&attempt_id.as_str(), &app_id.as_str(), &msg_id.as_str()],
            )
            .await?;
        row.as_ref().map(rows::attempt).transpose()
    }

    async fn list_delivery_states(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
    ) -> StoreResult<Vec<DeliveryState>> {
        let Some(seq) = self.message_seq(app_id, msg_id).await? else {
            return Err(StoreError::NotFound);
        };
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT d.status, d.due_at, {} FROM delivery d JOIN endpoint e ON e.id = d.endpoint_id \
                     WHERE d.msg_seq = $1 ORDER BY e.id",
                    columns::ENDPOINT_E
                ),
                &[&seq],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let status = rows::delivery_status(row, 0)?;
                Ok(DeliveryState {
                    status,
                    next_attempt_at: transitions::next_attempt_at(status, row.try_get(1)?),
                    endpoint: rows::endpoint_at(row, 2, &self.shared.options.secret_keys)?,
                })
            })
            .collect()
    }

    async fn list_endpoint_messages(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<EndpointMessage>> {
        let query = listings::endpoint_messages(
            Dialect::Postgres,
            rows::MESSAGE_COLUMNS,
            app_id,
            endpoint_id,
            status,
            &page,
        );
        self.run_page(query, |row| {
            let status = rows::delivery_status(row, rows::MESSAGE_COLUMN_COUNT)?;
            Ok(EndpointMessage {
                message: rows::message(row)?,
                status,
                next_attempt_at: transitions::queued_until(
                    status,
                    row.try_get(rows::MESSAGE_COLUMN_COUNT + 1)?,
                ),
            })
        })
        .await
    }

    async fn erase_message_content(&self, app_id: &AppId, msg_id: &MessageId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let Some(row) = transaction
            .query_opt(
                "UPDATE message SET payload = $3, raw_content_type = NULL, raw_body = NULL, \
                 raw_headers = NULL, attachments = NULL WHERE id = $1 AND app_id = $2 RETURNING seq",
                &[&msg_id.as_str(), &app_id.as_str(), &kait_core::ERASED_PAYLOAD],
            )
            .await?
        else {
            return Err(StoreError::NotFound);
        };
        let seq: i64 = row.get(0);
        transaction
            .execute(
                "DELETE FROM message_attachment WHERE msg_id = $1",
                &[&msg_id.as_str()],
            )
            .await?;
        // What attempts sent of it (transformed or rendered) goes too.
        transaction
            .execute(
                "UPDATE attempt SET sent = NULL WHERE msg_seq = $1 AND sent IS NOT NULL",
                &[&seq],
            )
            .await?;
        transaction
            .execute(
                "UPDATE delivery SET status = $2, updated_at = $3, claimed_by = NULL \
                 WHERE msg_seq = $1 AND status = $4",
                &[
                    &seq,
                    &DeliveryStatus::Canceled.code(),
                    &kait_core::time::now_millis(),
                    &DeliveryStatus::Pending.code(),
                ],
            )
            .await?;
        // One being sent finishes, but a resend asked for meanwhile is not done.
        transaction
            .execute(
                "UPDATE delivery SET resend_requested = FALSE WHERE msg_seq = $1 AND resend_requested",
                &[&seq],
            )
            .await?;
        transaction
            .execute(
                "DELETE FROM idempotent_response WHERE app_id = $1 \
                 AND position(convert_to($2, 'UTF8') in body) > 0",
                &[&app_id.as_str(), &msg_id.as_str()],
            )
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn erase_attempt_response(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<()> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE attempt SET response = '', sent = NULL \
                 WHERE id = $1 AND app_id = $2 AND msg_id = $3",
                &[&attempt_id.as_str(), &app_id.as_str(), &msg_id.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn endpoint_delivery_counts(
        &self,
        endpoint_id: &EndpointId,
    ) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT status, COUNT(*) FROM delivery WHERE endpoint_id = $1 GROUP BY status ORDER BY status",
                &[&endpoint_id.as_str()],
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
}
