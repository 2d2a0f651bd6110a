//! Svix's endpoint transformations: `GET/PATCH …/endpoint/{endpoint_id}/transformation`, and
//! Kait's `POST …/transformation/test`, which runs code on a sample as a delivery would.
//!
//! Code is compiled before it is saved, so a PATCH with a syntax error or without a
//! `handler` function is a 422 rather than a failed delivery later. Compiling and test runs
//! happen on blocking threads (a QuickJS runtime is not `Send`, and user code may use its whole
//! time limit), a few at a time.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kait_core::time::{now_millis, to_datetime};
use kait_core::{Endpoint, TransformationSetting};
use kait_script::{Limits, MAX_CODE_BYTES, Transformation, TransformationInput};
use tokio::sync::Semaphore;

use super::{find_app_endpoint, retry_stale};
use crate::extract::ValidJson;
use crate::paths::EndpointPath;
use crate::wire::{
    EndpointTransformationOut, EndpointTransformationPatch, TransformationResultOut,
    TransformationTestIn, TransformationTestOut,
};
use crate::{ApiError, ApiState};

/// Scripts compiled or run for the API at once; further requests wait their turn.
static SANDBOX_SLOTS: Semaphore = Semaphore::const_new(2);

/// Runs `work` with a fresh sandbox on a blocking thread, a few at a time.
pub(super) async fn in_sandbox<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _slot = SANDBOX_SLOTS
        .acquire()
        .await
        .map_err(|_| ApiError::Internal("the script sandbox is closed".into()))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| ApiError::Internal(format!("the script sandbox failed: {error}")))
}

fn check_size(code: &str) -> Result<(), ApiError> {
    if code.len() > MAX_CODE_BYTES {
        return Err(ApiError::invalid(
            "code",
            format!("the code is longer than {MAX_CODE_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub fn out(setting: &TransformationSetting) -> EndpointTransformationOut {
    EndpointTransformationOut {
        code: setting.code.clone(),
        enabled: setting.enabled,
        updated_at: setting.updated_at.map(to_datetime),
    }
}

#[utoipa::path(
    get,
    operation_id = "v1.endpoint.transformation-get",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation",
    tag = "endpoint",
    summary = "Get the endpoint's transformation",
    params(EndpointPath),
    responses((status = 200, body = EndpointTransformationOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<ApiState>,
    Path(path): Path<EndpointPath>,
) -> Result<Json<EndpointTransformationOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &path.app_id, &path.endpoint_id).await?;
    Ok(Json(out(&endpoint.transformation)))
}

#[utoipa::path(
    patch,
    operation_id = "v1.endpoint.patch-transformation",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation",
    tag = "endpoint",
    summary = "Set or switch the endpoint's transformation",
    description = "The code must declare `function handler(webhook)`; it is compiled before it \
        is saved. Each webhook to the endpoint is then given to it as `{method, url, eventType, \
        payload, cancel}`, and sent as returned (`cancel: true` drops it).",
    params(EndpointPath),
    request_body = EndpointTransformationPatch,
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn patch(
    State(state): State<ApiState>,
    Path(path): Path<EndpointPath>,
    ValidJson(input): ValidJson<EndpointTransformationPatch>,
) -> Result<StatusCode, ApiError> {
    if input.variables.flatten().is_some_and(|map| !map.is_empty()) {
        return Err(ApiError::invalid(
            "variables",
            "transformation variables are not supported by Kait; write the values into the code",
        ));
    }
    if let Some(Some(code)) = &input.code {
        check_size(code)?;
        let code = code.clone();
        if let Err(error) =
            in_sandbox(move || Transformation::compile(&code, Limits::default()).map(drop)).await?
        {
            return Err(ApiError::invalid("code", error.to_string()));
        }
    }
    retry_stale(|| async {
        let (_, existing) = find_app_endpoint(&state, &path.app_id, &path.endpoint_id).await?;
        let now = now_millis();
        let code = match &input.code {
            Some(code) => code.clone(),
            None => existing.transformation.code.clone(),
        };
        let enabled = input.enabled.unwrap_or(existing.transformation.enabled);
        if enabled && code.is_none() {
            return Err(ApiError::invalid(
                "enabled",
                "a transformation without code cannot be enabled",
            ));
        }
        state
            .store
            .update_endpoint(Endpoint {
                transformation: TransformationSetting {
                    code,
                    enabled,
                    updated_at: Some(now),
                },
                updated_at: now,
                ..existing
            })
            .await?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.transformation-test",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation/test",
    tag = "endpoint",
    summary = "Run transformation code on a sample payload (Kait extension)",
    description = "Runs the given code (or the endpoint's saved code) on the sample as a \
        delivery to this endpoint would, within the same limits, and returns what the handler \
        returned or why it failed. Nothing is sent.",
    params(EndpointPath),
    request_body = TransformationTestIn,
    responses((status = 200, body = TransformationTestOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn test(
    State(state): State<ApiState>,
    Path(path): Path<EndpointPath>,
    ValidJson(input): ValidJson<TransformationTestIn>,
) -> Result<Json<TransformationTestOut>, ApiError> {
    let (_, endpoint) = find_app_endpoint(&state, &path.app_id, &path.endpoint_id).await?;
    if !input.payload.is_object() {
        return Err(ApiError::invalid(
            "payload",
            "the payload must be a JSON object",
        ));
    }
    let code = match input.code.or(endpoint.transformation.code) {
        Some(code) => code,
        None => {
            return Err(ApiError::invalid(
                "code",
                "no code given and the endpoint has no transformation",
            ));
        }
    };
    check_size(&code)?;
    let payload = serde_json::value::to_raw_value(&input.payload)
        .map_err(|error| ApiError::invalid("payload", error.to_string()))?;
    let event_type = input.event_type.unwrap_or_default();
    let url = endpoint.url;
    let outcome = in_sandbox(move || {
        let transformation = Transformation::compile(&code, Limits::default())?;
        transformation.run(&TransformationInput {
            method: "POST",
            url: &url,
            event_type: &event_type,
            payload: &payload,
            cancel: false,
        })
    })
    .await?;
    Ok(Json(match outcome {
        Ok(output) => TransformationTestOut {
            result: Some(TransformationResultOut {
                method: output.method,
                url: output.url,
                payload: serde_json::from_str(&output.payload).unwrap_or_default(),
                cancel: output.cancel,
            }),
            error: None,
        },
        Err(error) => TransformationTestOut {
            result: None,
            error: Some(error.to_string()),
        },
    }))
}
