//! Authentication: the admin token for everything, app-scoped tokens for consumers, and
//! plugins' installation tokens (issue 17).
//!
//! An app-scoped token (from `POST /api/v1/auth/app-portal-access/{app_id}`, as in the Svix
//! API) is confined to its application and carries Svix's capabilities
//! ([`kait_core::access`]). What each route needs is declared once, in [`access_for`], from
//! the route's template and method; a route missing there is the admin's alone, so a new
//! route is closed to app tokens until someone decides otherwise. Tokens are kept only as
//! SHA-256 hashes.
//!
//! An installation token (`POST /api/v1/plugin/token`) is confined to one installation's
//! application and carries plugin scopes ([`kait_core::scope`]); [`scope_for`] declares,
//! beside [`access_for`], which scope each route needs (none: not open to plugins), and the
//! OpenAPI document shows it. Narrowed scopes (`messages:write:camera.*`) are checked by the
//! handlers that know the name ([`Caller::allows_name`]).
//!
//! The check runs after routing (a route layer), so it sees the matched template and the
//! path's `app_id`; the [`Caller`] it establishes is left in the request's extensions for
//! handlers that treat callers differently (stream limits, token management).

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use kait_core::AppId;
use kait_core::access::Capability;
use kait_core::scope::{ScopeKind, Scopes};
use kait_core::time::now_millis;
use kait_store::{AuditEntry, InstallationGrant};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::{ApiError, ApiState};

/// The prefix of app-scoped tokens, so they are told apart from the admin token at a glance.
pub const APP_TOKEN_PREFIX: &str = "appsk_";
/// The prefix of plugins' installation tokens.
pub const INSTALLATION_TOKEN_PREFIX: &str = "plit_";
/// The prefix of plugins' own credentials (exchanged for installation tokens, nothing else).
pub const PLUGIN_CREDENTIAL_PREFIX: &str = "plsk_";

/// Who made a request, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    /// An app-scoped token, already checked against the route's needs and application.
    App {
        /// Identifies the token (its hash) for per-token limits, without keeping the token.
        token_hash: String,
        app_id: AppId,
        capabilities: kait_core::access::Capabilities,
    },
    /// A plugin's installation token, already checked against the route's scope and
    /// application.
    Plugin {
        token_hash: String,
        scopes: Scopes,
        /// The installation's application: what the token may see of shared resources.
        app_id: AppId,
    },
}

impl Caller {
    /// A key that tells tokens apart, for per-token limits.
    pub fn token_key(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::App { token_hash, .. } | Caller::Plugin { token_hash, .. } => token_hash,
        }
    }

    /// The one application a plugin's token may see of resources that are not under an
    /// application's path (pipes); `None` for everyone else.
    pub fn confined_to(&self) -> Option<&AppId> {
        match self {
            Caller::Plugin { app_id, .. } => Some(app_id),
            _ => None,
        }
    }

    /// Whether the caller may act with `kind` on `name` (an event type, a device): always,
    /// but for a plugin whose scope of that kind is narrowed to other names.
    pub fn allows_name(&self, kind: ScopeKind, name: &str) -> Result<(), ApiError> {
        match self {
            Caller::Plugin { scopes, .. } if !scopes.allows_name(kind, name) => {
                Err(ApiError::InsufficientScope(format!("{kind}:{name}")))
            }
            _ => Ok(()),
        }
    }
}

/// What a request needs: the admin token, or an app token with a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    AdminOnly,
    App(Capability),
}

/// What each route needs, by its template (as routed, with the `/api/v1` prefix) and
/// method. The one place where app-token rights are decided; everything unlisted is
/// [`Access::AdminOnly`].
pub fn access_for(method: &Method, route: &str) -> Access {
    use Capability::*;
    let reads = *method == Method::GET;
    let Some(route) = route.strip_prefix("/api/v1") else {
        return Access::AdminOnly;
    };
    let needed = match route {
        // The application itself, its messages, attempts and statistics: read only.
        "/app/{app_id}"
        | "/app/{app_id}/msg"
        | "/app/{app_id}/msg/{msg_id}"
        | "/app/{app_id}/msg/raw"
        | "/app/{app_id}/attachment/{attachment_id}"
        | "/app/{app_id}/device"
        | "/app/{app_id}/device/{device}"
        | "/app/{app_id}/device/{device}/command/{command_id}"
        | "/app/{app_id}/msg/{msg_id}/attempt"
        | "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}"
        | "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/request"
        | "/app/{app_id}/msg/{msg_id}/endpoint"
        | "/app/{app_id}/attempt/msg/{msg_id}"
        | "/app/{app_id}/attempt/endpoint/{endpoint_id}"
        | "/app/{app_id}/endpoint/{endpoint_id}/msg"
        | "/app/{app_id}/endpoint/{endpoint_id}/stats"
        | "/app/{app_id}/poller/{endpoint_id}"
        | "/app/{app_id}/poller/{endpoint_id}/stream"
        | "/app/{app_id}/stream"
        | "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}"
        // The event-type catalog (shared by all applications, so readable by every token).
        | "/event-type"
        | "/event-type/{event_type_name}"
            if reads =>
        {
            ViewBase
        }
        // Moving a consumer only changes where that consumer reads next.
        "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek" => ViewBase,
        // Every app token may end itself (the handler ends only the presented token), and
        // ask what it may do (so a portal shows only the controls it can use).
        "/auth/logout" | "/auth/token" => ViewBase,
        "/app/{app_id}/endpoint" | "/app/{app_id}/endpoint/{endpoint_id}" => {
            if reads {
                ViewBase
            } else {
                ManageEndpoint
            }
        }
        "/app/{app_id}/endpoint/{endpoint_id}/secret" if reads => ViewEndpointSecret,
        "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate" => ManageEndpointSecret,
        // Custom headers often carry the receiver's credentials: as secret as the secret.
        "/app/{app_id}/endpoint/{endpoint_id}/headers" => {
            if reads {
                ViewEndpointSecret
            } else {
                ManageEndpoint
            }
        }
        "/app/{app_id}/endpoint/{endpoint_id}/transformation" => {
            if reads {
                ViewBase
            } else {
                ManageTransformations
            }
        }
        // Runs the code: a change of transformations in all but the saving.
        "/app/{app_id}/endpoint/{endpoint_id}/transformation/test" => ManageTransformations,
        "/app/{app_id}/endpoint/{endpoint_id}/recover"
        | "/app/{app_id}/endpoint/{endpoint_id}/replay-missing"
        | "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend"
        // A message of the caller's choosing, but to one endpoint of its own only.
        | "/app/{app_id}/endpoint/{endpoint_id}/send-example" => CreateAttempts,
        _ => return Access::AdminOnly,
    };
    Access::App(needed)
}

/// The plugin scope each route needs, by its template and method: the one place where
/// plugins' rights are decided. `None`: the route is not open to installation tokens (the
/// operator's configuration: applications, sources, pipes, MQTT routes, plugins).
pub fn scope_for(method: &Method, route: &str) -> Option<ScopeKind> {
    use ScopeKind::*;
    let reads = *method == Method::GET;
    let route = route.strip_prefix("/api/v1")?;
    let (read, write) = match route {
        "/app/{app_id}" | "/event-type" | "/event-type/{event_type_name}" => {
            (Some(EndpointsRead), None)
        }
        "/app/{app_id}/endpoint"
        | "/app/{app_id}/endpoint/{endpoint_id}"
        | "/app/{app_id}/endpoint/{endpoint_id}/transformation" => {
            (Some(EndpointsRead), Some(EndpointsWrite))
        }
        "/app/{app_id}/endpoint/{endpoint_id}/stats" => (Some(EndpointsRead), None),
        // Secrets and headers (often the receiver's credentials) are the writer's.
        "/app/{app_id}/endpoint/{endpoint_id}/secret"
        | "/app/{app_id}/endpoint/{endpoint_id}/secret/rotate"
        | "/app/{app_id}/endpoint/{endpoint_id}/headers"
        | "/app/{app_id}/endpoint/{endpoint_id}/transformation/test" => {
            (Some(EndpointsWrite), Some(EndpointsWrite))
        }
        "/app/{app_id}/msg" | "/app/{app_id}/msg/raw" => (Some(MessagesRead), Some(MessagesWrite)),
        "/app/{app_id}/msg/{msg_id}"
        | "/app/{app_id}/endpoint/{endpoint_id}/msg"
        | "/app/{app_id}/poller/{endpoint_id}"
        | "/app/{app_id}/poller/{endpoint_id}/stream"
        | "/app/{app_id}/stream"
        | "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}" => (Some(MessagesRead), None),
        "/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek" => {
            (Some(MessagesRead), Some(MessagesRead))
        }
        // Uploads exist to be referenced by the messages the plugin creates.
        "/app/{app_id}/attachment" => (None, Some(MessagesWrite)),
        "/app/{app_id}/attachment/{attachment_id}" => (Some(AttachmentsRead), None),
        "/app/{app_id}/msg/{msg_id}/attempt"
        | "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}"
        | "/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/request"
        | "/app/{app_id}/msg/{msg_id}/endpoint"
        | "/app/{app_id}/attempt/msg/{msg_id}"
        | "/app/{app_id}/attempt/endpoint/{endpoint_id}" => (Some(AttemptsRead), None),
        "/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend"
        | "/app/{app_id}/endpoint/{endpoint_id}/recover"
        | "/app/{app_id}/endpoint/{endpoint_id}/replay-missing"
        | "/app/{app_id}/endpoint/{endpoint_id}/send-example" => (None, Some(AttemptsWrite)),
        "/app/{app_id}/device"
        | "/app/{app_id}/device/{device}"
        | "/app/{app_id}/device/{device}/command/{command_id}" => (Some(DevicesRead), None),
        "/app/{app_id}/device/{device}/command" => (None, Some(DevicesCommand)),
        // Pipes are listed by trigger application: a plugin sees only its own application's.
        "/pipe" | "/pipe/{pipe_id}" | "/pipe/{pipe_id}/run" | "/pipe/{pipe_id}/stats" => {
            (Some(PipesRead), None)
        }
        _ => (None, None),
    };
    if reads { read } else { write }
}

/// A new app-scoped token and the hash to store for it.
pub fn new_app_token() -> (String, String) {
    new_token(APP_TOKEN_PREFIX)
}

/// A new random token with `prefix` (240 bits) and the hash to store for it.
pub fn new_token(prefix: &str) -> (String, String) {
    let mut bytes = [0u8; 30];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!(
        "{prefix}{}",
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

/// The bearer token of a request, or "" when there is none.
pub fn bearer(request: &Request) -> &str {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
}

/// Whether `presented` is the admin token (compared in constant time).
pub fn is_admin(state: &ApiState, presented: &str) -> bool {
    constant_time_eq(presented.as_bytes(), state.admin_token.as_bytes())
}

pub async fn require_token(
    State(state): State<ApiState>,
    route: Result<MatchedPath, axum::extract::rejection::MatchedPathRejection>,
    path_params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = bearer(&request);
    if is_admin(&state, presented) {
        request.extensions_mut().insert(Caller::Admin);
        return Ok(next.run(request).await);
    }
    // The dashboard's session cookie stands for the admin token: reads with the cookie alone
    // (SameSite=Strict keeps other sites from sending it), changes only with the session's
    // CSRF token in its header too.
    if presented.is_empty()
        && let Some(expires_at) = crate::ui::session_of(&state, request.headers())
    {
        let reads = matches!(*request.method(), Method::GET | Method::HEAD);
        let csrf = request
            .headers()
            .get(crate::ui::session::CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|presented| {
                crate::ui::session::csrf_matches(&state.admin_token, expires_at, presented)
            });
        if !reads && !csrf {
            return Err(ApiError::BadRequest {
                code: "csrf_token_missing",
                detail: "a change made with the dashboard's session needs its X-Kait-Csrf header"
                    .to_owned(),
            });
        }
        request.extensions_mut().insert(Caller::Admin);
        return Ok(next.run(request).await);
    }
    if presented.starts_with(INSTALLATION_TOKEN_PREFIX) {
        let (token_hash, method) = (token_hash(presented), request.method().clone());
        let route = route.as_ref().map(MatchedPath::as_str).unwrap_or_default();
        let needed = scope_for(&method, route);
        let app_key = path_app(&path_params);
        let subject = format!("{method} {route}");
        let grant = state
            .store
            .installation_for_token(&token_hash, now_millis())
            .await?
            .map_err(|_| ApiError::Unauthorized)?;
        return match installation_caller(&state, token_hash, &grant, needed, app_key).await {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                let response = next.run(request).await;
                // A handler refuses only what a narrowed scope does not admit (403).
                let decision = if response.status() == axum::http::StatusCode::FORBIDDEN {
                    "refused"
                } else {
                    "allowed"
                };
                let status = response.status().as_u16().to_string();
                audit_call(&state, &grant, subject, decision, status).await;
                Ok(response)
            }
            Err(refusal) => {
                let reason = match &refusal {
                    ApiError::InsufficientScope(scope) => format!("lacks the scope {scope}"),
                    ApiError::Forbidden => "outside its application or not open to plugins".into(),
                    other => format!("{other:?}"),
                };
                audit_call(&state, &grant, subject, "refused", reason).await;
                Err(refusal)
            }
        };
    }
    if !presented.starts_with(APP_TOKEN_PREFIX) {
        return Err(ApiError::Unauthorized);
    }
    let token_hash = token_hash(presented);
    let Some(grant) = state.store.app_for_token(&token_hash, now_millis()).await? else {
        return Err(ApiError::Unauthorized);
    };
    let route = route.as_ref().map(MatchedPath::as_str).unwrap_or_default();
    match access_for(request.method(), route) {
        Access::AdminOnly => return Err(ApiError::Forbidden),
        Access::App(needed) if !grant.capabilities.allows(needed) => {
            return Err(ApiError::MissingCapability(needed));
        }
        Access::App(_) => {}
    }
    if let Some(app_key) = path_app(&path_params)
        && !names_app(&state, &app_key, &grant.app_id).await?
    {
        return Err(ApiError::Forbidden);
    }
    request.extensions_mut().insert(Caller::App {
        token_hash,
        app_id: grant.app_id,
        capabilities: grant.capabilities,
    });
    Ok(next.run(request).await)
}

/// Checks a valid installation token (401 otherwise, before this: unknown, revoked,
/// uninstalled or expired, at once on every node, since each request reads the store)
/// against the route: its scope granted (403 `insufficient_scope`), the path's application
/// its own (403).
async fn installation_caller(
    state: &ApiState,
    token_hash: String,
    grant: &InstallationGrant,
    needed: Option<ScopeKind>,
    app_key: Option<String>,
) -> Result<Caller, ApiError> {
    let scopes = Scopes::parse(&grant.scopes)
        .map_err(|error| ApiError::Internal(format!("stored scopes: {error}")))?;
    let Some(needed) = needed else {
        return Err(ApiError::Forbidden);
    };
    if !scopes.allows(needed) {
        return Err(ApiError::InsufficientScope(needed.to_string()));
    }
    if let Some(app_key) = app_key
        && !names_app(state, &app_key, &grant.app_id).await?
    {
        return Err(ApiError::Forbidden);
    }
    Ok(Caller::Plugin {
        token_hash,
        scopes,
        app_id: grant.app_id.clone(),
    })
}

/// Records a call made with an installation token in the plugins' audit log; a failure to
/// record is logged, not turned into the caller's failure.
async fn audit_call(
    state: &ApiState,
    grant: &InstallationGrant,
    subject: String,
    decision: &str,
    detail: String,
) {
    let entry = AuditEntry {
        seq: 0,
        at: now_millis(),
        plugin_id: grant.plugin_id.clone(),
        installation_id: grant.installation_id.clone(),
        app_id: grant.app_id.clone(),
        kind: "call".into(),
        subject,
        decision: decision.into(),
        detail,
        attempt_id: None,
    };
    if let Err(error) = state.store.append_audit(vec![entry]).await {
        tracing::warn!(%error, "recording a plugin's call in the audit log failed");
    }
}

/// The `app_id` parameter of the matched route, if it has one.
fn path_app(
    path_params: &Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
) -> Option<String> {
    path_params.as_ref().ok().and_then(|params| {
        params
            .iter()
            .find(|(name, _)| *name == "app_id")
            .map(|(_, value)| value.to_owned())
    })
}

/// Whether the path's application key (an id or a `uid`) names `app_id`.
async fn names_app(state: &ApiState, key: &str, app_id: &AppId) -> Result<bool, ApiError> {
    if key == app_id.as_str() {
        return Ok(true);
    }
    if AppId::has_prefix(key) {
        return Ok(false);
    }
    Ok(state
        .store
        .get_application(key)
        .await?
        .is_some_and(|application| &application.id == app_id))
}

/// Compares without an early exit, so response time does not reveal a matching prefix.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_and_writes_to_read_routes_are_the_admins() {
        assert_eq!(access_for(&Method::POST, "/api/v1/app"), Access::AdminOnly);
        assert_eq!(
            access_for(&Method::DELETE, "/api/v1/app/{app_id}"),
            Access::AdminOnly
        );
        assert_eq!(
            access_for(&Method::POST, "/api/v1/app/{app_id}/msg"),
            Access::AdminOnly
        );
        assert_eq!(
            access_for(&Method::POST, "/api/v1/event-type"),
            Access::AdminOnly
        );
        assert_eq!(
            access_for(&Method::GET, "/api/v1/some/new/route"),
            Access::AdminOnly
        );
    }

    #[test]
    fn secrets_need_more_than_view_base() {
        let get = |route| access_for(&Method::GET, route);
        assert_eq!(
            get("/api/v1/app/{app_id}/endpoint/{endpoint_id}"),
            Access::App(Capability::ViewBase)
        );
        assert_eq!(
            get("/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret"),
            Access::App(Capability::ViewEndpointSecret)
        );
        assert_eq!(
            get("/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers"),
            Access::App(Capability::ViewEndpointSecret)
        );
        assert_eq!(
            access_for(
                &Method::PATCH,
                "/api/v1/app/{app_id}/endpoint/{endpoint_id}"
            ),
            Access::App(Capability::ManageEndpoint)
        );
    }
}
