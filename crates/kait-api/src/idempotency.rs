//! `Idempotency-Key` on every POST: a repeat of a POST with the same key within 24 hours
//! gets the first response again instead of doing the work twice.
//!
//! Client libraries retry POSTs after a timeout with the same key (the Svix SDKs generate one
//! for every POST), so this is what keeps a retried "create" from creating twice. Server
//! errors are not remembered, so a retry after a 5xx really retries.
//!
//! A remembered response is scoped to what the request acted on: the route, its path
//! parameters with the application resolved to its id (not the `uid` in the path), and a
//! fingerprint of the body. So a new application that reuses a deleted one's `uid` never
//! gets the old one's responses (and deleting an application deletes them), and a key
//! reused with a different body is refused with a 422 instead of answered with the first
//! request's result (Stripe's rule).
//!
//! Message creation is left to the store, which checks the key in the same transaction as
//! the insert (no window for two concurrent repeats); other routes accept that two repeats
//! arriving at the very same moment may both run, which their unique fields (uid, name) then
//! turn into a 409. Responses that carry a secret (a rotated signing secret, an app token)
//! are never remembered: the store would hold them in the clear.

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kait_core::AppId;
use kait_core::time::now_millis;
use kait_store::IdempotentResponse;
use sha2::{Digest, Sha256};

use crate::{ApiError, ApiState};

/// How long a key is remembered.
const KEY_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// Largest response body remembered; larger ones are not (they are not create responses).
const MAX_REMEMBERED_BODY: usize = 1024 * 1024;

/// Routes whose responses are never remembered because they hold a secret.
const SECRET_RESPONSES: [&str; 6] = [
    "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret/rotate",
    "/ingest/api/v1/source/{source_id}/endpoint/{endpoint_id}/secret/rotate",
    "/api/v1/auth/app-portal-access/{app_id}",
    // A source's receiving URL holds its token.
    "/ingest/api/v1/source",
    "/ingest/api/v1/source/{source_id}/token/rotate",
];

pub async fn replay_repeated_posts(
    State(state): State<ApiState>,
    route: Result<MatchedPath, axum::extract::rejection::MatchedPathRejection>,
    path_params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let route = route.as_ref().map(MatchedPath::as_str).unwrap_or_default();
    let remembered = request.method() == Method::POST
        && !route.is_empty()
        && !route.ends_with("/msg")
        // A blob is not buffered to be fingerprinted; a repeated upload is another
        // attachment, and an unreferenced one is deleted after a day.
        && !route.ends_with("/attachment")
        && !SECRET_RESPONSES.contains(&route);
    let Some(key) = key.filter(|_| remembered) else {
        return Ok(next.run(request).await);
    };

    // The request line: the route with its parameters, the application by id.
    let mut app_id = None;
    let mut request_line = format!("POST {route}");
    if let Ok(params) = &path_params {
        for (name, value) in params.iter() {
            let value = if name == "app_id" {
                match state.app_ids.resolve(state.store.as_ref(), value).await {
                    Ok(id) => {
                        app_id = Some(id.clone());
                        id.into_string()
                    }
                    // No such application: the handler answers (404); nothing to remember.
                    Err(_) => return Ok(next.run(request).await),
                }
            } else {
                value.to_owned()
            };
            request_line.push_str(&format!(" {name}={value}"));
        }
    }
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, state.limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge("the request body is larger than the server's limit".into())
        })?;
    let fingerprint = fingerprint(&body);

    if let Some(earlier) = state
        .store
        .idempotent_response(&key, &request_line, now_millis() - KEY_LIFETIME_MS)
        .await?
    {
        if earlier.fingerprint != fingerprint {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let status = StatusCode::from_u16(earlier.status).unwrap_or(StatusCode::OK);
        let mut response = (status, earlier.body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }

    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if response.status().is_server_error() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_REMEMBERED_BODY)
        .await
        .map_err(|error| ApiError::Internal(format!("buffering a response: {error}")))?;
    // A created application is the application this response belongs to: deleting it must
    // forget the response, or a new one with the same uid would get it.
    let app_id = app_id.or_else(|| created_application(route, parts.status, &bytes));
    state
        .store
        .save_idempotent_response(
            &key,
            &request_line,
            IdempotentResponse {
                app_id,
                fingerprint,
                status: parts.status.as_u16(),
                body: bytes.to_vec(),
            },
        )
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The request body's SHA-256, hex.
fn fingerprint(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The id of the application a successful `POST /api/v1/app` created.
fn created_application(route: &str, status: StatusCode, body: &[u8]) -> Option<AppId> {
    if route != "/api/v1/app" || !status.is_success() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id")?.as_str()?;
    AppId::has_prefix(id).then(|| AppId::from_trusted(id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_created_applications_are_taken_from_responses() {
        let body = br#"{"id":"app_2x","name":"a"}"#;
        assert_eq!(
            created_application("/api/v1/app", StatusCode::CREATED, body),
            Some(AppId::from_trusted("app_2x".into()))
        );
        assert_eq!(
            created_application("/api/v1/app", StatusCode::CONFLICT, body),
            None
        );
        assert_eq!(
            created_application("/api/v1/event-type", StatusCode::CREATED, body),
            None
        );
    }

    #[test]
    fn fingerprints_tell_bodies_apart() {
        assert_eq!(fingerprint(b"{}"), fingerprint(b"{}"));
        assert_ne!(fingerprint(b"{}"), fingerprint(b"{ }"));
    }
}
