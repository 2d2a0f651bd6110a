//! `/ingest/api/v1/source`: incoming sources, wire-compatible with Svix Ingest (the official
//! SDKs' `ingest.source`). A source's `config` is checked by `kait-sources` for its type and
//! kept sealed; responses show it without secrets. The receiving URL (`ingestUrl`) carries the
//! source's token; rotating it keeps the old one working for a day.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use kait_core::time::now_millis;
use kait_core::validate::{self, Problem, Problems};
use kait_core::{Application, ReceivedId, Source, SourceId};
use kait_sources::{SourceConfig, SourceKind};
use kait_store::ReceivedRequest;
use rand::RngCore;
use serde::Deserialize;
use utoipa::IntoParams;

use super::retry_stale;
use crate::extract::{ListQuery, ValidJson};
use crate::wire::{IngestSourceIn, IngestSourceOut, ListResponse, ReceivedOut, RotateTokenOut};
use crate::{ApiError, ApiState};

/// How long a rotated-away token keeps being accepted (Svix: 24 hours).
const OLD_TOKEN_GRACE_MS: i64 = 24 * 3600 * 1000;

/// `/ingest/api/v1/source/{source_id}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SourcePath {
    /// The source id (`src_…`) or uid
    pub source_id: String,
}

/// A new receiving-URL token: 24 random bytes, URL-safe.
fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks a source's fields, every problem at once; the type and config come back parsed.
fn check(state: &ApiState, input: &IngestSourceIn) -> Result<(), ApiError> {
    let mut problems = Problems::new();
    problems.check("name", validate::name(&input.name));
    if let Some(uid) = &input.uid {
        problems.check("uid", validate::uid(uid));
    }
    if let Some(metadata) = &input.metadata {
        problems.check(
            "metadata",
            validate::metadata(metadata, state.limits.max_metadata_bytes),
        );
    }
    let mut items = match problems.into_result() {
        Ok(()) => Vec::new(),
        Err(items) => items,
    };
    match SourceKind::parse(&input.kind) {
        None => items.push(Problem {
            loc: vec!["body".into(), "type".into()],
            msg: format!("must be one of {}", SourceKind::names()),
            kind: "value_error",
        }),
        Some(kind) => {
            if let Err(problem) = SourceConfig::parse(kind, &input.config) {
                let mut loc = vec!["body".to_owned()];
                loc.extend(problem.field.split('.').map(str::to_owned));
                items.push(Problem {
                    loc,
                    msg: problem.problem,
                    kind: "value_error",
                });
            }
        }
    }
    if items.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(items))
    }
}

pub use kait_store::source_app_uid as app_uid;

/// The source's application (see [`kait_store::source_application`]).
pub async fn source_app(state: &ApiState, source_id: &SourceId) -> Result<Application, ApiError> {
    Ok(kait_store::source_application(state.store.as_ref(), source_id).await?)
}

pub async fn find(state: &ApiState, key: &str) -> Result<Source, ApiError> {
    state
        .store
        .get_source(key)
        .await?
        .ok_or(ApiError::NotFound("source"))
}

fn out(state: &ApiState, source: &Source) -> IngestSourceOut {
    IngestSourceOut::new(source, &state.public_url)
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.source.list",
    path = "/ingest/api/v1/source",
    tag = "ingest",
    summary = "List incoming sources",
    params(crate::extract::ListParams),
    responses((status = 200, body = ListResponse<IngestSourceOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    query: ListQuery,
) -> Result<Json<ListResponse<IngestSourceOut>>, ApiError> {
    let page = state.store.list_sources(query.page()?).await?;
    let data = page
        .items
        .iter()
        .map(|source| out(&state, source))
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |source: &IngestSourceOut| source.id.clone(),
    )))
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.source.create",
    path = "/ingest/api/v1/source",
    tag = "ingest",
    summary = "Create an incoming source",
    request_body = IngestSourceIn,
    responses((status = 201, body = IngestSourceOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    ValidJson(input): ValidJson<IngestSourceIn>,
) -> Result<impl IntoResponse, ApiError> {
    check(&state, &input)?;
    let created = state.store.create_source(new_source(input, None)).await?;
    source_app(&state, &created.id).await?;
    state.sources_changed.notify_one();
    Ok((StatusCode::CREATED, Json(out(&state, &created))))
}

fn new_source(input: IngestSourceIn, uid: Option<String>) -> Source {
    let now = now_millis();
    Source {
        id: SourceId::generate(),
        uid: uid.or(input.uid),
        name: input.name,
        kind: input.kind,
        config: input.config,
        metadata: input.metadata.unwrap_or_default(),
        token: new_token(),
        previous_token: None,
        created_at: now,
        updated_at: now,
        revision: 0,
    }
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.source.get",
    path = "/ingest/api/v1/source/{source_id}",
    tag = "ingest",
    summary = "Get an incoming source",
    params(SourcePath),
    responses((status = 200, body = IngestSourceOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
) -> Result<Json<IngestSourceOut>, ApiError> {
    Ok(Json(out(&state, &find(&state, &source_id).await?)))
}

#[utoipa::path(
    put,
    operation_id = "v1.ingest.source.upsert",
    path = "/ingest/api/v1/source/{source_id}",
    tag = "ingest",
    summary = "Replace an incoming source, or create it under a new uid",
    params(SourcePath),
    request_body = IngestSourceIn,
    responses((status = 200, body = IngestSourceOut), (status = 201, body = IngestSourceOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// PUT keeps the source's id, token and creation time and replaces the rest.
pub async fn upsert(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
    ValidJson(input): ValidJson<IngestSourceIn>,
) -> Result<impl IntoResponse, ApiError> {
    check(&state, &input)?;
    let replaced = retry_stale(|| async {
        let Some(existing) = state.store.get_source(&source_id).await? else {
            return Ok(None);
        };
        let input = input.clone();
        let source = Source {
            uid: input.uid.or(existing.uid.clone()),
            name: input.name,
            kind: input.kind,
            config: input.config,
            metadata: input.metadata.unwrap_or_default(),
            updated_at: now_millis(),
            ..existing
        };
        Ok(Some(state.store.update_source(source).await?))
    })
    .await?;
    state.sources_changed.notify_one();
    match replaced {
        Some(source) => Ok((StatusCode::OK, Json(out(&state, &source)))),
        None if !SourceId::has_prefix(&source_id) => {
            if input.uid.as_ref().is_some_and(|uid| uid != &source_id) {
                return Err(ApiError::invalid("uid", "must match the uid in the path"));
            }
            validate::uid(&source_id).map_err(|problem| ApiError::invalid("uid", problem))?;
            let created = state
                .store
                .create_source(new_source(input, Some(source_id)))
                .await?;
            source_app(&state, &created.id).await?;
            state.sources_changed.notify_one();
            Ok((StatusCode::CREATED, Json(out(&state, &created))))
        }
        None => Err(ApiError::NotFound("source")),
    }
}

#[utoipa::path(
    delete,
    operation_id = "v1.ingest.source.delete",
    path = "/ingest/api/v1/source/{source_id}",
    tag = "ingest",
    summary = "Delete an incoming source",
    params(SourcePath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
) -> Result<StatusCode, ApiError> {
    let source = find(&state, &source_id).await?;
    state.store.delete_source(&source.id).await?;
    state.sources_changed.notify_one();
    // Its endpoints, messages and attempts go with it.
    if let Some(application) = state.store.get_application(&app_uid(&source.id)).await? {
        state.store.delete_application(&application.id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.source.rotate-token",
    path = "/ingest/api/v1/source/{source_id}/token/rotate",
    tag = "ingest",
    summary = "Give the source a new receiving URL; the old one keeps working for 24 hours",
    params(SourcePath),
    responses((status = 200, body = RotateTokenOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn rotate_token(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
) -> Result<Json<RotateTokenOut>, ApiError> {
    let rotated = retry_stale(|| async {
        let existing = find(&state, &source_id).await?;
        let now = now_millis();
        let source = Source {
            previous_token: Some((existing.token.clone(), now + OLD_TOKEN_GRACE_MS)),
            token: new_token(),
            updated_at: now,
            ..existing
        };
        Ok(state.store.update_source(source).await?)
    })
    .await?;
    Ok(Json(RotateTokenOut {
        ingest_url: crate::wire::ingest_url(&state.public_url, &rotated),
    }))
}

/// `/ingest/api/v1/source/{source_id}/received/{received_id}`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReceivedPath {
    /// The source id (`src_…`) or uid
    pub source_id: String,
    /// The log entry's id (`rcv_…`)
    pub received_id: String,
}

async fn find_received(
    state: &ApiState,
    path: &ReceivedPath,
) -> Result<(Source, ReceivedRequest), ApiError> {
    let source = find(state, &path.source_id).await?;
    let not_found = || ApiError::NotFound("received request");
    if !ReceivedId::has_prefix(&path.received_id) {
        return Err(not_found());
    }
    let received = state
        .store
        .get_received(
            &source.id,
            &ReceivedId::from_trusted(path.received_id.clone()),
        )
        .await?
        .ok_or_else(not_found)?;
    Ok((source, received))
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.source.list-received",
    path = "/ingest/api/v1/source/{source_id}/received",
    tag = "ingest",
    summary = "The source's log of received requests, newest first, to the second (Kait extension)",
    params(SourcePath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<ReceivedOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list_received(
    State(state): State<ApiState>,
    Path(SourcePath { source_id }): Path<SourcePath>,
    query: ListQuery,
) -> Result<Json<ListResponse<ReceivedOut>>, ApiError> {
    let source = find(&state, &source_id).await?;
    let page = state.store.list_received(&source.id, query.page()?).await?;
    let data = page
        .items
        .iter()
        .map(|request| ReceivedOut::new(request, app_uid(&source.id)))
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |request: &ReceivedOut| request.id.clone(),
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.ingest.source.get-received",
    path = "/ingest/api/v1/source/{source_id}/received/{received_id}",
    tag = "ingest",
    summary = "One received request (Kait extension)",
    params(ReceivedPath),
    responses((status = 200, body = ReceivedOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_received(
    State(state): State<ApiState>,
    Path(path): Path<ReceivedPath>,
) -> Result<Json<ReceivedOut>, ApiError> {
    let (source, received) = find_received(&state, &path).await?;
    Ok(Json(ReceivedOut::new(&received, app_uid(&source.id))))
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.source.replay-received",
    path = "/ingest/api/v1/source/{source_id}/received/{received_id}/replay",
    tag = "ingest",
    summary = "Forward a received request again to every endpoint of the source it matches (Kait extension)",
    params(ReceivedPath),
    responses((status = 202, body = crate::wire::BackgroundTaskOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// Makes the request's message due again at each of the source's enabled endpoints whose
/// filter takes it (including endpoints added since), as a manual attempt.
pub async fn replay_received(
    State(state): State<ApiState>,
    Path(path): Path<ReceivedPath>,
) -> Result<impl IntoResponse, ApiError> {
    let (source, received) = find_received(&state, &path).await?;
    let Some(msg_id) = received.msg_id else {
        return Err(ApiError::Conflict(format!(
            "this request was {}; only accepted requests can be replayed",
            received.outcome.as_str()
        )));
    };
    let application = source_app(&state, &source.id).await?;
    let message = state
        .store
        .get_message(&application.id, msg_id.as_str())
        .await?
        .ok_or(ApiError::NotFound("message (expired by retention)"))?;
    let endpoints = state
        .store
        .list_endpoints(
            &application.id,
            kait_store::PageRequest {
                limit: state.limits.max_endpoints_per_app,
                ..Default::default()
            },
        )
        .await?;
    let mut replayed = 0;
    for endpoint in endpoints.items.iter().filter(|endpoint| {
        !endpoint.disabled
            && kait_core::filter::endpoint_matches(
                endpoint,
                &message.event_type,
                message.channels.as_ref(),
            )
    }) {
        state
            .store
            .resend(&application.id, &message.id, &endpoint.id)
            .await?;
        replayed += 1;
    }
    Ok(super::endpoint::task_out("ingest.replay", replayed))
}
