//! `/api/v1/operational-webhook/endpoint`: where events about Kait itself go (Svix's
//! operational webhook endpoint API, the official SDKs' `operational_webhook.endpoint`).
//!
//! An operational endpoint is an endpoint of the reserved application
//! (`kait_store::operational`), so these routes are the endpoint routes under another path and
//! shape: the same checks, secrets, headers, retries and attempt log. Operator only.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::endpoint;
use crate::extract::{ListQuery, ValidJson};
use crate::paths::{AppPath, EndpointPath};
use crate::wire::{
    EndpointHeadersIn, EndpointHeadersOut, EndpointOut, EndpointSecretOut, EndpointSecretRotateIn,
    ListResponse, OperationalWebhookEndpointIn, OperationalWebhookEndpointOut,
};
use crate::{ApiError, ApiState};

/// `/api/v1/operational-webhook/endpoint/{endpoint_id}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OperationalEndpointPath {
    /// The endpoint id (`ep_…`) or uid
    pub endpoint_id: String,
}

/// The reserved application, made on first use.
async fn app_id(state: &ApiState) -> Result<kait_core::AppId, ApiError> {
    state
        .ops
        .ensure_app()
        .await?
        .ok_or(ApiError::NotConfigured("operational webhooks"))
}

async fn endpoint_path(state: &ApiState, endpoint_id: String) -> Result<EndpointPath, ApiError> {
    Ok(EndpointPath {
        app_id: app_id(state).await?.to_string(),
        endpoint_id,
    })
}

fn out(endpoint: &kait_core::Endpoint) -> OperationalWebhookEndpointOut {
    OperationalWebhookEndpointOut::from(EndpointOut::from(endpoint))
}

#[utoipa::path(
    get,
    operation_id = "v1.operational-webhook.endpoint.list",
    path = "/api/v1/operational-webhook/endpoint",
    tag = "operational-webhook",
    summary = "List operational webhook endpoints",
    params(crate::extract::ListParams),
    responses((status = 200, body = ListResponse<OperationalWebhookEndpointOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    query: ListQuery,
) -> Result<Json<ListResponse<OperationalWebhookEndpointOut>>, ApiError> {
    let path = AppPath {
        app_id: app_id(&state).await?.to_string(),
    };
    let Json(listed) = endpoint::list(State(state), Path(path), query).await?;
    Ok(Json(ListResponse {
        data: listed
            .data
            .into_iter()
            .map(OperationalWebhookEndpointOut::from)
            .collect(),
        iterator: listed.iterator,
        prev_iterator: listed.prev_iterator,
        done: listed.done,
    }))
}

#[utoipa::path(
    post,
    operation_id = "v1.operational-webhook.endpoint.create",
    path = "/api/v1/operational-webhook/endpoint",
    tag = "operational-webhook",
    summary = "Add an endpoint for events about Kait itself",
    request_body = OperationalWebhookEndpointIn,
    responses((status = 201, body = OperationalWebhookEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<OperationalWebhookEndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let app_id = app_id(&state).await?;
    let created = endpoint::create_in(&state, app_id, input.into()).await?;
    Ok((StatusCode::CREATED, Json(out(&created))))
}

#[utoipa::path(
    get,
    operation_id = "v1.operational-webhook.endpoint.get",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "operational-webhook",
    summary = "Get an operational webhook endpoint",
    params(OperationalEndpointPath),
    responses((status = 200, body = OperationalWebhookEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
) -> Result<Json<OperationalWebhookEndpointOut>, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    let Json(found) = endpoint::get(State(state), Path(path)).await?;
    Ok(Json(OperationalWebhookEndpointOut::from(found)))
}

#[utoipa::path(
    put,
    operation_id = "v1.operational-webhook.endpoint.update",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "operational-webhook",
    summary = "Replace an operational webhook endpoint, or create it under a new uid",
    params(OperationalEndpointPath),
    request_body = OperationalWebhookEndpointIn,
    responses((status = 200, body = OperationalWebhookEndpointOut), (status = 201, body = OperationalWebhookEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn upsert(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
    ValidJson(input): ValidJson<OperationalWebhookEndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let app_id = app_id(&state).await?;
    let (status, endpoint) =
        endpoint::upsert_in(&state, app_id, &endpoint_id, input.into()).await?;
    Ok((status, Json(out(&endpoint))))
}

#[utoipa::path(
    delete,
    operation_id = "v1.operational-webhook.endpoint.delete",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}",
    tag = "operational-webhook",
    summary = "Delete an operational webhook endpoint",
    params(OperationalEndpointPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
) -> Result<StatusCode, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    endpoint::delete(State(state), Path(path)).await
}

#[utoipa::path(
    get,
    operation_id = "v1.operational-webhook.endpoint.get-secret",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret",
    tag = "operational-webhook",
    summary = "Get the secret that signs operational webhooks to this endpoint",
    params(OperationalEndpointPath),
    responses((status = 200, body = EndpointSecretOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_secret(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    endpoint::get_secret(State(state), Path(path)).await
}

#[utoipa::path(
    post,
    operation_id = "v1.operational-webhook.endpoint.rotate-secret",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
    tag = "operational-webhook",
    summary = "Rotate the secret; the old one keeps signing during the grace period",
    params(OperationalEndpointPath),
    request_body(content = Option<EndpointSecretRotateIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 200, body = EndpointSecretOut), (status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    endpoint::rotate_secret(State(state), Path(path), headers, body).await
}

#[utoipa::path(
    get,
    operation_id = "v1.operational-webhook.endpoint.get-headers",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers",
    tag = "operational-webhook",
    summary = "Get the custom headers sent with every operational webhook to this endpoint",
    params(OperationalEndpointPath),
    responses((status = 200, body = EndpointHeadersOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_headers(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    endpoint::get_headers(State(state), Path(path)).await
}

#[utoipa::path(
    put,
    operation_id = "v1.operational-webhook.endpoint.update-headers",
    path = "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers",
    tag = "operational-webhook",
    summary = "Replace the custom headers",
    params(OperationalEndpointPath),
    request_body = EndpointHeadersIn,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn set_headers(
    State(state): State<ApiState>,
    Path(OperationalEndpointPath { endpoint_id }): Path<OperationalEndpointPath>,
    body: ValidJson<EndpointHeadersIn>,
) -> Result<StatusCode, ApiError> {
    let path = endpoint_path(&state, endpoint_id).await?;
    endpoint::set_headers(State(state), Path(path), body).await
}
