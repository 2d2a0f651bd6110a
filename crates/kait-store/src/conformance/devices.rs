//! Device routes.

use kait_core::MqttRouteId;
use serde_json::json;

use crate::{MqttRoute, Store, StoreError};

pub async fn mqtt_routes_are_kept_until_deleted(store: &dyn Store) {
    assert!(store.list_mqtt_routes().await.unwrap().is_empty());
    let route = |topic: &str| MqttRoute {
        id: MqttRouteId::generate(),
        spec: json!({ "topic": topic, "app": "site-7", "eventType": "device.{event}" }),
        created_at: 7,
    };
    let first = store
        .create_mqtt_route(route("a/{device}/{event}"))
        .await
        .unwrap();
    let second = store
        .create_mqtt_route(route("b/{device}/{event}"))
        .await
        .unwrap();
    assert_eq!(
        store.get_mqtt_route(&first.id).await.unwrap(),
        Some(first.clone())
    );
    let listed = store.list_mqtt_routes().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&first) && listed.contains(&second));
    store.delete_mqtt_route(&first.id).await.unwrap();
    assert!(matches!(
        store.delete_mqtt_route(&first.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_mqtt_route(&first.id).await.unwrap(), None);
    assert_eq!(store.list_mqtt_routes().await.unwrap(), vec![second]);
}
