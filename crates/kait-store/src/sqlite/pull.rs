//! Pull positions on SQLite: a message's position is its `seq`, assigned by the single
//! writer, so position order is commit order. SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, Endpoint, EndpointId};
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::SqliteStore;
use super::paging::bound;
use super::rows;
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{MessageFilter, PullPositions, StoreError, StoreResult};

#[async_trait]
impl PullPositions for SqliteStore {
    async fn poll_messages(
        &self,
        endpoint: &Endpoint,
        after: i64,
        filter: MessageFilter,
        limit: usize,
    ) -> StoreResult<Vec<(i64, kait_core::Message)>> {
        let (sql, values) = listings::poll(
            Dialect::Sqlite,
            rows::MESSAGE_COLUMNS,
            "m.seq",
            endpoint,
            after,
            &filter,
            limit,
        );
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(&sql)?;
            let messages = statement
                .query_map(params_from_iter(bound(&values)), |row| {
                    Ok((
                        row.get::<_, i64>(rows::MESSAGE_COLUMN_COUNT)?,
                        rows::message(row)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(messages)
        })
        .await
    }

    async fn position_at(&self, app_id: &AppId, at: Millis) -> StoreResult<i64> {
        let app_id = app_id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq), 0) FROM message WHERE app_id = ?1 AND created_at <= ?2",
                )?
                .query_row(params![app_id.as_str(), at], |row| row.get(0))?)
        })
        .await
    }

    async fn consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
    ) -> StoreResult<i64> {
        let (endpoint_id, consumer_id) = (endpoint_id.clone(), consumer_id.to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT position FROM poller_consumer WHERE endpoint_id = ?1 AND consumer_id = ?2",
                )?
                .query_row(params![endpoint_id.as_str(), consumer_id], |row| row.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn set_consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
        position: i64,
        max_consumers: usize,
    ) -> StoreResult<()> {
        let (endpoint_id, consumer_id) = (endpoint_id.clone(), consumer_id.to_owned());
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "INSERT INTO poller_consumer (endpoint_id, consumer_id, position, updated_at) \
                         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS \
                         (SELECT 1 FROM poller_consumer WHERE endpoint_id = ?1 AND consumer_id = ?2) \
                         OR (SELECT COUNT(*) FROM poller_consumer WHERE endpoint_id = ?1) < ?5 \
                         ON CONFLICT (endpoint_id, consumer_id) DO UPDATE SET \
                         position = excluded.position, updated_at = excluded.updated_at",
                    )?
                    .execute(params![
                        endpoint_id.as_str(),
                        consumer_id,
                        position,
                        now_millis(),
                        max_consumers as i64
                    ])?;
                if changed == 0 {
                    return Err(StoreError::LimitReached(format!(
                        "a polling endpoint has at most {max_consumers} consumers"
                    )));
                }
                Ok(())
            })
            .await
    }

    fn message_signal(&self, app_id: &AppId) -> tokio::sync::watch::Receiver<u64> {
        self.messages.subscribe(app_id)
    }
}
