//! Housekeeping: retention, expiry, the counts behind health and metrics, and closing.

use async_trait::async_trait;
use kait_core::DeliveryStatus;
use kait_core::time::Millis;

use crate::StoreResult;

/// Pending deliveries in the store, by whether they are due yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    pub due: u64,
    pub scheduled: u64,
}

#[async_trait]
pub trait Housekeeping: Send + Sync + 'static {
    /// Deletes what has expired at `now`: remembered `Idempotency-Key` responses older than
    /// `idempotency_lifetime` and expired app-scoped tokens. Returns how many rows went.
    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64>;
    /// Deletes up to `batch` attempts created before `attempts_before` (and as many entries of
    /// the sources' received logs, and of device commands that ended, from before then), and
    /// up to `batch`
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
