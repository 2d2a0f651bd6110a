//! `/api/v1/app`: applications.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kait_core::time::now_millis;
use kait_core::validate::{self, Problems};
use kait_core::{AppId, Application};

use super::{find_app, retry_stale};
use crate::extract::{ListQuery, ValidJson};
use crate::paths::AppPath;
use crate::wire::{
    AppPortalAccessIn, AppPortalAccessOut, ApplicationIn, ApplicationOut, ApplicationPatch,
    ApplicationTokenExpireIn, ListResponse, TokenAccessOut,
};
use crate::{ApiError, ApiState};

/// An application's name, uid and metadata, checked (also for one created with a message).
pub(crate) fn check(
    state: &ApiState,
    name: &str,
    uid: Option<&str>,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    let mut problems = Problems::new();
    problems.check("name", validate::name(name));
    if let Some(uid) = uid {
        problems.check("uid", validate::uid(uid));
    }
    if let Some(metadata) = metadata {
        problems.check(
            "metadata",
            validate::metadata(metadata, state.limits.max_metadata_bytes),
        );
    }
    Ok(problems.into_result()?)
}

#[utoipa::path(
    get,
    operation_id = "v1.application.list",
    path = "/api/v1/app",
    tag = "application",
    summary = "List applications",
    params(crate::extract::ListParams),
    responses((status = 200, body = ListResponse<ApplicationOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    query: ListQuery,
) -> Result<Json<ListResponse<ApplicationOut>>, ApiError> {
    let page = state.store.list_applications(query.page()?).await?;
    let data = page.items.into_iter().map(ApplicationOut::from).collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |app: &ApplicationOut| app.id.clone(),
    )))
}

#[utoipa::path(
    post,
    operation_id = "v1.application.create",
    path = "/api/v1/app",
    tag = "application",
    summary = "Create an application (`get_if_exists=true` returns an existing uid)",
    request_body = ApplicationIn,
    responses((status = 201, body = ApplicationOut), (status = 200, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    query: ListQuery,
    ValidJson(input): ValidJson<ApplicationIn>,
) -> Result<impl IntoResponse, ApiError> {
    check(
        &state,
        &input.name,
        input.uid.as_deref(),
        input.metadata.as_ref(),
    )?;
    if query.flag("get_if_exists", false)?
        && let Some(uid) = &input.uid
        && let Some(existing) = state.store.get_application(uid).await?
    {
        return Ok((StatusCode::OK, Json(ApplicationOut::from(existing))));
    }
    let now = now_millis();
    let created = state
        .store
        .create_application(Application {
            id: AppId::generate(),
            uid: input.uid,
            name: input.name,
            rate_limit: input.throttle_rate,
            metadata: input.metadata.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            revision: 0,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(ApplicationOut::from(created))))
}

#[utoipa::path(
    get,
    operation_id = "v1.application.get",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Get an application by id or uid",
    params(AppPath),
    responses((status = 200, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
) -> Result<Json<ApplicationOut>, ApiError> {
    Ok(Json(find_app(&state, &app_key).await?.into()))
}

#[utoipa::path(
    put,
    operation_id = "v1.application.upsert",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Replace an application, or create it under a new uid",
    params(AppPath),
    request_body = ApplicationIn,
    responses((status = 200, body = ApplicationOut), (status = 201, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// PUT: replaces the application, or creates it when the path names a `uid` not yet taken.
pub async fn upsert(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    ValidJson(input): ValidJson<ApplicationIn>,
) -> Result<impl IntoResponse, ApiError> {
    check(
        &state,
        &input.name,
        input.uid.as_deref(),
        input.metadata.as_ref(),
    )?;
    let now = now_millis();
    let changed = retry_stale(|| async {
        let Some(existing) = state.store.get_application(&app_key).await? else {
            return Ok(None);
        };
        let input = input.clone();
        let application = Application {
            uid: input.uid,
            name: input.name,
            rate_limit: input.throttle_rate,
            metadata: input.metadata.unwrap_or_default(),
            updated_at: now_millis(),
            ..existing
        };
        Ok(Some(state.store.update_application(application).await?))
    })
    .await?;
    match changed {
        Some(updated) => Ok((StatusCode::OK, Json(ApplicationOut::from(updated)))),
        None if !AppId::has_prefix(&app_key) => {
            if let Some(uid) = &input.uid
                && uid != &app_key
            {
                return Err(ApiError::invalid("uid", "must match the uid in the path"));
            }
            check(&state, &input.name, Some(&app_key), None)?;
            let created = state
                .store
                .create_application(Application {
                    id: AppId::generate(),
                    uid: Some(app_key),
                    name: input.name,
                    rate_limit: input.throttle_rate,
                    metadata: input.metadata.unwrap_or_default(),
                    created_at: now,
                    updated_at: now,
                    revision: 0,
                })
                .await?;
            Ok((StatusCode::CREATED, Json(ApplicationOut::from(created))))
        }
        None => Err(ApiError::NotFound("application")),
    }
}

#[utoipa::path(
    patch,
    operation_id = "v1.application.patch",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Change some fields of an application",
    params(AppPath),
    request_body = ApplicationPatch,
    responses((status = 200, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    ValidJson(input): ValidJson<ApplicationPatch>,
) -> Result<Json<ApplicationOut>, ApiError> {
    let updated = retry_stale(|| async {
        let existing = find_app(&state, &app_key).await?;
        let input = input.clone();
        let application = Application {
            name: input.name.unwrap_or(existing.name.clone()),
            uid: input.uid.unwrap_or(existing.uid.clone()),
            rate_limit: input.throttle_rate.unwrap_or(existing.rate_limit),
            metadata: input.metadata.unwrap_or(existing.metadata.clone()),
            updated_at: now_millis(),
            ..existing
        };
        check(
            &state,
            &application.name,
            application.uid.as_deref(),
            Some(&application.metadata),
        )?;
        Ok(state.store.update_application(application).await?)
    })
    .await?;
    Ok(Json(updated.into()))
}

#[utoipa::path(
    delete,
    operation_id = "v1.application.delete",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Delete an application with everything in it",
    params(AppPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
) -> Result<StatusCode, ApiError> {
    let application = find_app(&state, &app_key).await?;
    state.store.delete_application(&application.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Default and longest lifetime of an app-scoped token.
const DEFAULT_TOKEN_SECONDS: u64 = 7 * 24 * 3600;
const MAX_TOKEN_SECONDS: u64 = 365 * 24 * 3600;

#[utoipa::path(
    post,
    operation_id = "v1.application.portal-access",
    path = "/api/v1/auth/app-portal-access/{app_id}",
    tag = "application",
    summary = "Issue an app-scoped token confined to one application, with Svix's capabilities",
    params(AppPath),
    request_body(content = Option<AppPortalAccessIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 200, body = AppPortalAccessOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST /api/v1/auth/app-portal-access/{app_id}`: a token confined to this application, with
/// the capabilities asked for (Svix's defaults when none are).
pub async fn portal_access(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    body: crate::extract::LimitedBody,
) -> Result<Json<AppPortalAccessOut>, ApiError> {
    let input: AppPortalAccessIn = crate::extract::parse_json_or_default(&body.0)?;
    let seconds = input.expiry.unwrap_or(DEFAULT_TOKEN_SECONDS);
    if seconds == 0 || seconds > MAX_TOKEN_SECONDS {
        return Err(ApiError::invalid(
            "expiry",
            format!("must be 1 to {MAX_TOKEN_SECONDS} seconds"),
        ));
    }
    if let Some(session_id) = &input.session_id {
        validate::uid(session_id).map_err(|problem| ApiError::invalid("sessionId", problem))?;
    }
    let capabilities = kait_core::access::Capabilities::for_portal_access(
        input.capabilities.as_deref(),
        input.read_only.unwrap_or(false),
    );
    let application = find_app(&state, &app_key).await?;
    let (token, token_hash) = crate::auth::new_app_token();
    state
        .store
        .create_app_token(kait_store::NewAppToken {
            app_id: application.id.clone(),
            token_hash,
            expires_at: now_millis() + seconds as i64 * 1000,
            capabilities,
            session_id: input.session_id,
        })
        .await?;
    Ok(Json(AppPortalAccessOut {
        url: portal_url(&state.public_url, &application.id, &token),
        token,
    }))
}

/// The consumer portal's link for `token`: the token rides in the fragment, which browsers
/// never send, so it reaches neither Kait's access log nor a proxy's.
pub fn portal_url(public_url: &str, app_id: &AppId, token: &str) -> String {
    format!(
        "{}/portal/#app={app_id}&token={token}",
        public_url.trim_end_matches('/')
    )
}

#[utoipa::path(
    post,
    operation_id = "v1.authentication.logout",
    path = "/api/v1/auth/logout",
    tag = "application",
    summary = "End the app-scoped token this request is made with (a portal's sign-out)",
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST /api/v1/auth/logout`: only the presented token ends; the admin token and plugins'
/// tokens are not ended this way (400).
pub async fn logout(
    State(state): State<ApiState>,
    Extension(caller): Extension<crate::auth::Caller>,
) -> Result<StatusCode, ApiError> {
    let crate::auth::Caller::App { token_hash, .. } = caller else {
        return Err(ApiError::BadRequest {
            code: "not_an_app_token",
            detail: "only an app-scoped (portal) token can be logged out; revoke others \
                     where they were issued"
                .to_owned(),
        });
    };
    state.store.end_app_token(&token_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    operation_id = "v1.authentication.token",
    path = "/api/v1/auth/token",
    tag = "application",
    summary = "What the token this request is made with may do (Kait)",
    description = "The admin token may do everything; an app-scoped token is confined to its \
        application with the capabilities it was issued with (each listed here once it is \
        allowed, including those implied by another). The consumer portal reads this to show \
        only the controls the token can use; the API checks every request regardless.",
    responses((status = 200, body = TokenAccessOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET /api/v1/auth/token`: the caller's kind, application and capabilities.
pub async fn token(Extension(caller): Extension<crate::auth::Caller>) -> Json<TokenAccessOut> {
    use kait_core::access::{Capabilities, Capability};
    let (kind, app_id, granted) = match caller {
        crate::auth::Caller::Admin => ("admin", None, Capabilities::all()),
        crate::auth::Caller::App {
            app_id,
            capabilities,
            ..
        } => ("app", Some(app_id), capabilities),
        // Not routed to installation tokens (`scope_for` leaves it out); nothing to claim.
        crate::auth::Caller::Plugin { app_id, .. } => ("plugin", Some(app_id), Capabilities::NONE),
    };
    Json(TokenAccessOut {
        kind,
        app_id: app_id.map(|id| id.to_string()),
        capabilities: Capability::ALL
            .into_iter()
            .filter(|capability| granted.allows(*capability))
            .collect(),
    })
}

/// The longest `expire-all` may leave the old tokens working (Svix's bound: 3 days).
const MAX_EXPIRE_SECONDS: u64 = 3 * 24 * 3600;

#[utoipa::path(
    post,
    operation_id = "v1.authentication.expire-all",
    path = "/api/v1/auth/app/{app_id}/expire-all",
    tag = "application",
    summary = "Expire the application's app-scoped tokens (all, or those of some sessions)",
    params(AppPath),
    request_body(content = Option<ApplicationTokenExpireIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST /api/v1/auth/app/{app_id}/expire-all`: revokes the application's tokens at once
/// (or after `expiry` seconds), e.g. when a customer's portal session may have leaked.
pub async fn expire_all(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    body: crate::extract::LimitedBody,
) -> Result<StatusCode, ApiError> {
    let input: ApplicationTokenExpireIn = crate::extract::parse_json_or_default(&body.0)?;
    let seconds = input.expiry.unwrap_or(0);
    if seconds > MAX_EXPIRE_SECONDS {
        return Err(ApiError::invalid(
            "expiry",
            format!("must be 0 to {MAX_EXPIRE_SECONDS} seconds"),
        ));
    }
    let application = find_app(&state, &app_key).await?;
    state
        .store
        .expire_app_tokens(
            &application.id,
            input.session_ids,
            now_millis() + seconds as i64 * 1000,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
