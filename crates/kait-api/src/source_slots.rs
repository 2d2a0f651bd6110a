//! Bounded work per incoming source: each source may have a few requests in progress at
//! once (`Limits::source_in_flight`); more wait briefly for a turn and are then refused with
//! 429, which providers answer by retrying later. A flood on one source thus holds a bounded
//! share of the store's writer, and other sources and the push path keep their latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// How long a request waits for one of its source's slots before it is refused.
const WAIT_FOR_SLOT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct SourceSlots {
    /// One semaphore per source that has received a request (sources are few, and only
    /// requests with a valid token get here).
    by_source: Mutex<HashMap<Box<str>, Arc<Semaphore>>>,
}

impl SourceSlots {
    /// A slot of `source_id`'s, held for the request's lifetime.
    pub async fn acquire(
        &self,
        source_id: &str,
        per_source: usize,
    ) -> Result<OwnedSemaphorePermit, ApiError> {
        let semaphore = self
            .by_source
            .lock()
            .expect("source slots")
            .entry(source_id.into())
            .or_insert_with(|| Arc::new(Semaphore::new(per_source)))
            .clone();
        match tokio::time::timeout(WAIT_FOR_SLOT, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::TooManyRequests(format!(
                "this source has {per_source} requests in progress; retry later"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_past_its_slots_waits_then_is_refused_while_others_go_on() {
        let slots = SourceSlots::default();
        let held: Vec<_> = [
            slots.acquire("src_a", 2).await.unwrap(),
            slots.acquire("src_a", 2).await.unwrap(),
        ]
        .into();
        assert!(matches!(
            slots.acquire("src_a", 2).await,
            Err(ApiError::TooManyRequests(_))
        ));
        let _other = slots.acquire("src_b", 2).await.unwrap();
        drop(held);
        let _again = slots.acquire("src_a", 2).await.unwrap();
    }
}
