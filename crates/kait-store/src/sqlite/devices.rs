//! Device routes on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::MqttRouteId;
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use crate::{Devices, MqttRoute, StoreError, StoreResult};

fn route_row(row: &Row<'_>) -> rusqlite::Result<MqttRoute> {
    let text: String = row.get(1)?;
    Ok(MqttRoute {
        id: MqttRouteId::from_trusted(row.get(0)?),
        spec: serde_json::from_str(&text).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, error.into())
        })?,
        created_at: row.get(2)?,
    })
}

#[async_trait]
impl Devices for SqliteStore {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO mqtt_route (id, spec, created_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![
                        route.id.as_str(),
                        route.spec.to_string(),
                        route.created_at
                    ])?;
                Ok(route)
            })
            .await
    }

    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached("SELECT id, spec, created_at FROM mqtt_route ORDER BY id")?
                .query_map([], route_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>> {
        let id = id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached("SELECT id, spec, created_at FROM mqtt_route WHERE id = ?1")?
                .query_row([id.as_str()], route_row)
                .optional()?)
        })
        .await
    }

    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let deleted = context
                    .connection
                    .prepare_cached("DELETE FROM mqtt_route WHERE id = ?1")?
                    .execute([id.as_str()])?;
                if deleted == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }
}
