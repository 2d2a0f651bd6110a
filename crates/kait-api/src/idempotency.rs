//! `Idempotency-Key` on every POST: a repeat of a POST with the same key and path within
//! 24 hours gets the first response again instead of doing the work twice.
//!
//! Client libraries retry POSTs after a timeout with the same key (the Svix SDKs generate one
//! for every POST), so this is what keeps a retried "create" from creating twice. Server
//! errors are not remembered, so a retry after a 5xx really retries. Message creation is left
//! to the store, which checks the key in the same transaction as the insert (no window for
//! two concurrent repeats); other routes accept that two repeats arriving at the very same
//! moment may both run, which their unique fields (uid, name) then turn into a 409.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kait_core::time::now_millis;

use crate::{ApiError, ApiState};

/// How long a key is remembered.
const KEY_LIFETIME_MS: i64 = 24 * 3600 * 1000;
/// Largest response body remembered; larger ones are not (they are not create responses).
const MAX_REMEMBERED_BODY: usize = 1024 * 1024;

pub async fn replay_repeated_posts(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let path = request.uri().path().trim_end_matches('/').to_owned();
    let Some(key) = key.filter(|_| request.method() == Method::POST && !path.ends_with("/msg"))
    else {
        return Ok(next.run(request).await);
    };
    let request_line = format!("POST {path}");
    if let Some((status, body)) = state
        .store
        .idempotent_response(&key, &request_line, now_millis() - KEY_LIFETIME_MS)
        .await?
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }

    let response = next.run(request).await;
    if response.status().is_server_error() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, MAX_REMEMBERED_BODY)
        .await
        .map_err(|error| ApiError::Internal(format!("buffering a response: {error}")))?;
    state
        .store
        .save_idempotent_response(&key, &request_line, parts.status.as_u16(), bytes.to_vec())
        .await?;
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
