//! The route table. Each module handles one Svix resource.

mod application;
mod attachment;
mod attempt;
pub(crate) mod device;
mod endpoint;
mod event_type;
mod ingest_endpoint;
mod ingest_receive;
mod ingest_source;
mod media;
mod message;
mod mqtt_route;
mod operational_endpoint;
mod pipe;
mod plugin;
mod poller;
mod transformation;

use axum::http::StatusCode;
use kait_core::{AppId, Application, Endpoint};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, ApiState};

/// Routes that need no token.
pub fn public() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(ingest_receive::receive))
        // The same documented handler, with the path below the token (OpenAPI has no
        // catch-all parameters, so this variant is not in the document).
        .route(
            "/ingest/api/v1/source/{source_id}/in/{token}/{*rest}",
            axum::routing::post(ingest_receive::receive),
        )
        .routes(routes!(media::get))
        .routes(routes!(health))
        .routes(routes!(ping))
        .routes(routes!(metrics))
        .routes(routes!(crate::openapi::openapi_json))
        // Authenticated by the plugin's credential, in the handler.
        .routes(routes!(plugin::token))
}

/// Routes behind the admin token. Each handler's `#[utoipa::path]` gives its method and path,
/// so the router and the OpenAPI document come from the same place and cannot disagree.
pub fn protected() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(application::list, application::create))
        .routes(routes!(ingest_source::list, ingest_source::create))
        .routes(routes!(
            ingest_source::get,
            ingest_source::upsert,
            ingest_source::delete
        ))
        .routes(routes!(ingest_source::rotate_token))
        .routes(routes!(ingest_source::list_received))
        .routes(routes!(ingest_source::get_received))
        .routes(routes!(ingest_source::replay_received))
        .routes(routes!(ingest_endpoint::list, ingest_endpoint::create))
        .routes(routes!(
            ingest_endpoint::get,
            ingest_endpoint::upsert,
            ingest_endpoint::delete
        ))
        .routes(routes!(ingest_endpoint::get_secret))
        .routes(routes!(ingest_endpoint::rotate_secret))
        .routes(routes!(
            ingest_endpoint::get_headers,
            ingest_endpoint::set_headers
        ))
        .routes(routes!(
            ingest_endpoint::get_transformation,
            ingest_endpoint::patch_transformation
        ))
        .routes(routes!(ingest_endpoint::test_transformation))
        .routes(routes!(application::portal_access))
        .routes(routes!(application::logout))
        .routes(routes!(application::token))
        .routes(routes!(application::expire_all))
        .routes(routes!(
            application::get,
            application::upsert,
            application::patch,
            application::delete
        ))
        .routes(routes!(event_type::list, event_type::create))
        .routes(routes!(
            event_type::get,
            event_type::upsert,
            event_type::patch,
            event_type::delete
        ))
        .routes(routes!(endpoint::list, endpoint::create))
        .routes(routes!(
            endpoint::get,
            endpoint::upsert,
            endpoint::patch,
            endpoint::delete
        ))
        .routes(routes!(endpoint::get_secret))
        .routes(routes!(endpoint::rotate_secret))
        .routes(routes!(
            endpoint::get_headers,
            endpoint::set_headers,
            endpoint::patch_headers
        ))
        .routes(routes!(
            operational_endpoint::list,
            operational_endpoint::create
        ))
        .routes(routes!(
            operational_endpoint::get,
            operational_endpoint::upsert,
            operational_endpoint::delete
        ))
        .routes(routes!(operational_endpoint::get_secret))
        .routes(routes!(operational_endpoint::rotate_secret))
        .routes(routes!(
            operational_endpoint::get_headers,
            operational_endpoint::set_headers
        ))
        .routes(routes!(mqtt_route::list, mqtt_route::create))
        .routes(routes!(mqtt_route::get, mqtt_route::delete))
        .routes(routes!(device::list))
        .routes(routes!(device::get))
        .routes(routes!(device::create_command))
        .routes(routes!(device::get_command))
        .routes(routes!(plugin::list, plugin::create))
        .routes(routes!(plugin::get, plugin::delete))
        .routes(routes!(plugin::list_installations, plugin::install))
        .routes(routes!(plugin::uninstall))
        .routes(routes!(plugin::revoke_tokens))
        .routes(routes!(plugin::app_audit))
        .routes(routes!(plugin::plugin_audit))
        .routes(routes!(pipe::list, pipe::create))
        .routes(routes!(pipe::get, pipe::patch, pipe::delete))
        .routes(routes!(pipe::list_runs))
        .routes(routes!(pipe::stats))
        .routes(routes!(transformation::get, transformation::patch))
        .routes(routes!(transformation::test))
        .routes(routes!(endpoint::recover))
        .routes(routes!(message::send_example))
        .routes(routes!(endpoint::replay_missing))
        .routes(routes!(endpoint::stats))
        .routes(routes!(attempt::list_endpoint_messages))
        .routes(routes!(message::list, message::create))
        .routes(routes!(message::create_raw, message::get_raw))
        .routes(routes!(message::get))
        .routes(routes!(message::expunge_content))
        .routes(routes!(attachment::create))
        .routes(routes!(attachment::get))
        .routes(routes!(poller::poll))
        .routes(routes!(poller::stream))
        .routes(routes!(poller::tail))
        .routes(routes!(poller::consumer_poll))
        .routes(routes!(poller::consumer_seek))
        .routes(routes!(attempt::list_message_destinations))
        .routes(routes!(attempt::list_by_message))
        .routes(routes!(attempt::get))
        .routes(routes!(attempt::expunge_content))
        .routes(routes!(attempt::request))
        .routes(routes!(attempt::resend))
        .routes(routes!(attempt::list_by_endpoint))
        .routes(routes!(attempt::list_attempts_by_message))
}

#[utoipa::path(
    get,
    operation_id = "v1.health.health",
    path = "/api/v1/health",
    tag = "health",
    summary = "204 while the server can serve",
    description = "With an MQTT broker configured, the `Kait-Mqtt` header says whether the \
        bridge is `connected` or `disconnected` now (the server serves either way).",
    responses((status = 204, headers(("Kait-Mqtt" = String, description = "connected or disconnected"))))
)]
/// `GET /api/v1/health`: 204 while the server can serve (Svix's shape, so no body), with the
/// MQTT bridge's state in a header when there is one.
async fn health(
    axum::extract::State(state): axum::extract::State<ApiState>,
) -> impl axum::response::IntoResponse {
    let mqtt = state.devices.as_ref().map(|link| {
        (
            "kait-mqtt",
            if link.connected() {
                "connected"
            } else {
                "disconnected"
            },
        )
    });
    (StatusCode::NO_CONTENT, axum::response::AppendHeaders(mqtt))
}

#[utoipa::path(
    get,
    operation_id = "v1.health.ping",
    path = "/api/v1/health/ping",
    tag = "health",
    summary = "204 while the process answers (liveness; checks nothing else)",
    responses((status = 204))
)]
/// `GET /api/v1/health/ping`: the Svix server's liveness probe. Unlike `/api/v1/health` it
/// looks at nothing but the process, so a load balancer's probe costs no store or broker work.
async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// `GET /metrics`: Prometheus text format. It names endpoints and applications, so it needs
/// a bearer token: the metrics token (`--metrics-token`, for the scraper) or the admin token.
#[utoipa::path(
    get,
    operation_id = "v1.health.metrics",
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics (text format; the metrics token or the admin token)",
    responses(
        (status = 200, content_type = "text/plain", body = String),
        (status = 401, body = crate::wire::ErrorOut)
    ),
    security(("bearer" = []))
)]
pub async fn metrics(
    axum::extract::State(state): axum::extract::State<ApiState>,
    request: axum::extract::Request,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let presented = crate::auth::bearer(&request);
    let metrics_token = state
        .metrics_token
        .as_deref()
        .is_some_and(|token| crate::auth::constant_time_eq(presented.as_bytes(), token.as_bytes()));
    let dashboard =
        presented.is_empty() && crate::ui::session_of(&state, request.headers()).is_some();
    if !metrics_token && !crate::auth::is_admin(&state, presented) && !dashboard {
        return Err(ApiError::Unauthorized);
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.metrics)(),
    ))
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

/// How often a read-modify-write that lost a race is made again before the caller gets 409.
const CHANGE_ATTEMPTS: usize = 8;

/// Runs a read-modify-write (read the record, change it, write it naming the revision read)
/// until no other change overtakes it. Every change to an application or endpoint goes
/// through here, so none is silently undone by a write from an older read.
pub async fn retry_stale<T, F, Fut>(mut change: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut attempts = 1;
    loop {
        match change().await {
            Err(ApiError::Stale(_)) if attempts < CHANGE_ATTEMPTS => attempts += 1,
            other => return other,
        }
    }
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
        // A pipe's subscription belongs to the pipe: changed only through `/api/v1/pipe`.
        .filter(|endpoint| endpoint.kind != kait_core::EndpointKind::Pipe)
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
