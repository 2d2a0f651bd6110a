//! The route table. Each module handles one Svix resource.

mod application;
mod attempt;
mod endpoint;
mod event_type;
mod message;
mod poller;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use kait_core::{AppId, Application, Endpoint};

use crate::{ApiError, ApiState};

/// Routes that need no token.
pub fn public() -> Router<ApiState> {
    Router::new().route("/health", get(health))
}

/// Routes behind the admin token.
pub fn protected() -> Router<ApiState> {
    Router::new()
        .route("/app", get(application::list).post(application::create))
        .route(
            "/auth/app-portal-access/{app_id}",
            post(application::portal_access),
        )
        .route(
            "/app/{app_id}",
            get(application::get)
                .put(application::upsert)
                .patch(application::patch)
                .delete(application::delete),
        )
        .route(
            "/event-type",
            get(event_type::list).post(event_type::create),
        )
        .route(
            "/event-type/{event_type_name}",
            get(event_type::get)
                .put(event_type::upsert)
                .patch(event_type::patch)
                .delete(event_type::delete),
        )
        .route(
            "/app/{app_id}/endpoint",
            get(endpoint::list).post(endpoint::create),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}",
            get(endpoint::get)
                .put(endpoint::upsert)
                .patch(endpoint::patch)
                .delete(endpoint::delete),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/secret",
            get(endpoint::get_secret),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
            post(endpoint::rotate_secret),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/headers",
            get(endpoint::get_headers)
                .put(endpoint::set_headers)
                .patch(endpoint::patch_headers),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/recover",
            post(endpoint::recover),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/replay-missing",
            post(endpoint::replay_missing),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/stats",
            get(endpoint::stats),
        )
        .route(
            "/app/{app_id}/endpoint/{endpoint_id}/msg",
            get(attempt::list_endpoint_messages),
        )
        .route(
            "/app/{app_id}/msg",
            get(message::list).post(message::create),
        )
        .route("/app/{app_id}/msg/{msg_id}", get(message::get))
        .route("/app/{app_id}/poller/{endpoint_id}", get(poller::poll))
        .route(
            "/app/{app_id}/poller/{endpoint_id}/stream",
            get(poller::stream),
        )
        .route(
            "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}",
            get(poller::consumer_poll),
        )
        .route(
            "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek",
            post(poller::consumer_seek),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/endpoint",
            get(attempt::list_message_destinations),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/attempt",
            get(attempt::list_by_message),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
            get(attempt::get),
        )
        .route(
            "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
            post(attempt::resend),
        )
        .route(
            "/app/{app_id}/attempt/endpoint/{endpoint_id}",
            get(attempt::list_by_endpoint),
        )
        .route(
            "/app/{app_id}/attempt/msg/{msg_id}",
            get(attempt::list_by_message),
        )
}

/// `GET /api/v1/health`: 204 while the server can serve.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /metrics`: Prometheus text format. Like health, it needs no token: bind the server
/// to an address only your monitoring can reach.
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.metrics)(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

/// The application named by a path segment (its id or its `uid`).
pub async fn find_app(state: &ApiState, key: &str) -> Result<Application, ApiError> {
    state
        .store
        .get_application(key)
        .await?
        .ok_or(ApiError::NotFound("application"))
}

/// The endpoint named by a path segment (its id or its `uid`) within an application.
pub async fn find_endpoint(
    state: &ApiState,
    app_id: &AppId,
    key: &str,
) -> Result<Endpoint, ApiError> {
    state
        .store
        .get_endpoint(app_id, key)
        .await?
        .ok_or(ApiError::NotFound("endpoint"))
}

/// The application and one of its endpoints, both named by path segments (ids or uids).
pub async fn find_app_endpoint(
    state: &ApiState,
    app_key: &str,
    endpoint_key: &str,
) -> Result<(Application, Endpoint), ApiError> {
    let application = find_app(state, app_key).await?;
    let endpoint = find_endpoint(state, &application.id, endpoint_key).await?;
    Ok((application, endpoint))
}
