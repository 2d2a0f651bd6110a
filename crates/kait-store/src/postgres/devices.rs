//! Device routes on PostgreSQL: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::MqttRouteId;
use tokio_postgres::Row;

use super::{PgStore, rows};
use crate::{Devices, MqttRoute, StoreError, StoreResult};

fn route_row(row: &Row) -> StoreResult<MqttRoute> {
    Ok(MqttRoute {
        id: MqttRouteId::from_trusted(row.try_get(0)?),
        spec: rows::from_json("spec", row.try_get(1)?)?,
        created_at: row.try_get(2)?,
    })
}

#[async_trait]
impl Devices for PgStore {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute> {
        self.client()
            .await?
            .execute(
                "INSERT INTO mqtt_route (id, spec, created_at) VALUES ($1, $2, $3)",
                &[
                    &route.id.as_str(),
                    &route.spec.to_string(),
                    &route.created_at,
                ],
            )
            .await?;
        Ok(route)
    }

    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, spec, created_at FROM mqtt_route ORDER BY id",
                &[],
            )
            .await?;
        rows.iter().map(route_row).collect()
    }

    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, spec, created_at FROM mqtt_route WHERE id = $1",
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(route_row).transpose()
    }

    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM mqtt_route WHERE id = $1", &[&id.as_str()])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
