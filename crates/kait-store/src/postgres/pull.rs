//! Pull positions on PostgreSQL: a message's position is `pos`, assigned per application in
//! commit order by the group commit (see [`super::ingest`]). SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, Endpoint, EndpointId};

use super::paging::bound;
use super::{PgStore, rows};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{MessageFilter, PullPositions, StoreError, StoreResult};

#[async_trait]
impl PullPositions for PgStore {
    async fn poll_messages(
        &self,
        endpoint: &Endpoint,
        after: i64,
        filter: MessageFilter,
        limit: usize,
    ) -> StoreResult<Vec<(i64, kait_core::Message)>> {
        let (sql, values) = listings::poll(
            Dialect::Postgres,
            rows::MESSAGE_COLUMNS,
            "m.pos",
            endpoint,
            after,
            &filter,
            limit,
        );
        let rows = self.client().await?.query(&sql, &bound(&values)).await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get::<_, i64>(rows::MESSAGE_COLUMN_COUNT)?,
                    rows::message(row)?,
                ))
            })
            .collect()
    }

    async fn position_at(&self, app_id: &AppId, at: Millis) -> StoreResult<i64> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(MAX(pos), 0)::bigint FROM message WHERE app_id = $1 AND created_at <= $2",
                &[&app_id.as_str(), &at],
            )
            .await?
            .try_get(0)?)
    }

    async fn consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
    ) -> StoreResult<i64> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT position FROM poller_consumer WHERE endpoint_id = $1 AND consumer_id = $2",
                &[&endpoint_id.as_str(), &consumer_id],
            )
            .await?
            .map_or(0, |row| row.get(0)))
    }

    async fn set_consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
        position: i64,
        max_consumers: usize,
    ) -> StoreResult<()> {
        // Two new consumers created at the same instant may both pass the count: the bound
        // is against a flood, not exact.
        let changed = self
            .client()
            .await?
            .execute(
                "INSERT INTO poller_consumer (endpoint_id, consumer_id, position, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                 (SELECT 1 FROM poller_consumer WHERE endpoint_id = $1 AND consumer_id = $2) \
                 OR (SELECT COUNT(*) FROM poller_consumer WHERE endpoint_id = $1) < $5 \
                 ON CONFLICT (endpoint_id, consumer_id) DO UPDATE SET \
                 position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                &[
                    &endpoint_id.as_str(),
                    &consumer_id,
                    &position,
                    &now_millis(),
                    &(max_consumers as i64),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::LimitReached(format!(
                "a polling endpoint has at most {max_consumers} consumers"
            )));
        }
        Ok(())
    }

    fn message_signal(&self, app_id: &AppId) -> tokio::sync::watch::Receiver<u64> {
        self.shared.signals.messages.subscribe(app_id)
    }
}
