//! Incoming sources on PostgreSQL: SQL and row mapping only.

use std::collections::HashMap;

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{ReceivedId, Source, SourceId};
use tokio_postgres::types::ToSql;

use super::{PgStore, rows};
use crate::columns::{self, ReceivedRow, SourceRow};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{Page, PageRequest, ReceivedRequest, Sources, StoreError, StoreResult};

/// A source row's values in [`columns::SOURCE`] order.
fn source_values<'a>(row: &'a SourceRow<'a>) -> [&'a (dyn ToSql + Sync); 12] {
    [
        &row.id,
        &row.uid,
        &row.name,
        &row.kind,
        &row.config,
        &row.metadata,
        &row.token,
        &row.previous_token,
        &row.previous_token_expires_at,
        &row.created_at,
        &row.updated_at,
        &row.revision,
    ]
}

#[async_trait]
impl Sources for PgStore {
    async fn create_source(&self, source: Source) -> StoreResult<Source> {
        let row = SourceRow::of(&source, &self.shared.options.secret_keys);
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO source ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    columns::SOURCE
                ),
                &source_values(&row),
            )
            .await
            .map_err(|error| rows::conflict_on_unique(error, "a source with this uid already exists"))?;
        Ok(source)
    }

    async fn get_source(&self, id_or_uid: &str) -> StoreResult<Option<Source>> {
        let column = if SourceId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {} FROM source WHERE {column} = $1", columns::SOURCE),
                &[&id_or_uid],
            )
            .await?;
        row.map(|row| rows::source(&row, &self.shared.options.secret_keys))
            .transpose()
    }

    async fn list_sources(&self, page: PageRequest) -> StoreResult<Page<Source>> {
        let keys = &self.shared.options.secret_keys;
        self.run_page(listings::sources(Dialect::Postgres, &page), |row| {
            rows::source(row, keys)
        })
        .await
    }

    async fn update_source(&self, source: Source) -> StoreResult<Source> {
        let next = Source {
            revision: source.revision + 1,
            ..source
        };
        let row = SourceRow::of(&next, &self.shared.options.secret_keys);
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE source SET uid = $2, name = $3, kind = $4, config = $5, metadata = $6, \
                 token = $7, previous_token = $8, previous_token_expires_at = $9, \
                 updated_at = $10, revision = $11 WHERE id = $1 AND revision = $11::bigint - 1",
                &[
                    &row.id,
                    &row.uid,
                    &row.name,
                    &row.kind,
                    &row.config,
                    &row.metadata,
                    &row.token,
                    &row.previous_token,
                    &row.previous_token_expires_at,
                    &row.updated_at,
                    &row.revision,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "a source with this uid already exists")
            })?;
        if changed == 0 {
            return Err(match self.get_source(next.id.as_str()).await? {
                Some(_) => StoreError::Stale("source"),
                None => StoreError::NotFound,
            });
        }
        // Caches of sources (the receiving path's) are checked against the epoch.
        self.config_changed();
        Ok(next)
    }

    async fn delete_source(&self, id: &SourceId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let changed = transaction
            .execute("DELETE FROM source WHERE id = $1", &[&id.as_str()])
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        for table in ["received_request", "cron_tick"] {
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE source_id = $1"),
                    &[&id.as_str()],
                )
                .await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }

    async fn record_received(&self, request: ReceivedRequest) -> StoreResult<()> {
        let row = ReceivedRow::of(&request);
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO received_request ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    columns::RECEIVED
                ),
                &received_values(&row),
            )
            .await?;
        Ok(())
    }

    async fn list_received(
        &self,
        source_id: &SourceId,
        page: PageRequest,
    ) -> StoreResult<Page<ReceivedRequest>> {
        let query = listings::received(Dialect::Postgres, source_id, &page);
        self.run_page(query, received_row).await
    }

    async fn get_received(
        &self,
        source_id: &SourceId,
        id: &ReceivedId,
    ) -> StoreResult<Option<ReceivedRequest>> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM received_request WHERE source_id = $1 AND id = $2",
                    columns::RECEIVED
                ),
                &[&source_id.as_str(), &id.as_str()],
            )
            .await?
            .as_ref()
            .map(received_row)
            .transpose()
    }

    async fn last_ticks(&self) -> StoreResult<HashMap<SourceId, Millis>> {
        self.client()
            .await?
            .query("SELECT source_id, last_tick FROM cron_tick", &[])
            .await?
            .iter()
            .map(|row| Ok((SourceId::from_trusted(row.try_get(0)?), row.try_get(1)?)))
            .collect()
    }

    async fn record_tick(&self, source_id: &SourceId, at: Millis) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO cron_tick (source_id, last_tick) VALUES ($1, $2) \
                 ON CONFLICT (source_id) DO UPDATE SET last_tick = GREATEST(cron_tick.last_tick, $2)",
                &[&source_id.as_str(), &at],
            )
            .await?;
        Ok(())
    }
}

/// A received request's values in [`columns::RECEIVED`] order.
fn received_values<'a>(row: &'a ReceivedRow<'a>) -> [&'a (dyn ToSql + Sync); 9] {
    [
        &row.id,
        &row.source_id,
        &row.received_at,
        &row.outcome,
        &row.reason,
        &row.content_type,
        &row.size,
        &row.event_id,
        &row.msg_id,
    ]
}

fn received_row(row: &tokio_postgres::Row) -> StoreResult<ReceivedRequest> {
    columns::received_request(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get::<_, &str>(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
    )
    .map_err(StoreError::corrupt)
}
