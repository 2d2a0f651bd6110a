//! How an attempt's outcome moves its delivery on.

use kait_core::DeliveryStatus;
use kait_core::time::Millis;

use crate::NextStep;

/// The delivery's status after an attempt and when it is next due (`None` when finished).
pub fn after_attempt(next: NextStep) -> (DeliveryStatus, Option<Millis>) {
    match next {
        NextStep::Succeeded => (DeliveryStatus::Success, None),
        NextStep::RetryAt(due_at) => (DeliveryStatus::Pending, Some(due_at)),
        NextStep::GiveUp => (DeliveryStatus::Fail, None),
        NextStep::Canceled => (DeliveryStatus::Canceled, None),
        // Still owned by the dispatcher, which retries it in place; it stays `Sending` so no
        // claim takes it (and a restart makes it due again).
        NextStep::RetryHeld(due_at) | NextStep::WaitHeld(due_at) => {
            (DeliveryStatus::Sending, Some(due_at))
        }
        NextStep::Wait(due_at) => (DeliveryStatus::Pending, Some(due_at)),
    }
}

/// How much the step adds to the delivery's count of attempts: a wait for the ownership
/// check is not an attempt at the receiver.
pub fn counted(next: NextStep) -> i64 {
    match next {
        NextStep::Wait(_) | NextStep::WaitHeld(_) => 0,
        _ => 1,
    }
}

/// When a message's delivery is next attempted, as its state at one endpoint shows it: only
/// while it waits (or is being sent, its due time then being the retry it holds).
pub fn next_attempt_at(status: DeliveryStatus, due_at: Option<Millis>) -> Option<Millis> {
    match status {
        DeliveryStatus::Pending | DeliveryStatus::Sending => due_at,
        DeliveryStatus::Success | DeliveryStatus::Fail | DeliveryStatus::Canceled => None,
    }
}

/// When a message is next attempted at an endpoint, as the endpoint's message list shows it:
/// only while it waits in the queue.
pub fn queued_until(status: DeliveryStatus, due_at: Option<Millis>) -> Option<Millis> {
    (status == DeliveryStatus::Pending)
        .then_some(due_at)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_step_has_its_status_and_due_time() {
        assert_eq!(
            after_attempt(NextStep::Succeeded),
            (DeliveryStatus::Success, None)
        );
        assert_eq!(
            after_attempt(NextStep::RetryAt(5)),
            (DeliveryStatus::Pending, Some(5))
        );
        assert_eq!(
            after_attempt(NextStep::GiveUp),
            (DeliveryStatus::Fail, None)
        );
        assert_eq!(
            after_attempt(NextStep::Canceled),
            (DeliveryStatus::Canceled, None)
        );
        assert_eq!(
            after_attempt(NextStep::RetryHeld(7)),
            (DeliveryStatus::Sending, Some(7))
        );
        assert_eq!(next_attempt_at(DeliveryStatus::Sending, Some(3)), Some(3));
        assert_eq!(next_attempt_at(DeliveryStatus::Fail, Some(3)), None);
        assert_eq!(queued_until(DeliveryStatus::Pending, Some(4)), Some(4));
        assert_eq!(queued_until(DeliveryStatus::Sending, Some(4)), None);
        assert_eq!(
            after_attempt(NextStep::Wait(5)),
            (DeliveryStatus::Pending, Some(5))
        );
        assert_eq!(
            (counted(NextStep::Wait(5)), counted(NextStep::RetryAt(5))),
            (0, 1)
        );
    }
}
