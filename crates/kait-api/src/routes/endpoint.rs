//! `/api/v1/app/{app_id}/endpoint`: endpoints, their secrets and custom headers.
//!
//! Every change is committed before it is acknowledged, and the store moves its endpoint epoch
//! before answering, so the next attempt to that endpoint already uses the new settings.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::USER_AGENT;
use axum::response::{IntoResponse, Response};
use kait_core::signing::{Scheme, Secret};
use kait_core::time::now_millis;
use kait_core::validate::{self, Problems};
use kait_core::{
    AppId, DeliveryOrder, DeliveryStatus, Endpoint, EndpointId, EndpointKind, PayloadFormat,
};

use super::{find_app, find_app_endpoint, retry_stale};
use crate::extract::{ListQuery, ValidJson};
use crate::paths::{AppPath, EndpointPath};
use crate::wire::{
    BackgroundTaskOut, EndpointHeadersIn, EndpointHeadersOut, EndpointHeadersPatchIn, EndpointIn,
    EndpointOut, EndpointPatch, EndpointSecretOut, EndpointSecretRotateIn, EndpointStatsOut,
    ListResponse, WindowIn,
};
use crate::{ApiError, ApiState};
use kait_store::Redelivery;

/// Reports an endpoint change as an operational webhook (`endpoint.created` etc.).
async fn report(state: &ApiState, event_type: &str, endpoint: &Endpoint) {
    let data = serde_json::json!({
        "appId": endpoint.app_id,
        "endpointId": endpoint.id,
        "endpointUid": endpoint.uid,
    });
    state.ops.emit(event_type, &endpoint.app_id, data).await;
}

/// Checks every field of an endpoint as it would be stored, reporting all problems at once.
/// `secret_problem` carries a secret that failed to parse, so it is reported with the rest.
/// Checks the endpoint as it would be stored, adding to the problems already found while
/// reading the request, and answers them all at once.
fn check(state: &ApiState, endpoint: &Endpoint, mut problems: Problems) -> Result<(), ApiError> {
    match endpoint.kind {
        EndpointKind::Webhook | EndpointKind::Plugin => problems.check(
            "url",
            validate::endpoint_url(&endpoint.url)
                .map(drop)
                .and_then(|()| (state.url_check)(&endpoint.url)),
        ),
        EndpointKind::Polling => problems.check(
            "url",
            if endpoint.url.is_empty() {
                Ok(())
            } else {
                Err("a polling endpoint has no url".into())
            },
        ),
        EndpointKind::Pipe => problems.check(
            "kind",
            Err("pipe endpoints are made by /api/v1/pipe, not here".into()),
        ),
    }
    if let Some(uid) = &endpoint.uid {
        problems.check("uid", validate::uid(uid));
    }
    if let Some(ttl) = endpoint.media.link_ttl_secs {
        problems.check(
            "attachmentLinkTtlSeconds",
            if (1..=kait_core::MediaSettings::MAX_LINK_TTL_SECS).contains(&ttl) {
                Ok(())
            } else {
                Err("must be from 1 second to 7 days (604800)".into())
            },
        );
    }
    if let Some(max) = endpoint.media.inline_max_bytes {
        problems.check(
            "inlineAttachmentMaxBytes",
            if max <= kait_core::MediaSettings::MAX_INLINE_BYTES {
                Ok(())
            } else {
                Err("must be at most 1048576 (1 MiB)".into())
            },
        );
    }
    if let Some(event_types) = &endpoint.event_types {
        problems.check(
            "eventTypes",
            event_types
                .iter()
                .try_for_each(|name| validate::event_type_name(name)),
        );
    }
    if let Some(channels) = &endpoint.channels {
        problems.check("channels", validate::channels(channels.iter()));
    }
    if endpoint.rate_limit == Some(0) {
        problems.check(
            "throttleRate",
            Err("must be at least 1 message per second".into()),
        );
    }
    problems.check("headers", check_headers(state, &endpoint.headers));
    problems.check(
        "metadata",
        validate::metadata(&endpoint.metadata, state.limits.max_metadata_bytes),
    );
    Ok(problems.into_result()?)
}

fn check_headers(state: &ApiState, headers: &BTreeMap<String, String>) -> Result<(), String> {
    let limits = state.limits;
    if headers.len() > limits.max_endpoint_headers {
        return Err(format!(
            "at most {} custom headers are allowed",
            limits.max_endpoint_headers
        ));
    }
    headers.iter().try_for_each(|(name, value)| {
        if name.len() + value.len() > limits.max_header_bytes {
            return Err(format!(
                "`{name}` is longer than {} bytes with its value",
                limits.max_header_bytes
            ));
        }
        Ok(())
    })?;
    validate::custom_headers(headers)
}

/// The given secret, or a new one of `scheme`.
fn parse_secret(text: Option<&str>, scheme: Scheme) -> Result<Secret, String> {
    match text {
        Some(text) => Secret::parse(text).map_err(|error| error.to_string()),
        None => Ok(Secret::generate_for(scheme)),
    }
}

/// A named choice of the request (`format`, `ordering`, …): `None` keeps `current`; a bad
/// value is a problem of `field` (all are reported together) and keeps `current` meanwhile.
fn choice<T: Copy>(
    problems: &mut Problems,
    field: &str,
    text: Option<&str>,
    current: T,
    parse: fn(&str) -> Option<T>,
    expected: &str,
) -> T {
    let Some(text) = text else { return current };
    parse(text).unwrap_or_else(|| {
        problems.check(field, Err(format!("must be {expected}")));
        current
    })
}

fn parse_format(
    problems: &mut Problems,
    text: Option<&str>,
    current: PayloadFormat,
) -> PayloadFormat {
    choice(
        problems,
        "format",
        text,
        current,
        PayloadFormat::parse,
        "json or xml",
    )
}

/// `verification`: `none` or `challenge`; a plugin's endpoint always keeps the check. A
/// verified URL stays verified while the check stays on.
fn parse_ownership(
    problems: &mut Problems,
    text: Option<&str>,
    current: &kait_core::OwnershipCheck,
    kind: EndpointKind,
) -> kait_core::OwnershipCheck {
    let required = choice(
        problems,
        "verification",
        text,
        current.required,
        |text| match text {
            "none" => Some(false),
            "challenge" => Some(true),
            _ => None,
        },
        "none or challenge",
    ) || kind == EndpointKind::Plugin;
    kait_core::OwnershipCheck {
        required,
        verified_url: current.verified_url.clone().filter(|_| required),
    }
}

fn parse_ordering(
    problems: &mut Problems,
    text: Option<&str>,
    current: DeliveryOrder,
) -> DeliveryOrder {
    choice(
        problems,
        "ordering",
        text,
        current,
        DeliveryOrder::parse,
        "concurrent, fifo or key",
    )
}

/// The request's secret (if any) or `current`; a bad one is a problem of `secret`.
fn given_secret(problems: &mut Problems, text: Option<&str>, current: &Secret) -> Secret {
    match text.map(|text| parse_secret(Some(text), current.scheme())) {
        Some(Ok(secret)) => secret,
        Some(Err(problem)) => {
            problems.check("secret", Err(problem));
            current.clone()
        }
        None => current.clone(),
    }
}

/// Builds a new endpoint from a create body, noting what is wrong with it in `problems`.
fn new_endpoint(
    app_id: AppId,
    uid: Option<String>,
    input: EndpointIn,
    problems: &mut Problems,
) -> Endpoint {
    let now = now_millis();
    let ordering = parse_ordering(
        problems,
        input.ordering.as_deref(),
        DeliveryOrder::default(),
    );
    let scheme = choice(
        problems,
        "signatureScheme",
        input.signature_scheme.as_deref(),
        Scheme::Symmetric,
        Scheme::parse,
        "hmac-sha256 or ed25519",
    );
    let format = parse_format(problems, input.format.as_deref(), PayloadFormat::Json);
    let kind = choice(
        problems,
        "kind",
        input.kind.as_deref(),
        EndpointKind::Webhook,
        |text| {
            EndpointKind::parse(text)
                .filter(|kind| matches!(kind, EndpointKind::Webhook | EndpointKind::Polling))
        },
        "webhook or polling",
    );
    let secret = given_secret(
        problems,
        input.secret.as_deref(),
        &Secret::generate_for(scheme),
    );
    let ownership = parse_ownership(
        problems,
        input.verification.as_deref(),
        &Default::default(),
        kind,
    );
    Endpoint {
        id: EndpointId::generate(),
        app_id,
        uid,
        url: input.url,
        description: input.description,
        version: input.version.unwrap_or(1),
        disabled: input.disabled.unwrap_or(false),
        event_types: input.event_types,
        channels: input.channels,
        rate_limit: input.throttle_rate,
        metadata: input.metadata.unwrap_or_default(),
        secret,
        previous_secret: None,
        headers: input.headers.unwrap_or_default(),
        ordering,
        format,
        kind,
        created_at: now,
        updated_at: now,
        revision: 0,
        transformation: Default::default(),
        media: kait_core::MediaSettings {
            link_ttl_secs: input.attachment_link_ttl_seconds,
            inline_max_bytes: input.inline_attachment_max_bytes,
        },
        ownership,
    }
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.list",
    path = "/api/v1/app/{app_id}/endpoint",
    tag = "endpoint",
    summary = "List endpoints",
    params(AppPath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<EndpointOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<EndpointOut>>, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let page = state
        .store
        .list_endpoints(&application.id, query.page()?)
        .await?;
    let data = page.items.iter().map(EndpointOut::from).collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |endpoint: &EndpointOut| endpoint.id.clone(),
    )))
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.create",
    path = "/api/v1/app/{app_id}/endpoint",
    tag = "endpoint",
    summary = "Create an endpoint (webhook or polling)",
    params(AppPath),
    request_body = EndpointIn,
    responses((status = 201, body = EndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    ValidJson(input): ValidJson<EndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let created = create_in(&state, application.id, input).await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::from(&created))))
}

/// Creates an endpoint of the application from a create body (also a source endpoint's).
pub async fn create_in(
    state: &ApiState,
    app_id: AppId,
    input: EndpointIn,
) -> Result<Endpoint, ApiError> {
    let uid = input.uid.clone();
    let mut problems = Problems::new();
    let endpoint = new_endpoint(app_id, uid, input, &mut problems);
    check(state, &endpoint, problems)?;
    let created = state
        .store
        .create_endpoint(endpoint, state.limits.max_endpoints_per_app)
        .await?;
    report(state, "endpoint.created", &created).await;
    Ok(created)
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.get",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "endpoint",
    summary = "Get an endpoint",
    params(EndpointPath),
    responses((status = 200, body = EndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
) -> Result<Json<EndpointOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    Ok(Json(EndpointOut::from(&endpoint)))
}

#[utoipa::path(
    put,
    operation_id = "v1.endpoint.upsert",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "endpoint",
    summary = "Replace an endpoint, or create it under a new uid",
    params(EndpointPath),
    request_body = EndpointIn,
    responses((status = 200, body = EndpointOut), (status = 201, body = EndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// PUT: replaces the endpoint's settings (its secret stays), or creates it when the path
/// names a `uid` not yet taken.
pub async fn upsert(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    ValidJson(input): ValidJson<EndpointIn>,
) -> Result<impl IntoResponse, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let (status, endpoint) = upsert_in(&state, application.id, &endpoint_key, input).await?;
    Ok((status, Json(EndpointOut::from(&endpoint))))
}

/// PUT on an endpoint of the application (also a source endpoint's): `200` and the replaced
/// endpoint, or `201` and one created under the uid in the path.
pub async fn upsert_in(
    state: &ApiState,
    app_id: AppId,
    endpoint_key: &str,
    input: EndpointIn,
) -> Result<(StatusCode, Endpoint), ApiError> {
    let changed = retry_stale(|| async {
        let Some(existing) = state.store.get_endpoint(&app_id, endpoint_key).await? else {
            return Ok(None);
        };
        let input = input.clone();
        let mut problems = Problems::new();
        let endpoint = Endpoint {
            uid: input.uid.or(existing.uid.clone()),
            url: input.url,
            description: input.description,
            version: input.version.unwrap_or(existing.version),
            disabled: input.disabled.unwrap_or(false),
            event_types: input.event_types,
            channels: input.channels,
            rate_limit: input.throttle_rate,
            metadata: input.metadata.unwrap_or_default(),
            headers: input.headers.unwrap_or(existing.headers.clone()),
            ordering: parse_ordering(&mut problems, input.ordering.as_deref(), existing.ordering),
            format: parse_format(&mut problems, input.format.as_deref(), existing.format),
            media: kait_core::MediaSettings {
                link_ttl_secs: input.attachment_link_ttl_seconds,
                inline_max_bytes: input.inline_attachment_max_bytes,
            },
            ownership: parse_ownership(
                &mut problems,
                input.verification.as_deref(),
                &existing.ownership,
                existing.kind,
            ),
            updated_at: now_millis(),
            ..existing
        };
        check(state, &endpoint, problems)?;
        Ok(Some(state.store.update_endpoint(endpoint).await?))
    })
    .await?;
    match changed {
        Some(updated) => {
            report(state, "endpoint.updated", &updated).await;
            Ok((StatusCode::OK, updated))
        }
        None if !EndpointId::has_prefix(endpoint_key) => {
            if input.uid.as_ref().is_some_and(|uid| uid != endpoint_key) {
                return Err(ApiError::invalid("uid", "must match the uid in the path"));
            }
            let input = EndpointIn {
                uid: Some(endpoint_key.to_owned()),
                ..input
            };
            Ok((StatusCode::CREATED, create_in(state, app_id, input).await?))
        }
        None => Err(ApiError::NotFound("endpoint")),
    }
}

#[utoipa::path(
    patch,
    operation_id = "v1.endpoint.patch",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "endpoint",
    summary = "Change some fields of an endpoint",
    params(EndpointPath),
    request_body = EndpointPatch,
    responses((status = 200, body = EndpointOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    ValidJson(input): ValidJson<EndpointPatch>,
) -> Result<Json<EndpointOut>, ApiError> {
    let updated = retry_stale(|| async {
        let (_, existing) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
        let input = input.clone();
        let mut problems = Problems::new();
        let secret = given_secret(&mut problems, input.secret.as_deref(), &existing.secret);
        let endpoint = Endpoint {
            url: input.url.unwrap_or(existing.url.clone()),
            description: input.description.unwrap_or(existing.description.clone()),
            uid: input.uid.unwrap_or(existing.uid.clone()),
            disabled: input.disabled.unwrap_or(existing.disabled),
            event_types: input.event_types.unwrap_or(existing.event_types.clone()),
            channels: input.channels.unwrap_or(existing.channels.clone()),
            rate_limit: input.throttle_rate.unwrap_or(existing.rate_limit),
            metadata: input.metadata.unwrap_or(existing.metadata.clone()),
            version: input.version.unwrap_or(existing.version),
            ordering: parse_ordering(&mut problems, input.ordering.as_deref(), existing.ordering),
            format: parse_format(&mut problems, input.format.as_deref(), existing.format),
            media: kait_core::MediaSettings {
                link_ttl_secs: input
                    .attachment_link_ttl_seconds
                    .unwrap_or(existing.media.link_ttl_secs),
                inline_max_bytes: input
                    .inline_attachment_max_bytes
                    .unwrap_or(existing.media.inline_max_bytes),
            },
            ownership: parse_ownership(
                &mut problems,
                input.verification.as_deref(),
                &existing.ownership,
                existing.kind,
            ),
            secret,
            updated_at: now_millis(),
            ..existing
        };
        check(&state, &endpoint, problems)?;
        Ok(state.store.update_endpoint(endpoint).await?)
    })
    .await?;
    report(&state, "endpoint.updated", &updated).await;
    Ok(Json(EndpointOut::from(&updated)))
}

#[utoipa::path(
    delete,
    operation_id = "v1.endpoint.delete",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}",
    tag = "endpoint",
    summary = "Delete an endpoint",
    params(EndpointPath),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
) -> Result<StatusCode, ApiError> {
    let (application, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    state
        .store
        .delete_endpoint(&application.id, &endpoint.id)
        .await?;
    report(&state, "endpoint.deleted", &endpoint).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.get-secret",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret",
    tag = "endpoint",
    summary = "Get the signing secret (or the Ed25519 public key)",
    params(EndpointPath),
    responses((status = 200, body = EndpointSecretOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_secret(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
) -> Result<Json<EndpointSecretOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    // For Ed25519 the receiver needs only the public key; the secret key stays here.
    Ok(Json(EndpointSecretOut {
        key: endpoint.secret.verification_key(),
    }))
}

/// How long a rotated-out secret keeps signing, by default and at most.
const DEFAULT_ROTATION_GRACE_SECONDS: u32 = 24 * 3600;
const MAX_ROTATION_GRACE_SECONDS: u32 = 7 * 24 * 3600;

/// First Svix SDK release whose `rotate_secret` accepts a body: the generated clients before it
/// (Python 1.45 and older, checked) fail on anything but `204 No Content`.
const FIRST_SDK_READING_ROTATED_SECRET: (u32, u32) = (1, 56);

/// Whether the caller is an older Svix SDK that expects `204` from `secret/rotate`, judged from
/// its `User-Agent: svix-libs/{version}/{language}`.
fn expects_empty_rotate_response(headers: &HeaderMap) -> bool {
    let Some(agent) = headers
        .get(USER_AGENT)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let Some(version) = agent
        .strip_prefix("svix-libs/")
        .and_then(|rest| rest.split('/').next())
    else {
        return false;
    };
    let mut numbers = version.split('.').map(|part| part.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < FIRST_SDK_READING_ROTATED_SECRET,
        _ => false,
    }
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.rotate-secret",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate",
    tag = "endpoint",
    summary = "Rotate the secret; the old one keeps signing during the grace period",
    params(EndpointPath),
    request_body(content = Option<EndpointSecretRotateIn>, description = "Optional: an empty body takes the defaults"),
    responses((status = 200, body = EndpointSecretOut), (status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// Replaces the secret (with the given one or a new random one) and returns it as JSON, as the
/// current client libraries expect (older ones get the `204` they expect).
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Older clients send no body at all.
    let input: EndpointSecretRotateIn = crate::extract::parse_json_or_default(&body)?;
    let grace_seconds = input
        .grace_period_seconds
        .unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
        return Err(ApiError::invalid(
            "gracePeriodSeconds",
            format!("must be at most {MAX_ROTATION_GRACE_SECONDS}"),
        ));
    }
    // Read, rotate and write as one change: a rotation racing another (or any other change)
    // is made again on top of it, so the newest secret is current and the one before it
    // keeps verifying for its grace period.
    let key = retry_stale(|| async {
        let (_, existing) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
        let secret = parse_secret(input.key.as_deref(), existing.secret.scheme())
            .map_err(|problem| ApiError::invalid("key", problem))?;
        let key = secret.verification_key();
        let now = now_millis();
        let previous_secret = (grace_seconds > 0).then(|| {
            (
                existing.secret.clone(),
                now + i64::from(grace_seconds) * 1000,
            )
        });
        state
            .store
            .update_endpoint(Endpoint {
                secret,
                previous_secret,
                updated_at: now,
                ..existing
            })
            .await?;
        Ok(key)
    })
    .await?;
    if expects_empty_rotate_response(&headers) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(EndpointSecretOut { key }).into_response())
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.stats",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats",
    tag = "endpoint",
    summary = "Delivery counts by status, and the circuit breaker state",
    params(EndpointPath),
    responses((status = 200, body = EndpointStatsOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/endpoint/{endpoint_id}/stats`: deliveries by status, and the circuit breaker.
pub async fn stats(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
) -> Result<Json<EndpointStatsOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    let counts = state.store.endpoint_delivery_counts(&endpoint.id).await?;
    let count = |wanted: DeliveryStatus| {
        counts
            .iter()
            .find(|(status, _)| *status == wanted)
            .map_or(0, |(_, count)| *count)
    };
    Ok(Json(EndpointStatsOut {
        success: count(DeliveryStatus::Success),
        pending: count(DeliveryStatus::Pending),
        sending: count(DeliveryStatus::Sending),
        fail: count(DeliveryStatus::Fail),
        canceled: count(DeliveryStatus::Canceled),
        circuit_state: (state.circuit_state)(&endpoint.id),
    }))
}

pub fn task_out(task: &'static str, count: u64) -> (StatusCode, Json<BackgroundTaskOut>) {
    let id = format!(
        "qtask_{}",
        kait_core::id::ksuid_at(chrono::Utc::now().timestamp())
    );
    (
        StatusCode::ACCEPTED,
        Json(BackgroundTaskOut {
            id,
            status: "finished",
            task,
            updated_at: chrono::Utc::now(),
            count,
        }),
    )
}

fn window(input: &WindowIn) -> Result<(i64, Option<i64>), ApiError> {
    let since = input.since.timestamp_millis();
    let until = input.until.map(|until| until.timestamp_millis());
    if until.is_some_and(|until| until <= since) {
        return Err(ApiError::invalid("until", "must be after since"));
    }
    Ok((since, until))
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.recover",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover",
    tag = "endpoint",
    summary = "Resend failed deliveries since a time",
    params(EndpointPath),
    request_body = WindowIn,
    responses((status = 202, body = BackgroundTaskOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST …/endpoint/{endpoint_id}/recover`: sends again every failed delivery in the window.
pub async fn recover(
    state: State<ApiState>,
    path: Path<EndpointPath>,
    input: ValidJson<WindowIn>,
) -> Result<(StatusCode, Json<BackgroundTaskOut>), ApiError> {
    redeliver(Redelivery::Failed, state, path, input).await
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.replay-missing",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/replay-missing",
    tag = "endpoint",
    summary = "Send what the endpoint never had since a time",
    params(EndpointPath),
    request_body = WindowIn,
    responses((status = 202, body = BackgroundTaskOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST …/endpoint/{endpoint_id}/replay-missing`: sends the window's messages the endpoint
/// never had (e.g. those from before it was created), by its current filters.
pub async fn replay_missing(
    state: State<ApiState>,
    path: Path<EndpointPath>,
    input: ValidJson<WindowIn>,
) -> Result<(StatusCode, Json<BackgroundTaskOut>), ApiError> {
    redeliver(Redelivery::Missing, state, path, input).await
}

/// What `recover` and `replay-missing` share: the window, the lookup, the background task.
async fn redeliver(
    which: Redelivery,
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    ValidJson(input): ValidJson<WindowIn>,
) -> Result<(StatusCode, Json<BackgroundTaskOut>), ApiError> {
    let (since, until) = window(&input)?;
    let (application, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    let count = state
        .store
        .redeliver(which, &application.id, &endpoint.id, since, until)
        .await?;
    let task = match which {
        Redelivery::Failed => "endpoint.recover",
        Redelivery::Missing => "endpoint.replay",
    };
    Ok(task_out(task, count))
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.get-headers",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "endpoint",
    summary = "Get the custom headers sent with every webhook",
    params(EndpointPath),
    responses((status = 200, body = EndpointHeadersOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get_headers(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
) -> Result<Json<EndpointHeadersOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    Ok(Json(EndpointHeadersOut {
        headers: endpoint.headers,
        sensitive: BTreeSet::new(),
    }))
}

/// Replaces the endpoint's headers with what `change` makes of the current ones, as one
/// read-modify-write.
async fn change_headers(
    state: &ApiState,
    app_key: &str,
    endpoint_key: &str,
    change: impl Fn(&BTreeMap<String, String>) -> BTreeMap<String, String>,
) -> Result<StatusCode, ApiError> {
    retry_stale(|| async {
        let (_, existing) = find_app_endpoint(state, app_key, endpoint_key).await?;
        let headers = change(&existing.headers);
        check_headers(state, &headers).map_err(|msg| ApiError::invalid("headers", msg))?;
        state
            .store
            .update_endpoint(Endpoint {
                headers,
                updated_at: now_millis(),
                ..existing
            })
            .await?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[utoipa::path(
    put,
    operation_id = "v1.endpoint.set-headers",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "endpoint",
    summary = "Replace the custom headers",
    params(EndpointPath),
    request_body = EndpointHeadersIn,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn set_headers(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    ValidJson(input): ValidJson<EndpointHeadersIn>,
) -> Result<StatusCode, ApiError> {
    change_headers(&state, &app_key, &endpoint_key, |_| input.headers.clone()).await
}

#[utoipa::path(
    patch,
    operation_id = "v1.endpoint.patch-headers",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers",
    tag = "endpoint",
    summary = "Change some custom headers",
    params(EndpointPath),
    request_body = EndpointHeadersPatchIn,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch_headers(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    ValidJson(input): ValidJson<EndpointHeadersPatchIn>,
) -> Result<StatusCode, ApiError> {
    // A removal must name a header that could exist (the merged set is checked below).
    if let Some(problem) = input
        .headers
        .iter()
        .filter(|(_, value)| value.is_none())
        .find_map(|(name, _)| validate::custom_header(name, "").err())
    {
        return Err(ApiError::invalid("headers", problem));
    }
    change_headers(&state, &app_key, &endpoint_key, |current| {
        let mut headers = current.clone();
        for (name, value) in &input.headers {
            // Header names are case-insensitive: a patch of `x-key` replaces `X-Key`.
            headers.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
        for name in &input.delete_headers {
            headers.retain(|existing, _| !existing.eq_ignore_ascii_case(name));
        }
        headers
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, value.parse().unwrap());
        headers
    }

    #[test]
    fn older_sdks_get_an_empty_rotate_response() {
        assert!(expects_empty_rotate_response(&agent(
            "svix-libs/1.45.0/python"
        )));
        assert!(expects_empty_rotate_response(&agent(
            "svix-libs/0.85.1/python"
        )));
        assert!(!expects_empty_rotate_response(&agent(
            "svix-libs/1.56.0/python"
        )));
        assert!(!expects_empty_rotate_response(&agent(
            "svix-libs/2.9.1/rust rust/1.95.0"
        )));
        assert!(!expects_empty_rotate_response(&agent("curl/8.5.0")));
        assert!(!expects_empty_rotate_response(&HeaderMap::new()));
    }
}
