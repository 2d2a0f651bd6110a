//! Pipes, their runs and timers on PostgreSQL: SQL and row mapping only. Timers are claimed
//! with `FOR UPDATE SKIP LOCKED` under a lease, so each due timer is fired by one node.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, PipeId, PipeRunId};
use tokio_postgres::Row;

use super::{PgStore, rows};
use crate::columns;
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{IfScheduled, Page, PageRequest, Pipe, PipeRun, Pipes, StoreError, StoreResult, Timer};

fn pipe_row(row: &Row) -> StoreResult<Pipe> {
    Ok(Pipe {
        id: PipeId::from_trusted(row.try_get(0)?),
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        app_id: AppId::from_trusted(row.try_get(3)?),
        endpoint_id: EndpointId::from_trusted(row.try_get(4)?),
        definition: rows::from_json("definition", row.try_get(5)?)?,
        enabled: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
        revision: row.try_get::<_, i64>(9)? as u64,
    })
}

fn run_row(row: &Row) -> StoreResult<PipeRun> {
    Ok(PipeRun {
        id: PipeRunId::from_trusted(row.try_get(0)?),
        pipe_id: PipeId::from_trusted(row.try_get(1)?),
        origin: row.try_get(2)?,
        at: row.try_get(3)?,
        outcome: row.try_get(4)?,
        detail: rows::from_json("detail", row.try_get(5)?)?,
    })
}

fn timer_row(row: &Row) -> StoreResult<Timer> {
    Ok(Timer {
        id: row.try_get(0)?,
        pipe_id: PipeId::from_trusted(row.try_get(1)?),
        due_at: row.try_get(2)?,
        state: rows::from_json("state", row.try_get(3)?)?,
    })
}

#[async_trait]
impl Pipes for PgStore {
    async fn create_pipe(&self, pipe: Pipe) -> StoreResult<Pipe> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO pipe ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    columns::PIPE
                ),
                &[
                    &pipe.id.as_str(),
                    &pipe.uid,
                    &pipe.name,
                    &pipe.app_id.as_str(),
                    &pipe.endpoint_id.as_str(),
                    &pipe.definition.to_string(),
                    &pipe.enabled,
                    &pipe.created_at,
                    &pipe.updated_at,
                    &(pipe.revision as i64),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "a pipe with this uid already exists")
            })?;
        self.config_changed();
        Ok(pipe)
    }

    async fn get_pipe(&self, id_or_uid: &str) -> StoreResult<Option<Pipe>> {
        let column = if PipeId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {} FROM pipe WHERE {column} = $1", columns::PIPE),
                &[&id_or_uid],
            )
            .await?;
        row.as_ref().map(pipe_row).transpose()
    }

    async fn list_pipes(&self, page: PageRequest) -> StoreResult<Page<Pipe>> {
        self.run_page(listings::pipes(Dialect::Postgres, &page), pipe_row)
            .await
    }

    async fn update_pipe(&self, pipe: Pipe) -> StoreResult<Pipe> {
        let next = Pipe {
            revision: pipe.revision + 1,
            ..pipe
        };
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE pipe SET uid = $2, name = $3, definition = $4, enabled = $5, \
                 updated_at = $6, revision = $7, app_id = $8, endpoint_id = $9 \
                 WHERE id = $1 AND revision = $7::bigint - 1",
                &[
                    &next.id.as_str(),
                    &next.uid,
                    &next.name,
                    &next.definition.to_string(),
                    &next.enabled,
                    &next.updated_at,
                    &(next.revision as i64),
                    &next.app_id.as_str(),
                    &next.endpoint_id.as_str(),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "a pipe with this uid already exists")
            })?;
        if changed == 0 {
            return Err(match self.get_pipe(next.id.as_str()).await? {
                Some(_) => StoreError::Stale("pipe"),
                None => StoreError::NotFound,
            });
        }
        self.config_changed();
        Ok(next)
    }

    async fn delete_pipe(&self, id: &PipeId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let changed = transaction
            .execute("DELETE FROM pipe WHERE id = $1", &[&id.as_str()])
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        for table in ["timer", "pipe_run"] {
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE pipe_id = $1"),
                    &[&id.as_str()],
                )
                .await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }

    async fn pipe_endpoints(&self, url: &str) -> StoreResult<Vec<kait_core::Endpoint>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM endpoint WHERE kind = 'pipe' AND url = $1 ORDER BY id",
                columns::ENDPOINT
            ))
            .await?;
        let keys = &self.shared.options.secret_keys;
        client
            .query(&statement, &[&url])
            .await?
            .iter()
            .map(|row| rows::endpoint(row, keys))
            .collect()
    }

    async fn record_pipe_run(&self, run: PipeRun) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO pipe_run ({}) VALUES ($1, $2, $3, $4, $5, $6)",
                    columns::PIPE_RUN
                ),
                &[
                    &run.id.as_str(),
                    &run.pipe_id.as_str(),
                    &run.origin,
                    &run.at,
                    &run.outcome,
                    &run.detail.to_string(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn list_pipe_runs(
        &self,
        pipe_id: &PipeId,
        page: PageRequest,
    ) -> StoreResult<Page<PipeRun>> {
        self.run_page(
            listings::pipe_runs(Dialect::Postgres, pipe_id, &page),
            run_row,
        )
        .await
    }

    async fn schedule_timer(&self, timer: Timer, if_scheduled: IfScheduled) -> StoreResult<bool> {
        let on_conflict = columns::timer_on_conflict(if_scheduled);
        let written = self
            .client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO timer ({}) VALUES ($1, $2, $3, $4) ON CONFLICT (id) {on_conflict}",
                    columns::TIMER
                ),
                &[
                    &timer.id,
                    &timer.pipe_id.as_str(),
                    &timer.due_at,
                    &timer.state.to_string(),
                ],
            )
            .await?;
        Ok(written > 0)
    }

    async fn cancel_timer(&self, id: &str) -> StoreResult<bool> {
        Ok(self
            .client()
            .await?
            .execute("DELETE FROM timer WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    async fn claim_timers(
        &self,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> StoreResult<Vec<Timer>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "UPDATE timer SET claimed_until = $2 WHERE id IN (\
                         SELECT id FROM timer WHERE due_at <= $1 \
                         AND (claimed_until IS NULL OR claimed_until <= $1) \
                         ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING {}",
                    columns::TIMER
                ),
                &[&now, &lease_until, &(limit as i64)],
            )
            .await?;
        rows.iter().map(timer_row).collect()
    }

    async fn finish_timers(&self, timers: &[Timer]) -> StoreResult<()> {
        let ids: Vec<&str> = timers.iter().map(|timer| timer.id.as_str()).collect();
        let due: Vec<Millis> = timers.iter().map(|timer| timer.due_at).collect();
        self.client()
            .await?
            .execute(
                "DELETE FROM timer t USING unnest($1::text[], $2::bigint[]) AS f(id, due_at) \
                 WHERE t.id = f.id AND t.due_at = f.due_at",
                &[&ids, &due],
            )
            .await?;
        Ok(())
    }

    async fn next_timer_at(&self) -> StoreResult<Option<Millis>> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT MIN(CASE WHEN claimed_until > due_at THEN claimed_until ELSE due_at END) \
                 FROM timer",
                &[],
            )
            .await?;
        Ok(row.try_get(0)?)
    }

    async fn count_timers(&self, pipe_id: Option<&PipeId>) -> StoreResult<u64> {
        let client = self.client().await?;
        let row = match pipe_id {
            Some(id) => {
                client
                    .query_one(
                        "SELECT COUNT(*) FROM timer WHERE pipe_id = $1",
                        &[&id.as_str()],
                    )
                    .await?
            }
            None => client.query_one("SELECT COUNT(*) FROM timer", &[]).await?,
        };
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}
