//! Endpoint health: each endpoint remembers since when it has failed without a success, and
//! one that has failed for longer than the configured time is disabled.

use std::collections::HashMap;

use kait_core::time::Millis;
use kait_core::{DeliveryStatus, EndpointId};

use crate::Outcome;

/// What a batch of outcomes says about one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Its last counted attempt in the batch succeeded: it is healthy again.
    Recovered,
    /// Its last counted attempt failed at this time: failing since then, unless it already was.
    Failing(Millis),
}

/// Folds a batch into one verdict per endpoint: the last outcome that reached the endpoint
/// decides (attempts skipped because the endpoint was disabled or deleted do not count).
/// Sorted by endpoint id, so that concurrent batches touch endpoint rows in the same order
/// and cannot deadlock.
pub fn fold(outcomes: &[Outcome]) -> Vec<(&EndpointId, Health)> {
    let mut last: HashMap<&EndpointId, Health> = HashMap::new();
    for outcome in outcomes.iter().filter(|outcome| outcome.reached_endpoint) {
        let attempt = &outcome.attempt;
        let health = if attempt.status == DeliveryStatus::Success {
            Health::Recovered
        } else {
            Health::Failing(attempt.created_at)
        };
        last.insert(&attempt.endpoint_id, health);
    }
    let mut verdicts: Vec<_> = last.into_iter().collect();
    verdicts.sort_unstable_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
    verdicts
}

/// Whether an endpoint failing since `failing_since` is to be disabled at `now`.
pub fn should_disable(
    failing_since: Millis,
    already_disabled: bool,
    now: Millis,
    disable_after: Option<Millis>,
) -> bool {
    match disable_after {
        Some(after) => !already_disabled && failing_since <= now.saturating_sub(after),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NextStep;
    use kait_core::{AppId, Attempt, AttemptId, MessageId, TriggerType};

    fn outcome(
        endpoint: &EndpointId,
        status: DeliveryStatus,
        at: Millis,
        reached: bool,
    ) -> Outcome {
        Outcome {
            delivery_id: 1,
            attempt: Attempt {
                id: AttemptId::generate(),
                msg_id: MessageId::generate(),
                endpoint_id: endpoint.clone(),
                app_id: AppId::generate(),
                url: String::new(),
                status,
                response_status_code: 500,
                response: String::new(),
                response_duration_ms: 0,
                trigger_type: TriggerType::Scheduled,
                created_at: at,
                sent: None,
            },
            next: NextStep::GiveUp,
            reached_endpoint: reached,
        }
    }

    #[test]
    fn the_last_counted_outcome_per_endpoint_decides() {
        let (a, b, c) = (
            EndpointId::generate(),
            EndpointId::generate(),
            EndpointId::generate(),
        );
        let batch = [
            outcome(&a, DeliveryStatus::Fail, 10, true),
            outcome(&a, DeliveryStatus::Success, 11, true),
            outcome(&b, DeliveryStatus::Success, 12, true),
            outcome(&b, DeliveryStatus::Fail, 13, true),
            // Skipped (endpoint disabled): says nothing about c's receiver.
            outcome(&c, DeliveryStatus::Fail, 14, false),
        ];
        let verdicts = fold(&batch);
        let mut expected = vec![(&a, Health::Recovered), (&b, Health::Failing(13))];
        expected.sort_unstable_by(|(x, _), (y, _)| x.as_str().cmp(y.as_str()));
        assert_eq!(verdicts, expected);
    }

    #[test]
    fn disables_only_enabled_endpoints_failing_long_enough() {
        assert!(should_disable(100, false, 1_100, Some(1_000)));
        assert!(!should_disable(101, false, 1_100, Some(1_000)));
        assert!(!should_disable(100, true, 1_100, Some(1_000)));
        assert!(!should_disable(0, false, 1_100, None));
    }
}
