//! Pull positions: reading an application's messages in commit order for polling endpoints,
//! and where each named consumer stands.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Endpoint, EndpointId, Message};

use crate::{MessageFilter, StoreResult};

#[async_trait]
pub trait PullPositions: Send + Sync + 'static {
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
}
