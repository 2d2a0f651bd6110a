//! `/api/v1/plugin` and `/api/v1/app/{app_id}/installation` (issue 17; Kait extension):
//! plugins registered by the operator, installed into applications with granted scopes, and
//! the exchange of a plugin's credential for a one-hour installation token.
//!
//! Registering returns the plugin's credential once (`plsk_…`; stored hashed). Installing
//! grants all or some of the scopes the plugin asked for and creates the plugin's endpoint in
//! that application, subscribed to the event types it asked for. `POST /api/v1/plugin/token`
//! (with the credential as bearer) returns a token (`plit_…`) for one installation, with its
//! grant or less, valid an hour; uninstalling or `…/revoke-tokens` revokes it at once.

use std::collections::BTreeSet;
use std::ops::Not;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use kait_core::scope::Scopes;
use kait_core::signing::Secret;
use kait_core::time::{now_millis, to_datetime};
use kait_core::{Endpoint, InstallationId, PluginId, validate};
use kait_store::{Installation, NewInstallationToken, Plugin};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::auth::{Caller, INSTALLATION_TOKEN_PREFIX, PLUGIN_CREDENTIAL_PREFIX};
use crate::extract::{ListQuery, ValidJson};
use crate::paths::AppPath;
use crate::wire::{EventTypeName, ListResponse, Name, ScopeText, Uid, WebhookUrl};
use crate::{ApiError, ApiState};

/// How long an installation token lives.
pub const TOKEN_LIFETIME_MS: i64 = 3_600_000;
/// The most plugins a server keeps, and event types one plugin asks for.
const MAX_PLUGINS: usize = 1_000;
const MAX_EVENT_TYPES: usize = 64;

/// A plugin's manifest.
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginIn {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Where the plugin receives the events of each application it is installed in.
    #[schema(value_type = WebhookUrl)]
    pub url: String,
    /// The event types it wants (empty: all).
    #[serde(default)]
    #[schema(value_type = Vec<EventTypeName>, max_items = 64)]
    pub event_types: Vec<String>,
    /// The scopes it asks for, e.g. `messages:read`, `devices:command:gate-*`.
    #[schema(value_type = Vec<ScopeText>, max_items = 64)]
    pub scopes: Vec<String>,
    /// Whether it may answer a webhook with actions.
    #[serde(default)]
    pub reply_actions: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginOut {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    pub description: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub scopes: Vec<String>,
    pub reply_actions: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The plugin's credential: shown once, at registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstallationIn {
    /// The plugin (id or uid).
    pub plugin: String,
    /// The scopes granted: all those the plugin asked for when absent, else a subset.
    #[schema(value_type = Option<Vec<ScopeText>>, max_items = 64)]
    pub scopes: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallationOut {
    pub id: String,
    pub plugin_id: String,
    pub app_id: String,
    pub scopes: Vec<String>,
    /// The endpoint created for the plugin's webhooks.
    pub endpoint_id: String,
    pub granted_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenIn {
    /// The application (id or uid) the plugin is installed in.
    pub app: String,
    /// Fewer scopes than the installation's grant (default: all of it).
    #[schema(value_type = Option<Vec<ScopeText>>, max_items = 64)]
    pub scopes: Option<Vec<String>>,
    /// A shorter life than the hour, in seconds (1 to 3600).
    #[schema(minimum = 1, maximum = 3600)]
    pub expires_in_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenOut {
    pub token: String,
    pub installation_id: String,
    pub app_id: String,
    pub scopes: Vec<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PluginPath {
    /// The plugin id (`plg_…`) or uid
    pub plugin_id: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InstallationPath {
    /// The application id or uid
    pub app_id: String,
    /// The installation id (`inst_…`)
    pub installation_id: String,
}

fn scopes(field: &str, texts: &[String]) -> Result<Scopes, ApiError> {
    Scopes::parse(texts).map_err(|error| ApiError::invalid(field, error.to_string()))
}

fn manifest_of(plugin: &Plugin) -> Result<PluginIn, ApiError> {
    serde_json::from_value(plugin.manifest.clone())
        .map_err(|error| ApiError::Internal(format!("stored plugin {}: {error}", plugin.id)))
}

fn plugin_out(plugin: &Plugin, credential: Option<String>) -> Result<PluginOut, ApiError> {
    let manifest = manifest_of(plugin)?;
    Ok(PluginOut {
        id: plugin.id.to_string(),
        name: manifest.name,
        uid: manifest.uid,
        description: manifest.description,
        url: manifest.url,
        event_types: manifest.event_types,
        scopes: manifest.scopes,
        reply_actions: manifest.reply_actions,
        created_at: to_datetime(plugin.created_at),
        credential,
    })
}

fn installation_out(installation: Installation) -> InstallationOut {
    InstallationOut {
        id: installation.id.into_string(),
        plugin_id: installation.plugin_id.into_string(),
        app_id: installation.app_id.into_string(),
        scopes: installation.scopes,
        endpoint_id: installation.endpoint_id.into_string(),
        granted_by: installation.granted_by,
        created_at: to_datetime(installation.created_at),
    }
}

async fn find_plugin(state: &ApiState, key: &str) -> Result<Plugin, ApiError> {
    state
        .store
        .get_plugin(key)
        .await?
        .ok_or(ApiError::NotFound("plugin"))
}

#[utoipa::path(
    post,
    operation_id = "v1.plugin.create",
    path = "/api/v1/plugin",
    tag = "plugin",
    summary = "Register a plugin (Kait extension); its credential is in this answer only",
    request_body = PluginIn,
    responses((status = 201, body = PluginOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<PluginIn>,
) -> Result<(StatusCode, Json<PluginOut>), ApiError> {
    let mut problems = validate::Problems::new();
    problems.check("name", validate::name(&input.name));
    if let Some(uid) = &input.uid {
        problems.check("uid", validate::uid(uid));
    }
    problems.check(
        "url",
        validate::endpoint_url(&input.url)
            .map(drop)
            .and_then(|()| (state.url_check)(&input.url)),
    );
    problems.check(
        "eventTypes",
        if input.event_types.len() > MAX_EVENT_TYPES {
            Err(format!("at most {MAX_EVENT_TYPES} event types"))
        } else {
            input
                .event_types
                .iter()
                .try_for_each(|name| validate::event_type_name(name))
        },
    );
    problems.check(
        "scopes",
        Scopes::parse(&input.scopes)
            .map(|_| ())
            .map_err(|error| error.to_string()),
    );
    problems.into_result().map_err(ApiError::Validation)?;
    if state.store.list_plugins().await?.len() >= MAX_PLUGINS {
        return Err(ApiError::LimitReached(format!(
            "a server keeps at most {MAX_PLUGINS} plugins"
        )));
    }
    let (credential, credential_hash) = crate::auth::new_token(PLUGIN_CREDENTIAL_PREFIX);
    let plugin = state
        .store
        .create_plugin(Plugin {
            id: PluginId::generate(),
            uid: input.uid.clone(),
            manifest: serde_json::to_value(&input)
                .map_err(|error| ApiError::Internal(error.to_string()))?,
            credential_hash,
            created_at: now_millis(),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(plugin_out(&plugin, Some(credential))?),
    ))
}

#[utoipa::path(
    get,
    operation_id = "v1.plugin.list",
    path = "/api/v1/plugin",
    tag = "plugin",
    summary = "List the plugins",
    responses((status = 200, body = ListResponse<PluginOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
) -> Result<Json<ListResponse<PluginOut>>, ApiError> {
    let plugins = state
        .store
        .list_plugins()
        .await?
        .iter()
        .map(|plugin| plugin_out(plugin, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ListResponse::new(plugins, true, |plugin| {
        plugin.id.clone()
    })))
}

#[utoipa::path(
    get,
    operation_id = "v1.plugin.get",
    path = "/api/v1/plugin/{plugin_id}",
    tag = "plugin",
    summary = "Get a plugin",
    params(PluginPath),
    responses((status = 200, body = PluginOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(PluginPath { plugin_id }): Path<PluginPath>,
) -> Result<Json<PluginOut>, ApiError> {
    let plugin = find_plugin(&state, &plugin_id).await?;
    Ok(Json(plugin_out(&plugin, None)?))
}

#[utoipa::path(
    delete,
    operation_id = "v1.plugin.delete",
    path = "/api/v1/plugin/{plugin_id}",
    tag = "plugin",
    summary = "Delete a plugin: every installation goes, with its endpoint and tokens",
    params(PluginPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(PluginPath { plugin_id }): Path<PluginPath>,
) -> Result<StatusCode, ApiError> {
    let plugin = find_plugin(&state, &plugin_id).await?;
    // Tokens first (with the installations), so nothing acts while endpoints go.
    let installations = state
        .store
        .list_installations(None, Some(&plugin.id))
        .await?;
    state.store.delete_plugin(&plugin.id).await?;
    for installation in installations {
        remove_endpoint(&state, &installation).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_endpoint(state: &ApiState, installation: &Installation) -> Result<(), ApiError> {
    match state
        .store
        .delete_endpoint(&installation.app_id, &installation.endpoint_id)
        .await
    {
        Ok(()) | Err(kait_store::StoreError::NotFound) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[utoipa::path(
    post,
    operation_id = "v1.plugin.installation.create",
    path = "/api/v1/app/{app_id}/installation",
    tag = "plugin",
    summary = "Install a plugin into an application, granting all or some of its scopes",
    params(AppPath),
    request_body = InstallationIn,
    responses((status = 201, body = InstallationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn install(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(AppPath { app_id }): Path<AppPath>,
    ValidJson(input): ValidJson<InstallationIn>,
) -> Result<(StatusCode, Json<InstallationOut>), ApiError> {
    let application = super::find_app(&state, &app_id).await?;
    // The plugin is named in the body: a missing one is a problem of the request (422 at
    // `plugin`), not a missing path resource (404 would say the application is gone).
    let plugin = find_plugin(&state, &input.plugin)
        .await
        .map_err(|error| match error {
            ApiError::NotFound(_) => ApiError::invalid("plugin", "no such plugin"),
            other => other,
        })?;
    let manifest = manifest_of(&plugin)?;
    let requested = scopes("scopes", &manifest.scopes)?;
    let granted = match &input.scopes {
        Some(texts) => {
            let granted = scopes("scopes", texts)?;
            let beyond = requested.not_covered(&granted);
            if !beyond.is_empty() {
                return Err(ApiError::invalid(
                    "scopes",
                    format!(
                        "the plugin did not ask for {}",
                        beyond
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            granted
        }
        None => requested,
    };
    if state
        .store
        .list_installations(Some(&application.id), Some(&plugin.id))
        .await?
        .is_empty()
        .not()
    {
        return Err(ApiError::Conflict(
            "the plugin is already installed in this application".into(),
        ));
    }
    // The plugin's webhooks: the event types it asked for, and only if it may read messages.
    let now = now_millis();
    let endpoint = Endpoint {
        description: format!("plugin {}", manifest.name),
        disabled: !granted.allows(kait_core::scope::ScopeKind::MessagesRead),
        event_types: (!manifest.event_types.is_empty()).then(|| {
            manifest
                .event_types
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
        }),
        kind: kait_core::EndpointKind::Plugin,
        ownership: kait_core::OwnershipCheck::challenge(),
        ..Endpoint::new(
            application.id.clone(),
            manifest.url.clone(),
            Secret::generate(),
            now,
        )
    };
    let endpoint = state
        .store
        .create_endpoint(endpoint, state.limits.max_endpoints_per_app)
        .await?;
    let installation = Installation {
        id: InstallationId::generate(),
        plugin_id: plugin.id.clone(),
        app_id: application.id.clone(),
        scopes: granted.to_strings(),
        endpoint_id: endpoint.id.clone(),
        granted_by: match &caller {
            Caller::Admin => "admin".to_owned(),
            Caller::App { token_hash, .. } | Caller::Plugin { token_hash, .. } => {
                format!("token:{}", &token_hash[..12.min(token_hash.len())])
            }
        },
        created_at: now,
    };
    match state.store.create_installation(installation).await {
        Ok(installation) => Ok((StatusCode::CREATED, Json(installation_out(installation)))),
        Err(error) => {
            // A racing install won: its endpoint stays, this one goes.
            let _ = state
                .store
                .delete_endpoint(&application.id, &endpoint.id)
                .await;
            Err(error.into())
        }
    }
}

#[utoipa::path(
    get,
    operation_id = "v1.plugin.installation.list",
    path = "/api/v1/app/{app_id}/installation",
    tag = "plugin",
    summary = "List the plugins installed in an application",
    params(AppPath),
    responses((status = 200, body = ListResponse<InstallationOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list_installations(
    State(state): State<ApiState>,
    Path(AppPath { app_id }): Path<AppPath>,
) -> Result<Json<ListResponse<InstallationOut>>, ApiError> {
    let application = super::find_app(&state, &app_id).await?;
    let installations = state
        .store
        .list_installations(Some(&application.id), None)
        .await?
        .into_iter()
        .map(installation_out)
        .collect();
    Ok(Json(ListResponse::new(installations, true, |item| {
        item.id.clone()
    })))
}

async fn find_installation(
    state: &ApiState,
    app_key: &str,
    id: &str,
) -> Result<Installation, ApiError> {
    let application = super::find_app(state, app_key).await?;
    let id = InstallationId::parse(id).ok_or(ApiError::NotFound("installation"))?;
    state
        .store
        .get_installation(&id)
        .await?
        .filter(|installation| installation.app_id == application.id)
        .ok_or(ApiError::NotFound("installation"))
}

#[utoipa::path(
    delete,
    operation_id = "v1.plugin.installation.delete",
    path = "/api/v1/app/{app_id}/installation/{installation_id}",
    tag = "plugin",
    summary = "Uninstall: the installation's tokens stop working at once, its endpoint goes",
    params(InstallationPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn uninstall(
    State(state): State<ApiState>,
    Path(InstallationPath {
        app_id,
        installation_id,
    }): Path<InstallationPath>,
) -> Result<StatusCode, ApiError> {
    let installation = find_installation(&state, &app_id, &installation_id).await?;
    state.store.delete_installation(&installation.id).await?;
    remove_endpoint(&state, &installation).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    operation_id = "v1.plugin.installation.revoke-tokens",
    path = "/api/v1/app/{app_id}/installation/{installation_id}/revoke-tokens",
    tag = "plugin",
    summary = "Revoke every token of an installation at once (the plugin may ask for new ones)",
    params(InstallationPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn revoke_tokens(
    State(state): State<ApiState>,
    Path(InstallationPath {
        app_id,
        installation_id,
    }): Path<InstallationPath>,
) -> Result<StatusCode, ApiError> {
    let installation = find_installation(&state, &app_id, &installation_id).await?;
    state
        .store
        .revoke_installation_tokens(&installation.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    operation_id = "v1.plugin.token",
    path = "/api/v1/plugin/token",
    tag = "plugin",
    summary = "Exchange the plugin's credential (as bearer) for a one-hour installation token",
    request_body = TokenIn,
    responses((status = 201, body = TokenOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("pluginCredential" = []))
)]
pub async fn token(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    ValidJson(input): ValidJson<TokenIn>,
) -> Result<(StatusCode, Json<TokenOut>), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if !presented.starts_with(PLUGIN_CREDENTIAL_PREFIX) {
        return Err(ApiError::Unauthorized);
    }
    let plugin = state
        .store
        .plugin_for_credential(&crate::auth::token_hash(presented))
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let application = super::find_app(&state, &input.app).await?;
    let installation = state
        .store
        .list_installations(Some(&application.id), Some(&plugin.id))
        .await?
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound("installation"))?;
    let granted = scopes("scopes", &installation.scopes)?;
    let scopes = match &input.scopes {
        Some(texts) => {
            let wanted = scopes("scopes", texts)?;
            if let Some(beyond) = granted.not_covered(&wanted).first() {
                return Err(ApiError::InsufficientScope(beyond.to_string()));
            }
            wanted
        }
        None => granted,
    };
    let lifetime = match input.expires_in_secs {
        None => TOKEN_LIFETIME_MS,
        Some(secs @ 1..=3600) => secs as i64 * 1000,
        Some(_) => {
            return Err(ApiError::invalid(
                "expiresInSecs",
                "1 to 3600 seconds (a token lives an hour at most)",
            ));
        }
    };
    let (token, token_hash) = crate::auth::new_token(INSTALLATION_TOKEN_PREFIX);
    let expires_at = now_millis() + lifetime;
    state
        .store
        .create_installation_token(NewInstallationToken {
            token_hash,
            installation_id: installation.id.clone(),
            scopes: scopes.to_strings(),
            expires_at,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenOut {
            token,
            installation_id: installation.id.into_string(),
            app_id: installation.app_id.into_string(),
            scopes: scopes.to_strings(),
            expires_at: to_datetime(expires_at),
        }),
    ))
}

/// One line of the plugins' audit log.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryOut {
    /// Its place in the log (the `iterator` of the next page).
    pub seq: i64,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub plugin_id: String,
    pub installation_id: String,
    pub app_id: String,
    /// `call` (an API call with an installation token) or `action` (one action of a reply).
    pub kind: String,
    /// The call's method and route, or the action's type.
    pub subject: String,
    /// `allowed`, `done` or `refused`.
    pub decision: String,
    /// The answer's status, what the action did, or why it was refused.
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_id: Option<String>,
}

/// The most audit entries per page.
const MAX_AUDIT_PAGE: usize = 250;

/// The query of an audit log page: newest first, always.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AuditParams {
    /// Entries per page (1–250, default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// Older than this entry (`iterator` of the previous page: a `seq`).
    #[param(pattern = "^(-?[0-9]{1,18})?$")]
    iterator: Option<String>,
}

async fn audit_page(
    state: &ApiState,
    app_id: Option<&kait_core::AppId>,
    plugin_id: Option<&PluginId>,
    query: &ListQuery,
) -> Result<Json<ListResponse<AuditEntryOut>>, ApiError> {
    let before = match query.get("iterator").filter(|text| !text.is_empty()) {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::invalid_query("iterator", "the iterator of a previous page of this log")
        })?),
    };
    let limit = match query.get("limit") {
        None => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_AUDIT_PAGE).contains(&limit) => limit,
            _ => {
                return Err(ApiError::invalid_query(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_AUDIT_PAGE}"),
                ));
            }
        },
    };
    let mut entries = state
        .store
        .list_audit(app_id, plugin_id, before, limit + 1)
        .await?;
    let done = entries.len() <= limit;
    entries.truncate(limit);
    let data = entries
        .into_iter()
        .map(|entry| AuditEntryOut {
            seq: entry.seq,
            timestamp: to_datetime(entry.at),
            plugin_id: entry.plugin_id.into_string(),
            installation_id: entry.installation_id.into_string(),
            app_id: entry.app_id.into_string(),
            kind: entry.kind,
            subject: entry.subject,
            decision: entry.decision,
            detail: entry.detail,
            attempt_id: entry.attempt_id,
        })
        .collect();
    Ok(Json(ListResponse::new(
        data,
        done,
        |entry: &AuditEntryOut| entry.seq.to_string(),
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.plugin.audit.app",
    path = "/api/v1/app/{app_id}/plugin-audit",
    tag = "plugin",
    summary = "The plugins' audit log of an application, newest first (`iterator`: a `seq`)",
    params(AppPath, AuditParams),
    responses((status = 200, body = ListResponse<AuditEntryOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn app_audit(
    State(state): State<ApiState>,
    Path(AppPath { app_id }): Path<AppPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<AuditEntryOut>>, ApiError> {
    let application = super::find_app(&state, &app_id).await?;
    audit_page(&state, Some(&application.id), None, &query).await
}

#[utoipa::path(
    get,
    operation_id = "v1.plugin.audit.plugin",
    path = "/api/v1/plugin/{plugin_id}/audit",
    tag = "plugin",
    summary = "A plugin's audit log over every application, newest first",
    params(PluginPath, AuditParams),
    responses((status = 200, body = ListResponse<AuditEntryOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn plugin_audit(
    State(state): State<ApiState>,
    Path(PluginPath { plugin_id }): Path<PluginPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<AuditEntryOut>>, ApiError> {
    let plugin = find_plugin(&state, &plugin_id).await?;
    audit_page(&state, None, Some(&plugin.id), &query).await
}
