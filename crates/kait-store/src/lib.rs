//! Kait's durable store: one [`Store`] trait, with the embedded SQLite implementation and the
//! PostgreSQL one (many nodes on one database) beside it.
//!
//! Everything above this crate (API, dispatcher) talks to `Arc<dyn Store>` and never sees SQL;
//! only this crate writes SQL. A successful write returns only after its transaction has been
//! committed and synced, so "acknowledged" always means "durable".
//!
//! The queue lives here too: a message and its deliveries (one per matching endpoint) are
//! written in the same transaction, the dispatcher claims due deliveries in batches, and
//! records each attempt's outcome, again in batches.

use std::sync::Arc;

use async_trait::async_trait;
use kait_core::access::Capabilities;
use kait_core::time::Millis;
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryState, DeliveryStatus, Endpoint, EndpointId,
    EventType, Message, MessageId, TriggerType,
};

pub mod app_signals;
#[cfg(test)]
mod fixtures;
mod listing;
pub mod operational;
pub mod postgres;
pub mod sealing;
pub mod sqlite;

pub use postgres::{PgOptions, PgStore};
pub use sqlite::{SqliteOptions, SqliteStore};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique field (`uid`, event type name, `eventId`) is already taken.
    #[error("{0}")]
    Conflict(String),
    /// A configured limit would be exceeded.
    #[error("{0}")]
    LimitReached(String),
    /// The record to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database failed; the operation had no effect.
    #[error("database error: {0}")]
    Database(String),
    /// The store is shutting down or its writer stopped.
    #[error("store is closed")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Sort order of a listing, Svix's `order` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// Which page of a listing to return. The iterator is an item's id (or name): the page
/// starts after it, or before it when `reverse` is set (Svix's `prevIterator`).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub iterator: Option<String>,
    pub reverse: bool,
    pub order: Order,
}

/// A page of results and whether more exist past its end.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub done: bool,
}

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
    /// Failed; the dispatcher keeps the delivery and tries again at this time itself, so that
    /// nothing behind it on an ordered endpoint overtakes it. It stays `Sending` in the store
    /// (and becomes due again at the next start if the process dies).
    RetryHeld(Millis),
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

/// A response to a POST with an `Idempotency-Key`, kept so that a repeat gets it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    /// The application the request acted on (resolved from the path), so the entry goes
    /// when the application does and never answers for a later one with the same `uid`.
    pub app_id: Option<AppId>,
    /// A hash of the request body: a repeat with another body is refused, not answered.
    pub fingerprint: String,
    pub status: u16,
    pub body: Vec<u8>,
}

/// An app-scoped token to remember (by its hash).
#[derive(Debug, Clone)]
pub struct NewAppToken {
    pub app_id: AppId,
    pub token_hash: String,
    pub expires_at: Millis,
    pub capabilities: Capabilities,
    /// Svix's `sessionId`: `expire-all` may name sessions to expire only their tokens.
    pub session_id: Option<String>,
}

/// What a presented, unexpired app-scoped token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTokenGrant {
    pub app_id: AppId,
    pub capabilities: Capabilities,
}

/// An endpoint the store disabled because it had failed without a success for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisabledEndpoint {
    pub endpoint_id: EndpointId,
    pub app_id: AppId,
    pub failing_since: Millis,
}

/// The one interface to durable state. Implementations must make every write durable before
/// returning and must be safe to call from many tasks at once.
/// Pending deliveries in the store, by whether they are due yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub due: u64,
    pub scheduled: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Applications.
    async fn create_application(&self, application: Application) -> StoreResult<Application>;
    /// Looks an application up by id, or by `uid` when the key is not an `app_` id.
    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>>;
    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>>;
    /// Replaces every field but id and `created_at`.
    async fn update_application(&self, application: Application) -> StoreResult<Application>;
    /// Deletes the application with its endpoints, messages, deliveries and attempts.
    async fn delete_application(&self, id: &AppId) -> StoreResult<()>;

    // Event types.
    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType>;
    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>>;
    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>>;
    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType>;
    /// Removes an event type for good (archiving is an update).
    async fn expunge_event_type(&self, name: &str) -> StoreResult<()>;

    // Endpoints.
    /// Creates an endpoint unless its application already has `max_per_app`.
    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint>;
    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>>;
    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>>;
    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint>;
    /// Deletes an endpoint and its pending deliveries; its attempts stay in the log.
    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()>;
    /// A number that changes whenever any application or endpoint changes (on any node), so
    /// the dispatcher's endpoint cache and the API's application cache can tell that they are
    /// stale. It moves after the change commits and before the change is acknowledged.
    fn config_epoch(&self) -> u64;

    // Messages.
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

    // Deliveries and attempts.
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
    /// Makes the endpoint's failed deliveries of messages created in `[since, until)` due now
    /// again, as manual attempts with a fresh retry schedule. Returns how many.
    async fn recover(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64>;
    /// Creates deliveries to the endpoint for the application's messages created in
    /// `[since, until)` that match its filters and were never bound for it. Returns how many.
    async fn replay_missing(
        &self,
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
    /// `None`, and everything goes through [`Store::claim_due`] as always.
    fn handoff(
        &self,
        _accepts: HandoffFilter,
    ) -> Option<tokio::sync::mpsc::Receiver<ClaimedDelivery>> {
        None
    }

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

    /// Counts one endpoint's deliveries by status (`/endpoint/{id}/stats`).
    async fn endpoint_delivery_counts(
        &self,
        endpoint_id: &EndpointId,
    ) -> StoreResult<Vec<(DeliveryStatus, u64)>>;

    /// The response first given to a POST with this `Idempotency-Key` and request line, if it
    /// was given after `not_before`.
    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>>;
    /// Remembers the response to a POST with an `Idempotency-Key` (the first one wins).
    /// Deleting its application deletes it.
    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()>;

    // App-scoped tokens.
    /// Remembers a token (by its hash) confined to one application, with its capabilities.
    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()>;
    /// What a token grants, if it exists and has not expired at `now`.
    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>>;
    /// Makes the application's tokens (only those of `session_ids`, if given) expire at
    /// `expires_at` at the latest. Returns how many tokens it shortened.
    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64>;

    // The pull API.
    /// Up to `limit` messages of the endpoint's application committed after position
    /// `after`, that match the endpoint's filters and `filter`, in commit order, each with its
    /// position. Positions only grow with commit order, so following them sees every message
    /// exactly once even while others are being written.
    async fn poll_messages(
        &self,
        endpoint: &Endpoint,
        after: i64,
        filter: MessageFilter,
        limit: usize,
    ) -> StoreResult<Vec<(i64, Message)>>;
    /// The position of the last message created at or before `at` (0 if none).
    async fn position_at(&self, app_id: &AppId, at: Millis) -> StoreResult<i64>;
    /// Where a named consumer of a polling endpoint stands (0 if it never polled).
    async fn consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
    ) -> StoreResult<i64>;
    /// Moves a named consumer; a new consumer is refused with `LimitReached` when the
    /// endpoint already has `max_consumers` (consumer names are the caller's to choose, so
    /// without a bound one token could fill the table).
    async fn set_consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
        position: i64,
        max_consumers: usize,
    ) -> StoreResult<()>;
    /// Changes whenever a commit added messages to `app_id` (on any node): long-polls and
    /// streams of that application wait on it, and nobody else is woken.
    fn message_signal(&self, app_id: &AppId) -> tokio::sync::watch::Receiver<u64>;

    /// Deletes what has expired at `now`: remembered `Idempotency-Key` responses older than
    /// `idempotency_lifetime` and expired app-scoped tokens. Returns how many rows went.
    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64>;

    /// Deletes up to `batch` attempts created before `attempts_before`, and up to `batch`
    /// messages created before `messages_before` whose deliveries are all finished (with those
    /// deliveries and their `Idempotency-Key`). Returns how many rows went; the caller repeats
    /// until fewer than `batch` go, so each call stays short and delivery is never blocked long.
    async fn purge_history(
        &self,
        messages_before: Option<Millis>,
        attempts_before: Option<Millis>,
        batch: usize,
    ) -> StoreResult<u64>;

    /// Counts deliveries by status (for health, metrics and tests).
    async fn delivery_counts(&self) -> StoreResult<Vec<(DeliveryStatus, u64)>>;

    /// Pending deliveries due by `now` and those scheduled later (retries, delays): the
    /// queue-depth gauges. A count over the pending-due index, so it is read every few
    /// seconds, not per scrape.
    async fn queue_depth(&self, now: Millis) -> StoreResult<QueueDepth>;

    /// Called once after the dispatcher stopped: a store shared by several nodes hands what
    /// this node still holds back to the others at once, instead of after its lease expires.
    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
}
