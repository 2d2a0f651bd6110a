//! The receiving URL of an incoming source: `POST /ingest/api/v1/source/{source_id}/in/{token}`
//! (Svix Ingest's shape), open to the world and guarded by the token in the path and the
//! provider's signature.
//!
//! A request is answered 2xx only after it is durable: the message it becomes (its body kept
//! byte for byte), the deliveries to the source's endpoints and the log entry are one
//! transaction (`MessageLog::create_message` with `received`). A refused request is logged
//! and answered 401; it is never forwarded. A sender retrying an event it already delivered
//! (same provider event id) gets 200 again and nothing is forwarded twice.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use kait_core::time::now_millis;
use kait_core::{Message, MessageId, RawPayload, ReceivedId, Source};
use kait_sources::Verified;
use kait_sources::verify::Headers;
use kait_store::{NewMessage, ReceivedOutcome, ReceivedRequest, StoreError};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ingest_source::{self, source_app};
use crate::auth::constant_time_eq;
use crate::sources_cache::CachedSource;
use crate::wire::ReceivedAck;
use crate::{ApiError, ApiState};

/// The header carrying the path below the token, and the one carrying the query string, as
/// Svix Ingest passes them on.
const TRAILING_PATH_HEADER: &str = "svix-ingest-trailing-path-segments";
const QUERY_HEADER: &str = "svix-ingest-query";

/// `/ingest/api/v1/source/{source_id}/in/{token}[/{rest}]`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReceivePath {
    /// The source id (`src_…`)
    pub source_id: String,
    /// The source's token, from its `ingestUrl`
    pub token: String,
    /// Any path below the token, passed on in `svix-ingest-trailing-path-segments`
    #[serde(default)]
    #[param(ignore)]
    pub rest: Option<String>,
}

/// Request headers as the verifiers read them (case-insensitive, text values only).
struct RequestHeaders<'a>(&'a HeaderMap);

impl Headers for RequestHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|value| value.to_str().ok())
    }
}

#[utoipa::path(
    post,
    operation_id = "v1.ingest.receive",
    path = "/ingest/api/v1/source/{source_id}/in/{token}",
    tag = "ingest",
    summary = "Receive a webhook from the source's sender (its ingestUrl); any body",
    description = "Verified by the source's type (provider signature, token), kept durably \
        and forwarded to the source's endpoints. Any path below the token and the query \
        string are passed on in the `svix-ingest-trailing-path-segments` and \
        `svix-ingest-query` headers.",
    params(ReceivePath),
    request_body(content = String, content_type = "*/*"),
    responses(
        (status = 200, body = ReceivedAck),
        (status = 401, body = crate::wire::ErrorOut, description = "Verification failed; logged, not forwarded"),
        (status = 404, body = crate::wire::ErrorOut, description = "No such source, or not its token"),
        (status = 413, body = crate::wire::ErrorOut),
        (status = 429, body = crate::wire::ErrorOut, description = "The source has too many requests in progress")
    )
)]
pub async fn receive(
    State(state): State<ApiState>,
    Path(path): Path<ReceivePath>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let received_at = now_millis();
    let cached = authorized_source(&state, &path.source_id, &path.token, received_at).await?;
    let source = &cached.source;
    let _slot = state
        .source_slots
        .acquire(source.id.as_str(), state.limits.source_in_flight)
        .await?;
    let body = read_body(body, &headers, state.limits.max_body_bytes).await?;
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let entry = ReceivedRequest {
        id: ReceivedId::generate(),
        source_id: source.id.clone(),
        received_at,
        outcome: ReceivedOutcome::Accepted,
        reason: None,
        content_type: content_type.clone(),
        size: body.len() as u64,
        event_id: None,
        msg_id: None,
    };
    let verified = match &cached.parsed {
        Ok((kind, config)) => {
            kait_sources::verify(config, &RequestHeaders(&headers), &body, received_at / 1000)
                .map(|verified| (*kind, verified))
                .map_err(|refusal| refusal.0)
        }
        Err(reason) => Err(reason.clone()),
    };
    let (kind, verified) = match verified {
        Ok(verified) => verified,
        Err(reason) => {
            state
                .store
                .record_received(ReceivedRequest {
                    outcome: ReceivedOutcome::Refused,
                    reason: Some(reason.clone()),
                    ..entry
                })
                .await?;
            metrics::counter!("kait_ingest_requests_total", "outcome" => "refused").increment(1);
            return Err(ApiError::Unverified(reason));
        }
    };
    let Verified {
        event_id,
        challenge,
    } = verified;
    let entry = ReceivedRequest { event_id, ..entry };
    if let Some(challenge) = challenge {
        state
            .store
            .record_received(ReceivedRequest {
                outcome: ReceivedOutcome::Answered,
                ..entry
            })
            .await?;
        metrics::counter!("kait_ingest_requests_total", "outcome" => "answered").increment(1);
        return Ok(Json(serde_json::json!({ "challenge": challenge })).into_response());
    }

    let read = kait_sources::body::read(
        content_type.as_deref(),
        &body,
        state.limits.max_payload_depth,
    );
    let extra_headers = forwarded_headers(path.rest.as_deref(), query.as_deref());
    let raw = (read.raw || !extra_headers.is_empty()).then(|| RawPayload {
        content_type: content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
        body: body.to_vec(),
        headers: extra_headers,
    });
    let app_id = match state
        .app_ids
        .resolve(state.store.as_ref(), &ingest_source::app_uid(&source.id))
        .await
    {
        Ok(app_id) => app_id,
        Err(ApiError::NotFound(_)) => source_app(&state, &source.id).await?.id,
        Err(error) => return Err(error),
    };
    let message = Message {
        id: MessageId::generate(),
        app_id,
        event_type: kait_sources::event_type(kind, &RequestHeaders(&headers), &read.payload),
        event_id: None,
        channels: None,
        ordering_key: None,
        payload: read.payload,
        raw,
        created_at: received_at,
        attachments: Vec::new(),
        deliver_at: None,
    };
    let idempotency_key = entry
        .event_id
        .as_ref()
        .map(|event_id| format!("ingest:{event_id}"));
    let accepted = accept(&state, source, message, idempotency_key, entry.clone()).await?;
    let outcome = if accepted.created {
        crate::traces::message_accepted(&state, &accepted.message, received_at, Some(&headers));
        "accepted"
    } else {
        "duplicate"
    };
    metrics::counter!("kait_ingest_requests_total", "outcome" => outcome).increment(1);
    Ok(Json(ReceivedAck {
        id: entry.id.to_string(),
        msg_id: accepted.message.id.to_string(),
        duplicate: !accepted.created,
    })
    .into_response())
}

/// The source named in the path, if the token is its current one or its previous one still
/// within its grace period. Anything else is a 404: the URL is the secret, and a wrong one
/// must not tell whether the source exists.
async fn authorized_source(
    state: &ApiState,
    source_id: &str,
    token: &str,
    now: kait_core::time::Millis,
) -> Result<Arc<CachedSource>, ApiError> {
    let not_found = || ApiError::NotFound("source");
    if !kait_core::SourceId::has_prefix(source_id) {
        return Err(not_found());
    }
    let cached = state
        .sources
        .get(state.store.as_ref(), source_id)
        .await?
        .ok_or_else(not_found)?;
    let source = &cached.source;
    let current = constant_time_eq(token.as_bytes(), source.token.as_bytes());
    let previous = source
        .previous_token
        .as_ref()
        .is_some_and(|(previous, expires_at)| {
            now < *expires_at && constant_time_eq(token.as_bytes(), previous.as_bytes())
        });
    if current || previous {
        Ok(cached)
    } else {
        Err(not_found())
    }
}

/// Reads the body up to `limit` bytes: a declared length over it is refused before reading,
/// and an undeclared one as soon as the limit is passed (never read to its end).
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is larger than {limit} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        if std::error::Error::source(&error)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>())
        {
            too_large()
        } else {
            ApiError::BadRequest {
                code: "body_unreadable",
                detail: format!("the body could not be read: {error}"),
            }
        }
    })
}

/// The headers a received request's webhooks carry: the path below the token and the query.
/// Values a header cannot hold (control characters) are left out rather than refused.
fn forwarded_headers(rest: Option<&str>, query: Option<&str>) -> Vec<(String, String)> {
    [(TRAILING_PATH_HEADER, rest), (QUERY_HEADER, query)]
        .into_iter()
        .filter_map(|(name, value)| {
            let value = value.filter(|value| !value.is_empty())?;
            axum::http::HeaderValue::from_str(value).ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Commits the message with its log entry. The source's application is made if it is
/// missing (a source created before its application existed, or the application deleted).
async fn accept(
    state: &ApiState,
    source: &Source,
    mut message: Message,
    idempotency_key: Option<String>,
    entry: ReceivedRequest,
) -> Result<kait_store::AcceptedMessage, ApiError> {
    for attempt in 0..2 {
        let result = state
            .store
            .create_message(NewMessage {
                message: message.clone(),
                idempotency_key: idempotency_key.clone(),
                received: Some(entry.clone()),
                only_endpoint: None,
            })
            .await;
        match result {
            Err(StoreError::NotFound) if attempt == 0 => {
                message.app_id = source_app(state, &source.id).await?.id;
            }
            other => return Ok(other?),
        }
    }
    Err(ApiError::NotFound("application"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_path_and_query_are_passed_on_when_present() {
        assert!(forwarded_headers(None, None).is_empty());
        assert!(forwarded_headers(Some(""), Some("")).is_empty());
        assert_eq!(
            forwarded_headers(Some("github/push"), Some("a=1&b=2")),
            vec![
                (TRAILING_PATH_HEADER.to_owned(), "github/push".to_owned()),
                (QUERY_HEADER.to_owned(), "a=1&b=2".to_owned()),
            ]
        );
        assert!(forwarded_headers(Some("a\nb"), None).is_empty());
    }
}
