//! The accepting span of each new message, for the message's trace (`kait_core::trace`):
//! handed to the exporter when one is configured, nothing otherwise.

use axum::http::HeaderMap;
use kait_core::Message;
use kait_core::time::{Millis, now_millis};
use kait_core::trace::{MessageSpan, SpanContext};

use crate::ApiState;

/// Reports that `message` was accepted by a request that began at `started_at`; the
/// request's own `traceparent`, if any, becomes the span's link to the producer's trace.
pub fn message_accepted(
    state: &ApiState,
    message: &Message,
    started_at: Millis,
    headers: Option<&HeaderMap>,
) {
    let Some(traces) = &state.traces else {
        return;
    };
    let link = headers
        .and_then(|headers| headers.get("traceparent"))
        .and_then(|value| value.to_str().ok())
        .and_then(SpanContext::parse_traceparent);
    traces.message(MessageSpan {
        msg_id: message.id.to_string(),
        app_id: message.app_id.to_string(),
        event_type: message.event_type.clone(),
        started_at,
        ended_at: now_millis(),
        link,
    });
}
