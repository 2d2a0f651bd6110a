//! Applications, event types and endpoints on PostgreSQL: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Application, Endpoint, EndpointId, EventType};
use tokio_postgres::types::ToSql;

use super::PgStore;
use super::rows;
use crate::columns::{self, EndpointRow};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::{Applications, Endpoints, EventTypes, Page, PageRequest, StoreError, StoreResult};

/// The PostgreSQL placeholder for the n-th value.
fn numbered(n: usize) -> String {
    format!("${n}")
}

/// An endpoint row's values in [`columns::ENDPOINT`] order.
fn endpoint_values<'a>(
    row: &'a EndpointRow<'a>,
) -> [&'a (dyn ToSql + Sync); columns::ENDPOINT_VALUES] {
    [
        &row.id,
        &row.app_id,
        &row.uid,
        &row.url,
        &row.description,
        &row.version,
        &row.disabled,
        &row.event_types,
        &row.channels,
        &row.rate_limit,
        &row.metadata,
        &row.secret,
        &row.headers,
        &row.created_at,
        &row.updated_at,
        &row.ordering,
        &row.previous_secret,
        &row.previous_secret_expires_at,
        &row.format,
        &row.kind,
        &row.revision,
        &row.transformation_code,
        &row.transformation_enabled,
        &row.transformation_updated_at,
        &row.media,
        &row.ownership_required,
        &row.verified_url,
    ]
}

#[async_trait]
impl Applications for PgStore {
    async fn create_application(&self, application: Application) -> StoreResult<Application> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO application ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    columns::APPLICATION
                ),
                &[
                    &application.id.as_str(),
                    &application.uid,
                    &application.name,
                    &application.rate_limit.map(i64::from),
                    &columns::to_json(&application.metadata),
                    &application.created_at,
                    &application.updated_at,
                    &(application.revision as i64),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an application with this uid already exists")
            })?;
        Ok(application)
    }

    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        let column = if AppId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM application WHERE {column} = $1",
                    columns::APPLICATION
                ),
                &[&id_or_uid],
            )
            .await?;
        row.as_ref().map(rows::application).transpose()
    }

    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>> {
        self.run_page(
            listings::applications(Dialect::Postgres, &page),
            rows::application,
        )
        .await
    }

    async fn update_application(&self, application: Application) -> StoreResult<Application> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE application SET uid = $2, name = $3, rate_limit = $4, metadata = $5, \
                 updated_at = $6, revision = revision + 1 WHERE id = $1 AND revision = $7",
                &[
                    &application.id.as_str(),
                    &application.uid,
                    &application.name,
                    &application.rate_limit.map(i64::from),
                    &columns::to_json(&application.metadata),
                    &application.updated_at,
                    &(application.revision as i64),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an application with this uid already exists")
            })?;
        let stored = self
            .get_application(application.id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        if changed == 0 {
            return Err(StoreError::Stale("application"));
        }
        self.config_changed();
        Ok(stored)
    }

    async fn delete_application(&self, id: &AppId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let id = id.as_str();
        let changed = transaction
            .execute("DELETE FROM application WHERE id = $1", &[&id])
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        transaction
            .batch_execute("SET LOCAL statement_timeout = 0")
            .await?;
        // Owner rows before deliveries: the order claims take their locks in, so the two
        // cannot deadlock.
        for sql in [
            "DELETE FROM endpoint_owner WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM delivery WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM poller_consumer WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM attempt WHERE app_id = $1",
            "DELETE FROM idempotency_key WHERE app_id = $1",
            "DELETE FROM message_attachment WHERE msg_id IN (SELECT id FROM message WHERE app_id = $1)",
            "DELETE FROM message WHERE app_id = $1",
            "DELETE FROM endpoint WHERE app_id = $1",
            "DELETE FROM app_token WHERE app_id = $1",
            "DELETE FROM idempotent_response WHERE app_id = $1",
            "DELETE FROM app_position WHERE app_id = $1",
            "DELETE FROM device WHERE app_id = $1",
            "DELETE FROM device_command WHERE app_id = $1",
            "DELETE FROM installation_token WHERE installation_id IN (SELECT id FROM installation WHERE app_id = $1)",
            "DELETE FROM installation WHERE app_id = $1",
            "DELETE FROM plugin_audit WHERE app_id = $1",
        ] {
            transaction.execute(sql, &[&id]).await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }
}

#[async_trait]
impl EventTypes for PgStore {
    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO event_type ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    columns::EVENT_TYPE
                ),
                &[
                    &event_type.name,
                    &event_type.description,
                    &event_type.archived,
                    &event_type.deprecated,
                    &event_type.schemas.as_ref().map(columns::to_json),
                    &event_type.feature_flag,
                    &event_type.group_name,
                    &event_type.created_at,
                    &event_type.updated_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an event type with this name already exists")
            })?;
        Ok(event_type)
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM event_type WHERE name = $1",
                    columns::EVENT_TYPE
                ),
                &[&name],
            )
            .await?;
        row.as_ref().map(rows::event_type).transpose()
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>> {
        let query = listings::event_types(Dialect::Postgres, include_archived, &page);
        self.run_page(query, rows::event_type).await
    }

    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE event_type SET description = $2, archived = $3, deprecated = $4, \
                 schemas = $5, feature_flag = $6, group_name = $7, updated_at = $8 WHERE name = $1",
                &[
                    &event_type.name,
                    &event_type.description,
                    &event_type.archived,
                    &event_type.deprecated,
                    &event_type.schemas.as_ref().map(columns::to_json),
                    &event_type.feature_flag,
                    &event_type.group_name,
                    &event_type.updated_at,
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(event_type)
    }

    async fn expunge_event_type(&self, name: &str) -> StoreResult<()> {
        let changed = self
            .client()
            .await?
            .execute("DELETE FROM event_type WHERE name = $1", &[&name])
            .await?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Endpoints for PgStore {
    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        // The application's position row doubles as its lock, so concurrent creates on any
        // node cannot overshoot the limit.
        transaction
            .execute(
                "INSERT INTO app_position (app_id, last) VALUES ($1, 0) \
                 ON CONFLICT (app_id) DO UPDATE SET last = app_position.last",
                &[&endpoint.app_id.as_str()],
            )
            .await?;
        let count: i64 = transaction
            .query_one(
                "SELECT count(*) FROM endpoint WHERE app_id = $1",
                &[&endpoint.app_id.as_str()],
            )
            .await?
            .get(0);
        if count as usize >= max_per_app {
            return Err(StoreError::LimitReached(format!(
                "the application already has the maximum of {max_per_app} endpoints"
            )));
        }
        let row = EndpointRow::of(&endpoint, &self.shared.options.secret_keys);
        let placeholders: Vec<String> = (1..=columns::ENDPOINT_VALUES).map(numbered).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO endpoint ({}) VALUES ({})",
                    columns::ENDPOINT,
                    placeholders.join(", ")
                ),
                &endpoint_values(&row),
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an endpoint with this uid already exists")
            })?;
        transaction.commit().await?;
        self.config_changed();
        Ok(endpoint)
    }

    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let column = if EndpointId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM endpoint WHERE app_id = $1 AND {column} = $2",
                    columns::ENDPOINT
                ),
                &[&app_id.as_str(), &id_or_uid],
            )
            .await?;
        let keys = &self.shared.options.secret_keys;
        row.as_ref()
            .map(|row| rows::endpoint(row, keys))
            .transpose()
    }

    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM endpoint WHERE id = $1",
                columns::ENDPOINT
            ))
            .await?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await?;
        let keys = &self.shared.options.secret_keys;
        row.as_ref()
            .map(|row| rows::endpoint(row, keys))
            .transpose()
    }

    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let keys = &self.shared.options.secret_keys;
        let query = listings::endpoints(Dialect::Postgres, app_id, &page);
        self.run_page(query, |row| rows::endpoint(row, keys)).await
    }

    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint> {
        let next = Endpoint {
            revision: endpoint.revision + 1,
            ..endpoint
        };
        let row = EndpointRow::of(&next, &self.shared.options.secret_keys);
        // The revision column is bound to the new revision: the stored one must be the one
        // before it.
        let changed = self
            .client()
            .await?
            .execute(
                &format!(
                    "UPDATE endpoint SET {} WHERE id = $1 AND app_id = $2 AND revision = ${}::bigint - 1",
                    columns::endpoint_update_set(numbered),
                    columns::ENDPOINT_UPDATE_REVISION
                ),
                &columns::update_values(endpoint_values(&row)),
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an endpoint with this uid already exists")
            })?;
        if changed == 0 {
            return Err(match self.get_endpoint_by_id(&next.id).await? {
                Some(_) => StoreError::Stale("endpoint"),
                None => StoreError::NotFound,
            });
        }
        self.config_changed();
        Ok(next)
    }

    async fn disable_endpoint(&self, id: &EndpointId, at: Millis) -> StoreResult<Option<Endpoint>> {
        let switched_off = self
            .client()
            .await?
            .execute(
                "UPDATE endpoint SET disabled = TRUE, updated_at = $2, revision = revision + 1 \
                 WHERE id = $1 AND NOT disabled",
                &[&id.as_str(), &at],
            )
            .await?;
        let endpoint = self
            .get_endpoint_by_id(id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if switched_off == 0 {
            return Ok(None);
        }
        self.config_changed();
        Ok(Some(endpoint))
    }

    async fn verify_endpoint(&self, id: &EndpointId, url: &str, at: Millis) -> StoreResult<bool> {
        let verified = self
            .client()
            .await?
            .execute(
                "UPDATE endpoint SET verified_url = $2, updated_at = $3, revision = revision + 1 \
                 WHERE id = $1 AND url = $2 AND ownership_required",
                &[&id.as_str(), &url, &at],
            )
            .await?;
        if verified == 0 {
            return Ok(false);
        }
        self.config_changed();
        Ok(true)
    }

    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let changed = transaction
            .execute(
                "DELETE FROM endpoint WHERE id = $1 AND app_id = $2",
                &[&id.as_str(), &app_id.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        // Owner row before deliveries: the order claims take their locks in.
        for sql in [
            "DELETE FROM endpoint_owner WHERE endpoint_id = $1",
            "DELETE FROM delivery WHERE endpoint_id = $1",
            "DELETE FROM poller_consumer WHERE endpoint_id = $1",
        ] {
            transaction.execute(sql, &[&id.as_str()]).await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }

    fn config_epoch(&self) -> u64 {
        self.shared
            .signals
            .config_epoch
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}
