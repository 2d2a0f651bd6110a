//! `/api/v1/app`: applications.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kait_core::time::now_millis;
use kait_core::validate::{self, Problems};
use kait_core::{AppId, Application};

use super::find_app;
use crate::extract::{ListQuery, ValidJson};
use crate::wire::{
    AppPortalAccessIn, AppPortalAccessOut, ApplicationIn, ApplicationOut, ApplicationPatch,
    ListResponse,
};
use crate::{ApiError, ApiState};

fn check(name: &str, uid: Option<&str>) -> Result<(), ApiError> {
    let mut problems = Problems::new();
    problems.check("name", validate::name(name));
    if let Some(uid) = uid {
        problems.check("uid", validate::uid(uid));
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
    check(&input.name, input.uid.as_deref())?;
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
    params(("app_id" = String, Path, description = "The application id (`app_…`) or uid")),
    responses((status = 200, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(app_key): Path<String>,
) -> Result<Json<ApplicationOut>, ApiError> {
    Ok(Json(find_app(&state, &app_key).await?.into()))
}

#[utoipa::path(
    put,
    operation_id = "v1.application.upsert",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Replace an application, or create it under a new uid",
    params(("app_id" = String, Path, description = "The application id (`app_…`) or uid")),
    request_body = ApplicationIn,
    responses((status = 200, body = ApplicationOut), (status = 201, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// PUT: replaces the application, or creates it when the path names a `uid` not yet taken.
pub async fn upsert(
    State(state): State<ApiState>,
    Path(app_key): Path<String>,
    ValidJson(input): ValidJson<ApplicationIn>,
) -> Result<impl IntoResponse, ApiError> {
    check(&input.name, input.uid.as_deref())?;
    let now = now_millis();
    match state.store.get_application(&app_key).await? {
        Some(existing) => {
            let updated = state
                .store
                .update_application(Application {
                    uid: input.uid,
                    name: input.name,
                    rate_limit: input.throttle_rate,
                    metadata: input.metadata.unwrap_or_default(),
                    updated_at: now,
                    ..existing
                })
                .await?;
            Ok((StatusCode::OK, Json(ApplicationOut::from(updated))))
        }
        None if !AppId::has_prefix(&app_key) => {
            if let Some(uid) = &input.uid
                && uid != &app_key
            {
                return Err(ApiError::invalid("uid", "must match the uid in the path"));
            }
            check(&input.name, Some(&app_key))?;
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
    params(("app_id" = String, Path, description = "The application id (`app_…`) or uid")),
    request_body = ApplicationPatch,
    responses((status = 200, body = ApplicationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(app_key): Path<String>,
    ValidJson(input): ValidJson<ApplicationPatch>,
) -> Result<Json<ApplicationOut>, ApiError> {
    let existing = find_app(&state, &app_key).await?;
    let application = Application {
        name: input.name.unwrap_or(existing.name.clone()),
        uid: input.uid.unwrap_or(existing.uid.clone()),
        rate_limit: input.throttle_rate.unwrap_or(existing.rate_limit),
        metadata: input.metadata.unwrap_or(existing.metadata.clone()),
        updated_at: now_millis(),
        ..existing
    };
    check(&application.name, application.uid.as_deref())?;
    Ok(Json(
        state.store.update_application(application).await?.into(),
    ))
}

#[utoipa::path(
    delete,
    operation_id = "v1.application.delete",
    path = "/api/v1/app/{app_id}",
    tag = "application",
    summary = "Delete an application with everything in it",
    params(("app_id" = String, Path, description = "The application id (`app_…`) or uid")),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(app_key): Path<String>,
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
    summary = "Issue an app-scoped token (read and poll one application)",
    params(("app_id" = String, Path, description = "The application id (`app_…`) or uid")),
    request_body = AppPortalAccessIn,
    responses((status = 200, body = AppPortalAccessOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST /api/v1/auth/app-portal-access/{app_id}`: a token that reads and polls only this app.
pub async fn portal_access(
    State(state): State<ApiState>,
    Path(app_key): Path<String>,
    body: crate::extract::LimitedBody,
) -> Result<Json<AppPortalAccessOut>, ApiError> {
    let input: AppPortalAccessIn = if body.0.iter().all(u8::is_ascii_whitespace) {
        AppPortalAccessIn::default()
    } else {
        crate::extract::parse_json(&body.0)?
    };
    let seconds = input.expiry.unwrap_or(DEFAULT_TOKEN_SECONDS);
    if seconds == 0 || seconds > MAX_TOKEN_SECONDS {
        return Err(ApiError::invalid(
            "expiry",
            format!("must be 1 to {MAX_TOKEN_SECONDS} seconds"),
        ));
    }
    let application = find_app(&state, &app_key).await?;
    let (token, hash) = crate::auth::new_app_token();
    state
        .store
        .create_app_token(&application.id, &hash, now_millis() + seconds as i64 * 1000)
        .await?;
    Ok(Json(AppPortalAccessOut {
        url: format!("/api/v1/app/{}", application.id),
        token,
    }))
}
