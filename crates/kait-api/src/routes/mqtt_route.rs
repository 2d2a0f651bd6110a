//! `/api/v1/mqtt/route`: routes from MQTT topics to events (issue 16; Kait extension, the
//! admin's). A route is checked by `kait-devices` before it is saved; the MQTT bridge
//! (`kait/src/mqtt.rs`) subscribes to its filter as soon as it is told of the change.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kait_core::MqttRouteId;
use kait_core::time::{now_millis, to_datetime};
use kait_devices::{Route, RouteSpec};
use kait_store::MqttRoute;
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::extract::ValidJson;
use crate::wire::ListResponse;
use crate::{ApiError, ApiState};

/// The most routes a server keeps (each is a subscription and is tried on every publish).
pub const MAX_ROUTES: usize = 256;

/// A route from MQTT topics to events.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttRouteIn {
    /// Levels separated by `/`, each a literal or a whole `{name}` that matches any one
    /// level, e.g. `sites/{site}/devices/{device}/events/{event}` (subscribed as
    /// `sites/+/devices/+/events/+`).
    #[schema(min_length = 1, max_length = 1024)]
    pub topic: String,
    /// The application (id or uid) every message goes to…
    pub app: Option<String>,
    /// …or the topic segment that holds the application's uid.
    pub app_segment: Option<String>,
    /// A template of the topic's segments, e.g. `device.{event}` (not for a presence route).
    #[schema(min_length = 1, max_length = 256)]
    pub event_type: Option<String>,
    /// A template; by default `{device}` when the topic has that segment.
    pub ordering_key: Option<String>,
    /// A JSON pointer to the device's own message id in a JSON payload (the `eventId`, so a
    /// message the broker sends again is one message), e.g. `/id`.
    pub event_id_pointer: Option<String>,
    /// The topic carries devices' status, `online`/`offline` (a last will, and what a device
    /// publishes when it connects), not events: each change is a `device.online` or
    /// `device.offline` event. Needs a `{device}` segment.
    #[serde(default)]
    pub presence: bool,
    /// A device heard on this route and then silent this long (1 s to 7 days) is offline
    /// (`device.offline`). Needs a `{device}` segment.
    #[schema(minimum = 1, maximum = 604800)]
    pub silence_timeout_secs: Option<u64>,
    /// A payload that is not JSON and larger than this (1 byte to 1 MiB) is stored as an
    /// attachment: the webhook carries `attachments` with a signed link instead of the bytes
    /// (where the server keeps attachments; else it is sent raw).
    #[schema(minimum = 1, maximum = 1048576)]
    pub attachment_above_bytes: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MqttRouteOut {
    pub id: String,
    pub topic: String,
    /// The MQTT filter the route subscribes to.
    pub filter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_segment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id_pointer: Option<String>,
    pub presence: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_timeout_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment_above_bytes: Option<u64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoutePath {
    /// The route id (`mqr_…`)
    pub route_id: String,
}

fn spec_of(input: MqttRouteIn) -> RouteSpec {
    RouteSpec {
        topic: input.topic,
        app: input.app,
        app_segment: input.app_segment,
        event_type: input.event_type,
        ordering_key: input.ordering_key,
        event_id_pointer: input.event_id_pointer,
        presence: input.presence,
        silence_timeout_secs: input.silence_timeout_secs,
        attachment_above_bytes: input.attachment_above_bytes,
    }
}

fn out(route: MqttRoute) -> Result<MqttRouteOut, ApiError> {
    let spec: RouteSpec = serde_json::from_value(route.spec)
        .map_err(|error| ApiError::Internal(format!("stored route {}: {error}", route.id)))?;
    let filter = Route::parse(&spec)
        .map(|parsed| parsed.topic.filter())
        .unwrap_or_default();
    Ok(MqttRouteOut {
        id: route.id.into_string(),
        topic: spec.topic,
        filter,
        app: spec.app,
        app_segment: spec.app_segment,
        event_type: spec.event_type,
        ordering_key: spec.ordering_key,
        event_id_pointer: spec.event_id_pointer,
        presence: spec.presence,
        silence_timeout_secs: spec.silence_timeout_secs,
        attachment_above_bytes: spec.attachment_above_bytes,
        created_at: to_datetime(route.created_at),
    })
}

#[utoipa::path(
    post,
    operation_id = "v1.mqtt.route.create",
    path = "/api/v1/mqtt/route",
    tag = "mqtt",
    summary = "Route MQTT topics to events (Kait extension)",
    request_body = MqttRouteIn,
    responses((status = 201, body = MqttRouteOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<MqttRouteIn>,
) -> Result<(StatusCode, Json<MqttRouteOut>), ApiError> {
    let spec = spec_of(input);
    Route::parse(&spec).map_err(|error| ApiError::invalid(error.field, error.reason))?;
    if state.store.list_mqtt_routes().await?.len() >= MAX_ROUTES {
        return Err(ApiError::LimitReached(format!(
            "a server keeps at most {MAX_ROUTES} MQTT routes"
        )));
    }
    let route = state
        .store
        .create_mqtt_route(MqttRoute {
            id: MqttRouteId::generate(),
            spec: serde_json::to_value(&spec)
                .map_err(|error| ApiError::Internal(error.to_string()))?,
            created_at: now_millis(),
        })
        .await?;
    state.mqtt_routes_changed.notify_one();
    Ok((StatusCode::CREATED, Json(out(route)?)))
}

#[utoipa::path(
    get,
    operation_id = "v1.mqtt.route.list",
    path = "/api/v1/mqtt/route",
    tag = "mqtt",
    summary = "List the MQTT routes (all of them: at most 256)",
    responses((status = 200, body = ListResponse<MqttRouteOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
) -> Result<Json<ListResponse<MqttRouteOut>>, ApiError> {
    let routes = state
        .store
        .list_mqtt_routes()
        .await?
        .into_iter()
        .map(out)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ListResponse::new(routes, true, |route| {
        route.id.clone()
    })))
}

#[utoipa::path(
    get,
    operation_id = "v1.mqtt.route.get",
    path = "/api/v1/mqtt/route/{route_id}",
    tag = "mqtt",
    summary = "Get an MQTT route",
    params(RoutePath),
    responses((status = 200, body = MqttRouteOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(RoutePath { route_id }): Path<RoutePath>,
) -> Result<Json<MqttRouteOut>, ApiError> {
    let id = MqttRouteId::parse(&route_id).ok_or(ApiError::NotFound("MQTT route id"))?;
    let route = state
        .store
        .get_mqtt_route(&id)
        .await?
        .ok_or(ApiError::NotFound("MQTT route id"))?;
    Ok(Json(out(route)?))
}

#[utoipa::path(
    delete,
    operation_id = "v1.mqtt.route.delete",
    path = "/api/v1/mqtt/route/{route_id}",
    tag = "mqtt",
    summary = "Delete an MQTT route (its subscription ends)",
    params(RoutePath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(RoutePath { route_id }): Path<RoutePath>,
) -> Result<StatusCode, ApiError> {
    let id = MqttRouteId::parse(&route_id).ok_or(ApiError::NotFound("MQTT route id"))?;
    state
        .store
        .delete_mqtt_route(&id)
        .await
        .map_err(|error| match error {
            kait_store::StoreError::NotFound => ApiError::NotFound("MQTT route id"),
            other => other.into(),
        })?;
    state.mqtt_routes_changed.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
