//! `/ingest/api/v1/source/{source_id}/endpoint`: where a source's received requests go next,
//! wire-compatible with Svix Ingest (the official SDKs' `ingest.endpoint`).
//!
//! A source endpoint is an endpoint of the source's own application (see
//! [`super::ingest_source::app_uid`]), so these routes are the endpoint routes under another
//! path and shape, and forwarding is ordinary delivery: the endpoint's own secret signs,
//! and retries, rate limit, circuit breaker, egress guard and the attempt log all apply.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ingest_source::{SourcePath, find, source_app};
use super::{endpoint, transformation};
use crate::extract::{ListQuery, ValidJson};
use crate::paths::{AppPath, EndpointPath};
use crate::wire::{
    EndpointHeadersIn, EndpointHeadersOut, EndpointOut, EndpointSecretOut, EndpointSecretRotateIn,
    EndpointTransformationOut, EndpointTransformationPatch, IngestEndpointIn, IngestEndpointOut,
    ListResponse, TransformationTestIn, TransformationTestOut,
};
use crate::{ApiError, ApiState};

/// `/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SourceEndpointPath {
    /// The source id (`src_…`) or uid
    pub source_id: String,
    /// The endpoint id (`ep_…`) or uid
    pub endpoint_id: String,
}

/// The source's application as the endpoint routes' path parameter.
async fn app_path(state: &ApiState, source_key: &str) -> Result<AppPath, ApiError> {
    let source = find(state, source_key).await?;
    Ok(AppPath {
        app_id: source_app(state, &source.id).await?.id.to_string(),
    })
}

async fn endpoint_path(
    state: &ApiState,
    path: SourceEndpointPath,
) -> Result<EndpointPath, ApiError> {
    Ok(EndpointPath {
        app_id: app_path(state, &path.source_id).await?.app_id,
        endpoint_id: path.endpoint_id,
    })
}

fn out(endpoint: &kait_core::Endpoint) -> IngestEndpointOut {
    IngestEndpointOut::from(EndpointOut::from(endpoint))
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.endpoint.list",
    path = "/ingest/api/v1/source/{source_id}/endpoint",
    tag = "ingest",
    summary = "List a source's endpoints",
    params(SourcePath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<IngestEndpointOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
    query: ListQuery,
) -> Result<Json<ListResponse<IngestEndpointOut>>, ApiError> {
    let path = app_path(&state, &source_id).await?;
    let Json(listed) = endpoint::list(State(state), Path(path), query).await?;
    Ok(Json(ListResponse {
        data: listed
            .data
            .into_iter()
            .map(IngestEndpointOut::from)
            .collect(),
        iterator: listed.iterator,
        prev_iterator: listed.prev_iterator,
        done: listed.done,
    }))
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.endpoint.create",
    path = "/ingest/api/v1/source/{source_id}/endpoint",
    tag = "ingest",
    summary = "Add an endpoint received requests are forwarded to",
    params(SourcePath),
    request_body = IngestEndpointIn,
    responses((status = 201, body = IngestEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
    ValidJson(input): ValidJson<IngestEndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let source = find(&state, &source_id).await?;
    let application = source_app(&state, &source.id).await?;
    let created = endpoint::create_in(&state, application.id, input.into()).await?;
    Ok((StatusCode::CREATED, Json(out(&created))))
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.endpoint.get",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}",
    tag = "ingest",
    summary = "Get a source endpoint",
    params(SourceEndpointPath),
    responses((status = 200, body = IngestEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
) -> Result<Json<IngestEndpointOut>, ApiError> {
    let path = endpoint_path(&state, path).await?;
    let Json(found) = endpoint::get(State(state), Path(path)).await?;
    Ok(Json(IngestEndpointOut::from(found)))
}

#[utoipa::path(
    put,
    operation_id = "v1.ingest.endpoint.upsert",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}",
    tag = "ingest",
    summary = "Replace a source endpoint, or create it under a new uid",
    params(SourceEndpointPath),
    request_body = IngestEndpointIn,
    responses((status = 200, body = IngestEndpointOut), (status = 201, body = IngestEndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn upsert(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
    ValidJson(input): ValidJson<IngestEndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let source = find(&state, &path.source_id).await?;
    let application = source_app(&state, &source.id).await?;
    let (status, endpoint) =
        endpoint::upsert_in(&state, application.id, &path.endpoint_id, input.into()).await?;
    Ok((status, Json(out(&endpoint))))
}

#[utoipa::path(
    delete,
    operation_id = "v1.ingest.endpoint.delete",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}",
    tag = "ingest",
    summary = "Delete a source endpoint",
    params(SourceEndpointPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
) -> Result<StatusCode, ApiError> {
    let path = endpoint_path(&state, path).await?;
    endpoint::delete(State(state), Path(path)).await
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.endpoint.get-secret",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/secret",
    tag = "ingest",
    summary = "Get the secret that signs what is forwarded to this endpoint",
    params(SourceEndpointPath),
    responses((status = 200, body = EndpointSecretOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_secret(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let path = endpoint_path(&state, path).await?;
    endpoint::get_secret(State(state), Path(path)).await
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.endpoint.rotate-secret",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/secret/rotate",
    tag = "ingest",
    summary = "Rotate the secret; the old one keeps signing during the grace period",
    params(SourceEndpointPath),
    request_body(content = Option<EndpointSecretRotateIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 200, body = EndpointSecretOut), (status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = endpoint_path(&state, path).await?;
    endpoint::rotate_secret(State(state), Path(path), headers, body).await
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.endpoint.get-headers",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/headers",
    tag = "ingest",
    summary = "Get the custom headers sent with every forwarded request",
    params(SourceEndpointPath),
    responses((status = 200, body = EndpointHeadersOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_headers(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let path = endpoint_path(&state, path).await?;
    endpoint::get_headers(State(state), Path(path)).await
}

#[utoipa::path(
    put,
    operation_id = "v1.ingest.endpoint.update-headers",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/headers",
    tag = "ingest",
    summary = "Replace the custom headers",
    params(SourceEndpointPath),
    request_body = EndpointHeadersIn,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn set_headers(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
    body: ValidJson<EndpointHeadersIn>,
) -> Result<StatusCode, ApiError> {
    let path = endpoint_path(&state, path).await?;
    endpoint::set_headers(State(state), Path(path), body).await
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.endpoint.get-transformation",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/transformation",
    tag = "ingest",
    summary = "Get the endpoint's transformation",
    params(SourceEndpointPath),
    responses((status = 200, body = EndpointTransformationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_transformation(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
) -> Result<Json<EndpointTransformationOut>, ApiError> {
    let path = endpoint_path(&state, path).await?;
    transformation::get(State(state), Path(path)).await
}

#[utoipa::path(
    patch,
    operation_id = "v1.ingest.endpoint.set-transformation",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/transformation",
    tag = "ingest",
    summary = "Set or switch the endpoint's transformation",
    params(SourceEndpointPath),
    request_body = EndpointTransformationPatch,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch_transformation(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
    body: ValidJson<EndpointTransformationPatch>,
) -> Result<StatusCode, ApiError> {
    let path = endpoint_path(&state, path).await?;
    transformation::patch(State(state), Path(path), body).await
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.endpoint.transformation-test",
    path = "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/transformation/test",
    tag = "ingest",
    summary = "Run transformation code on a sample payload (Kait extension)",
    params(SourceEndpointPath),
    request_body = TransformationTestIn,
    responses((status = 200, body = TransformationTestOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn test_transformation(
    State(state): State<ApiState>,
    Path(path): Path<SourceEndpointPath>,
    body: ValidJson<TransformationTestIn>,
) -> Result<Json<TransformationTestOut>, ApiError> {
    let path = endpoint_path(&state, path).await?;
    transformation::test(State(state), Path(path), body).await
}
