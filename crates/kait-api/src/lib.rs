//! Kait's HTTP API: the Svix-compatible v1 routes.
//!
//! Paths, JSON field names, id prefixes, status codes and iterator pagination follow the Svix
//! v1 API so that the official Svix client libraries work unchanged; where Svix renamed a field
//! between versions (`filterTypes` → `eventTypes`, `rateLimit` → `throttleRate`) both are
//! accepted and both returned. Handlers validate input, map wire shapes to the domain records
//! of `kait-core`, and call the [`Store`]; they never send webhooks themselves (ingest never
//! calls an endpoint), and they answer `202` for a message only after the store has made it
//! and its deliveries durable.

mod app_ids;
pub mod auth;
mod device_link;
mod error;
mod extract;
mod idempotency;
mod openapi;
mod paths;
mod routes;
mod source_slots;
mod sources_cache;
pub mod streams;
mod traces;
pub mod ui;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use kait_store::Store;

pub use device_link::DeviceLink;
pub use error::ApiError;
pub use routes::device::DeviceCommandOut;

/// Checks an endpoint URL against the egress policy at creation time (a refused literal
/// address is a 422); host names are checked again at every attempt by the sender.
pub type UrlCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Reports an endpoint's circuit-breaker state as the dispatcher sees it.
pub type CircuitState = Arc<dyn Fn(&kait_core::EndpointId) -> &'static str + Send + Sync>;

/// What the handlers share: one `Arc`, since axum clones the state for every request (the
/// fields one by one were nine reference counts up and down per request).
#[derive(Clone)]
pub struct ApiState(Arc<ApiContext>);

impl From<ApiContext> for ApiState {
    fn from(context: ApiContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for ApiState {
    type Target = ApiContext;

    fn deref(&self) -> &ApiContext {
        &self.0
    }
}

/// The fields of [`ApiState`].
pub struct ApiContext {
    pub store: Arc<dyn Store>,
    pub admin_token: Arc<str>,
    pub url_check: UrlCheck,
    pub circuit_state: CircuitState,
    pub limits: Limits,
    /// Reports endpoint changes as operational webhooks.
    pub ops: kait_store::operational::OperationalEvents,
    /// Cancelled at shutdown, so that long-lived responses (event streams) end.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Renders the Prometheus text exposition for `GET /metrics`.
    pub metrics: MetricsRender,
    /// Where this server is reached from outside (`--public-url`), for the receiving URLs of
    /// incoming sources.
    pub public_url: Arc<str>,
    /// A token that reads `/metrics` and nothing else (the admin token reads it too).
    pub metrics_token: Option<Arc<str>>,
    /// Application ids by path key, for the ingest path.
    pub app_ids: Arc<app_ids::AppIds>,
    /// Long-polls and event streams open now, by token.
    pub streams: Arc<streams::StreamSlots>,
    /// Notified when a source is created, changed or deleted (the cron runner listens).
    pub sources_changed: Arc<tokio::sync::Notify>,
    /// Sources by id, for the receiving path.
    pub sources: Arc<sources_cache::SourcesCache>,
    /// Requests in progress per incoming source.
    pub source_slots: Arc<source_slots::SourceSlots>,
    /// Attachments: the blob store and link keys (`None`: uploads and attachments refused).
    pub media: Option<kait_media::Media>,
    /// Notified when an MQTT route is created or deleted (the MQTT bridge listens).
    pub mqtt_routes_changed: Arc<tokio::sync::Notify>,
    /// The MQTT bridge, for commands to devices (`None` without `--mqtt-url`).
    pub devices: Option<Arc<dyn DeviceLink>>,
    /// Where the accepting span of each message goes (`--otlp-endpoint`); `None`: no tracing.
    pub traces: Option<Arc<dyn kait_core::trace::TraceExport>>,
}

/// Produces the `/metrics` body.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// Input limits, each enforced with a clear 4xx.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted, in bytes (a larger one is a 413).
    pub max_body_bytes: usize,
    /// Deepest nesting of arrays and objects in a message payload.
    pub max_payload_depth: usize,
    /// Most custom headers per endpoint, and longest name plus value of one.
    pub max_endpoint_headers: usize,
    pub max_header_bytes: usize,
    /// Most endpoints per application.
    pub max_endpoints_per_app: usize,
    /// Long-polls and event streams open at once, in all and per token.
    pub streams: streams::StreamLimits,
    /// Largest `metadata` of an application or endpoint, as JSON, in bytes.
    pub max_metadata_bytes: usize,
    /// Most named consumers of one polling endpoint.
    pub max_consumers_per_endpoint: usize,
    /// Requests one incoming source may have in progress at once (more wait, then get 429).
    pub source_in_flight: usize,
    /// How long messages are kept (`--retain-messages`; `None`: forever). A message may ask
    /// to keep its payload this long or longer (Svix's `payloadRetentionPeriod`), not less.
    pub message_retention: Option<std::time::Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_payload_depth: 64,
            max_endpoint_headers: 20,
            max_header_bytes: 4096,
            max_endpoints_per_app: 100,
            streams: streams::StreamLimits::default(),
            max_metadata_bytes: 16 * 1024,
            max_consumers_per_endpoint: 1000,
            source_in_flight: 64,
            message_retention: Some(std::time::Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

/// The whole API as one router. Trailing slashes are accepted on every path (older Svix
/// libraries send them): wrap the router with [`trim_trailing_slash`] when serving.
pub fn router(state: ApiState) -> Router {
    // Route layers run after routing, so both see the matched route and its parameters;
    // authentication is the outer one, so nothing (not even a remembered response) is
    // answered to a caller it refused.
    let protected = routes::protected()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::replay_repeated_posts,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes));
    // Every route comes from a documented handler: nothing is added with a bare `.route`.
    let api: Router<ApiState> = utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(routes::public())
        .merge(protected)
        .into();
    // The portal and dashboard pages are not API routes (and not in the document).
    api.merge(ui::routes())
        .fallback(routes::not_found)
        .with_state(state)
}

/// The OpenAPI document of the API, as `GET /api/v1/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let mut document =
        utoipa_axum::router::OpenApiRouter::<ApiState>::with_openapi(openapi::base())
            .merge(routes::public())
            .merge(routes::protected())
            .into_openapi();
    openapi::declare_scopes(&mut document);
    document
}

/// Serves `/path/` like `/path`, by rewriting the URI before routing.
pub fn trim_trailing_slash(router: Router) -> tower_http::normalize_path::NormalizePath<Router> {
    tower_http::normalize_path::NormalizePath::trim_trailing_slash(router)
}
