//! Devices (issue 16): the routes from MQTT topics to events. A route's definition is JSON
//! the store keeps but does not read (`kait-devices` owns its meaning), like a pipe's.

use async_trait::async_trait;
use kait_core::MqttRouteId;
use kait_core::time::Millis;

use crate::StoreResult;

/// A route as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttRoute {
    pub id: MqttRouteId,
    /// `kait_devices::RouteSpec` as JSON.
    pub spec: serde_json::Value,
    pub created_at: Millis,
}

#[async_trait]
pub trait Devices: Send + Sync + 'static {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute>;
    /// Every route, oldest first (the API bounds how many there are).
    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>>;
    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>>;
    /// `NotFound` when there is no such route.
    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()>;
}
