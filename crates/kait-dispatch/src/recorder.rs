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
/// How long the first outcome of a batch waits for others when nothing waits on it: only the
/// attempt log and the delivery's state wait, never a webhook. At a trickle each outcome
/// would otherwise be a write transaction of its own; 50 ms makes batches of five at
/// 100 messages/s (see BENCHMARKS.md, "cheap when quiet").
const QUIET_LINGER: Duration = Duration::from_millis(50);
/// How long a batch waits when it holds an outcome something waits on: the next delivery of
/// an ordered lane is claimed only once the one before it has left `Sending`.
const PROMPT_LINGER: Duration = Duration::from_millis(5);
/// A batch this large is written without waiting out the linger: at high rates waiting buys
/// nothing more, and a large batch holds the SQLite writer, and the ingest commits queued
/// behind it, longer.
const ENOUGH_TO_WRITE: usize = 16;
const RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_TRIES: u32 = 50;

/// An attempt's outcome on its way to the store.
pub struct ToRecord {
    pub outcome: Outcome,
    /// Whether the next delivery waits for this one to be written (ordered lanes).
    pub prompt: bool,
}

/// Waits for the next outcomes and gathers a batch of them into `batch`. Waiting a moment
/// for more makes batches at a trickle; the webhook has arrived already, so only the log
/// waits, and not long when a lane waits on it. Returns false once every sender is gone.
async fn gather(
    arrivals: &mut mpsc::Receiver<ToRecord>,
    arrived: &mut Vec<ToRecord>,
    batch: &mut Vec<Outcome>,
) -> bool {
    if arrivals.recv_many(arrived, MAX_OUTCOMES_PER_BATCH).await == 0 {
        return false;
    }
    let mut deadline = tokio::time::Instant::now() + QUIET_LINGER;
    loop {
        if arrived.iter().any(|item| item.prompt) {
            deadline = deadline.min(tokio::time::Instant::now() + PROMPT_LINGER);
        }
        batch.extend(arrived.drain(..).map(|item| item.outcome));
        if batch.len() >= ENOUGH_TO_WRITE {
            return true;
        }
        let room = MAX_OUTCOMES_PER_BATCH - batch.len();
        match tokio::time::timeout_at(deadline, arrivals.recv_many(arrived, room)).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

pub async fn run(
    store: Arc<dyn DeliveryQueue>,
    mut arrivals: mpsc::Receiver<ToRecord>,
    disable_after: Option<Millis>,
    ops: OperationalEvents,
) {
    let mut arrived = Vec::with_capacity(MAX_OUTCOMES_PER_BATCH);
    let mut batch = Vec::with_capacity(MAX_OUTCOMES_PER_BATCH);
    while gather(&mut arrivals, &mut arrived, &mut batch).await {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kait_core::{AppId, Attempt, AttemptId, DeliveryStatus, EndpointId, MessageId};
    use kait_store::{NextStep, Outcome};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;

    fn item(delivery_id: i64, prompt: bool) -> ToRecord {
        let attempt = Attempt {
            id: AttemptId::generate(),
            msg_id: MessageId::generate(),
            endpoint_id: EndpointId::generate(),
            app_id: AppId::generate(),
            url: "http://127.0.0.1:9/".into(),
            status: DeliveryStatus::Success,
            response_status_code: 200,
            response: String::new(),
            response_duration_ms: 1,
            trigger_type: kait_core::TriggerType::Scheduled,
            created_at: 0,
            sent: None,
        };
        ToRecord {
            outcome: Outcome {
                delivery_id,
                attempt,
                next: NextStep::Succeeded,
                reached_endpoint: true,
            },
            prompt,
        }
    }

    /// Sends `items` one every `gap` from a task, as attempts finishing at a trickle would.
    fn trickle(items: Vec<ToRecord>, gap: Duration) -> mpsc::Receiver<ToRecord> {
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(async move {
            for item in items {
                sender.send(item).await.unwrap();
                tokio::time::sleep(gap).await;
            }
            // Held open, as the dispatcher holds it, so only the linger ends a batch.
            std::future::pending::<()>().await;
        });
        receiver
    }

    async fn batch_of(receiver: &mut mpsc::Receiver<ToRecord>) -> (Vec<i64>, Duration) {
        let (mut arrived, mut batch) = (Vec::new(), Vec::new());
        let started = Instant::now();
        assert!(gather(receiver, &mut arrived, &mut batch).await);
        let ids = batch.iter().map(|outcome| outcome.delivery_id).collect();
        (ids, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_waits_out_the_linger_in_one_batch() {
        let items = (1..=4).map(|id| item(id, false)).collect();
        let mut receiver = trickle(items, Duration::from_millis(10));
        let (ids, took) = batch_of(&mut receiver).await;
        assert_eq!(ids, [1, 2, 3, 4], "four outcomes 10 ms apart, one write");
        assert_eq!(took, QUIET_LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_a_lane_waits_on_cuts_the_linger_short() {
        let items = vec![item(1, false), item(2, true), item(3, false)];
        let mut receiver = trickle(items, Duration::from_millis(2));
        let (ids, took) = batch_of(&mut receiver).await;
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(took, Duration::from_millis(2) + PROMPT_LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_enough_batch_is_written_at_once() {
        let items = (0..ENOUGH_TO_WRITE as i64 + 4)
            .map(|id| item(id, false))
            .collect();
        let mut receiver = trickle(items, Duration::from_millis(1));
        let (ids, took) = batch_of(&mut receiver).await;
        assert_eq!(ids.len(), ENOUGH_TO_WRITE);
        assert!(took < QUIET_LINGER, "{took:?}");
        let (rest, _) = batch_of(&mut receiver).await;
        assert_eq!(rest.len(), 4, "the next batch takes the rest");
    }
}
