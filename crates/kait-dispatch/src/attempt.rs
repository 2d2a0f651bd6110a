//! One attempt of one delivery: send it, and decide what happens next.

use std::sync::Arc;

use bytes::Bytes;
use kait_core::retry::RetrySchedule;
use kait_core::time::{Millis, now_millis};
use kait_core::{Attempt, AttemptId, DeliveryStatus};
use kait_deliver::{AttemptResult, Webhook};
use kait_store::{ClaimedDelivery, NextStep, Outcome};

use crate::Shared;

/// Lets a payload shared by a message's deliveries be a request body without copying it.
struct SharedPayload(Arc<str>);

impl AsRef<[u8]> for SharedPayload {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

pub async fn run(shared: &Shared, delivery: ClaimedDelivery) -> Outcome {
    let started_at = now_millis();
    let endpoint = match shared.endpoints.get(&delivery.endpoint_id).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            // Deleted: the store drops the delivery with it; this outcome finds no row.
            return outcome_without_request(
                &delivery,
                started_at,
                String::new(),
                "endpoint was deleted",
                NextStep::GiveUp,
            );
        }
        Err(error) => {
            let retry_at = started_at + 1_000;
            return outcome_without_request(
                &delivery,
                started_at,
                String::new(),
                &format!("endpoint could not be loaded: {error}"),
                NextStep::RetryAt(retry_at),
            );
        }
    };
    if endpoint.disabled {
        return outcome_without_request(
            &delivery,
            started_at,
            endpoint.url.clone(),
            "endpoint is disabled",
            NextStep::GiveUp,
        );
    }

    let result = shared
        .sender
        .send(Webhook {
            url: &endpoint.url,
            msg_id: delivery.msg_id.as_str(),
            timestamp: started_at / 1000,
            body: Bytes::from_owner(SharedPayload(delivery.payload.clone())),
            content_type: "application/json",
            signing_key: &endpoint.signing_key,
            custom_headers: &endpoint.headers,
        })
        .await;
    let succeeded = result.is_success();
    let next = next_step(
        &shared.retry_schedule,
        succeeded,
        delivery.attempts_made + 1,
        now_millis(),
        rand::random(),
    );
    if !succeeded {
        tracing::debug!(msg_id = %delivery.msg_id, endpoint_id = %delivery.endpoint_id, ?next, "attempt failed");
    }
    Outcome {
        delivery_id: delivery.delivery_id,
        attempt: attempt_record(&delivery, started_at, endpoint.url.clone(), &result),
        next,
    }
}

/// What follows an attempt: done, a retry after the scheduled delay, or giving up.
pub fn next_step(
    schedule: &RetrySchedule,
    succeeded: bool,
    attempts_made: u32,
    now: Millis,
    unit_random: f64,
) -> NextStep {
    if succeeded {
        return NextStep::Succeeded;
    }
    match schedule.next_delay(attempts_made, unit_random) {
        Some(delay) => NextStep::RetryAt(now + delay.as_millis() as Millis),
        None => NextStep::GiveUp,
    }
}

fn attempt_record(
    delivery: &ClaimedDelivery,
    started_at: Millis,
    url: String,
    result: &AttemptResult,
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
    }
}

fn outcome_without_request(
    delivery: &ClaimedDelivery,
    started_at: Millis,
    url: String,
    reason: &str,
    next: NextStep,
) -> Outcome {
    Outcome {
        delivery_id: delivery.delivery_id,
        attempt: Attempt {
            id: AttemptId::generate(),
            msg_id: delivery.msg_id.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            app_id: delivery.app_id.clone(),
            url,
            status: DeliveryStatus::Fail,
            response_status_code: 0,
            response: reason.to_owned(),
            response_duration_ms: 0,
            trigger_type: delivery.trigger_type,
            created_at: started_at,
        },
        next,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn success_ends_the_delivery() {
        let schedule = RetrySchedule::default();
        assert_eq!(next_step(&schedule, true, 1, 0, 0.5), NextStep::Succeeded);
    }

    #[test]
    fn failures_follow_the_schedule_then_give_up() {
        let schedule = RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(60)]);
        assert_eq!(
            next_step(&schedule, false, 1, 1_000, 0.5),
            NextStep::RetryAt(6_000)
        );
        assert_eq!(
            next_step(&schedule, false, 2, 1_000, 0.5),
            NextStep::RetryAt(61_000)
        );
        assert_eq!(next_step(&schedule, false, 3, 1_000, 0.5), NextStep::GiveUp);
    }
}
