//! The message log: accepting messages (with their fan-out into deliveries, in one
//! transaction) and reading back messages, attempts and per-endpoint delivery states.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{
    AppId, Attempt, AttemptId, DeliveryState, DeliveryStatus, EndpointId, Message, MessageId,
};

use crate::{Page, PageRequest, StoreResult};

/// Filters for message listings.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub event_types: Option<Vec<String>>,
    pub channel: Option<String>,
    pub before: Option<Millis>,
    pub after: Option<Millis>,
}

/// Filters for attempt listings. `message` filters by the attempted message's event type and
/// channel, and by the attempt's own time.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub endpoint_id: Option<EndpointId>,
    pub msg_id: Option<MessageId>,
    pub status: Option<DeliveryStatus>,
    pub message: MessageFilter,
}

/// A message to accept.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message: Message,
    /// The caller's `Idempotency-Key`: a repeat within the app returns the first message.
    pub idempotency_key: Option<String>,
    /// The source's log entry when the message is a received request (issue 13): written in
    /// the same transaction, as `Accepted`, or as `Duplicate` of the earlier message when the
    /// idempotency key matched, so a 2xx to the sender always has both.
    pub received: Option<crate::ReceivedRequest>,
    /// Deliver to this one endpoint of the application only (a pipe's `forward` to a source
    /// endpoint), whatever its event-type and channel filters say; nothing when it is
    /// disabled or gone. `None`: the usual fan-out.
    pub only_endpoint: Option<EndpointId>,
}

impl NewMessage {
    /// A message for the usual fan-out, without idempotency key or received request.
    pub fn new(message: Message) -> Self {
        Self {
            message,
            idempotency_key: None,
            received: None,
            only_endpoint: None,
        }
    }

    /// Whether accepting this message makes a delivery to `endpoint`.
    pub fn goes_to(&self, endpoint: &kait_core::Endpoint) -> bool {
        goes_to(&self.message, self.only_endpoint.as_ref(), endpoint)
    }
}

/// Whether accepting `message` (for `only_endpoint`, if set) makes a delivery to `endpoint`.
pub fn goes_to(
    message: &Message,
    only_endpoint: Option<&EndpointId>,
    endpoint: &kait_core::Endpoint,
) -> bool {
    match only_endpoint {
        Some(only) => &endpoint.id == only && !endpoint.disabled,
        None => kait_core::filter::endpoint_matches(
            endpoint,
            &message.event_type,
            message.channels.as_ref(),
        ),
    }
}

/// What accepting a message did.
#[derive(Debug, Clone)]
pub struct AcceptedMessage {
    pub message: Message,
    /// False when an `Idempotency-Key` matched and the earlier message was returned.
    pub created: bool,
    pub deliveries: usize,
}

/// A message's state at one endpoint, with the message (for `/endpoint/{id}/msg`).
#[derive(Debug, Clone)]
pub struct EndpointMessage {
    pub message: Message,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Millis>,
}

#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    /// Writes the message and one pending delivery per matching endpoint in one transaction.
    async fn create_message(&self, new_message: NewMessage) -> StoreResult<AcceptedMessage>;
    async fn get_message(
        &self,
        app_id: &AppId,
        id_or_event_id: &str,
    ) -> StoreResult<Option<Message>>;
    async fn list_messages(
        &self,
        app_id: &AppId,
        filter: MessageFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Message>>;
    async fn list_attempts(
        &self,
        app_id: &AppId,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Attempt>>;
    async fn get_attempt(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<Option<Attempt>>;
    /// The message's state at every endpoint it was bound for.
    async fn list_delivery_states(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
    ) -> StoreResult<Vec<DeliveryState>>;
    /// Messages bound for one endpoint, newest first, with their state there.
    async fn list_endpoint_messages(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<EndpointMessage>>;
    /// Erases a message's content for good (a privacy request): its payload becomes
    /// [`kait_core::ERASED_PAYLOAD`], its raw body, headers and attachment references go, and
    /// so does any remembered `Idempotency-Key` response that carried it. The record stays
    /// (id, event type, times, attempts). Deliveries still pending are canceled; one in flight
    /// finishes its attempt, and the dispatcher cancels any retry after it. `NotFound` if the
    /// application has no such message.
    async fn erase_message_content(&self, app_id: &AppId, msg_id: &MessageId) -> StoreResult<()>;
    /// Erases the response body stored with one attempt (the attempt stays). `NotFound` if the
    /// message has no such attempt.
    async fn erase_attempt_response(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<()>;
    /// Counts one endpoint's deliveries by status (`/endpoint/{id}/stats`).
    async fn endpoint_delivery_counts(
        &self,
        endpoint_id: &EndpointId,
    ) -> StoreResult<Vec<(DeliveryStatus, u64)>>;
}
