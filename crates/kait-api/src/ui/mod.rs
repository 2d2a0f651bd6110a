//! The people's side of Kait: the consumer portal at `/portal` and the operator dashboard at
//! `/ui`, both small pages whose assets are compiled into the binary (no CDN, works offline)
//! and which do everything through the JSON API.
//!
//! The portal is opened by the link `app-portal-access` returns, with an app-scoped token in
//! the URL fragment: the API confines it to its application and capabilities, so the page
//! needs no rights of its own. The dashboard signs in with the admin token, exchanged for a
//! session cookie ([`session`]); `auth::require_token` accepts that cookie as the admin,
//! with the CSRF header on anything but a read.
//!
//! Every page is served with a Content-Security-Policy that allows only these assets (no
//! inline script, no other origin), and the scripts put text into the page only as text
//! (`textContent`, never `innerHTML`): a payload or header holding markup is shown, never run.

pub mod session;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kait_core::time::now_millis;
use serde::Deserialize;

use crate::{ApiError, ApiState};

/// What pages may load: their own assets and API only; no framing, no plugins, no inline code.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The embedded assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "kait.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/kait.css"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dom.js"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/portal.js"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard.js"),
    ),
];

const PORTAL_PAGE: &str = include_str!("../../assets/portal.html");
const DASHBOARD_PAGE: &str = include_str!("../../assets/dashboard.html");

/// The pages, their assets and the dashboard's session routes (not part of the API document:
/// they are not Svix's, and no client library calls them).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/portal", get(portal))
        .route("/ui", get(dashboard))
        .route("/assets/{file}", get(asset))
        .route(
            "/ui/session",
            get(current_session).post(sign_in).delete(sign_out),
        )
        // A sign-in is a token in a small JSON object; nothing here takes more.
        .layer(axum::extract::DefaultBodyLimit::max(4096))
}

fn guarded(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

async fn portal() -> Response {
    guarded("text/html; charset=utf-8", PORTAL_PAGE, "no-store")
}

async fn dashboard() -> Response {
    guarded("text/html; charset=utf-8", DASHBOARD_PAGE, "no-store")
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or(ApiError::NotFound("asset"))?;
    // Assets change with the binary; a short cache keeps an upgrade visible within minutes.
    Ok(guarded(content_type, body, "public, max-age=300"))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /ui/session {token}`: the admin token for a session cookie and its CSRF token.
async fn sign_in(
    State(state): State<ApiState>,
    body: crate::extract::LimitedBody,
) -> Result<Response, ApiError> {
    let input: SignIn = crate::extract::parse_json(&body.0)?;
    if !crate::auth::is_admin(&state, input.token.trim()) {
        return Err(ApiError::Unauthorized);
    }
    let expires_at = now_millis() / 1000 + session::LIFETIME_SECS;
    let (cookie, csrf) = session::issue(&state.admin_token, expires_at);
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let set_cookie = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session::COOKIE,
        session::LIFETIME_SECS
    );
    let mut response =
        Json(serde_json::json!({ "csrf": csrf, "expiresAt": expires_at })).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&set_cookie)
            .map_err(|error| ApiError::Internal(error.to_string()))?,
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The session's expiry from the request's cookie, if it carries a live one.
pub fn session_of(state: &ApiState, headers: &HeaderMap) -> Option<i64> {
    let cookies = headers.get(COOKIE)?.to_str().ok()?;
    let cookie = session::cookie_value(cookies, session::COOKIE)?;
    session::check(&state.admin_token, cookie, now_millis() / 1000)
}

/// `GET /ui/session`: the CSRF token again (a reloaded page lost it), or 401 to sign in.
async fn current_session(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let expires_at = session_of(&state, &headers).ok_or(ApiError::Unauthorized)?;
    let (_, csrf) = session::issue(&state.admin_token, expires_at);
    let mut response =
        Json(serde_json::json!({ "csrf": csrf, "expiresAt": expires_at })).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /ui/session`: forgets the cookie in this browser (a stolen copy lives until its
/// expiry; changing the admin token ends every session at once).
async fn sign_out(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let checked = session_of(&state, &headers).is_some_and(|expires_at| {
        headers
            .get(session::CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|presented| {
                session::csrf_matches(&state.admin_token, expires_at, presented)
            })
    });
    if !checked {
        return ApiError::Unauthorized.into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            session::COOKIE
        ))
        .expect("a valid header"),
    );
    response
}
