//! The device world's deadlines: devices silent past their route's timeout go offline, and
//! commands nobody answered (or whose device never came online) end, announced by
//! `device.command.timeout` when they were asynchronous.
//!
//! The deadlines are columns of the device and command rows (see `kait-store`'s devices
//! module). The sweeper sleeps until the earliest, or until this node records an earlier one;
//! with other nodes on the same database it looks again at least every `other_nodes_check`.
//! Each transition is announced first and recorded by a conditional write, so a crash
//! announces it again as the same event, and of two nodes one records it.

use std::sync::Arc;
use std::time::Duration;

use kait_core::time::{Millis, now_millis};
use kait_store::{CommandStatus, StoreResult};
use tokio_util::sync::CancellationToken;

use super::Bridge;
use super::events::{self, Reason};

/// Deadlines handled per round.
const BATCH: usize = 256;
/// After a store error, the sweeper tries again this much later.
const RETRY: Duration = Duration::from_secs(2);
/// The longest sleep when this node is alone and nothing is due.
const IDLE: Duration = Duration::from_secs(300);

pub(super) async fn run(
    bridge: Arc<Bridge>,
    other_nodes_check: Option<Duration>,
    shutdown: CancellationToken,
) {
    loop {
        let wait = match sweep(&bridge, &shutdown).await {
            Ok(Some(true)) => Duration::ZERO,
            Ok(Some(false)) => match bridge.store.next_device_deadline().await {
                Ok(next) => until(next).min(other_nodes_check.unwrap_or(IDLE)),
                Err(error) => {
                    tracing::warn!(%error, "reading the next device deadline failed");
                    RETRY
                }
            },
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "sweeping device deadlines failed; trying again");
                RETRY
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = bridge.deadlines_changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn until(next: Option<Millis>) -> Duration {
    next.map_or(IDLE, |at| {
        Duration::from_millis((at - now_millis()).max(0) as u64)
    })
}

/// Handles what is due; `Some(true)` when a round was full (more may be due), `None` when
/// the server stops first.
async fn sweep(bridge: &Bridge, shutdown: &CancellationToken) -> StoreResult<Option<bool>> {
    let store = bridge.store.as_ref();
    let now = now_millis();
    let silent = store.silent_devices(now, BATCH).await?;
    for device in &silent {
        let Some(silent_at) = device.silent_at else {
            continue;
        };
        let since = format!("{}-{silent_at}", device.changed_at);
        let announced = events::offline(
            store,
            &device.app_id,
            &device.device,
            &since,
            device.last_seen_at,
            Reason::Silence,
            shutdown,
        )
        .await;
        if announced.is_none() {
            return Ok(None);
        }
        let recorded = store
            .device_offline(
                &device.app_id,
                &device.device,
                Some(silent_at),
                now_millis(),
            )
            .await?;
        if !recorded
            && store
                .get_device(&device.app_id, &device.device)
                .await?
                .is_some_and(|now| now.online)
        {
            // It spoke just after its deadline: it was offline for a moment, and is back.
            let back = format!("after-{since}");
            let announced = events::online(
                store,
                &device.app_id,
                &device.device,
                &back,
                Reason::Message,
                shutdown,
            )
            .await;
            if announced.is_none() {
                return Ok(None);
            }
        }
    }
    let due = store.due_device_commands(now, BATCH).await?;
    for command in &due {
        let ended = if command.status == CommandStatus::Queued {
            CommandStatus::Expired
        } else {
            CommandStatus::TimedOut
        };
        if command.asynchronous {
            let mut finished = command.clone();
            finished.status = ended;
            finished.finished_at = Some(now);
            if events::command_outcome(store, &finished, shutdown)
                .await
                .is_none()
            {
                return Ok(None);
            }
        }
        store
            .finish_device_command(&command.id, ended, None, now)
            .await?;
    }
    Ok(Some(silent.len() == BATCH || due.len() == BATCH))
}
