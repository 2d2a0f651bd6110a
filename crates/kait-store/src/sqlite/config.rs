//! Applications, event types and endpoints on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Application, Endpoint, EndpointId, EventType};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::SqliteStore;
use super::paging::run_page;
use super::rows;
use super::writer::WriteContext;
use crate::columns::{self, EndpointRow};
use crate::logic::listings;
use crate::logic::query::Dialect;
use crate::sealing::SecretKeys;
use crate::{Applications, Endpoints, EventTypes, Page, PageRequest, StoreError, StoreResult};

fn application_by_key(connection: &Connection, key: &str) -> StoreResult<Option<Application>> {
    let column = if AppId::has_prefix(key) { "id" } else { "uid" };
    let sql = format!(
        "SELECT {} FROM application WHERE {column} = ?1",
        columns::APPLICATION
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([key], rows::application)
        .optional()?)
}

fn endpoint_by_key(
    connection: &Connection,
    keys: &SecretKeys,
    app_id: &str,
    key: &str,
) -> StoreResult<Option<Endpoint>> {
    let column = if EndpointId::has_prefix(key) {
        "id"
    } else {
        "uid"
    };
    let sql = format!(
        "SELECT {} FROM endpoint WHERE app_id = ?1 AND {column} = ?2",
        columns::ENDPOINT
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([app_id, key], |row| rows::endpoint(row, keys))
        .optional()?)
}

/// The SQLite placeholder for the n-th value.
fn numbered(n: usize) -> String {
    format!("?{n}")
}

/// Binds an endpoint row in [`columns::ENDPOINT`] order.
fn endpoint_values(row: EndpointRow<'_>) -> [rusqlite::types::Value; columns::ENDPOINT_VALUES] {
    use rusqlite::types::Value;
    let text = |value: &str| Value::Text(value.to_owned());
    let optional_text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    let optional_int = |value: Option<i64>| value.map_or(Value::Null, Value::Integer);
    [
        text(row.id),
        text(row.app_id),
        optional_text(row.uid.map(str::to_owned)),
        text(row.url),
        text(row.description),
        Value::Integer(row.version),
        Value::Integer(i64::from(row.disabled)),
        optional_text(row.event_types),
        optional_text(row.channels),
        optional_int(row.rate_limit),
        Value::Text(row.metadata),
        Value::Text(row.secret),
        Value::Text(row.headers),
        Value::Integer(row.created_at),
        Value::Integer(row.updated_at),
        text(row.ordering),
        optional_text(row.previous_secret),
        optional_int(row.previous_secret_expires_at),
        text(row.format),
        text(row.kind),
        Value::Integer(row.revision),
        optional_text(row.transformation_code.map(str::to_owned)),
        Value::Integer(i64::from(row.transformation_enabled)),
        optional_int(row.transformation_updated_at),
        optional_text(row.media),
        Value::Integer(i64::from(row.ownership_required)),
        optional_text(row.verified_url.map(str::to_owned)),
    ]
}

fn insert_endpoint(context: &mut WriteContext<'_>, endpoint: &Endpoint) -> StoreResult<()> {
    let placeholders: Vec<String> = (1..=columns::ENDPOINT_VALUES).map(numbered).collect();
    let values = endpoint_values(EndpointRow::of(endpoint, context.keys));
    context
        .connection
        .prepare_cached(&format!(
            "INSERT INTO endpoint ({}) VALUES ({})",
            columns::ENDPOINT,
            placeholders.join(", ")
        ))?
        .execute(params_from_iter(values))
        .map_err(|error| {
            rows::conflict_on_unique(error, "an endpoint with this uid already exists")
        })?;
    context.forget_endpoints_of(endpoint.app_id.as_str());
    Ok(())
}

#[async_trait]
impl Applications for SqliteStore {
    async fn create_application(&self, application: Application) -> StoreResult<Application> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO application ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        columns::APPLICATION
                    ))?
                    .execute(params![
                        application.id.as_str(),
                        application.uid,
                        application.name,
                        application.rate_limit,
                        columns::to_json(&application.metadata),
                        application.created_at,
                        application.updated_at,
                        application.revision as i64,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(
                            error,
                            "an application with this uid already exists",
                        )
                    })?;
                Ok(application)
            })
            .await
    }

    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        let key = id_or_uid.to_owned();
        self.read(move |connection| application_by_key(connection, &key))
            .await
    }

    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>> {
        self.read(move |connection| {
            run_page(
                connection,
                listings::applications(Dialect::Sqlite, &page),
                rows::application,
            )
        })
        .await
    }

    async fn update_application(&self, application: Application) -> StoreResult<Application> {
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE application SET uid = ?2, name = ?3, rate_limit = ?4, metadata = ?5, \
                         updated_at = ?6, revision = revision + 1 WHERE id = ?1 AND revision = ?7",
                    )?
                    .execute(params![
                        application.id.as_str(),
                        application.uid,
                        application.name,
                        application.rate_limit,
                        columns::to_json(&application.metadata),
                        application.updated_at,
                        application.revision as i64,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "an application with this uid already exists")
                    })?;
                let stored = application_by_key(context.connection, application.id.as_str())?
                    .ok_or(StoreError::NotFound)?;
                if changed == 0 {
                    return Err(StoreError::Stale("application"));
                }
                context.config_changed = true;
                Ok(stored)
            })
            .await
    }

    async fn delete_application(&self, id: &AppId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let changed = connection.execute("DELETE FROM application WHERE id = ?1", [id.as_str()])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                connection.execute(
                    "DELETE FROM delivery WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = ?1)",
                    [id.as_str()],
                )?;
                connection.execute("DELETE FROM attempt WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM idempotency_key WHERE app_id = ?1", [id.as_str()])?;
                connection.execute(
                    "DELETE FROM message_attachment WHERE msg_id IN (SELECT id FROM message WHERE app_id = ?1)",
                    [id.as_str()],
                )?;
                connection.execute("DELETE FROM message WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM endpoint WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM app_token WHERE app_id = ?1", [id.as_str()])?;
                connection.execute(
                    "DELETE FROM idempotent_response WHERE app_id = ?1",
                    [id.as_str()],
                )?;
                connection.execute("DELETE FROM device WHERE app_id = ?1", [id.as_str()])?;
                connection.execute(
                    "DELETE FROM device_command WHERE app_id = ?1",
                    [id.as_str()],
                )?;
                connection.execute(
                    "DELETE FROM installation_token WHERE installation_id IN \
                     (SELECT id FROM installation WHERE app_id = ?1)",
                    [id.as_str()],
                )?;
                connection.execute("DELETE FROM installation WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM plugin_audit WHERE app_id = ?1", [id.as_str()])?;
                context.forget_endpoints_of(id.as_str());
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl EventTypes for SqliteStore {
    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO event_type ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        columns::EVENT_TYPE
                    ))?
                    .execute(params![
                        event_type.name,
                        event_type.description,
                        event_type.archived,
                        event_type.deprecated,
                        event_type.schemas.as_ref().map(columns::to_json),
                        event_type.feature_flag,
                        event_type.group_name,
                        event_type.created_at,
                        event_type.updated_at,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(
                            error,
                            "an event type with this name already exists",
                        )
                    })?;
                Ok(event_type)
            })
            .await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM event_type WHERE name = ?1",
                    columns::EVENT_TYPE
                ))?
                .query_row([name], rows::event_type)
                .optional()?)
        })
        .await
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>> {
        self.read(move |connection| {
            let query = listings::event_types(Dialect::Sqlite, include_archived, &page);
            run_page(connection, query, rows::event_type)
        })
        .await
    }

    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE event_type SET description = ?2, archived = ?3, deprecated = ?4, \
                         schemas = ?5, feature_flag = ?6, group_name = ?7, updated_at = ?8 WHERE name = ?1",
                    )?
                    .execute(params![
                        event_type.name,
                        event_type.description,
                        event_type.archived,
                        event_type.deprecated,
                        event_type.schemas.as_ref().map(columns::to_json),
                        event_type.feature_flag,
                        event_type.group_name,
                        event_type.updated_at,
                    ])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(event_type)
            })
            .await
    }

    async fn expunge_event_type(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .execute("DELETE FROM event_type WHERE name = ?1", [name])?;
                if changed == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }
}

#[async_trait]
impl Endpoints for SqliteStore {
    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint> {
        self.writer
            .write(move |context| {
                // Counted on the writer thread, so concurrent creates cannot overshoot.
                if context.endpoints_of(endpoint.app_id.as_str())?.len() >= max_per_app {
                    return Err(StoreError::LimitReached(format!(
                        "the application already has the maximum of {max_per_app} endpoints"
                    )));
                }
                insert_endpoint(context, &endpoint)?;
                Ok(endpoint)
            })
            .await
    }

    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let (app_id, key) = (app_id.clone(), id_or_uid.to_owned());
        let keys = self.keys.clone();
        self.read(move |connection| endpoint_by_key(connection, &keys, app_id.as_str(), &key))
            .await
    }

    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>> {
        let (id, keys) = (id.clone(), self.keys.clone());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM endpoint WHERE id = ?1",
                    columns::ENDPOINT
                ))?
                .query_row([id.as_str()], |row| rows::endpoint(row, &keys))
                .optional()?)
        })
        .await
    }

    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let query = listings::endpoints(Dialect::Sqlite, app_id, &page);
        let keys = self.keys.clone();
        self.read(move |connection| run_page(connection, query, |row| rows::endpoint(row, &keys)))
            .await
    }

    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint> {
        self.writer
            .write(move |context| {
                let next = Endpoint {
                    revision: endpoint.revision + 1,
                    ..endpoint
                };
                let values = endpoint_values(EndpointRow::of(&next, context.keys));
                // The revision column is bound to the new revision: the stored one must be
                // the one before it.
                let changed = context
                    .connection
                    .prepare_cached(&format!(
                        "UPDATE endpoint SET {} WHERE id = ?1 AND app_id = ?2 AND revision = ?{} - 1",
                        columns::endpoint_update_set(numbered),
                        columns::ENDPOINT_UPDATE_REVISION
                    ))?
                    .execute(params_from_iter(columns::update_values(values)))
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "an endpoint with this uid already exists")
                    })?;
                if changed == 0 {
                    let exists = endpoint_by_key(
                        context.connection,
                        context.keys,
                        next.app_id.as_str(),
                        next.id.as_str(),
                    )?
                    .is_some();
                    return Err(if exists {
                        StoreError::Stale("endpoint")
                    } else {
                        StoreError::NotFound
                    });
                }
                context.forget_endpoints_of(next.app_id.as_str());
                Ok(next)
            })
            .await
    }

    async fn disable_endpoint(&self, id: &EndpointId, at: Millis) -> StoreResult<Option<Endpoint>> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let app_id: Option<String> = context
                    .connection
                    .prepare_cached(
                        "UPDATE endpoint SET disabled = 1, updated_at = ?2, revision = revision + 1 \
                         WHERE id = ?1 AND disabled = 0 RETURNING app_id",
                    )?
                    .query_row(params![id.as_str(), at], |row| row.get(0))
                    .optional()?;
                let Some(app_id) = app_id else {
                    let exists: Option<i64> = context
                        .connection
                        .prepare_cached("SELECT 1 FROM endpoint WHERE id = ?1")?
                        .query_row([id.as_str()], |row| row.get(0))
                        .optional()?;
                    return exists.map(|_| None).ok_or(StoreError::NotFound);
                };
                context.forget_endpoints_of(&app_id);
                endpoint_by_key(context.connection, context.keys, &app_id, id.as_str())
            })
            .await
    }

    async fn verify_endpoint(&self, id: &EndpointId, url: &str, at: Millis) -> StoreResult<bool> {
        let (id, url) = (id.clone(), url.to_owned());
        self.writer
            .write(move |context| {
                let app_id: Option<String> = context
                    .connection
                    .prepare_cached(
                        "UPDATE endpoint SET verified_url = ?2, updated_at = ?3, revision = revision + 1 \
                         WHERE id = ?1 AND url = ?2 AND ownership_required = 1 RETURNING app_id",
                    )?
                    .query_row(params![id.as_str(), url, at], |row| row.get(0))
                    .optional()?;
                let Some(app_id) = app_id else {
                    return Ok(false);
                };
                context.forget_endpoints_of(&app_id);
                Ok(true)
            })
            .await
    }

    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()> {
        let (app_id, id) = (app_id.clone(), id.clone());
        self.writer
            .write(move |context| {
                let changed = context.connection.execute(
                    "DELETE FROM endpoint WHERE id = ?1 AND app_id = ?2",
                    [id.as_str(), app_id.as_str()],
                )?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context
                    .connection
                    .execute("DELETE FROM delivery WHERE endpoint_id = ?1", [id.as_str()])?;
                context.connection.execute(
                    "DELETE FROM poller_consumer WHERE endpoint_id = ?1",
                    [id.as_str()],
                )?;
                context.forget_endpoints_of(app_id.as_str());
                Ok(())
            })
            .await
    }

    fn config_epoch(&self) -> u64 {
        self.config_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }
}
