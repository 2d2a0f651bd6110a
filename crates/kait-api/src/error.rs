//! The one error type of the HTTP edge, rendered in Svix's shapes.
//!
//! Client errors carry a stable machine-readable `code` and a human `detail`; validation
//! errors list every problem (`{"detail": [{"loc", "msg", "type"}]}`). Internal errors are
//! logged here with their cause and answered with a body that reveals nothing.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kait_core::validate::Problem;
use kait_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// A received request whose sender could not be verified (the reason is for the sender,
    /// and says nothing about the expected secret).
    Unverified(String),
    /// Authenticated, but the token does not reach this resource.
    Forbidden,
    NotFound(&'static str),
    Conflict(String),
    /// Another change to the same record won a race with this one; [`crate::routes::retry_stale`]
    /// reads and applies the change again, and answers 409 only if it keeps losing.
    Stale(String),
    PayloadTooLarge(String),
    /// A request that is not well-formed (e.g. not JSON at all).
    BadRequest {
        code: &'static str,
        detail: String,
    },
    /// A configured limit would be exceeded.
    LimitReached(String),
    /// An app-scoped token without the capability this request needs.
    MissingCapability(kait_core::access::Capability),
    /// A plugin's installation token without the scope this request needs (403
    /// `insufficient_scope`, naming the scope).
    InsufficientScope(String),
    /// Too many requests of a kind held open at once (streams, long-polls).
    TooManyRequests(String),
    /// An `Idempotency-Key` reused with a different request body.
    IdempotencyKeyReused,
    /// Well-formed but invalid fields, all of them.
    Validation(Vec<Problem>),
    Unavailable,
    /// A body whose declared content type the server refuses (415).
    UnsupportedMediaType(String),
    /// An attachment link that is malformed, altered or expired (403).
    LinkRefused(String),
    /// The blob store failed (503; the cause is logged, not shown).
    BlobStore(String),
    /// A feature this server was started without (404 `not_configured`, saying which flag).
    NotConfigured(&'static str),
    /// A device did not answer a synchronous command in time (504 `device_timeout`).
    DeviceTimeout(String),
    Internal(String),
}

impl ApiError {
    /// One invalid body field.
    pub fn invalid(field: &str, msg: impl Into<String>) -> Self {
        Self::Validation(vec![Problem {
            loc: vec!["body".into(), field.into()],
            msg: msg.into(),
            kind: "value_error",
        }])
    }

    /// One invalid query parameter.
    pub fn invalid_query(parameter: &str, msg: impl Into<String>) -> Self {
        Self::Validation(vec![Problem {
            loc: vec!["query".into(), parameter.into()],
            msg: msg.into(),
            kind: "value_error",
        }])
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::NotFound("entity"),
            StoreError::Conflict(detail) => Self::Conflict(detail),
            StoreError::LimitReached(detail) => Self::LimitReached(detail),
            StoreError::Closed => Self::Unavailable,
            StoreError::Stale(what) => Self::Stale(format!(
                "the {what} was changed by another request at the same time; try again"
            )),
            error @ (StoreError::InvalidConfig(_) | StoreError::Database { .. }) => {
                Self::Internal(error.to_string())
            }
        }
    }
}

impl From<Vec<Problem>> for ApiError {
    fn from(problems: Vec<Problem>) -> Self {
        Self::Validation(problems)
    }
}

fn coded(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({ "code": code, "detail": detail }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthorized => coded(
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "missing or invalid bearer token",
            ),
            Self::Unverified(reason) => {
                coded(StatusCode::UNAUTHORIZED, "verification_failed", &reason)
            }
            Self::NotConfigured(detail) => coded(StatusCode::NOT_FOUND, "not_configured", detail),
            Self::DeviceTimeout(detail) => {
                coded(StatusCode::GATEWAY_TIMEOUT, "device_timeout", &detail)
            }
            Self::Forbidden => coded(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token does not give access to this resource",
            ),
            Self::NotFound(what) => coded(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("{what} not found"),
            ),
            Self::Conflict(detail) | Self::Stale(detail) => {
                coded(StatusCode::CONFLICT, "conflict", &detail)
            }
            Self::PayloadTooLarge(detail) => {
                coded(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", &detail)
            }
            Self::BadRequest { code, detail } => coded(StatusCode::BAD_REQUEST, code, &detail),
            Self::LimitReached(detail) => {
                coded(StatusCode::UNPROCESSABLE_ENTITY, "limit_reached", &detail)
            }
            Self::MissingCapability(capability) => coded(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("this token lacks the {capability:?} capability"),
            ),
            Self::InsufficientScope(scope) => coded(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                &format!("this installation token lacks the scope {scope}"),
            ),
            Self::TooManyRequests(detail) => {
                coded(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", &detail)
            }
            Self::IdempotencyKeyReused => coded(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request in the last 24 hours; \
                 use a new key for a new request",
            ),
            Self::Validation(problems) => {
                let detail: Vec<_> = problems
                    .into_iter()
                    .map(|problem| json!({ "loc": problem.loc, "msg": problem.msg, "type": problem.kind }))
                    .collect();
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({ "code": "validation_error", "detail": detail })),
                )
                    .into_response()
            }
            Self::Unavailable => coded(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            ),
            Self::UnsupportedMediaType(detail) => coded(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &detail,
            ),
            Self::LinkRefused(detail) => coded(StatusCode::FORBIDDEN, "link_refused", &detail),
            Self::BlobStore(cause) => {
                tracing::error!(%cause, "blob store failure");
                coded(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "blob_store_unavailable",
                    "the attachment store is not available; try again later",
                )
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                coded(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal server error",
                )
            }
        }
    }
}
