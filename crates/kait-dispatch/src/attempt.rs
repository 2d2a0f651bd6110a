//! One attempt of one delivery: send it, and decide what happens next.

use kait_core::trace::{AttemptSpan, SpanContext};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use kait_core::retry::RetrySchedule;
use kait_core::time::{Millis, now_millis};
use kait_core::{
    Attempt, AttemptId, DeliveryStatus, EndpointKind, PayloadFormat, RawPayload, SentRequest,
};
use kait_deliver::{AttemptResult, Method, SendError, Target, Webhook};
use kait_store::{ClaimedDelivery, NextStep, Outcome};

use crate::endpoints::PreparedEndpoint;
use crate::{Shared, transform};

/// What the dispatcher loop learns from a finished attempt.
pub struct Finished {
    /// The delivery, with `attempts_made` counting this attempt.
    pub delivery: ClaimedDelivery,
    pub outcome: Outcome,
    pub succeeded: bool,
    /// The receiver answered `410 Gone`: the endpoint is to be disabled.
    pub gone: bool,
    /// The receiver asked for a pause (`Retry-After` on 429 or 503), bounded.
    pub pause: Option<Duration>,
}

/// Lets a payload shared by a message's deliveries be a request body without copying it.
struct SharedPayload(Arc<str>);

impl AsRef<[u8]> for SharedPayload {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Lets a raw body shared by a message's deliveries be a request body without copying it.
struct SharedRawBody(Arc<RawPayload>);

impl AsRef<[u8]> for SharedRawBody {
    fn as_ref(&self) -> &[u8] {
        &self.0.body
    }
}

/// A raw payload's body, content type and headers as the sender takes them. Names and values
/// were checked when the message was accepted; anything unreadable is left out (the content
/// type falls back to `application/octet-stream`).
fn raw_parts(raw: Arc<RawPayload>) -> (Bytes, HeaderValue, HeaderMap) {
    let content_type = HeaderValue::from_str(&raw.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut headers = HeaderMap::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    (Bytes::from_owner(SharedRawBody(raw)), content_type, headers)
}

/// Sends one delivery. `hold_retry` (ordered endpoints) keeps a failed delivery in the
/// dispatcher to be retried in place instead of returning it to the store's queue.
pub async fn run(shared: &Shared, mut delivery: ClaimedDelivery, hold_retry: bool) -> Finished {
    let started_at = now_millis();
    delivery.attempts_made += 1;
    if &*delivery.payload == kait_core::ERASED_PAYLOAD && delivery.raw.is_none() {
        // Erased while this delivery was in flight or held for a retry: nothing to send.
        return canceled(delivery, started_at, "the message's content was erased");
    }
    let endpoint = match shared.endpoints.get(&delivery.endpoint_id).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            // Deleted: the store drops the delivery with it; this outcome finds no row.
            return without_request(
                delivery,
                started_at,
                "endpoint was deleted",
                NextStep::GiveUp,
            );
        }
        Err(error) => {
            let at = started_at + 1_000;
            let next = if hold_retry {
                NextStep::RetryHeld(at)
            } else {
                NextStep::RetryAt(at)
            };
            let reason = format!("endpoint could not be loaded: {error}");
            return without_request(delivery, started_at, &reason, next);
        }
    };
    if endpoint.disabled {
        return without_request(
            delivery,
            started_at,
            "endpoint is disabled",
            NextStep::GiveUp,
        );
    }

    if endpoint.kind == EndpointKind::Pipe {
        return run_pipe(shared, delivery, started_at, &endpoint.url, hold_retry).await;
    }

    if endpoint.ownership_pending
        && let Err(reason) =
            check_ownership(shared, &delivery.endpoint_id, &endpoint, started_at).await
    {
        return waiting(delivery, started_at, &reason, hold_retry);
    }

    // Attachments: links signed for this endpoint, fresh at each attempt (a retry hours
    // later carries a working link), and the small ones inline if the endpoint asks.
    let mut outgoing = delivery.payload.clone();
    if let Some(attachments) = delivery.attachments.clone() {
        match with_attachments(shared, &delivery, &attachments, &endpoint.media, started_at).await {
            Ok(payload) => outgoing = payload,
            Err(reason) => return failed_here(shared, delivery, started_at, &reason, hold_retry),
        }
    }

    // The endpoint's transformation may change the method, URL and payload, or cancel.
    let mut method = Method::POST;
    let mut new_target: Option<(String, Result<Target, SendError>)> = None;
    let mut new_payload: Option<Arc<str>> = None;
    if let Some(code) = &endpoint.transformation {
        let job = transform::Job {
            endpoint_id: delivery.endpoint_id.clone(),
            code: code.clone(),
            url: endpoint.url.clone(),
            event_type: delivery.event_type.clone(),
            payload: outgoing.clone(),
        };
        match transform::run(&shared.scripts, job).await {
            Ok(output) if output.cancel => {
                return canceled(
                    delivery,
                    started_at,
                    "canceled by the endpoint's transformation",
                );
            }
            Ok(output) => {
                if output.method == "PUT" {
                    method = Method::PUT;
                }
                if output.url != endpoint.url {
                    let target = Target::parse(&output.url);
                    new_target = Some((output.url, target));
                }
                new_payload = changed_payload(&delivery, output.payload);
            }
            Err(error) => {
                let reason = format!("the endpoint's transformation failed: {error}");
                return failed_here(shared, delivery, started_at, &reason, hold_retry);
            }
        }
    }

    // A raw payload goes out as it came in, to JSON and XML endpoints alike, unless a
    // transformation replaced it; its headers go out either way.
    let raw = delivery.raw.as_ref().map(|raw| raw_parts(raw.clone()));
    let transformed = new_payload.is_some();
    let payload = new_payload.unwrap_or(outgoing);
    let (body, content_type) = match (&raw, endpoint.format) {
        (Some((body, content_type, _)), _) if !transformed => (body.clone(), content_type.clone()),
        (_, PayloadFormat::Json) => (
            Bytes::from_owner(SharedPayload(payload)),
            HeaderValue::from_static("application/json"),
        ),
        (_, PayloadFormat::Xml) => match render_xml(&delivery, &payload) {
            Ok(xml) => (
                Bytes::from(xml),
                HeaderValue::from_static("application/xml; charset=utf-8"),
            ),
            Err(reason) => return without_request(delivery, started_at, &reason, NextStep::GiveUp),
        },
    };
    // Kept with the attempt only when what goes out is not the message as stored.
    let rewritten = match (&raw, endpoint.format) {
        (Some(_), _) if !transformed => method != Method::POST,
        (_, PayloadFormat::Xml) => true,
        _ => transformed || delivery.attachments.is_some() || method != Method::POST,
    };
    let sent = rewritten.then(|| SentRequest {
        method: method.to_string(),
        content_type: content_type.to_str().unwrap_or_default().to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (url, target) = match &new_target {
        Some((url, target)) => (url.clone(), target),
        None => (endpoint.url.clone(), &endpoint.target),
    };
    // This attempt's span in the message's trace (chosen now, so the receiver can be told).
    let span_id: [u8; 8] = rand::random();
    let trace_parent = shared.traceparent_to_receivers.then(|| {
        let context = SpanContext::of_message(delivery.msg_id.as_str()).child(span_id);
        HeaderValue::from_str(&context.traceparent()).expect("hex digits and dashes")
    });
    let result = match target {
        Ok(target) => {
            shared
                .sender
                .send(Webhook {
                    target,
                    method,
                    msg_id: delivery.msg_id.as_str(),
                    timestamp: started_at / 1000,
                    body,
                    content_type,
                    signing_key: &endpoint.signing_key,
                    previous_signing_key: endpoint
                        .previous_signing_key
                        .as_ref()
                        .filter(|(_, expires_at)| started_at < *expires_at)
                        .map(|(key, _)| key),
                    custom_headers: &endpoint.headers,
                    message_headers: raw.as_ref().map(|(_, _, headers)| headers),
                    trace_parent,
                })
                .await
        }
        Err(error) => AttemptResult::NoResponse {
            error: error.clone(),
            duration: Duration::ZERO,
        },
    };
    let succeeded = result.is_success();
    let gone = result.status_code() == 410;
    let pause = result
        .retry_after()
        .map(|asked| asked.min(shared.max_retry_after));
    let next = if gone {
        NextStep::GiveUp
    } else {
        next_step(
            &shared.retry_schedule,
            succeeded,
            delivery.attempts_made,
            pause,
            hold_retry,
            now_millis(),
            rand::random(),
        )
    };
    if !succeeded {
        tracing::debug!(msg_id = %delivery.msg_id, endpoint_id = %delivery.endpoint_id, ?next, "attempt failed");
    }
    let attempt = attempt_record(&delivery, started_at, url, &result, sent);
    if let Some(traces) = &shared.traces {
        traces.attempt(AttemptSpan {
            msg_id: delivery.msg_id.to_string(),
            span_id,
            attempt_id: attempt.id.to_string(),
            endpoint_id: delivery.endpoint_id.to_string(),
            url: attempt.url.clone(),
            status_code: attempt.response_status_code,
            succeeded,
            attempt: delivery.attempts_made,
            started_at,
            ended_at: started_at + attempt.response_duration_ms,
        });
    }
    if succeeded
        && endpoint.kind == EndpointKind::Plugin
        && let (Some(replies), AttemptResult::Response { body, .. }) = (&shared.replies, &result)
        && !body.trim().is_empty()
    {
        replies.run_reply(&delivery, &attempt.id, body).await;
    }
    Finished {
        outcome: Outcome {
            delivery_id: delivery.delivery_id,
            attempt,
            next,
            reached_endpoint: true,
        },
        delivery,
        succeeded,
        gone,
        pause,
    }
}

/// How long deliveries wait before the ownership challenge is sent again.
const OWNERSHIP_RECHECK_MS: Millis = 10_000;

/// The ownership check: a signed `endpoint.verification` request with a random challenge,
/// which the receiver must echo (`{"challenge": …}` or the bare value) in a 2xx answer; then
/// the URL is recorded as verified. `Err` says why it is not (yet).
async fn check_ownership(
    shared: &Shared,
    endpoint_id: &kait_core::EndpointId,
    endpoint: &PreparedEndpoint,
    started_at: Millis,
) -> Result<(), String> {
    let target = endpoint
        .target
        .as_ref()
        .map_err(|error| error.to_string())?;
    let challenge: String = {
        use rand::Rng as _;
        let mut rng = rand::rng();
        (0..32)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect()
    };
    let body = serde_json::json!({ "type": "endpoint.verification", "challenge": challenge });
    let webhook_id = format!("verify_{}", &challenge[..16]);
    let result = shared
        .sender
        .send(Webhook {
            target,
            method: Method::POST,
            msg_id: &webhook_id,
            timestamp: started_at / 1000,
            body: Bytes::from(body.to_string()),
            content_type: HeaderValue::from_static("application/json"),
            signing_key: &endpoint.signing_key,
            previous_signing_key: None,
            custom_headers: &endpoint.headers,
            message_headers: None,
            trace_parent: None,
        })
        .await;
    match &result {
        AttemptResult::Response { status, body, .. }
            if (200..300).contains(status) && echoes(body, &challenge) =>
        {
            shared
                .endpoints
                .verify(endpoint_id, &endpoint.url, now_millis())
                .await
                .map_err(|error| format!("recording the check failed: {error}"))?;
            Ok(())
        }
        AttemptResult::Response { status, .. } => Err(format!(
            "the receiver answered {status} without echoing the challenge"
        )),
        AttemptResult::NoResponse { error, .. } => Err(format!("no answer: {error}")),
    }
}

/// Whether an answer's body echoes `challenge`.
fn echoes(body: &str, challenge: &str) -> bool {
    body.trim() == challenge
        || serde_json::from_str::<serde_json::Value>(body)
            .is_ok_and(|answer| answer["challenge"] == challenge)
}

/// A delivery held back by the ownership check: not an attempt at the receiver (the retry
/// schedule is not used up), due again after [`OWNERSHIP_RECHECK_MS`], its endpoint's lane
/// paused until then.
fn waiting(
    mut delivery: ClaimedDelivery,
    started_at: Millis,
    reason: &str,
    hold_retry: bool,
) -> Finished {
    delivery.attempts_made -= 1;
    let at = started_at + OWNERSHIP_RECHECK_MS;
    let next = if hold_retry {
        NextStep::WaitHeld(at)
    } else {
        NextStep::Wait(at)
    };
    let reason = format!("waiting for the endpoint's ownership check: {reason}");
    let mut finished = without_request(delivery, started_at, &reason, next);
    finished.pause = Some(Duration::from_millis(OWNERSHIP_RECHECK_MS as u64));
    finished
}

/// The delivery's payload with its `attachments` array for this endpoint at `now`; `Err`
/// (retried) when attachments cannot be offered now (no media configured, a blob unreadable).
async fn with_attachments(
    shared: &Shared,
    delivery: &ClaimedDelivery,
    attachments: &[kait_core::Attachment],
    settings: &kait_core::MediaSettings,
    now: Millis,
) -> Result<Arc<str>, String> {
    let Some(media) = &shared.media else {
        return Err("the message has attachments but no blob store is configured".into());
    };
    let mut inline = Vec::new();
    for attachment in kait_media::webhook::inline_wanted(attachments, settings) {
        let bytes = media
            .blobs
            .read_all(attachment.id.as_str(), attachment.size)
            .await
            .map_err(|error| {
                format!(
                    "reading attachment {} to send inline: {error}",
                    attachment.id
                )
            })?;
        inline.push((attachment.id.as_str(), bytes));
    }
    let entries = kait_media::webhook::entries(
        attachments,
        delivery.endpoint_id.as_str(),
        settings,
        now / 1000,
        &media.links,
        &media.public_url,
        &inline,
    );
    kait_media::webhook::with_attachments(&delivery.payload, &entries)
        .map(Arc::from)
        .map_err(str::to_owned)
}

/// What a transformation's payload changes: for a JSON message the body is what the handler
/// returned; a raw message keeps its bytes unless the handler changed its JSON reading.
fn changed_payload(delivery: &ClaimedDelivery, returned: String) -> Option<Arc<str>> {
    if delivery.raw.is_some() {
        let before: Option<serde_json::Value> = serde_json::from_str(&delivery.payload).ok();
        let after: Option<serde_json::Value> = serde_json::from_str(&returned).ok();
        if before.is_some() && before == after {
            return None;
        }
    }
    Some(Arc::from(returned))
}

/// A payload in the XML mapping, inside the delivery's event envelope.
fn render_xml(delivery: &ClaimedDelivery, payload: &str) -> Result<Vec<u8>, String> {
    let payload: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload)
        .map_err(|error| format!("the payload cannot be rendered as XML: {error}"))?;
    let timestamp = kait_core::time::to_datetime(delivery.created_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Ok(kait_core::xml::render(
        &kait_core::xml::Envelope {
            id: delivery.msg_id.as_str(),
            event_type: &delivery.event_type,
            timestamp: &timestamp,
        },
        &payload,
    ))
}

/// What follows an attempt: done, a retry after the scheduled delay (or later, if the
/// receiver asked for a longer pause), or giving up once the schedule is exhausted.
pub fn next_step(
    schedule: &RetrySchedule,
    succeeded: bool,
    attempts_made: u32,
    receiver_pause: Option<Duration>,
    hold_retry: bool,
    now: Millis,
    unit_random: f64,
) -> NextStep {
    if succeeded {
        return NextStep::Succeeded;
    }
    match schedule.next_delay(attempts_made, unit_random) {
        Some(delay) => {
            let delay = receiver_pause.map_or(delay, |pause| delay.max(pause));
            let at = now + delay.as_millis() as Millis;
            if hold_retry {
                NextStep::RetryHeld(at)
            } else {
                NextStep::RetryAt(at)
            }
        }
        None => NextStep::GiveUp,
    }
}

fn attempt_record(
    delivery: &ClaimedDelivery,
    started_at: Millis,
    url: String,
    result: &AttemptResult,
    sent: Option<SentRequest>,
) -> Attempt {
    Attempt {
        id: AttemptId::generate(),
        msg_id: delivery.msg_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        app_id: delivery.app_id.clone(),
        url,
        status: if result.is_success() {
            DeliveryStatus::Success
        } else {
            DeliveryStatus::Fail
        },
        response_status_code: i32::from(result.status_code()),
        response: result.log_text(),
        response_duration_ms: result.duration().as_millis() as i64,
        trigger_type: delivery.trigger_type,
        created_at: started_at,
        sent,
    }
}

/// A delivery to a pipe's endpoint: the pipe runs instead of an HTTP request. Its outcome is
/// logged as the attempt (not counted by the breaker or the endpoint's health); a failed run
/// is retried on the schedule like a failed webhook.
async fn run_pipe(
    shared: &Shared,
    delivery: ClaimedDelivery,
    started_at: Millis,
    url: &str,
    hold_retry: bool,
) -> Finished {
    let outcome = match &shared.pipes {
        Some(pipes) => pipes.run_pipe(url, &delivery).await,
        None => Err("pipes are not running on this node".to_owned()),
    };
    match outcome {
        Ok(summary) => {
            let mut finished = without_request(delivery, started_at, &summary, NextStep::Succeeded);
            finished.outcome.attempt.status = DeliveryStatus::Success;
            finished.outcome.attempt.url = url.to_owned();
            finished
        }
        Err(reason) => {
            let mut finished = failed_here(shared, delivery, started_at, &reason, hold_retry);
            finished.outcome.attempt.url = url.to_owned();
            finished
        }
    }
}

/// An attempt that failed in Kait before any request (a transformation or a pipe run): retried
/// on the schedule like a failed webhook, but not the receiver's fault (no breaker, no health).
fn failed_here(
    shared: &Shared,
    delivery: ClaimedDelivery,
    started_at: Millis,
    reason: &str,
    hold_retry: bool,
) -> Finished {
    let next = next_step(
        &shared.retry_schedule,
        false,
        delivery.attempts_made,
        None,
        hold_retry,
        now_millis(),
        rand::random(),
    );
    without_request(delivery, started_at, reason, next)
}

/// Dropped on purpose (the endpoint's transformation, or the content was erased): finished,
/// neither sent nor failed.
fn canceled(delivery: ClaimedDelivery, started_at: Millis, reason: &str) -> Finished {
    let mut finished = without_request(delivery, started_at, reason, NextStep::Canceled);
    finished.outcome.attempt.status = DeliveryStatus::Canceled;
    finished
}

fn without_request(
    delivery: ClaimedDelivery,
    started_at: Millis,
    reason: &str,
    next: NextStep,
) -> Finished {
    let attempt = Attempt {
        id: AttemptId::generate(),
        msg_id: delivery.msg_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        app_id: delivery.app_id.clone(),
        url: String::new(),
        status: DeliveryStatus::Fail,
        response_status_code: 0,
        response: reason.to_owned(),
        response_duration_ms: 0,
        trigger_type: delivery.trigger_type,
        created_at: started_at,
        sent: None,
    };
    Finished {
        outcome: Outcome {
            delivery_id: delivery.delivery_id,
            attempt,
            next,
            reached_endpoint: false,
        },
        delivery,
        // Not the endpoint's fault: the breaker does not count it.
        succeeded: true,
        gone: false,
        pause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(60)])
    }

    #[test]
    fn success_ends_the_delivery() {
        assert_eq!(
            next_step(&schedule(), true, 1, None, false, 0, 0.5),
            NextStep::Succeeded
        );
    }

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let schedule = schedule();
        assert_eq!(
            next_step(&schedule, false, 1, None, false, 1_000, 0.5),
            NextStep::RetryAt(6_000)
        );
        assert_eq!(
            next_step(&schedule, false, 2, None, false, 1_000, 0.5),
            NextStep::RetryAt(61_000)
        );
        assert_eq!(
            next_step(&schedule, false, 3, None, false, 1_000, 0.5),
            NextStep::GiveUp
        );
    }

    #[test]
    fn retry_after_lengthens_but_never_shortens_the_delay() {
        let schedule = schedule();
        let long = Some(Duration::from_secs(30));
        assert_eq!(
            next_step(&schedule, false, 1, long, false, 0, 0.5),
            NextStep::RetryAt(30_000)
        );
        let short = Some(Duration::from_secs(1));
        assert_eq!(
            next_step(&schedule, false, 1, short, false, 0, 0.5),
            NextStep::RetryAt(5_000)
        );
    }

    #[test]
    fn ordered_endpoints_hold_their_retries() {
        assert_eq!(
            next_step(&schedule(), false, 1, None, true, 0, 0.5),
            NextStep::RetryHeld(5_000)
        );
    }
}
