//! The delivery queue: what the dispatcher claims, what it is handed at accept time, the
//! outcomes it records, and the manual ways back in (resend, recover, replay).

use std::sync::Arc;

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Attempt, EndpointId, MessageId, TriggerType};

use crate::StoreResult;

/// A delivery the dispatcher now owns until it records the outcome.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery_id: i64,
    pub endpoint_id: EndpointId,
    pub app_id: AppId,
    pub msg_id: MessageId,
    pub event_type: Arc<str>,
    /// Shared between the deliveries of one message claimed together.
    pub payload: Arc<str>,
    /// Sent instead of `payload` when set (see [`kait_core::RawPayload`]).
    pub raw: Option<Arc<kait_core::RawPayload>>,
    /// The message's attachments, shared like the payload; `None` when it has none.
    pub attachments: Option<Arc<[kait_core::Attachment]>>,
    pub ordering_key: Option<Arc<str>>,
    /// When the message was accepted (the XML envelope's timestamp).
    pub created_at: Millis,
    pub attempts_made: u32,
    pub trigger_type: TriggerType,
}

/// The result of a claim: what to send now, and when the next pending delivery falls due.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    pub deliveries: Vec<ClaimedDelivery>,
    pub next_due_at: Option<Millis>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Delivered; nothing more to do.
    Succeeded,
    /// Failed; try again at this time.
    RetryAt(Millis),
    /// Failed and out of retries (or the endpoint is gone or disabled).
    GiveUp,
    /// Dropped on purpose (the endpoint's transformation set `cancel`): finished, not failed.
    Canceled,
    /// Failed; the dispatcher keeps the delivery and tries again at this time itself, so that
    /// nothing behind it on an ordered endpoint overtakes it. It stays `Sending` in the store
    /// (and becomes due again at the next start if the process dies).
    RetryHeld(Millis),
    /// Not sent: the endpoint's receiver has not yet proven it owns the URL (the ownership
    /// check). Due again at this time, the attempt not counted against the retry schedule.
    Wait(Millis),
    /// The same for an ordered endpoint: the dispatcher keeps the delivery (as with
    /// [`NextStep::RetryHeld`]) so that nothing behind it overtakes it.
    WaitHeld(Millis),
}

/// Whether an endpoint's lane takes new deliveries handed over at accept time.
pub type HandoffFilter = Arc<dyn Fn(&EndpointId) -> bool + Send + Sync>;

/// One finished attempt to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub delivery_id: i64,
    pub attempt: Attempt,
    pub next: NextStep,
    /// Whether the attempt reached the endpoint's receiver (or failed trying), so that it
    /// counts towards the endpoint's health; false for attempts skipped because the endpoint
    /// was disabled or deleted.
    pub reached_endpoint: bool,
}

/// An endpoint the store disabled because it had failed without a success for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledEndpoint {
    pub endpoint_id: EndpointId,
    pub app_id: AppId,
    pub failing_since: Millis,
}

/// Which deliveries [`DeliveryQueue::redeliver`] makes due again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// The endpoint's failed deliveries (Svix's `recover`).
    Failed,
    /// The messages that match the endpoint's filters but were never bound for it (Svix's
    /// `replay-missing`), as new deliveries.
    Missing,
}

#[async_trait]
pub trait DeliveryQueue: Send + Sync + 'static {
    /// Claims up to `limit` deliveries due at `now` (marking them `Sending`), oldest due first,
    /// skipping the endpoints listed (those the dispatcher cannot take more work for).
    async fn claim_due(
        &self,
        now: Millis,
        limit: usize,
        skip_endpoints: Vec<EndpointId>,
    ) -> StoreResult<Claim>;
    /// Records finished attempts and moves their deliveries on, in one transaction. Shared so
    /// that a caller can retry the same batch after an error without copying it.
    /// Each endpoint remembers since when it has failed without a success; one failing for
    /// longer than `disable_after` is disabled in the same transaction and returned.
    async fn record_outcomes(
        &self,
        outcomes: Arc<[Outcome]>,
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>>;
    /// Makes a delivery of `msg_id` to `endpoint_id` due now as a manual attempt, creating it
    /// if the endpoint never had one.
    async fn resend(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        endpoint_id: &EndpointId,
    ) -> StoreResult<()>;
    /// Makes deliveries to the endpoint of the application's messages created in
    /// `[since, until)` due now, as manual attempts with a fresh retry schedule: the failed
    /// ones, or the missing ones (see [`Redelivery`]). Returns how many.
    async fn redeliver(
        &self,
        which: Redelivery,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64>;
    /// A handle that is notified whenever new deliveries fall due, so the dispatcher need
    /// not poll.
    fn due_signal(&self) -> Arc<tokio::sync::Notify>;
    /// Tells the store that the dispatcher holds nothing for this endpoint any more (no
    /// queue, no attempt in flight, breaker closed, rate budget full). A store shared by
    /// several nodes may then let another node run the endpoint; a single-node store ignores it.
    fn endpoint_idle(&self, _endpoint_id: &EndpointId) {}
    /// A queue of new deliveries the store hands straight to the dispatcher when it accepts a
    /// message, already marked `Sending`, so they need no claim (the common path on an idle
    /// lane). `accepts` tells, for an endpoint, whether its lane takes hand-offs now (not when
    /// it is full, paused or its breaker is open: those deliveries wait in the store, so memory
    /// stays bounded). A later call replaces the queue; a store without hand-offs returns
    /// `None`, and everything goes through [`DeliveryQueue::claim_due`] as always.
    fn handoff(
        &self,
        _accepts: HandoffFilter,
    ) -> Option<tokio::sync::mpsc::Receiver<ClaimedDelivery>> {
        None
    }
}
