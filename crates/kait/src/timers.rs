//! Fires pipes' timers (`delay`, `expect`): claims the due ones from the store under a lease,
//! runs each through the pipe engine, and finishes it.
//!
//! Once, and not lost: a timer is claimed by one node at a time (the store's lease), removed
//! only after its actions ran, and a node that dies while firing leaves it to be claimed
//! again when the lease ends; the actions it runs are safe to repeat (see `kait-pipe`'s
//! engine). A timer due while the server was down is simply due at start-up. The runner
//! sleeps until the earliest timer is due, or until this node writes an earlier one; with
//! other nodes on the same database (which may write earlier timers) it looks again at least
//! every `other_nodes_check`.

use std::sync::Arc;
use std::time::Duration;

use kait_core::time::{Millis, now_millis};
use kait_pipe::Engine;
use kait_store::{Store, Timer};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a claim holds a timer; a firing that did not finish by then is tried again.
const LEASE: Duration = Duration::from_secs(30);
/// Timers claimed per round.
const BATCH: usize = 1024;
/// Timers of a round firing at once. Each firing writes (its messages, its run), on the
/// same store writer as ingest: a whole round at once would queue a thousand writes ahead
/// of every API request, while a few dozen keep the writer's group commits just as full.
const FIRING_AT_ONCE: usize = 16;
/// After a store error, the runner tries again this much later.
const RETRY: Duration = Duration::from_secs(2);
/// The longest sleep when this node is alone and no timer is waiting.
const IDLE: Duration = Duration::from_secs(300);

pub async fn run(
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    timers_changed: Arc<Notify>,
    other_nodes_check: Option<Duration>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match fire_due(&store, &engine).await {
            Ok(true) => Duration::ZERO,
            Ok(false) => match store.next_timer_at().await {
                Ok(next) => sleep_until(next, other_nodes_check),
                Err(error) => {
                    tracing::warn!(%error, "reading the next timer failed");
                    RETRY
                }
            },
            Err(error) => {
                tracing::warn!(%error, "claiming timers failed; trying again");
                RETRY
            }
        };
        if wait.is_zero() {
            if shutdown.is_cancelled() {
                return;
            }
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = timers_changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn sleep_until(next: Option<Millis>, other_nodes_check: Option<Duration>) -> Duration {
    let until_next = next.map_or(IDLE, |at| {
        Duration::from_millis((at - now_millis()).max(0) as u64)
    });
    until_next.min(other_nodes_check.unwrap_or(IDLE))
}

/// Fires one batch of due timers; returns whether the batch was full (more may be due).
async fn fire_due(store: &Arc<dyn Store>, engine: &Arc<Engine>) -> kait_store::StoreResult<bool> {
    let now = now_millis();
    let timers = store
        .claim_timers(now, BATCH, now + LEASE.as_millis() as Millis)
        .await?;
    let full = timers.len() == BATCH;
    let mut waiting = timers.into_iter();
    let mut firing = JoinSet::new();
    let mut fired = Vec::with_capacity(BATCH);
    loop {
        while firing.len() < FIRING_AT_ONCE {
            let Some(timer) = waiting.next() else { break };
            let engine = engine.clone();
            firing.spawn(async move { fire(&engine, timer).await });
        }
        match firing.join_next().await {
            Some(Ok(Some(timer))) => fired.push(timer),
            Some(_) => {}
            None => break,
        }
    }
    if !fired.is_empty() {
        // If this fails they fire again after the lease; their actions are safe to repeat.
        store.finish_timers(&fired).await?;
        metrics::counter!("kait_timers_fired_total").increment(fired.len() as u64);
    }
    Ok(full)
}

/// Runs one timer's actions; returns it if it is done (to be removed).
async fn fire(engine: &Engine, timer: Timer) -> Option<Timer> {
    let lateness = now_millis() - timer.due_at;
    metrics::histogram!("kait_timer_lateness_seconds").record(lateness.max(0) as f64 / 1000.0);
    match engine.on_timer(&timer).await {
        Ok(_) => Some(timer),
        Err(reason) => {
            tracing::warn!(timer = %timer.id, %reason, "a timer's actions failed; it fires again after its lease");
            None
        }
    }
}
