//! Attempts and delivery states: what happened to a message at each endpoint, and resend.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use kait_core::time::to_datetime;
use kait_core::{AppId, AttemptId, DeliveryStatus, EndpointId, MessageId};
use kait_store::AttemptFilter;

use super::message::message_filter;
use super::{find_app, find_app_endpoint, find_endpoint};
use crate::extract::ListQuery;
use crate::paths::{AppPath, EndpointPath};
use crate::wire::{
    AttemptRequestOut, EndpointMessageOut, EndpointOut, HeaderOut, ListResponse, MessageAttemptOut,
    MessageEndpointOut,
};
use crate::{ApiError, ApiState};

fn status_filter(query: &ListQuery) -> Result<Option<DeliveryStatus>, ApiError> {
    query
        .get("status")
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .and_then(DeliveryStatus::from_code)
                .ok_or_else(|| ApiError::invalid_query("status", "must be 0, 1, 2 or 3"))
        })
        .transpose()
}

async fn message_id(
    state: &ApiState,
    app_id: &kait_core::AppId,
    key: &str,
) -> Result<MessageId, ApiError> {
    Ok(find_message(state, app_id, key).await?.id)
}

async fn find_message(
    state: &ApiState,
    app_id: &kait_core::AppId,
    key: &str,
) -> Result<kait_core::Message, ApiError> {
    state
        .store
        .get_message(app_id, key)
        .await?
        .ok_or(ApiError::NotFound("message"))
}

/// Lists attempts of one endpoint or one message, with the query's filters.
async fn list_attempts(
    state: &ApiState,
    app_id: &AppId,
    endpoint_id: Option<EndpointId>,
    msg_id: Option<MessageId>,
    query: &ListQuery,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let filter = AttemptFilter {
        endpoint_id,
        msg_id,
        status: status_filter(query)?,
        message: message_filter(query)?,
    };
    let page = state
        .store
        .list_attempts(app_id, filter, query.page()?)
        .await?;
    let data = page
        .items
        .into_iter()
        .map(MessageAttemptOut::from)
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |attempt: &MessageAttemptOut| attempt.id.clone(),
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.list-by-endpoint",
    path = "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}",
    tag = "attempt",
    summary = "Attempts made to an endpoint",
    params(EndpointPath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/attempt/endpoint/{endpoint_id}`.
pub async fn list_by_endpoint(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let (application, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    list_attempts(&state, &application.id, Some(endpoint.id), None, &query).await
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.list-by-message",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt",
    tag = "attempt",
    summary = "Attempts of a message (older route)",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), crate::extract::ListParams),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/attempt/msg/{msg_id}` (and the older `…/msg/{msg_id}/attempt`).
pub async fn list_by_message(
    State(state): State<ApiState>,
    Path((app_key, msg_key)): Path<(String, String)>,
    query: ListQuery,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let msg_id = message_id(&state, &application.id, &msg_key).await?;
    let endpoint_id = match query.get("endpoint_id") {
        Some(key) => Some(find_endpoint(&state, &application.id, key).await?.id),
        None => None,
    };
    list_attempts(&state, &application.id, endpoint_id, Some(msg_id), &query).await
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.get",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}",
    tag = "attempt",
    summary = "Get one attempt",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), ("attempt_id" = String, Path, description = "The attempt id (`atmpt_…`)")),
    responses((status = 200, body = MessageAttemptOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/msg/{msg_id}/attempt/{attempt_id}`.
pub async fn get(
    State(state): State<ApiState>,
    Path((app_key, msg_key, attempt_id)): Path<(String, String, String)>,
) -> Result<Json<MessageAttemptOut>, ApiError> {
    let (_, attempt) = find_attempt(&state, &app_key, &msg_key, attempt_id).await?;
    Ok(Json(attempt.into()))
}

/// One attempt of one message of one application, each named as the path names it.
async fn find_attempt(
    state: &ApiState,
    app_key: &str,
    msg_key: &str,
    attempt_id: String,
) -> Result<(AppId, kait_core::Attempt), ApiError> {
    let application = find_app(state, app_key).await?;
    let msg_id = message_id(state, &application.id, msg_key).await?;
    let attempt = state
        .store
        .get_attempt(
            &application.id,
            &msg_id,
            &AttemptId::from_trusted(attempt_id),
        )
        .await?
        .ok_or(ApiError::NotFound("attempt"))?;
    Ok((application.id, attempt))
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.get-request",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/request",
    tag = "attempt",
    summary = "The request an attempt sent: method, URL, headers and body (Kait)",
    description = "The body is exact: kept with the attempt when it was not the message's own \
        (transformed, rendered as XML, attachment links added), otherwise the message's. 404 \
        for an attempt that sent nothing (the endpoint was disabled, a transformation \
        canceled it).",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), ("attempt_id" = String, Path, description = "The attempt id (`atmpt_…`)")),
    responses((status = 200, body = AttemptRequestOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/msg/{msg_id}/attempt/{attempt_id}/request`: what went over the wire, for a
/// receiver debugging its signature check or its parser.
pub async fn request(
    State(state): State<ApiState>,
    Path((app_key, msg_key, attempt_id)): Path<(String, String, String)>,
) -> Result<Json<AttemptRequestOut>, ApiError> {
    let (app_id, attempt) = find_attempt(&state, &app_key, &msg_key, attempt_id).await?;
    if attempt.url.is_empty() {
        // Finished without a request (see the attempt's `response` for why).
        return Err(ApiError::NotFound("request"));
    }
    let message = state
        .store
        .get_message(&app_id, attempt.msg_id.as_str())
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    let custom = state
        .store
        .get_endpoint(&app_id, attempt.endpoint_id.as_str())
        .await?
        .map(|endpoint| endpoint.headers.into_keys().collect())
        .unwrap_or_default();
    Ok(Json(sent_request(&attempt, &message, custom)))
}

/// The request an attempt made, from what the attempt kept and the message.
fn sent_request(
    attempt: &kait_core::Attempt,
    message: &kait_core::Message,
    custom_header_names: Vec<String>,
) -> AttemptRequestOut {
    let (method, content_type, body, body_kept) = match (&attempt.sent, &message.raw) {
        (Some(sent), _) => (
            sent.method.clone(),
            sent.content_type.clone(),
            sent.body.clone(),
            true,
        ),
        (None, Some(raw)) => (
            "POST".to_owned(),
            raw.content_type.clone(),
            String::from_utf8_lossy(&raw.body).into_owned(),
            false,
        ),
        (None, None) => (
            "POST".to_owned(),
            "application/json".to_owned(),
            message.payload.clone(),
            false,
        ),
    };
    let header = |name: &str, value: String| HeaderOut {
        name: name.to_owned(),
        value,
    };
    let mut headers: Vec<HeaderOut> = custom_header_names
        .into_iter()
        .map(|name| HeaderOut {
            name,
            value: "(not shown)".to_owned(),
        })
        .collect();
    for (name, value) in message.raw.iter().flat_map(|raw| &raw.headers) {
        headers.push(header(name, value.clone()));
    }
    let (id, timestamp) = (
        message.id.to_string(),
        (attempt.created_at / 1000).to_string(),
    );
    let signature = "v1,(not kept)".to_owned();
    headers.extend([
        header(
            "user-agent",
            concat!("Kait/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        header("content-type", content_type),
        header("webhook-id", id.clone()),
        header("webhook-timestamp", timestamp.clone()),
        header("webhook-signature", signature.clone()),
        header("svix-id", id),
        header("svix-timestamp", timestamp),
        header("svix-signature", signature),
    ]);
    AttemptRequestOut {
        method,
        url: attempt.url.clone(),
        headers,
        body,
        body_kept,
    }
}

#[utoipa::path(
    delete,
    operation_id = "v1.message-attempt.expunge-content",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content",
    tag = "attempt",
    summary = "Erase the response body stored with an attempt (the attempt stays)",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), ("attempt_id" = String, Path, description = "The attempt id (`atmpt_…`)")),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `DELETE …/msg/{msg_id}/attempt/{attempt_id}/content`: for a privacy request about what a
/// receiver answered.
pub async fn expunge_content(
    State(state): State<ApiState>,
    Path((app_key, msg_key, attempt_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let msg_id = message_id(&state, &application.id, &msg_key).await?;
    state
        .store
        .erase_attempt_response(
            &application.id,
            &msg_id,
            &AttemptId::from_trusted(attempt_id),
        )
        .await
        .map_err(|error| match error {
            kait_store::StoreError::NotFound => ApiError::NotFound("attempt"),
            error => error.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.list-message-destinations",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint",
    tag = "attempt",
    summary = "The endpoints a message was bound for, with its state at each",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), crate::extract::ListParams),
    responses((status = 200, body = ListResponse<MessageEndpointOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/msg/{msg_id}/endpoint`: the message's state at every endpoint it was bound for.
pub async fn list_message_destinations(
    State(state): State<ApiState>,
    Path((app_key, msg_key)): Path<(String, String)>,
    query: crate::extract::ListQuery,
) -> Result<Json<ListResponse<MessageEndpointOut>>, ApiError> {
    // One page holds every destination (an application has a bounded number of endpoints),
    // but the list parameters are still checked, as the document promises.
    query.page()?;
    let application = find_app(&state, &app_key).await?;
    let msg_id = message_id(&state, &application.id, &msg_key).await?;
    let states = state
        .store
        .list_delivery_states(&application.id, &msg_id)
        .await?;
    let data = states
        .into_iter()
        .map(|delivery| MessageEndpointOut {
            endpoint: EndpointOut::from(&delivery.endpoint),
            status: delivery.status.code(),
            status_text: delivery.status.text(),
            next_attempt: delivery.next_attempt_at.map(to_datetime),
        })
        .collect();
    Ok(Json(ListResponse::new(
        data,
        true,
        |state: &MessageEndpointOut| state.endpoint.id.clone(),
    )))
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.list-endpoint-messages",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg",
    tag = "attempt",
    summary = "Messages bound for an endpoint, with their state there",
    params(EndpointPath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<EndpointMessageOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/endpoint/{endpoint_id}/msg`: messages bound for one endpoint, newest first.
pub async fn list_endpoint_messages(
    State(state): State<ApiState>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<EndpointMessageOut>>, ApiError> {
    let (application, endpoint) = find_app_endpoint(&state, &app_key, &endpoint_key).await?;
    let with_content = query.flag("with_content", true)?;
    let page = state
        .store
        .list_endpoint_messages(
            &application.id,
            &endpoint.id,
            status_filter(&query)?,
            query.page()?,
        )
        .await?;
    let data = page
        .items
        .into_iter()
        .map(|item| {
            EndpointMessageOut::new(
                item.message,
                with_content,
                item.status,
                item.next_attempt_at,
            )
        })
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |message: &EndpointMessageOut| message.id.clone(),
    )))
}

#[utoipa::path(
    post,
    operation_id = "v1.attempt.resend",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend",
    tag = "attempt",
    summary = "Send a message to an endpoint again",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), ("endpoint_id" = String, Path, description = "The endpoint id (`ep_…`) or uid")),
    responses((status = 202), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST …/msg/{msg_id}/endpoint/{endpoint_id}/resend`: one more delivery, same message id.
pub async fn resend(
    State(state): State<ApiState>,
    Path((app_key, msg_key, endpoint_key)): Path<(String, String, String)>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let application = find_app(&state, &app_key).await?;
    let message = find_message(&state, &application.id, &msg_key).await?;
    if message.content_erased() {
        return Err(ApiError::Conflict(
            "the message's content was erased; it cannot be sent again".to_owned(),
        ));
    }
    let endpoint = find_endpoint(&state, &application.id, &endpoint_key).await?;
    let endpoint_id: EndpointId = endpoint.id;
    state
        .store
        .resend(&application.id, &message.id, &endpoint_id)
        .await?;
    // Svix answers `{}`; its client libraries parse it.
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({}))))
}

#[utoipa::path(
    get,
    operation_id = "v1.attempt.list-attempts-by-message",
    path = "/api/v1/app/{app_id}/attempt/msg/{msg_id}",
    tag = "attempt",
    summary = "Attempts of a message",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId"), crate::extract::ListParams),
    responses((status = 200, body = ListResponse<MessageAttemptOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list_attempts_by_message(
    state: State<ApiState>,
    path: Path<(String, String)>,
    query: ListQuery,
) -> Result<Json<ListResponse<MessageAttemptOut>>, ApiError> {
    list_by_message(state, path, query).await
}
