//! `/api/v1/app/{app_id}/msg`: accepting and listing messages.
//!
//! Accepting a message writes it and one delivery per matching endpoint in one transaction;
//! the `202` goes out only after that commit is synced. The dispatcher is woken by the store,
//! never by this handler: ingest never calls an endpoint.

use axum::Extension;
use kait_core::scope::ScopeKind;

use crate::auth::Caller;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kait_core::model::RawPayload;
use kait_core::time::now_millis;
use kait_core::validate::{self, Problems};
use kait_core::{AppId, Application, AttachmentId, Message, MessageId};
use kait_store::{MessageFilter, NewMessage};
use serde::Deserialize;
use utoipa::IntoParams;

use super::find_app;
use crate::extract::{LimitedBody, ListQuery, parse_json};
use crate::paths::AppPath;
use crate::wire::{
    ApplicationIn, EventTypeName, Key, ListResponse, MessageIn, MessageOut, TransformationsParams,
};
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
/// orderingKey="…" attachments="att_…,att_…"><payload>…</payload></message>`, the payload in
/// the documented mapping.
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
        attachments: attribute("attachments").map(|ids| {
            ids.split(',')
                .map(|id| id.trim().to_owned())
                .filter(|id| !id.is_empty())
                .collect()
        }),
        transformations_params: None,
        application: None,
        tags: None,
        payload_retention_period: None,
        payload_retention_hours: None,
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
    Extension(caller): Extension<Caller>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<impl IntoResponse, ApiError> {
    let input: MessageIn = if is_xml(&headers) {
        message_from_xml(&body, state.limits.max_payload_depth)?
    } else {
        parse_json(&body)?
    };
    caller.allows_name(ScopeKind::MessagesWrite, &input.event_type)?;
    let mut problems = Problems::new();
    problems.check(
        "payload",
        check_payload(input.payload.get(), state.limits.max_payload_depth),
    );
    problems.check(
        "tags",
        match &input.tags {
            Some(tags) if !tags.is_empty() => {
                Err("Kait does not keep message tags: send none (filter by channels)".into())
            }
            _ => Ok(()),
        },
    );
    check_retention(
        &mut problems,
        state.limits.message_retention,
        input.payload_retention_period,
        input.payload_retention_hours,
    );
    let raw = match &input.transformations_params {
        Some(params) => raw_from_params(&mut problems, params, input.payload.get()),
        None => None,
    };
    let payload = match &raw {
        // What pipes' filters and listings see of it: its JSON reading, `{}` when it has none.
        Some(raw) => {
            kait_sources::body::read(
                Some(&raw.content_type),
                &raw.body,
                state.limits.max_payload_depth,
            )
            .payload
        }
        None => input.payload.get().to_owned(),
    };
    let fields = MessageFields {
        event_type: input.event_type,
        event_id: input.event_id,
        channels: input.channels,
        ordering_key: input.ordering_key,
        deliver_at: input.deliver_at,
        attachments: input.attachments,
    };
    accept(
        &state,
        &app_key,
        &headers,
        problems,
        fields,
        payload,
        raw,
        input.application,
    )
    .await
}

/// What a message says besides its body, from a JSON body or a raw request's query.
struct MessageFields {
    event_type: String,
    event_id: Option<String>,
    channels: Option<std::collections::BTreeSet<String>>,
    ordering_key: Option<String>,
    deliver_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Attachment ids (JSON messages only).
    attachments: Option<Vec<String>>,
}

/// The most attachments one message may reference.
const MAX_ATTACHMENTS: usize = 16;

/// Checks a message's attachment ids (well-formed, each once, at most
/// [`MAX_ATTACHMENTS`]) and that its body can carry them (a JSON object without its own
/// `attachments` member).
fn check_attachments(
    problems: &mut Problems,
    ids: &[String],
    payload: &str,
    raw: Option<&RawPayload>,
) -> Vec<AttachmentId> {
    if ids.len() > MAX_ATTACHMENTS {
        problems.check(
            "attachments",
            Err(format!("at most {MAX_ATTACHMENTS} attachments per message")),
        );
        return Vec::new();
    }
    if raw.is_some() {
        problems.check(
            "attachments",
            Err("a raw body cannot carry attachment links: send a JSON payload".into()),
        );
    }
    let mut parsed: Vec<AttachmentId> = Vec::with_capacity(ids.len());
    for (index, id) in ids.iter().enumerate() {
        let field = format!("attachments[{index}]");
        match AttachmentId::parse(id) {
            Some(id) if parsed.contains(&id) => {
                problems.check(&field, Err("the same attachment is listed twice".into()));
            }
            Some(id) => parsed.push(id),
            None => problems.check(&field, Err("not an attachment id (att_…)".into())),
        }
    }
    let has_own = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload)
        .is_ok_and(|object| object.contains_key("attachments"));
    if has_own && !ids.is_empty() {
        problems.check(
            "payload",
            Err("has its own `attachments` member, which Kait fills from `attachments`".into()),
        );
    }
    parsed
}

fn check_payload(payload: &str, max_depth: usize) -> Result<(), String> {
    if !payload.trim_start().starts_with('{') {
        Err("must be a JSON object".into())
    } else if validate::json_depth(payload) > max_depth {
        Err(format!(
            "must not nest arrays and objects deeper than {max_depth} levels"
        ))
    } else {
        Ok(())
    }
}

/// Svix's `payloadRetentionPeriod` (days) or `payloadRetentionHours`: Kait keeps every
/// message for the server's retention, so a message may ask for that or longer, not less.
fn check_retention(
    problems: &mut Problems,
    kept: Option<std::time::Duration>,
    days: Option<i64>,
    hours: Option<i64>,
) {
    let asked = match (days, hours) {
        (Some(_), Some(_)) => {
            problems.check(
                "payloadRetentionHours",
                Err("give payloadRetentionPeriod or payloadRetentionHours, not both".into()),
            );
            return;
        }
        (Some(days), None) => ("payloadRetentionPeriod", days.saturating_mul(24)),
        (None, Some(hours)) => ("payloadRetentionHours", hours),
        (None, None) => return,
    };
    let (field, hours) = asked;
    let outcome = if hours < 1 {
        Err("must be at least 1".to_owned())
    } else {
        match kept {
            Some(kept) if hours as u128 * 3600 >= kept.as_secs() as u128 => Ok(()),
            kept => Err(format!(
                "this server keeps every message {}; a shorter retention per message is not \
                 supported",
                match kept {
                    Some(kept) =>
                        format!("for {} hours (--retain-messages)", kept.as_secs() / 3600),
                    None => "forever (--retain-messages forever)".to_owned(),
                }
            )),
        }
    };
    problems.check(field, outcome);
}

/// The raw body Svix's SDKs send in `transformationsParams`, checked.
fn raw_from_params(
    problems: &mut Problems,
    params: &TransformationsParams,
    payload: &str,
) -> Option<RawPayload> {
    let mut content_type = "application/json".to_owned();
    for (name, value) in params.headers.iter().flatten() {
        if !name.eq_ignore_ascii_case("content-type") {
            problems.check(
                "transformationsParams",
                Err(format!(
                    "headers: only content-type is supported, not {name:?}"
                )),
            );
        } else if value.is_empty()
            || value.len() > MAX_KEY_LEN
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            problems.check(
                "transformationsParams",
                Err("headers: content-type must be a header value of 1 to 256 characters".into()),
            );
        } else {
            content_type = value.clone();
        }
    }
    let Some(raw) = &params.raw_payload else {
        if params.headers.is_some() {
            problems.check(
                "transformationsParams",
                Err("headers apply to a rawPayload: send one".into()),
            );
        }
        return None;
    };
    let empty = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(payload)
        .is_ok_and(|object| object.is_empty());
    if !empty {
        problems.check(
            "payload",
            Err("must be {} when transformationsParams.rawPayload is the body".into()),
        );
    }
    Some(RawPayload {
        content_type,
        body: raw.as_bytes().to_vec(),
        headers: Vec::new(),
    })
}

/// `POST …/msg/raw` query: what a JSON message says besides its payload.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawMessageQuery {
    /// The event type's name
    #[serde(rename = "eventType")]
    #[param(value_type = EventTypeName)]
    pub event_type: String,
    #[serde(rename = "eventId")]
    #[param(value_type = Option<Key>)]
    pub event_id: Option<String>,
    /// Comma-separated channels
    pub channels: Option<String>,
    #[serde(rename = "orderingKey")]
    #[param(value_type = Option<Key>)]
    pub ordering_key: Option<String>,
}

impl RawMessageQuery {
    /// Reads the query, each parameter at most once, with a 4xx that names the parameter.
    fn read(query: Option<&str>) -> Result<Self, ApiError> {
        let mut read = RawMessageQuery::default();
        let mut event_type = None;
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let slot = match name.as_ref() {
                "eventType" => &mut event_type,
                "eventId" => &mut read.event_id,
                "channels" => &mut read.channels,
                "orderingKey" => &mut read.ordering_key,
                other => {
                    return Err(ApiError::invalid_query(
                        other,
                        "not a parameter of this route",
                    ));
                }
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(ApiError::invalid_query(&name, "given more than once"));
            }
        }
        read.event_type = event_type
            .ok_or_else(|| ApiError::invalid_query("eventType", "the event type is required"))?;
        Ok(read)
    }
}

#[utoipa::path(
    post,
    operation_id = "v1.message.create-raw",
    path = "/api/v1/app/{app_id}/msg/raw",
    tag = "message",
    summary = "Publish a message whose body is the request's body, of any type (Kait extension)",
    description = "The body is sent to every endpoint byte for byte with its `Content-Type` \
        (`application/octet-stream` when none is given), signed over those bytes; XML endpoints \
        receive it unchanged too. Pipes and listings see its JSON reading (JSON, XML and forms \
        are read; anything else reads as `{}`).",
    params(AppPath, RawMessageQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 202, body = MessageOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn create_raw(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(AppPath { app_id: app_key }): Path<AppPath>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<impl IntoResponse, ApiError> {
    let query = RawMessageQuery::read(query.as_deref())?;
    caller.allows_name(ScopeKind::MessagesWrite, &query.event_type)?;
    let content_type = match headers.get(CONTENT_TYPE) {
        Some(value) => value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty() && text.len() <= MAX_KEY_LEN)
            .ok_or(ApiError::BadRequest {
                code: "invalid_content_type",
                detail: "Content-Type must be visible ASCII, 1 to 256 characters".into(),
            })?
            .to_owned(),
        None => "application/octet-stream".to_owned(),
    };
    let payload =
        kait_sources::body::read(Some(&content_type), &body, state.limits.max_payload_depth)
            .payload;
    let raw = RawPayload {
        content_type,
        body: body.to_vec(),
        headers: Vec::new(),
    };
    let fields = MessageFields {
        event_type: query.event_type,
        event_id: query.event_id,
        channels: query.channels.map(|channels| {
            channels
                .split(',')
                .map(|channel| channel.trim().to_owned())
                .filter(|channel| !channel.is_empty())
                .collect()
        }),
        ordering_key: query.ordering_key,
        deliver_at: None,
        attachments: None,
    };
    accept(
        &state,
        &app_key,
        &headers,
        Problems::new(),
        fields,
        payload,
        Some(raw),
        None,
    )
    .await
}

#[utoipa::path(
    get,
    operation_id = "v1.message.get-raw",
    path = "/api/v1/app/{app_id}/msg/raw",
    tag = "message",
    summary = "Get the message whose eventId is `raw`",
    description = "`GET …/msg/{msg_id}` for the one key its path shares with `POST …/msg/raw`.",
    params(AppPath, crate::extract::ListParams),
    responses((status = 200, body = MessageOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/msg/raw`: the message whose eventId is `raw` (the path is taken by the route
/// above for POST).
pub async fn get_raw(
    state: State<ApiState>,
    Path(AppPath { app_id }): Path<AppPath>,
    query: ListQuery,
) -> Result<Json<MessageOut>, ApiError> {
    get(state, Path((app_id, "raw".to_owned())), query).await
}

/// Checks what every message needs, then writes it with its deliveries.
#[allow(clippy::too_many_arguments)]
async fn accept(
    state: &ApiState,
    app_key: &str,
    headers: &HeaderMap,
    mut problems: Problems,
    fields: MessageFields,
    payload: String,
    raw: Option<RawPayload>,
    application: Option<ApplicationIn>,
) -> Result<(StatusCode, Json<MessageOut>), ApiError> {
    let now = now_millis();
    problems.check("eventType", validate::event_type_name(&fields.event_type));
    // A time already past delivers now; Svix asks for at least a minute ahead, which Kait
    // does not require (its deliveries are best-effort to the second either way).
    let deliver_at = fields.deliver_at.map(|at| at.timestamp_millis());
    if let Some(at) = deliver_at {
        problems.check(
            "deliverAt",
            if at > now + MAX_DELIVER_AHEAD_MS {
                Err("must be at most 24 hours ahead".into())
            } else {
                Ok(())
            },
        );
    }
    let deliver_at = deliver_at.filter(|at| *at > now);
    if let Some(channels) = &fields.channels {
        problems.check("channels", validate::channels(channels.iter()));
    }
    if let Some(event_id) = &fields.event_id {
        problems.check("eventId", validate::key("eventId", event_id));
    }
    if let Some(ordering_key) = &fields.ordering_key {
        problems.check("orderingKey", validate::ordering_key(ordering_key));
    }
    if let Some(application) = &application {
        check_new_application(state, &mut problems, app_key, application);
    }
    let attachment_ids = match &fields.attachments {
        Some(ids) => check_attachments(&mut problems, ids, &payload, raw.as_ref()),
        None => Vec::new(),
    };
    problems.into_result()?;
    let idempotency_key = idempotency_key(headers)?;

    let app_id = match state.app_ids.resolve(state.store.as_ref(), app_key).await {
        Err(ApiError::NotFound(_)) if application.is_some() => {
            let application = application.expect("checked above");
            create_application(state, app_key, application).await?
        }
        other => other?,
    };
    let attachments = find_attachments(state, &app_id, &attachment_ids).await?;
    let repeat_check = idempotency_key.as_ref().map(|_| {
        (
            fields.event_type.clone(),
            fields.event_id.clone(),
            payload.clone(),
            raw.as_ref().map(|raw| raw.body.clone()),
        )
    });
    let accepted = state
        .store
        .create_message(NewMessage {
            idempotency_key,
            ..NewMessage::new(Message {
                id: MessageId::generate(),
                app_id,
                event_type: fields.event_type,
                event_id: fields.event_id,
                channels: fields.channels,
                ordering_key: fields.ordering_key,
                payload,
                raw,
                attachments,
                created_at: now,
                deliver_at,
            })
        })
        .await
        .map_err(|error| match error {
            // Deleted since the cached lookup.
            kait_store::StoreError::NotFound => ApiError::NotFound("application"),
            other => other.into(),
        })?;
    if accepted.created {
        metrics::counter!("kait_messages_accepted_total").increment(1);
        crate::traces::message_accepted(state, &accepted.message, now, Some(headers));
    } else if let Some((event_type, event_id, payload, raw_body)) = repeat_check
        && (!same_message(&accepted.message, &event_type, &event_id, &payload)
            || accepted.message.raw.as_ref().map(|raw| &raw.body) != raw_body.as_ref()
            || accepted
                .message
                .attachments
                .iter()
                .map(|attachment| &attachment.id)
                .ne(attachment_ids.iter()))
    {
        // The key named an earlier, different message: say so instead of answering with it.
        return Err(ApiError::IdempotencyKeyReused);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut::new(accepted.message, true)),
    ))
}

/// The records of a message's attachments, each of which must be this application's.
async fn find_attachments(
    state: &ApiState,
    app_id: &kait_core::AppId,
    ids: &[AttachmentId],
) -> Result<Vec<kait_core::Attachment>, ApiError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if state.media.is_none() {
        return Err(ApiError::invalid(
            "attachments",
            "attachments are not enabled on this server",
        ));
    }
    let found = state.store.app_attachments(app_id, ids).await?;
    let mut problems = Problems::new();
    for (index, id) in ids.iter().enumerate() {
        if !found.iter().any(|attachment| attachment.id == *id) {
            problems.check(
                &format!("attachments[{index}]"),
                Err(format!("no attachment {id} in this application")),
            );
        }
    }
    problems.into_result()?;
    Ok(found)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
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
    Ok(Some(key.to_owned()))
}

/// Svix's `application` on a message: made under the path's uid when none has it.
fn check_new_application(
    state: &ApiState,
    problems: &mut Problems,
    app_key: &str,
    application: &ApplicationIn,
) {
    if AppId::has_prefix(app_key) {
        problems.check(
            "application",
            Err("an application is made with a message only under a uid in the path".into()),
        );
    } else if application.uid.as_deref().is_some_and(|uid| uid != app_key) {
        problems.check("application", Err("its uid must be the path's".into()));
    } else if let Err(ApiError::Validation(found)) = super::application::check(
        state,
        &application.name,
        Some(app_key),
        application.metadata.as_ref(),
    ) {
        for problem in found {
            problems.check("application", Err(problem.msg));
        }
    }
}

async fn create_application(
    state: &ApiState,
    uid: &str,
    input: ApplicationIn,
) -> Result<AppId, ApiError> {
    let now = now_millis();
    let created = state
        .store
        .create_application(Application {
            id: AppId::generate(),
            uid: Some(uid.to_owned()),
            name: input.name,
            rate_limit: input.throttle_rate,
            metadata: input.metadata.unwrap_or_default(),
            created_at: now,
            updated_at: now,
            revision: 0,
        })
        .await;
    match created {
        Ok(application) => Ok(application.id),
        // Made at the same moment by another request.
        Err(kait_store::StoreError::Conflict(_)) => {
            state.app_ids.resolve(state.store.as_ref(), uid).await
        }
        Err(error) => Err(error.into()),
    }
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

#[utoipa::path(
    delete,
    operation_id = "v1.message.expunge-content",
    path = "/api/v1/app/{app_id}/msg/{msg_id}/content",
    tag = "message",
    summary = "Erase a message's payload for good (the record and its attempts stay)",
    description = "For privacy requests. The payload, raw body and attachment references go; \
                   deliveries still pending are canceled, and the message cannot be resent.",
    params(AppPath, ("msg_id" = String, Path, description = "The message id (`msg_…`) or eventId")),
    responses((status = 204), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `DELETE …/msg/{msg_id}/content`.
pub async fn expunge_content(
    State(state): State<ApiState>,
    Path((app_key, msg_key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let message = state
        .store
        .get_message(&application.id, &msg_key)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    state
        .store
        .erase_message_content(&application.id, &message.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    operation_id = "v1.endpoint.send-example",
    path = "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example",
    tag = "endpoint",
    summary = "Send an example of an event type to this endpoint only",
    description = "The payload is the given one, or the event type's schema example \
                   `exampleIndex` (default 0, from its newest schema version). The message is \
                   delivered to this endpoint whatever its filters say, like any other: signed, \
                   retried and logged.",
    params(crate::paths::EndpointPath),
    request_body = crate::wire::EventExampleIn,
    responses((status = 202, body = MessageOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST …/endpoint/{endpoint_id}/send-example`: what the portal's "send example" button does.
pub async fn send_example(
    State(state): State<ApiState>,
    Path(path): Path<crate::paths::EndpointPath>,
    headers: HeaderMap,
    crate::extract::ValidJson(input): crate::extract::ValidJson<crate::wire::EventExampleIn>,
) -> Result<impl IntoResponse, ApiError> {
    let started_at = now_millis();
    let mut problems = Problems::new();
    problems.check("eventType", validate::event_type_name(&input.event_type));
    if let Some(payload) = &input.payload {
        problems.check(
            "payload",
            check_payload(payload.get(), state.limits.max_payload_depth),
        );
    }
    problems.into_result()?;
    let (application, endpoint) =
        super::find_app_endpoint(&state, &path.app_id, &path.endpoint_id).await?;
    if endpoint.disabled {
        return Err(ApiError::Conflict(
            "the endpoint is disabled; enable it to send it an example".to_owned(),
        ));
    }
    let payload = match input.payload {
        Some(payload) => payload.get().to_owned(),
        None => {
            let index = input.example_index.unwrap_or(0);
            let event_type = state
                .store
                .get_event_type(&input.event_type)
                .await?
                .ok_or_else(|| {
                    ApiError::invalid("eventType", "no such event type (or send a `payload`)")
                })?;
            event_type
                .example(usize::try_from(index).unwrap_or(usize::MAX))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "exampleIndex",
                        format!(
                            "the event type has no example {index} in its schema (or send a `payload`)"
                        ),
                    )
                })?
                .to_string()
        }
    };
    let accepted = state
        .store
        .create_message(NewMessage {
            only_endpoint: Some(endpoint.id),
            ..NewMessage::new(Message {
                id: MessageId::generate(),
                app_id: application.id,
                event_type: input.event_type,
                event_id: None,
                channels: None,
                ordering_key: None,
                payload,
                raw: None,
                attachments: Vec::new(),
                created_at: now_millis(),
                deliver_at: None,
            })
        })
        .await?;
    metrics::counter!("kait_messages_accepted_total").increment(1);
    crate::traces::message_accepted(&state, &accepted.message, started_at, Some(&headers));
    Ok((
        StatusCode::ACCEPTED,
        Json(MessageOut::new(accepted.message, true)),
    ))
}
