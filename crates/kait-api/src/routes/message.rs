//! `/api/v1/app/{app_id}/msg`: accepting and listing messages.
//!
//! Accepting a message writes it and one delivery per matching endpoint in one transaction;
//! the `202` goes out only after that commit is synced. The dispatcher is woken by the store,
//! never by this handler: ingest never calls an endpoint.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kait_core::time::now_millis;
use kait_core::validate::{self, Problems};
use kait_core::{Message, MessageId};
use kait_store::{MessageFilter, NewMessage};

use super::find_app;
use crate::extract::{LimitedBody, ListQuery, parse_json};
use crate::paths::AppPath;
use crate::wire::{ListResponse, MessageIn, MessageOut};
use crate::{ApiError, ApiState};

/// Longest `eventId` and `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 256;

/// Whether the request body is XML (`application/xml`, `text/xml` or `…+xml`).
fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|media| {
            media == "application/xml" || media == "text/xml" || media.ends_with("+xml")
        })
}

/// A message sent as XML: `<message eventType="…" eventId="…" channels="a,b"
/// orderingKey="…"><payload>…</payload></message>`, the payload in the documented mapping.
fn message_from_xml(body: &[u8], max_depth: usize) -> Result<MessageIn, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::BadRequest {
        code: "invalid_xml",
        detail: "the XML body is not UTF-8".into(),
    })?;
    let document = kait_core::xml::parse(text, max_depth).map_err(|error| match error {
        kait_core::xml::XmlError::TooDeep(_) => ApiError::invalid("payload", error.to_string()),
        _ => ApiError::BadRequest {
            code: "invalid_xml",
            detail: error.to_string(),
        },
    })?;
    let attribute = |name: &str| {
        document
            .attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let event_type = attribute("eventType").ok_or_else(|| {
        ApiError::invalid("eventType", "the root element needs an eventType attribute")
    })?;
    let payload = serde_json::value::to_raw_value(&document.payload)
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    Ok(MessageIn {
        event_type,
        payload,
        event_id: attribute("eventId"),
        channels: attribute("channels").map(|channels| {
            channels
                .split(',')
                .map(|channel| channel.trim().to_owned())
                .collect()
        }),
        ordering_key: attribute("orderingKey"),
        deliver_at: None,
    })
}

/// How far ahead `deliverAt` may be (Svix: 24 hours).
const MAX_DELIVER_AHEAD_MS: i64 = 24 * 3600 * 1000;

#[utoipa::path(
    post,
    operation_id = "v1.message.create",
    path = "/api/v1/app/{app_id}/msg",
    tag = "message",
    summary = "Publish a message (JSON, or XML with `content-type: application/xml`)",
    params(AppPath),
    request_body = MessageIn,
    responses((status = 202, body = MessageOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<impl IntoResponse, ApiError> {
    let input: MessageIn = if is_xml(&headers) {
        message_from_xml(&body, state.limits.max_payload_depth)?
    } else {
        parse_json(&body)?
    };
    let now = now_millis();
    let mut problems = Problems::new();
    problems.check("eventType", validate::event_type_name(&input.event_type));
    // A time already past delivers now; Svix asks for at least a minute ahead, which Kait
    // does not require (its deliveries are best-effort to the second either way).
    let deliver_at = input.deliver_at.map(|at| at.timestamp_millis());
    if let Some(at) = deliver_at {
        problems.check(
            "deliverAt",
            if at - now > MAX_DELIVER_AHEAD_MS {
                Err("must be at most 24 hours ahead".into())
            } else {
                Ok(())
            },
        );
    }
    let deliver_at = deliver_at.filter(|at| *at > now);
    if let Some(channels) = &input.channels {
        problems.check("channels", validate::channels(channels.iter()));
    }
    if let Some(event_id) = &input.event_id {
        problems.check("eventId", validate::key("eventId", event_id));
    }
    if let Some(ordering_key) = &input.ordering_key {
        problems.check("orderingKey", validate::ordering_key(ordering_key));
    }
    let max_depth = state.limits.max_payload_depth;
    problems.check(
        "payload",
        if !input.payload.get().trim_start().starts_with('{') {
            Err("must be a JSON object".into())
        } else if validate::json_depth(input.payload.get()) > max_depth {
            Err(format!(
                "must not nest arrays and objects deeper than {max_depth} levels"
            ))
        } else {
            Ok(())
        },
    );
    problems.into_result()?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => {
            let key = value.to_str().map_err(|_| ApiError::BadRequest {
                code: "invalid_idempotency_key",
                detail: "Idempotency-Key must be visible ASCII".into(),
            })?;
            if key.is_empty() || key.len() > MAX_KEY_LEN {
                return Err(ApiError::BadRequest {
                    code: "invalid_idempotency_key",
                    detail: format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} characters long"),
                });
            }
            Some(key.to_owned())
        }
        None => None,
    };

    let app_id = state
        .app_ids
        .resolve(state.store.as_ref(), &app_key)
        .await?;
    let repeat_check = idempotency_key.as_ref().map(|_| {
        (
            input.event_type.clone(),
            input.event_id.clone(),
            input.payload.get().to_owned(),
        )
    });
    let accepted = state
        .store
        .create_message(NewMessage {
            message: Message {
                id: MessageId::generate(),
                app_id,
                event_type: input.event_type,
                event_id: input.event_id,
                channels: input.channels,
                ordering_key: input.ordering_key,
                payload: input.payload.get().to_owned(),
                raw: None,
                created_at: now,
                deliver_at,
            },
            idempotency_key,
            received: None,
            only_endpoint: None,
        })
        .await
        .map_err(|error| match error {
            // Deleted since the cached lookup.
            kait_store::StoreError::NotFound => ApiError::NotFound("application"),
            other => other.into(),
        })?;
    if accepted.created {
        metrics::counter!("kait_messages_accepted_total").increment(1);
    } else if let Some((event_type, event_id, payload)) = repeat_check
        && !same_message(&accepted.message, &event_type, &event_id, &payload)
    {
        // The key named an earlier, different message: say so instead of answering with it.
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut::new(accepted.message, true)),
    ))
}

/// Whether a message accepted earlier under an `Idempotency-Key` is the one now sent again.
/// Payloads compare as JSON values: a backend may store them normalised.
fn same_message(
    earlier: &Message,
    event_type: &str,
    event_id: &Option<String>,
    payload: &str,
) -> bool {
    let as_value = |text: &str| serde_json::from_str::<serde_json::Value>(text).ok();
    earlier.event_type == event_type
        && &earlier.event_id == event_id
        && as_value(&earlier.payload) == as_value(payload)
}

#[utoipa::path(
    get,
    operation_id = "v1.message.list",
    path = "/api/v1/app/{app_id}/msg",
    tag = "message",
    summary = "List messages, newest first",
    params(AppPath, crate::extract::ListParams),
    responses((status = 200, body = ListResponse<MessageOut>), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<ApiState>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    query: ListQuery,
) -> Result<Json<ListResponse<MessageOut>>, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let filter = message_filter(&query)?;
    let with_content = query.flag("with_content", true)?;
    let page = state
        .store
        .list_messages(&application.id, filter, query.page()?)
        .await?;
    let data = page
        .items
        .into_iter()
        .map(|message| MessageOut::new(message, with_content))
        .collect();
    Ok(Json(ListResponse::new(
        data,
        page.done,
        |message: &MessageOut| message.id.clone(),
    )))
}

/// The message filters shared by message and attempt listings.
pub fn message_filter(query: &ListQuery) -> Result<MessageFilter, ApiError> {
    Ok(MessageFilter {
        event_types: query.list("event_types"),
        channel: query.get("channel").map(str::to_owned),
        before: query.time("before")?,
        after: query.time("after")?,
    })
}

#[utoipa::path(
    get,
    operation_id = "v1.message.get",
    path = "/api/v1/app/{app_id}/msg/{msg_id}",
    tag = "message",
    summary = "Get a message by id or eventId",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId")),
    responses((status = 200, body = MessageOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/msg/{msg_id}`: by message id, or by the caller's `eventId`.
pub async fn get(
    State(state): State<ApiState>,
    Path((app_key, msg_key)): Path<(String, String)>,
    query: ListQuery,
) -> Result<Json<MessageOut>, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let message = state
        .store
        .get_message(&application.id, &msg_key)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    Ok(Json(MessageOut::new(
        message,
        query.flag("with_content", true)?,
    )))
}
