//! Authentication: the admin token for everything, and app-scoped tokens for consumers.
//!
//! An app-scoped token (from `POST /api/v1/auth/app-portal-access/{app_id}`, as in the Svix
//! API) lets its holder read and poll its own application and nothing else: `GET` under
//! `/api/v1/app/{its app}/…` and a poller consumer's `seek`. Anything else is 403. Tokens
//! are kept only as SHA-256 hashes.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use kait_core::AppId;
use kait_core::time::now_millis;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{ApiError, ApiState};

/// The prefix of app-scoped tokens, so they are told apart from the admin token at a glance.
pub const APP_TOKEN_PREFIX: &str = "appsk_";

/// A new app-scoped token and the hash to store for it.
pub fn new_app_token() -> (String, String) {
    let mut bytes = [0u8; 30];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "{APP_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if constant_time_eq(presented.as_bytes(), state.admin_token.as_bytes()) {
        return Ok(next.run(request).await);
    }
    if !presented.starts_with(APP_TOKEN_PREFIX) {
        return Err(ApiError::Unauthorized);
    }
    let Some(app_id) = state
        .store
        .app_for_token(&token_hash(presented), now_millis())
        .await?
    else {
        return Err(ApiError::Unauthorized);
    };
    if app_token_allows(&state, &app_id, request.method(), request.uri().path()).await? {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Whether an app-scoped token for `app_id` may make this request.
async fn app_token_allows(
    state: &ApiState,
    app_id: &AppId,
    method: &Method,
    path: &str,
) -> Result<bool, ApiError> {
    // Inside the `/api/v1` nest the prefix is already stripped from the path.
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let Some(rest) = path.strip_prefix("/app/") else {
        return Ok(false);
    };
    let mut segments = rest.split('/');
    let Some(key) = segments.next().filter(|key| !key.is_empty()) else {
        return Ok(false);
    };
    let remainder: Vec<&str> = segments.filter(|segment| !segment.is_empty()).collect();
    let is_seek = method == Method::POST
        && remainder.len() == 5
        && remainder[0] == "poller"
        && remainder[2] == "consumer"
        && remainder[4] == "seek";
    if method != Method::GET && !is_seek {
        return Ok(false);
    }
    if key == app_id.as_str() {
        return Ok(true);
    }
    // The path may name the app by its uid.
    Ok(state
        .store
        .get_application(key)
        .await?
        .is_some_and(|application| &application.id == app_id))
}

/// Compares without an early exit, so response time does not reveal a matching prefix.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}
