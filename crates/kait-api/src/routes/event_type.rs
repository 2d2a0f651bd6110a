//! `/api/v1/event-type`: event types. DELETE archives unless `expunge=true`, as in Svix.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kait_core::EventType;
use kait_core::time::now_millis;
use kait_core::validate;

use crate::extract::{ListQuery, ValidJson};
use crate::wire::{EventTypeIn, EventTypeOut, EventTypePatch, EventTypeUpdate, ListResponse};
use crate::{ApiError, ApiState};

async fn find(state: &ApiState, name: &str) -> Result<EventType, ApiError> {
    state
        .store
        .get_event_type(name)
        .await?
        .ok_or(ApiError::NotFound("event type"))
}

#[utoipa::path(
    get,
    operation_id = "v1.event-type.list",
    path = "/api/v1/event-type",
    tag = "event-type",
    summary = "List event types",
    params(crate::extract::ListParams),
    responses((status = 200, body = ListResponse<EventTypeOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    query: ListQuery,
) -> Result<Json<ListResponse<EventTypeOut>>, ApiError> {
    let include_archived = query.flag("include_archived", false)?;
    let page = state
        .store
        .list_event_types(include_archived, query.page()?)
        .await?;
    let data = page.items.into_iter().map(EventTypeOut::from).collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |event_type: &EventTypeOut| event_type.name.clone(),
    )))
}

#[utoipa::path(
    post,
    operation_id = "v1.event-type.create",
    path = "/api/v1/event-type",
    tag = "event-type",
    summary = "Create an event type",
    request_body = EventTypeIn,
    responses((status = 201, body = EventTypeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<EventTypeIn>,
) -> Result<impl IntoResponse, ApiError> {
    validate::event_type_name(&input.name).map_err(|msg| ApiError::invalid("name", msg))?;
    let now = now_millis();
    let created = state
        .store
        .create_event_type(EventType {
            name: input.name,
            description: input.description,
            archived: input.archived.unwrap_or(false),
            deprecated: input.deprecated.unwrap_or(false),
            schemas: input.schemas,
            feature_flag: input.feature_flag,
            group_name: input.group_name,
            created_at: now,
            updated_at: now,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(EventTypeOut::from(created))))
}

#[utoipa::path(
    get,
    operation_id = "v1.event-type.get",
    path = "/api/v1/event-type/{event_type_name}",
    tag = "event-type",
    summary = "Get an event type",
    params(("event_type_name" = crate::wire::EventTypeName, Path, description = "The event type name")),
    responses((status = 200, body = EventTypeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<EventTypeOut>, ApiError> {
    Ok(Json(find(&state, &name).await?.into()))
}

#[utoipa::path(
    put,
    operation_id = "v1.event-type.upsert",
    path = "/api/v1/event-type/{event_type_name}",
    tag = "event-type",
    summary = "Replace or create an event type",
    params(("event_type_name" = crate::wire::EventTypeName, Path, description = "The event type name")),
    request_body = EventTypeUpdate,
    responses((status = 200, body = EventTypeOut), (status = 201, body = EventTypeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// PUT: replaces the event type, creating it if it does not exist.
pub async fn upsert(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ValidJson(input): ValidJson<EventTypeUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    validate::event_type_name(&name).map_err(|msg| ApiError::invalid("name", msg))?;
    let now = now_millis();
    let existing = state.store.get_event_type(&name).await?;
    let created_at = existing
        .as_ref()
        .map_or(now, |event_type| event_type.created_at);
    let event_type = EventType {
        name,
        description: input.description,
        archived: input.archived.unwrap_or(false),
        deprecated: input.deprecated.unwrap_or(false),
        schemas: input.schemas,
        feature_flag: input.feature_flag,
        group_name: input.group_name,
        created_at,
        updated_at: now,
    };
    if existing.is_some() {
        let updated = state.store.update_event_type(event_type).await?;
        Ok((StatusCode::OK, Json(EventTypeOut::from(updated))))
    } else {
        let created = state.store.create_event_type(event_type).await?;
        Ok((StatusCode::CREATED, Json(EventTypeOut::from(created))))
    }
}

#[utoipa::path(
    patch,
    operation_id = "v1.event-type.patch",
    path = "/api/v1/event-type/{event_type_name}",
    tag = "event-type",
    summary = "Change some fields of an event type",
    params(("event_type_name" = crate::wire::EventTypeName, Path, description = "The event type name")),
    request_body = EventTypePatch,
    responses((status = 200, body = EventTypeOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    ValidJson(input): ValidJson<EventTypePatch>,
) -> Result<Json<EventTypeOut>, ApiError> {
    let existing = find(&state, &name).await?;
    let event_type = EventType {
        description: input.description.unwrap_or(existing.description.clone()),
        archived: input.archived.unwrap_or(existing.archived),
        deprecated: input.deprecated.unwrap_or(existing.deprecated),
        schemas: input.schemas.unwrap_or(existing.schemas.clone()),
        feature_flag: input.feature_flag.unwrap_or(existing.feature_flag.clone()),
        group_name: input.group_name.unwrap_or(existing.group_name.clone()),
        updated_at: now_millis(),
        ..existing
    };
    Ok(Json(
        state.store.update_event_type(event_type).await?.into(),
    ))
}

#[utoipa::path(
    delete,
    operation_id = "v1.event-type.delete",
    path = "/api/v1/event-type/{event_type_name}",
    tag = "event-type",
    summary = "Archive an event type (`expunge=true` deletes it)",
    params(("event_type_name" = crate::wire::EventTypeName, Path, description = "The event type name")),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: ListQuery,
) -> Result<StatusCode, ApiError> {
    let existing = find(&state, &name).await?;
    if query.flag("expunge", false)? {
        state.store.expunge_event_type(&name).await?;
    } else {
        state
            .store
            .update_event_type(EventType {
                archived: true,
                updated_at: now_millis(),
                ..existing
            })
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
