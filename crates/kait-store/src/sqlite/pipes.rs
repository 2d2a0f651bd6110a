//! Pipes, their runs and timers on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, PipeId, PipeRunId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use super::paging::run_page;
use super::rows;
use crate::columns;
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{IfScheduled, Page, PageRequest, Pipe, PipeRun, Pipes, StoreError, StoreResult, Timer};

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    })
}

fn pipe_row(row: &Row<'_>) -> rusqlite::Result<Pipe> {
    Ok(Pipe {
        id: PipeId::from_trusted(row.get(0)?),
        uid: row.get(1)?,
        name: row.get(2)?,
        app_id: AppId::from_trusted(row.get(3)?),
        endpoint_id: EndpointId::from_trusted(row.get(4)?),
        definition: json_column(row, 5)?,
        enabled: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
        revision: row.get::<_, i64>(9)? as u64,
    })
}

fn run_row(row: &Row<'_>) -> rusqlite::Result<PipeRun> {
    Ok(PipeRun {
        id: PipeRunId::from_trusted(row.get(0)?),
        pipe_id: PipeId::from_trusted(row.get(1)?),
        origin: row.get(2)?,
        at: row.get(3)?,
        outcome: row.get(4)?,
        detail: json_column(row, 5)?,
    })
}

fn timer_row(row: &Row<'_>) -> rusqlite::Result<Timer> {
    Ok(Timer {
        id: row.get(0)?,
        pipe_id: PipeId::from_trusted(row.get(1)?),
        due_at: row.get(2)?,
        state: json_column(row, 3)?,
    })
}

fn pipe_by_key(connection: &Connection, key: &str) -> StoreResult<Option<Pipe>> {
    let column = if PipeId::has_prefix(key) { "id" } else { "uid" };
    let sql = format!("SELECT {} FROM pipe WHERE {column} = ?1", columns::PIPE);
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([key], pipe_row)
        .optional()?)
}

#[async_trait]
impl Pipes for SqliteStore {
    async fn create_pipe(&self, pipe: Pipe) -> StoreResult<Pipe> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO pipe ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        columns::PIPE
                    ))?
                    .execute(params![
                        pipe.id.as_str(),
                        pipe.uid,
                        pipe.name,
                        pipe.app_id.as_str(),
                        pipe.endpoint_id.as_str(),
                        pipe.definition.to_string(),
                        pipe.enabled,
                        pipe.created_at,
                        pipe.updated_at,
                        pipe.revision as i64,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a pipe with this uid already exists")
                    })?;
                context.config_changed = true;
                Ok(pipe)
            })
            .await
    }

    async fn get_pipe(&self, id_or_uid: &str) -> StoreResult<Option<Pipe>> {
        let key = id_or_uid.to_owned();
        self.read(move |connection| pipe_by_key(connection, &key))
            .await
    }

    async fn list_pipes(&self, page: PageRequest) -> StoreResult<Page<Pipe>> {
        let query = listings::pipes(Dialect::Sqlite, &page);
        self.read(move |connection| run_page(connection, query, pipe_row))
            .await
    }

    async fn update_pipe(&self, pipe: Pipe) -> StoreResult<Pipe> {
        self.writer
            .write(move |context| {
                let next = Pipe {
                    revision: pipe.revision + 1,
                    ..pipe
                };
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE pipe SET uid = ?2, name = ?3, definition = ?4, enabled = ?5, \
                         updated_at = ?6, revision = ?7, app_id = ?8, endpoint_id = ?9 \
                         WHERE id = ?1 AND revision = ?7 - 1",
                    )?
                    .execute(params![
                        next.id.as_str(),
                        next.uid,
                        next.name,
                        next.definition.to_string(),
                        next.enabled,
                        next.updated_at,
                        next.revision as i64,
                        next.app_id.as_str(),
                        next.endpoint_id.as_str(),
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a pipe with this uid already exists")
                    })?;
                if changed == 0 {
                    return Err(match pipe_by_key(context.connection, next.id.as_str())? {
                        Some(_) => StoreError::Stale("pipe"),
                        None => StoreError::NotFound,
                    });
                }
                context.config_changed = true;
                Ok(next)
            })
            .await
    }

    async fn delete_pipe(&self, id: &PipeId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .execute("DELETE FROM pipe WHERE id = ?1", [id.as_str()])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context.config_changed = true;
                for table in ["timer", "pipe_run"] {
                    context.connection.execute(
                        &format!("DELETE FROM {table} WHERE pipe_id = ?1"),
                        [id.as_str()],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn pipe_endpoints(&self, url: &str) -> StoreResult<Vec<kait_core::Endpoint>> {
        let (url, keys) = (url.to_owned(), self.keys.clone());
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(&format!(
                "SELECT {} FROM endpoint WHERE kind = 'pipe' AND url = ?1 ORDER BY id",
                columns::ENDPOINT
            ))?;
            let endpoints = statement
                .query_map([url.as_str()], |row| rows::endpoint(row, &keys))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(endpoints)
        })
        .await
    }

    async fn record_pipe_run(&self, run: PipeRun) -> StoreResult<()> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO pipe_run ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        columns::PIPE_RUN
                    ))?
                    .execute(params![
                        run.id.as_str(),
                        run.pipe_id.as_str(),
                        run.origin,
                        run.at,
                        run.outcome,
                        run.detail.to_string(),
                    ])?;
                Ok(())
            })
            .await
    }

    async fn list_pipe_runs(
        &self,
        pipe_id: &PipeId,
        page: PageRequest,
    ) -> StoreResult<Page<PipeRun>> {
        let query = listings::pipe_runs(Dialect::Sqlite, pipe_id, &page);
        self.read(move |connection| run_page(connection, query, run_row))
            .await
    }

    async fn schedule_timer(&self, timer: Timer, if_scheduled: IfScheduled) -> StoreResult<bool> {
        self.writer
            .write(move |context| {
                let on_conflict = columns::timer_on_conflict(if_scheduled);
                let written = context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO timer ({}) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) {on_conflict}",
                        columns::TIMER
                    ))?
                    .execute(params![
                        timer.id,
                        timer.pipe_id.as_str(),
                        timer.due_at,
                        timer.state.to_string(),
                    ])?;
                Ok(written > 0)
            })
            .await
    }

    async fn cancel_timer(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.writer
            .write(move |context| {
                Ok(context
                    .connection
                    .prepare_cached("DELETE FROM timer WHERE id = ?1")?
                    .execute([id])?
                    > 0)
            })
            .await
    }

    async fn claim_timers(
        &self,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> StoreResult<Vec<Timer>> {
        self.writer
            .write(move |context| {
                let mut statement = context.connection.prepare_cached(&format!(
                    "UPDATE timer SET claimed_until = ?2 WHERE id IN (\
                         SELECT id FROM timer WHERE due_at <= ?1 \
                         AND (claimed_until IS NULL OR claimed_until <= ?1) \
                         ORDER BY due_at LIMIT ?3) \
                     RETURNING {}",
                    columns::TIMER
                ))?;
                let timers = statement
                    .query_map(params![now, lease_until, limit as i64], timer_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(timers)
            })
            .await
    }

    async fn finish_timers(&self, timers: &[Timer]) -> StoreResult<()> {
        let fired: Vec<(String, Millis)> = timers
            .iter()
            .map(|timer| (timer.id.clone(), timer.due_at))
            .collect();
        self.writer
            .write(move |context| {
                let mut statement = context
                    .connection
                    .prepare_cached("DELETE FROM timer WHERE id = ?1 AND due_at = ?2")?;
                for (id, due_at) in &fired {
                    statement.execute(params![id, due_at])?;
                }
                Ok(())
            })
            .await
    }

    async fn next_timer_at(&self) -> StoreResult<Option<Millis>> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT MIN(CASE WHEN claimed_until > due_at THEN claimed_until ELSE due_at END) \
                     FROM timer",
                )?
                .query_row([], |row| row.get(0))?)
        })
        .await
    }

    async fn count_timers(&self, pipe_id: Option<&PipeId>) -> StoreResult<u64> {
        let pipe_id = pipe_id.map(|id| id.as_str().to_owned());
        self.read(move |connection| {
            let count = match &pipe_id {
                Some(id) => connection
                    .prepare_cached("SELECT COUNT(*) FROM timer WHERE pipe_id = ?1")?
                    .query_row([id], |row| row.get::<_, i64>(0))?,
                None => connection
                    .prepare_cached("SELECT COUNT(*) FROM timer")?
                    .query_row([], |row| row.get::<_, i64>(0))?,
            };
            Ok(count as u64)
        })
        .await
    }
}
