//! One connection to the broker: subscribed to what it reads, reconnecting with backoff, and
//! handing each publish to a batch handler of its own (`ingest.rs`), which acknowledges on the
//! same connection: an acknowledgement counts only on the session that received the publish.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Bridge, MqttConfig, Routes, ingest};

/// What a connection subscribes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reads {
    /// The routes' topics (device messages).
    pub routes: bool,
    /// The replies to commands.
    pub replies: bool,
}

/// What a connection does when the broker is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reconnect {
    /// Try again with backoff, until stopped.
    Always,
    /// Return: whoever started it decides (the reader for the cluster first makes sure it
    /// still holds its role, or two nodes would take the one session from each other).
    Never,
}

/// Most publishes waiting for the handler (the broker's in-flight window is smaller: it sends
/// no more until acknowledged).
const WAITING: usize = 1024;

/// Drives `events` until `stop` (or, with [`Reconnect::Never`], until the connection is
/// lost); `connected` is told of each change. Returns whether it was ever connected.
#[allow(clippy::too_many_arguments)]
pub(super) async fn drive(
    bridge: Arc<Bridge>,
    client: AsyncClient,
    events: EventLoop,
    reads: Reads,
    mut routes_seen: watch::Receiver<Arc<Routes>>,
    reconnect: Reconnect,
    connected: impl Fn(bool),
    stop: CancellationToken,
) -> bool {
    let (publishes, arrived) = tokio::sync::mpsc::channel(WAITING);
    let handler = tokio::spawn(ingest::handle_batches(
        bridge.clone(),
        client.clone(),
        routes_seen.clone(),
        arrived,
        stop.clone(),
    ));
    let config = &bridge.config;
    let mut subscribed = BTreeSet::new();
    let mut is_up = false;
    let mut ever_up = false;
    let mut failures = 0u32;
    // `EventLoop::poll` is not cancel-safe while it connects: dropped by another branch of
    // the select below (a route change at start-up), it left its half-made connection open
    // and the next poll connected again with the same client id, so the broker closed the
    // first and, in a run seen, dropped messages queued for this session. Held in a stream,
    // a poll that loses the race is resumed, not restarted.
    let mut events = std::pin::pin!(futures_util::stream::unfold(
        events,
        |mut events| async move {
            let event = events.poll().await;
            Some((event, events))
        }
    ));
    connected(false);
    loop {
        tokio::select! {
            Some(event) = events.next() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    (is_up, ever_up) = (true, true);
                    connected(true);
                    tracing::info!(host = %config.host, port = config.port, routes = reads.routes, "connected to the MQTT broker");
                    // The session may have kept them; subscribing again is harmless.
                    subscribed.clear();
                    let routes = routes_seen.borrow_and_update().clone();
                    resubscribe(&client, config, reads, &routes, &mut subscribed).await;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publishes.send(publish).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    is_up = false;
                    connected(false);
                    if reconnect == Reconnect::Never {
                        tracing::warn!(%error, "the MQTT broker was lost");
                        break;
                    }
                    failures = failures.saturating_add(1);
                    let pause = backoff(failures);
                    tracing::warn!(%error, retry_in = ?pause, "the MQTT broker is not reachable");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => break,
                    }
                }
            },
            Ok(()) = routes_seen.changed() => {
                if is_up {
                    let routes = routes_seen.borrow_and_update().clone();
                    resubscribe(&client, config, reads, &routes, &mut subscribed).await;
                }
            }
            () = stop.cancelled() => break,
        }
    }
    // The handler finishes the batch in hand (or stops with the server): what it did not
    // acknowledge the broker sends again, to this session's next holder.
    drop(publishes);
    let _ = handler.await;
    let _ = client.try_disconnect();
    connected(false);
    ever_up
}

/// The pause before the `failures`th attempt to reconnect: 200 ms doubling to 10 s.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * 2u64.pow(failures.min(7))).min(Duration::from_secs(10))
}

/// Subscribes to what the connection reads and unsubscribes from what it no longer needs.
async fn resubscribe(
    client: &AsyncClient,
    config: &MqttConfig,
    reads: Reads,
    routes: &Routes,
    subscribed: &mut BTreeSet<String>,
) {
    let mut wanted = BTreeSet::new();
    if reads.routes {
        wanted.extend(
            routes
                .routes
                .iter()
                .map(|(_, route)| config.subscription(&route.topic.filter())),
        );
    }
    if reads.replies {
        wanted.insert(config.reply_topic.filter());
    }
    for filter in wanted.difference(subscribed) {
        if let Err(error) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
            tracing::warn!(%error, filter, "subscribing failed");
        }
    }
    for filter in subscribed.difference(&wanted) {
        if let Err(error) = client.unsubscribe(filter.clone()).await {
            tracing::warn!(%error, filter, "unsubscribing failed");
        }
    }
    *subscribed = wanted;
}
