//! Incoming sources on SQLite: SQL and row mapping only.

use std::collections::HashMap;

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{ReceivedId, Source, SourceId};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::SqliteStore;
use super::paging::run_page;
use super::rows;
use crate::columns::{self, ReceivedRow, SourceRow};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::sealing::SecretKeys;
use crate::{Page, PageRequest, ReceivedRequest, Sources, StoreError, StoreResult};

fn source_by_key(
    connection: &Connection,
    keys: &SecretKeys,
    key: &str,
) -> StoreResult<Option<Source>> {
    let column = if SourceId::has_prefix(key) {
        "id"
    } else {
        "uid"
    };
    let sql = format!("SELECT {} FROM source WHERE {column} = ?1", columns::SOURCE);
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([key], |row| rows::source(row, keys))
        .optional()?)
}

/// Writes one entry of a source's received-request log (also inside `create_message`).
pub(super) fn insert_received(
    connection: &Connection,
    request: &ReceivedRequest,
) -> StoreResult<()> {
    let row = ReceivedRow::of(request);
    connection
        .prepare_cached(&format!(
            "INSERT INTO received_request ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            columns::RECEIVED
        ))?
        .execute(params![
            row.id,
            row.source_id,
            row.received_at,
            row.outcome,
            row.reason,
            row.content_type,
            row.size,
            row.event_id,
            row.msg_id,
        ])?;
    Ok(())
}

fn received_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReceivedRequest> {
    columns::received_request(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        &row.get::<_, String>(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
    )
    .map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, error.into())
    })
}

/// A source row's values in [`columns::SOURCE`] order.
fn source_values(row: SourceRow<'_>) -> [Value; 12] {
    let text = |value: &str| Value::Text(value.to_owned());
    [
        text(row.id),
        row.uid.map_or(Value::Null, text),
        text(row.name),
        text(row.kind),
        Value::Text(row.config),
        Value::Text(row.metadata),
        Value::Text(row.token),
        row.previous_token.map_or(Value::Null, Value::Text),
        row.previous_token_expires_at
            .map_or(Value::Null, Value::Integer),
        Value::Integer(row.created_at),
        Value::Integer(row.updated_at),
        Value::Integer(row.revision),
    ]
}

#[async_trait]
impl Sources for SqliteStore {
    async fn create_source(&self, source: Source) -> StoreResult<Source> {
        self.writer
            .write(move |context| {
                let values = source_values(SourceRow::of(&source, context.keys));
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO source ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                        columns::SOURCE
                    ))?
                    .execute(params_from_iter(values))
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a source with this uid already exists")
                    })?;
                Ok(source)
            })
            .await
    }

    async fn get_source(&self, id_or_uid: &str) -> StoreResult<Option<Source>> {
        let (key, keys) = (id_or_uid.to_owned(), self.keys.clone());
        self.read(move |connection| source_by_key(connection, &keys, &key))
            .await
    }

    async fn list_sources(&self, page: PageRequest) -> StoreResult<Page<Source>> {
        let query = listings::sources(Dialect::Sqlite, &page);
        let keys = self.keys.clone();
        self.read(move |connection| run_page(connection, query, |row| rows::source(row, &keys)))
            .await
    }

    async fn update_source(&self, source: Source) -> StoreResult<Source> {
        self.writer
            .write(move |context| {
                let next = Source {
                    revision: source.revision + 1,
                    ..source
                };
                let row = SourceRow::of(&next, context.keys);
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE source SET uid = ?2, name = ?3, kind = ?4, config = ?5, metadata = ?6, \
                         token = ?7, previous_token = ?8, previous_token_expires_at = ?9, \
                         updated_at = ?10, revision = ?11 WHERE id = ?1 AND revision = ?11 - 1",
                    )?
                    .execute(params![
                        row.id,
                        row.uid,
                        row.name,
                        row.kind,
                        row.config,
                        row.metadata,
                        row.token,
                        row.previous_token,
                        row.previous_token_expires_at,
                        row.updated_at,
                        row.revision,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a source with this uid already exists")
                    })?;
                if changed == 0 {
                    return Err(
                        match source_by_key(context.connection, context.keys, next.id.as_str())? {
                            Some(_) => StoreError::Stale("source"),
                            None => StoreError::NotFound,
                        },
                    );
                }
                // Caches of sources (the receiving path's) are checked against the epoch.
                context.config_changed = true;
                Ok(next)
            })
            .await
    }

    async fn delete_source(&self, id: &SourceId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .execute("DELETE FROM source WHERE id = ?1", [id.as_str()])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context.config_changed = true;
                for table in ["received_request", "cron_tick"] {
                    context.connection.execute(
                        &format!("DELETE FROM {table} WHERE source_id = ?1"),
                        [id.as_str()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn record_received(&self, request: ReceivedRequest) -> StoreResult<()> {
        self.writer
            .write(move |context| insert_received(context.connection, &request))
            .await
    }

    async fn list_received(
        &self,
        source_id: &SourceId,
        page: PageRequest,
    ) -> StoreResult<Page<ReceivedRequest>> {
        let query = listings::received(Dialect::Sqlite, source_id, &page);
        self.read(move |connection| run_page(connection, query, received_row))
            .await
    }

    async fn get_received(
        &self,
        source_id: &SourceId,
        id: &ReceivedId,
    ) -> StoreResult<Option<ReceivedRequest>> {
        let (source_id, id) = (source_id.clone(), id.clone());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM received_request WHERE source_id = ?1 AND id = ?2",
                    columns::RECEIVED
                ))?
                .query_row([source_id.as_str(), id.as_str()], received_row)
                .optional()?)
        })
        .await
    }

    async fn last_ticks(&self) -> StoreResult<HashMap<SourceId, Millis>> {
        self.read(|connection| {
            let mut statement =
                connection.prepare_cached("SELECT source_id, last_tick FROM cron_tick")?;
            let ticks = statement
                .query_map([], |row| {
                    Ok((SourceId::from_trusted(row.get(0)?), row.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ticks)
        })
        .await
    }

    async fn record_tick(&self, source_id: &SourceId, at: Millis) -> StoreResult<()> {
        let source_id = source_id.clone();
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO cron_tick (source_id, last_tick) VALUES (?1, ?2) \
                         ON CONFLICT (source_id) DO UPDATE SET last_tick = MAX(last_tick, ?2)",
                    )?
                    .execute(params![source_id.as_str(), at])?;
                Ok(())
            })
            .await
    }
}
