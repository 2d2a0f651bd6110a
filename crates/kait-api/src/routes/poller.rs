//! `/api/v1/app/{app_id}/poller/{endpoint_id}`: the pull API, for consumers that cannot
//! receive webhooks.
//!
//! A polling endpoint has filters and channels like any endpoint but no URL; its messages are
//! read here instead of sent. The iterator is a position in commit order (on SQLite the
//! message's row number, assigned by the single writer in commit order), so a consumer that
//! follows it sees every message of its filters exactly once, in commit order, however many
//! writers insert concurrently. `timeout` turns an empty answer into a long-poll.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use kait_core::time::now_millis;
use kait_core::{Endpoint, EndpointKind};
use kait_store::MessageFilter;

use super::{find_app, find_endpoint};
use crate::auth::Caller;
use crate::extract::{ListQuery, ValidJson};
use crate::paths::EndpointPath;
use crate::streams::StreamSlot;
use crate::wire::{MessageOut, PollingOut, SeekIn, SeekOut};
use crate::{ApiError, ApiState};

/// The query of a poll, for the OpenAPI document (the handlers read it through `ListQuery`).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PollParams {
    /// Messages per answer (1–250, default 50).
    #[param(minimum = 1, maximum = 250)]
    limit: Option<u32>,
    /// Continue after this position (the `iterator` of the previous answer).
    #[param(pattern = "^[0-9]{1,18}$")]
    iterator: Option<String>,
    /// Long-poll: wait up to this many seconds (`30` or `30s`, at most 60) for a message.
    #[param(pattern = "^([0-9]|[1-5][0-9]|60)s?$")]
    timeout: Option<String>,
    /// Accepted for symmetry with listings; polls always read in commit order.
    #[param(pattern = "^(ascending|descending)$")]
    order: Option<String>,
}

/// [`PollParams`] plus the filters of an anonymous poll.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PollFilterParams {
    /// Only these event types (repeated or comma-separated).
    event_type: Option<Vec<String>>,
    /// Only messages on this channel.
    channel: Option<String>,
    /// Without `iterator`: start after the messages created by this time.
    after: Option<chrono::DateTime<chrono::Utc>>,
}

/// The longest a long-poll waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

async fn polling_endpoint(
    state: &ApiState,
    app_key: &str,
    endpoint_key: &str,
) -> Result<Endpoint, ApiError> {
    let application = find_app(state, app_key).await?;
    let endpoint = find_endpoint(state, &application.id, endpoint_key).await?;
    if endpoint.kind != EndpointKind::Polling {
        return Err(ApiError::NotFound("polling endpoint"));
    }
    Ok(endpoint)
}

fn parse_iterator(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|position| *position >= 0)
        .ok_or_else(|| ApiError::invalid_query("iterator", "is not an iterator this server issued"))
}

fn wait_for(query: &ListQuery) -> Result<Duration, ApiError> {
    let Some(text) = query.get("timeout") else {
        return Ok(Duration::ZERO);
    };
    let wait = text
        .parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(text))
        .map_err(|_| ApiError::invalid_query("timeout", "must be a duration such as 30s"))?;
    if wait > MAX_WAIT {
        return Err(ApiError::invalid_query("timeout", "must be at most 60s"));
    }
    Ok(wait)
}

/// A stream slot for a request that will wait (`timeout`), none for one that answers at once.
fn long_poll_slot(
    state: &ApiState,
    caller: &Caller,
    wait: Duration,
) -> Result<Option<StreamSlot>, ApiError> {
    if wait.is_zero() {
        return Ok(None);
    }
    state
        .streams
        .take(caller.token_key(), state.limits.streams)
        .map(Some)
}

/// Reads what follows `after`, waiting up to `wait` for something to arrive.
async fn read_after(
    state: &ApiState,
    endpoint: &Endpoint,
    after: i64,
    filter: MessageFilter,
    limit: usize,
    wait: Duration,
) -> Result<PollingOut, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut news = state.store.message_signal(&endpoint.app_id);
    let messages = loop {
        // Mark the current state seen before reading, so a commit in between wakes us.
        news.borrow_and_update();
        let messages = state
            .store
            .poll_messages(endpoint, after, filter.clone(), limit)
            .await?;
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
            break messages;
        }
        let woken = tokio::select! {
            changed = tokio::time::timeout_at(deadline, news.changed()) => matches!(changed, Ok(Ok(()))),
            // At shutdown a long-poll answers at once (empty) instead of holding it up.
            _ = state.shutdown.cancelled() => false,
        };
        if !woken {
            break Vec::new();
        }
    };
    let done = messages.len() < limit;
    let position = messages.last().map_or(after, |(position, _)| *position);
    Ok(PollingOut {
        data: messages
            .into_iter()
            .map(|(_, message)| {
                MessageOut::for_endpoint(message, state.media.as_ref(), endpoint, now_millis())
            })
            .collect(),
        iterator: position.to_string(),
        done,
    })
}

#[utoipa::path(
    get,
    operation_id = "v1.poller.poll",
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}",
    tag = "poller",
    summary = "Read a polling endpoint from an iterator (long-poll with `timeout`)",
    params(EndpointPath, PollParams, PollFilterParams),
    responses((status = 200, body = PollingOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/poller/{endpoint_id}`: the caller keeps the iterator.
pub async fn poll(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    query: ListQuery,
) -> Result<Json<PollingOut>, ApiError> {
    let endpoint = polling_endpoint(&state, &app_key, &endpoint_key).await?;
    let wait = wait_for(&query)?;
    let _slot = long_poll_slot(&state, &caller, wait)?;
    let limit = query.page()?.limit;
    let after = match (query.get("iterator"), query.time("after")?) {
        (Some(iterator), _) => parse_iterator(iterator)?,
        (None, Some(at)) => state.store.position_at(&endpoint.app_id, at).await?,
        (None, None) => 0,
    };
    let filter = MessageFilter {
        event_types: query.list("event_type"),
        channel: query.get("channel").map(str::to_owned),
        before: None,
        after: None,
    };
    Ok(Json(
        read_after(&state, &endpoint, after, filter, limit, wait).await?,
    ))
}

/// Messages sent per read while streaming.
const STREAM_BATCH: usize = 100;

#[utoipa::path(
    get,
    operation_id = "v1.poller.stream",
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}/stream",
    tag = "poller",
    summary = "Follow a polling endpoint as server-sent events (resume with Last-Event-ID)",
    params(EndpointPath),
    responses((status = 200), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/poller/{endpoint_id}/stream`: server-sent events, one per message as it is
/// committed, each with its position as the event id. A client that reconnects with
/// `Last-Event-ID` continues right after the last event it got; a new one starts with the
/// messages committed from now on (or after `iterator`, if given).
pub async fn stream(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(EndpointPath {
        app_id: app_key,
        endpoint_id: endpoint_key,
    }): Path<EndpointPath>,
    headers: HeaderMap,
    query: ListQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let endpoint = polling_endpoint(&state, &app_key, &endpoint_key).await?;
    // Held by the stream's state: given back when the client goes or the server stops.
    let slot = state
        .streams
        .take(caller.token_key(), state.limits.streams)?;
    let after = stream_start(&state, &endpoint.app_id, &headers, &query).await?;
    Ok(follow(
        state,
        endpoint,
        after,
        MessageFilter::default(),
        slot,
        true,
    ))
}

/// Where a stream starts: after `Last-Event-ID` (a reconnect), else after `iterator`, else
/// with what is committed from now on.
async fn stream_start(
    state: &ApiState,
    app_id: &kait_core::AppId,
    headers: &HeaderMap,
    query: &ListQuery,
) -> Result<i64, ApiError> {
    let resume = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .or_else(|| query.get("iterator"));
    match resume {
        Some(position) => parse_iterator(position),
        None => Ok(state
            .store
            .position_at(app_id, kait_core::time::now_millis())
            .await?),
    }
}

/// Server-sent events of the messages of `endpoint`'s filters and `filter` committed after
/// position `after`, each with its position as the event id, until the client goes or the
/// server stops (which gives the stream slot back). `named`: each event named by its event
/// type (the polling stream's shape).
fn follow(
    state: ApiState,
    endpoint: Endpoint,
    after: i64,
    filter: MessageFilter,
    slot: StreamSlot,
    named: bool,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let news = state.store.message_signal(&endpoint.app_id);
    let events = futures_util::stream::unfold(
        (state, endpoint, after, news, slot),
        move |(state, endpoint, mut after, mut news, slot)| {
            let filter = filter.clone();
            async move {
                loop {
                    news.borrow_and_update();
                    let messages = match state
                        .store
                        .poll_messages(&endpoint, after, filter.clone(), STREAM_BATCH)
                        .await
                    {
                        Ok(messages) => messages,
                        // The store is gone (shutting down): end the stream.
                        Err(_) => return None,
                    };
                    if !messages.is_empty() {
                        let events: Vec<_> = messages
                            .into_iter()
                            .map(|(position, message)| {
                                after = position;
                                let event_type = message.event_type.clone();
                                let data = serde_json::to_string(&MessageOut::for_endpoint(
                                    message,
                                    state.media.as_ref(),
                                    &endpoint,
                                    now_millis(),
                                ))
                                .unwrap_or_default();
                                let event = Event::default().id(position.to_string()).data(data);
                                Ok(if named {
                                    event.event(event_type)
                                } else {
                                    event
                                })
                            })
                            .collect();
                        return Some((
                            futures_util::stream::iter(events),
                            (state, endpoint, after, news, slot),
                        ));
                    }
                    let shutdown = state.shutdown.clone();
                    tokio::select! {
                        changed = news.changed() => if changed.is_err() { return None },
                        _ = shutdown.cancelled() => return None,
                    }
                }
            }
        },
    )
    .flatten();
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The query of an application's live tail, for the OpenAPI document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TailParams {
    /// Only these event types (repeated or comma-separated).
    #[param(value_type = Option<Vec<crate::wire::EventTypeName>>)]
    event_types: Option<Vec<String>>,
    /// Only messages on this channel.
    channel: Option<String>,
    /// Start after this position (the id of the last event seen); default: from now on.
    #[param(pattern = "^[0-9]{1,18}$")]
    iterator: Option<String>,
}

#[utoipa::path(
    get,
    operation_id = "v1.message.stream",
    path = "/api/v1/app/{app_id}/stream",
    tag = "message",
    summary = "Follow an application's messages live, as server-sent events (Kait extension)",
    description = "Every message of the application as it is committed (or of `event_types`, \
        `channel`), whatever its endpoints; each event's id is its position, so a client that \
        reconnects with `Last-Event-ID` continues after the last one it got. What `kait tail` \
        and the dashboard's live view read.",
    params(crate::paths::AppPath, TailParams),
    responses((status = 200, content_type = "text/event-stream"), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
pub async fn tail(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(crate::paths::AppPath { app_id: app_key }): Path<crate::paths::AppPath>,
    headers: HeaderMap,
    query: ListQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let application = find_app(&state, &app_key).await?;
    let filter = MessageFilter {
        event_types: query.list("event_types"),
        channel: query.get("channel").map(str::to_owned),
        ..Default::default()
    };
    if let Some(types) = &filter.event_types {
        for name in types {
            kait_core::validate::event_type_name(name)
                .map_err(|problem| ApiError::invalid_query("event_types", problem))?;
        }
    }
    let slot = state
        .streams
        .take(caller.token_key(), state.limits.streams)?;
    let after = stream_start(&state, &application.id, &headers, &query).await?;
    // An endpoint without filters reads every message of its application: the tail is the
    // polling machinery with no subscription of its own.
    let everything = Endpoint {
        kind: EndpointKind::Polling,
        ..Endpoint::new(
            application.id,
            String::new(),
            kait_core::signing::Secret::generate(),
            now_millis(),
        )
    };
    // Unnamed events, so a browser's EventSource gets them all through `onmessage` (the
    // event type is in the data).
    Ok(follow(state, everything, after, filter, slot, false))
}

#[utoipa::path(
    get,
    operation_id = "v1.poller.consumer-poll",
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}",
    tag = "poller",
    summary = "Read as a named consumer whose position the server keeps",
    params(EndpointPath, ("consumer_id" = crate::wire::Uid, Path, description = "A name the consumer chooses"), PollParams),
    responses((status = 200, body = PollingOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `GET …/poller/{endpoint_id}/consumer/{consumer_id}`: the server keeps each consumer's
/// position and moves it past what it returns.
pub async fn consumer_poll(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((app_key, endpoint_key, consumer_id)): Path<(String, String, String)>,
    query: ListQuery,
) -> Result<Json<PollingOut>, ApiError> {
    let endpoint = polling_endpoint(&state, &app_key, &endpoint_key).await?;
    let wait = wait_for(&query)?;
    let _slot = long_poll_slot(&state, &caller, wait)?;
    kait_core::validate::uid(&consumer_id)
        .map_err(|problem| ApiError::invalid("consumer_id", problem))?;
    let after = match query.get("iterator") {
        Some(iterator) => parse_iterator(iterator)?,
        None => {
            state
                .store
                .consumer_position(&endpoint.id, &consumer_id)
                .await?
        }
    };
    let out = read_after(
        &state,
        &endpoint,
        after,
        MessageFilter::default(),
        query.page()?.limit,
        wait,
    )
    .await?;
    let position = parse_iterator(&out.iterator)?;
    state
        .store
        .set_consumer_position(
            &endpoint.id,
            &consumer_id,
            position,
            state.limits.max_consumers_per_endpoint,
        )
        .await?;
    Ok(Json(out))
}

#[utoipa::path(
    post,
    operation_id = "v1.poller.consumer-seek",
    path = "/api/v1/app/{app_id}/poller/{endpoint_id}/consumer/{consumer_id}/seek",
    tag = "poller",
    summary = "Move a consumer to a time or position",
    params(EndpointPath, ("consumer_id" = crate::wire::Uid, Path, description = "A name the consumer chooses")),
    request_body = SeekIn,
    responses((status = 200, body = SeekOut), (status = "4XX", body = crate::wire::ErrorOut)),
    security(("bearer" = []))
)]
/// `POST …/poller/{endpoint_id}/consumer/{consumer_id}/seek`: the consumer continues with
/// the messages created after `after`.
pub async fn consumer_seek(
    State(state): State<ApiState>,
    Path((app_key, endpoint_key, consumer_id)): Path<(String, String, String)>,
    ValidJson(input): ValidJson<SeekIn>,
) -> Result<Json<SeekOut>, ApiError> {
    let endpoint = polling_endpoint(&state, &app_key, &endpoint_key).await?;
    kait_core::validate::uid(&consumer_id)
        .map_err(|problem| ApiError::invalid("consumer_id", problem))?;
    let position = state
        .store
        .position_at(&endpoint.app_id, input.after.timestamp_millis())
        .await?;
    state
        .store
        .set_consumer_position(
            &endpoint.id,
            &consumer_id,
            position,
            state.limits.max_consumers_per_endpoint,
        )
        .await?;
    Ok(Json(SeekOut {
        iterator: position.to_string(),
    }))
}
