//! Kait's dispatcher: claims due deliveries, sends them, records what happened.
//!
//! One loop claims due deliveries from the store in batches, as many as there are free
//! in-flight slots, and starts one task per delivery. Each task looks the endpoint up in an
//! [`endpoints::EndpointCache`] (checked against the store's endpoint epoch before every
//! attempt, so a change acknowledged by the API applies to the next attempt), sends through
//! `kait-deliver`, and decides the next step from the retry schedule. Outcomes go to a
//! recorder task that writes them to the store in batches.
//!
//! The loop sleeps until the store signals new due work, the earliest scheduled retry falls
//! due, or the poll interval passes (a safety net), whichever comes first.

mod attempt;
mod endpoints;
mod recorder;

use std::sync::Arc;
use std::time::Duration;

use kait_core::retry::RetrySchedule;
use kait_core::time::now_millis;
use kait_deliver::Sender;
use kait_store::Store;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::endpoints::EndpointCache;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Attempts in flight at once, over all endpoints.
    pub max_in_flight: usize,
    /// Most deliveries claimed per store round trip.
    pub claim_batch: usize,
    pub retry_schedule: RetrySchedule,
    /// Longest sleep between claims when nothing signals new work.
    pub poll_interval: Duration,
    /// How long shutdown waits for attempts in flight before leaving them to the next start.
    pub shutdown_grace: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            claim_batch: 512,
            retry_schedule: RetrySchedule::default(),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// What every attempt task shares.
struct Shared {
    sender: Sender,
    endpoints: EndpointCache,
    retry_schedule: RetrySchedule,
}

/// Runs the dispatcher until `shutdown` is cancelled.
pub async fn run(
    store: Arc<dyn Store>,
    sender: Sender,
    config: DispatcherConfig,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        endpoints: EndpointCache::new(store.clone()),
        sender,
        retry_schedule: config.retry_schedule.clone(),
    });
    let (outcomes, outcome_receiver) = mpsc::channel(config.max_in_flight.max(64) * 2);
    let recorder = tokio::spawn(recorder::run(store.clone(), outcome_receiver));
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let due = store.due_signal();

    while !shutdown.is_cancelled() {
        // Wait for at least one free slot before claiming, so claimed work starts at once.
        let first_slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("semaphore never closes"),
            _ = shutdown.cancelled() => break,
        };
        let wanted = (slots.available_permits() + 1).min(config.claim_batch);
        let claim = match store.claim_due(now_millis(), wanted).await {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(%error, "claiming due deliveries failed");
                drop(first_slot);
                tokio::select! {
                    _ = tokio::time::sleep(config.poll_interval) => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        let claimed = claim.deliveries.len();
        let mut first_slot = Some(first_slot);
        for delivery in claim.deliveries {
            let slot = match first_slot.take() {
                Some(slot) => slot,
                None => slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore never closes"),
            };
            let (shared, outcomes) = (shared.clone(), outcomes.clone());
            tokio::spawn(async move {
                let outcome = attempt::run(&shared, delivery).await;
                // The slot is freed once the outcome is queued for recording.
                let _ = outcomes.send(outcome).await;
                drop(slot);
            });
        }
        drop(first_slot);
        if claimed == wanted {
            // A full batch: more may be due right now.
            continue;
        }
        let until_next_due = claim
            .next_due_at
            .map(|due_at| Duration::from_millis((due_at - now_millis()).max(0) as u64))
            .unwrap_or(config.poll_interval)
            .min(config.poll_interval);
        tokio::select! {
            _ = due.notified() => {}
            _ = tokio::time::sleep(until_next_due) => {}
            _ = shutdown.cancelled() => break,
        }
    }

    // Let attempts in flight finish (bounded), then flush their outcomes.
    let all_slots = slots.acquire_many(config.max_in_flight as u32);
    if tokio::time::timeout(config.shutdown_grace, all_slots)
        .await
        .is_err()
    {
        tracing::warn!("attempts still in flight at shutdown will be retried on the next start");
    }
    drop(outcomes);
    let _ = recorder.await;
}
