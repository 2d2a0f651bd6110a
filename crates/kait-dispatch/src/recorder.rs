//! Writes attempt outcomes to the store in batches.
//!
//! Attempt tasks hand their outcome over a channel; this task drains whatever has arrived and
//! records it in one store call, so a burst of deliveries costs a few commits, not one each.

use std::sync::Arc;
use std::time::Duration;

use kait_core::time::Millis;
use kait_store::operational::OperationalEvents;
use kait_store::{DeliveryQueue, Outcome};
use tokio::sync::mpsc;

const MAX_OUTCOMES_PER_BATCH: usize = 2048;
/// How long the first outcome of a batch waits for others.
const LINGER: Duration = Duration::from_millis(5);
const RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_TRIES: u32 = 50;

pub async fn run(
    store: Arc<dyn DeliveryQueue>,
    mut outcomes: mpsc::Receiver<Outcome>,
    disable_after: Option<Millis>,
    ops: OperationalEvents,
) {
    let mut batch = Vec::with_capacity(MAX_OUTCOMES_PER_BATCH);
    while outcomes.recv_many(&mut batch, MAX_OUTCOMES_PER_BATCH).await > 0 {
        // At a trickle every outcome would be a transaction of its own; waiting a moment for
        // more makes batches of them. The webhook has arrived already: only the log waits.
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_OUTCOMES_PER_BATCH {
            let room = MAX_OUTCOMES_PER_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, outcomes.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let pending: Arc<[Outcome]> = batch.drain(..).collect();
        let mut tries = 0;
        loop {
            match store.record_outcomes(pending.clone(), disable_after).await {
                Ok(disabled) => {
                    for endpoint in disabled {
                        tracing::warn!(endpoint_id = %endpoint.endpoint_id, "endpoint failed for too long and was disabled");
                        ops.emit(
                            "endpoint.disabled",
                            &endpoint.app_id,
                            serde_json::json!({
                                "appId": endpoint.app_id,
                                "endpointId": endpoint.endpoint_id,
                                "failSince": kait_core::time::to_datetime(endpoint.failing_since),
                                "trigger": "automatic",
                            }),
                        )
                        .await;
                    }
                    break;
                }
                Err(error) if tries < MAX_TRIES => {
                    tries += 1;
                    tracing::error!(%error, tries, "recording attempt outcomes failed; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(error) => {
                    // The deliveries stay `Sending` and are made due again on the next start.
                    tracing::error!(%error, "giving up recording attempt outcomes");
                    break;
                }
            }
        }
    }
}
