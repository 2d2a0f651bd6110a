//! Incoming sources on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::{Source, SourceId};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::SqliteStore;
use super::paging::run_page;
use super::rows;
use crate::columns::{self, SourceRow};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::sealing::SecretKeys;
use crate::{Page, PageRequest, Sources, StoreError, StoreResult};

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
                Ok(())
            })
            .await
    }
}
