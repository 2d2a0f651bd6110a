//! The cluster's reading of device messages ([`super::Ingest::Leader`]): the node that holds
//! the store's `mqtt-ingest` role connects to the cluster's one session and reads the route
//! topics; the others only stand by.
//!
//! Why one reader: with several, two messages of one device can be committed in either
//! order, and key-ordered endpoints would see them swapped. Why the broker's session: when
//! the reader dies, its successor resumes the same session, and the broker sends it what the
//! dead one had not acknowledged, then what queued meanwhile — nothing is lost and order
//! holds (a message committed but not acknowledged is stored again: at least once, with the
//! same event id where the device gives one). A reader that lost its role (its lease ran out
//! while it stalled) stops within a check; until then the broker hands the session to
//! whichever connected last, and neither reconnects without asking for the role first.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::AsyncClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::session::{self, Reads, Reconnect};
use super::{Bridge, Routes};

/// The store role of the node that reads device messages for the cluster.
pub(super) const ROLE: &str = "mqtt-ingest";
/// How often the node asks for (or confirms) the role.
const CHECK: Duration = Duration::from_secs(1);

/// The reading connection while this node holds the role.
struct Reading {
    stop: CancellationToken,
    task: JoinHandle<bool>,
}

/// Asks for the role every [`CHECK`] until shutdown; reads while it holds it.
pub(super) async fn lead(
    bridge: Arc<Bridge>,
    routes_seen: watch::Receiver<Arc<Routes>>,
    shutdown: CancellationToken,
) {
    let mut reading: Option<Reading> = None;
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    let mut next_try = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = check.tick() => {}
            () = shutdown.cancelled() => break,
        }
        // A connection that ended by itself (the broker lost) is tried again after a pause.
        if let Some(ended) = reading.take_if(|reading| reading.task.is_finished()) {
            let was_up = ended.task.await.unwrap_or(false);
            failures = if was_up {
                1
            } else {
                failures.saturating_add(1)
            };
            next_try = tokio::time::Instant::now() + session::backoff(failures);
        }
        let holds = match bridge.store.hold_role(ROLE).await {
            Ok(holds) => holds,
            Err(error) => {
                // Without the store nothing read could be committed anyway.
                tracing::warn!(%error, "asking for the MQTT reading role failed");
                false
            }
        };
        match (holds, reading.is_some()) {
            (true, false) if tokio::time::Instant::now() >= next_try => {
                match start(&bridge, &routes_seen, &shutdown) {
                    Ok(started) => {
                        tracing::info!("this node reads the device messages for the cluster");
                        reading = Some(started);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "connecting to read device messages failed")
                    }
                }
            }
            (false, true) => {
                tracing::info!("another node reads the device messages now");
                stop(reading.take()).await;
            }
            _ => {}
        }
    }
    stop(reading).await;
}

fn start(
    bridge: &Arc<Bridge>,
    routes_seen: &watch::Receiver<Arc<Routes>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<Reading> {
    let (client, events) = AsyncClient::new(bridge.config.ingest_options()?, 4096);
    let stop = shutdown.child_token();
    let task = tokio::spawn(session::drive(
        bridge.clone(),
        client,
        events,
        Reads {
            routes: true,
            replies: false,
        },
        routes_seen.clone(),
        Reconnect::Never,
        reading_gauge,
        stop.clone(),
    ));
    Ok(Reading { stop, task })
}

async fn stop(reading: Option<Reading>) {
    if let Some(reading) = reading {
        reading.stop.cancel();
        let _ = reading.task.await;
    }
}

/// `kait_mqtt_reading`: 1 while this node's connection reads device messages for the cluster.
fn reading_gauge(up: bool) {
    metrics::gauge!("kait_mqtt_reading").set(if up { 1.0 } else { 0.0 });
}
