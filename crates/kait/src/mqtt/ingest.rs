//! Publishes in: each batch of what the broker sent is read through the routes, its devices'
//! presence recorded (announcing those that came online, and sending what waited for them),
//! its messages stored in arrival order, its replies handed to their commands; then the
//! batch is acknowledged. One commit per message in turn could not keep up with a broker that
//! queues at most ~1,000 messages for a client, so a batch's writes share group commits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, Attachment, AttachmentId, Message, MessageId, MqttRouteId, RawPayload};
use kait_devices::{Body, DeviceMessage, Reading, Route};
use kait_store::{DeviceSeen, NewMessage, Store, StoreError};
use rumqttc::v5::mqttbytes::v5::Publish;
use tokio_util::sync::CancellationToken;

use super::events::{self, Reason};
use super::{Bridge, MAX_DEPTH, Routes, outcome, until_done};

/// The most publishes handled together (more than any broker's usual in-flight window).
const BATCH: usize = 256;

/// Takes the publishes that have arrived on `client`'s connection, handles them, and
/// acknowledges them there, until the connection stops sending.
pub(super) async fn handle_batches(
    bridge: Arc<Bridge>,
    client: rumqttc::v5::AsyncClient,
    routes: tokio::sync::watch::Receiver<Arc<Routes>>,
    mut arrived: tokio::sync::mpsc::Receiver<Publish>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut touched = Touched::default();
    while arrived.recv_many(&mut batch, BATCH).await > 0 {
        let routes = routes.borrow().clone();
        if handle(&bridge, &routes, &batch, &mut touched, &shutdown)
            .await
            .is_none()
        {
            // Stopping before all were stored: the broker keeps the batch for next time.
            return;
        }
        for publish in batch.drain(..) {
            if let Err(error) = client.ack(&publish).await {
                tracing::warn!(%error, "acknowledging an MQTT message failed; the broker sends it again");
            }
        }
    }
}

/// When this node last recorded each device as heard from: a device that publishes often is
/// touched at most every [`TOUCH_EVERY`] (or a quarter of its silence timeout), not once per
/// message, so presence costs a write a second per busy device rather than one per batch.
/// `last_seen` is that precise; a change another node made (offline by its last will) is
/// seen at the next touch.
#[derive(Default)]
struct Touched {
    at: HashMap<(AppId, String), Millis>,
}

/// The longest a busy device goes untouched.
const TOUCH_EVERY: Millis = 1_000;
/// Devices remembered at most (then forgotten all at once; they are touched again).
const TOUCHED_MAX: usize = 100_000;

impl Touched {
    /// Whether `seen` needs a write now.
    fn due(&self, seen: &DeviceSeen, silence_ms: Option<u64>) -> bool {
        let every = silence_ms.map_or(TOUCH_EVERY, |ms| TOUCH_EVERY.min(ms as Millis / 4));
        self.at
            .get(&(seen.app_id.clone(), seen.device.clone()))
            .is_none_or(|last| seen.at - last >= every)
    }

    fn record(&mut self, seen: &DeviceSeen) {
        if self.at.len() >= TOUCHED_MAX {
            self.at.clear();
        }
        self.at
            .insert((seen.app_id.clone(), seen.device.clone()), seen.at);
    }

    fn forget(&mut self, app_id: &AppId, device: &str) {
        self.at.remove(&(app_id.clone(), device.to_owned()));
    }
}

/// One publish read through the first route that matches its topic.
struct Read<'r> {
    route_id: &'r MqttRouteId,
    route: &'r Route,
    reading: Reading,
}

/// Handles one batch; `None` only when the server stops first.
async fn handle(
    bridge: &Bridge,
    routes: &Routes,
    batch: &[Publish],
    touched: &mut Touched,
    shutdown: &CancellationToken,
) -> Option<()> {
    let store = bridge.store.as_ref();
    let mut reads = Vec::with_capacity(batch.len());
    for publish in batch {
        let topic = String::from_utf8_lossy(&publish.topic);
        if bridge.config.reply_topic.command_of(&topic).is_some() {
            bridge.on_reply(publish, shutdown).await?;
        } else if let Some(read) = prepare(routes, &topic, &publish.payload) {
            reads.push(read);
        }
    }
    // Each application once per batch, before any write, so that the writes below are
    // handed to the store in arrival order.
    let mut apps: HashMap<String, Option<AppId>> = HashMap::new();
    for read in &reads {
        let key = match &read.reading {
            Reading::Event(message) => &message.app,
            Reading::Status { app, .. } => app,
        };
        if !apps.contains_key(key) {
            apps.insert(key.clone(), find_app(store, key, shutdown).await?);
        }
    }
    let app_of = |read: &Read<'_>| -> Option<AppId> {
        let key = match &read.reading {
            Reading::Event(message) => &message.app,
            Reading::Status { app, .. } => app,
        };
        apps[key].clone()
    };

    // Presence first, so that a device's `device.online` comes before its message.
    let now = now_millis();
    let mut seen = Vec::new();
    let mut went_offline = Vec::new();
    for read in &reads {
        let Some(app_id) = app_of(read) else { continue };
        let silent_at = read.route.silence_timeout_ms.map(|ms| now + ms as Millis);
        match &read.reading {
            Reading::Event(DeviceMessage {
                device: Some(device),
                ..
            }) => {
                let one = seen_now(&app_id, device, now, silent_at);
                if touched.due(&one, read.route.silence_timeout_ms) {
                    touched.record(&one);
                    seen.push((one, Reason::Message));
                }
            }
            Reading::Status {
                device,
                online: true,
                ..
            } => {
                let one = seen_now(&app_id, device, now, silent_at);
                touched.record(&one);
                seen.push((one, Reason::Status));
            }
            Reading::Status {
                device,
                online: false,
                ..
            } => {
                touched.forget(&app_id, device);
                went_offline.push((app_id, device.clone()));
            }
            Reading::Event(_) => {}
        }
    }
    record_seen(bridge, &seen, shutdown).await?;

    let events: Vec<(&Read<'_>, &DeviceMessage)> = reads
        .iter()
        .filter_map(|read| match &read.reading {
            Reading::Event(message) => Some((read, message)),
            Reading::Status { .. } => None,
        })
        .collect();
    // Large binary payloads become attachments first, so that the writes below still start
    // in arrival order.
    let mut attachments = Vec::with_capacity(events.len());
    for (read, message) in &events {
        attachments.push(match (&bridge.media, app_of(read)) {
            (Some(media), Some(app_id)) => {
                attach_if_large(media, store, &app_id, read.route, message).await
            }
            _ => None,
        });
    }
    let stored = join_in_order(
        events
            .iter()
            .zip(attachments)
            .map(|((read, message), attachment)| {
                store_one(
                    store,
                    read.route_id,
                    message,
                    app_of(read),
                    attachment,
                    shutdown,
                )
            })
            .collect(),
    )
    .await;
    if stored.contains(&false) {
        return None;
    }
    for (app_id, device) in went_offline {
        record_offline(store, &app_id, &device, shutdown).await?;
    }
    Some(())
}

fn seen_now(app_id: &AppId, device: &str, at: Millis, silent_at: Option<Millis>) -> DeviceSeen {
    DeviceSeen {
        app_id: app_id.clone(),
        device: device.to_owned(),
        at,
        silent_at,
    }
}

/// Touches the devices heard from; each that was unknown or offline is announced
/// (`device.online`), recorded online, and sent the commands that waited for it.
async fn record_seen(
    bridge: &Bridge,
    seen: &[(DeviceSeen, Reason)],
    shutdown: &CancellationToken,
) -> Option<()> {
    if seen.is_empty() {
        return Some(());
    }
    let store = bridge.store.as_ref();
    let touches: Vec<DeviceSeen> = seen.iter().map(|(one, _)| one.clone()).collect();
    let untouched = until_done("recording devices heard from", shutdown, || {
        store.touch_devices(&touches)
    })
    .await?
    .unwrap_or_default();
    // Each device's transition in turn, the devices together (a hundred new devices would
    // otherwise queue a hundred round trips of the store behind each other).
    let mut done = HashSet::new();
    let transitions = untouched
        .into_iter()
        .filter(|index| {
            let (one, _) = &seen[*index];
            done.insert((one.app_id.clone(), one.device.clone()))
        })
        .map(|index| came_online(bridge, &seen[index].0, seen[index].1, shutdown));
    let finished = futures_util::future::join_all(transitions).await;
    if finished.contains(&None) {
        return None;
    }
    if !done.is_empty() {
        bridge.deadlines_changed.notify_one();
    }
    Some(())
}

/// One device that was unknown or offline: announced, recorded online, sent what waited.
async fn came_online(
    bridge: &Bridge,
    one: &DeviceSeen,
    reason: Reason,
    shutdown: &CancellationToken,
) -> Option<()> {
    let store = bridge.store.as_ref();
    let before = until_done("reading a device", shutdown, || {
        store.get_device(&one.app_id, &one.device)
    })
    .await?
    .ok()
    .flatten();
    if before.as_ref().is_some_and(|device| device.online) {
        // Another node recorded it online (after announcing it) meanwhile.
        return Some(());
    }
    let since = before.map_or_else(|| "new".to_owned(), |device| device.changed_at.to_string());
    events::online(store, &one.app_id, &one.device, &since, reason, shutdown).await?;
    // Only `NotFound`/`Conflict` end it unrecorded, which these writes never answer.
    let _ = until_done("recording a device online", shutdown, || {
        store.device_online(one)
    })
    .await?;
    bridge.send_queued(&one.app_id, &one.device, shutdown).await
}

/// A device's status said offline (e.g. its last will): announced, then recorded.
async fn record_offline(
    store: &dyn Store,
    app_id: &AppId,
    device: &str,
    shutdown: &CancellationToken,
) -> Option<()> {
    let before = until_done("reading a device", shutdown, || {
        store.get_device(app_id, device)
    })
    .await?
    .ok()
    .flatten();
    let Some(before) = before.filter(|device| device.online) else {
        return Some(());
    };
    let since = before.changed_at.to_string();
    events::offline(
        store,
        app_id,
        device,
        &since,
        before.last_seen_at,
        Reason::Status,
        shutdown,
    )
    .await?;
    let _ = until_done("recording a device offline", shutdown, || {
        store.device_offline(app_id, device, None, now_millis())
    })
    .await?;
    Some(())
}

/// What a publish is through the first route that matches its topic; `None` when it is
/// nothing (no route, or one that cannot read it: logged and counted, and acknowledged,
/// since sending it again would not help).
fn prepare<'r>(routes: &'r Routes, topic: &str, payload: &[u8]) -> Option<Read<'r>> {
    let Some((route_id, route, reading)) = routes.routes.iter().find_map(|(id, route)| {
        route
            .read(topic, payload, MAX_DEPTH)
            .map(|reading| (id, route, reading))
    }) else {
        outcome("unrouted");
        tracing::debug!(topic, "no MQTT route for this topic");
        return None;
    };
    match reading {
        Ok(reading) => Some(Read {
            route_id,
            route,
            reading,
        }),
        Err(reason) => {
            outcome("refused");
            tracing::warn!(route = %route_id, topic, %reason, "an MQTT message the route cannot read");
            None
        }
    }
}

/// Runs `futures` together, polling them in their order every time (so each takes its first
/// step, here handing its job to the store, in that order). `join_all` does not promise this:
/// past 30 futures it polls new ones in another order, which reversed a device's messages
/// (found by the ordering test in `tests/it/devices.rs`).
async fn join_in_order<F: std::future::Future<Output = bool>>(futures: Vec<F>) -> Vec<bool> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<bool>> = vec![None; futures.len()];
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(done) => *result = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|result| result.unwrap_or(false))
        .collect()
}

async fn find_app(
    store: &dyn Store,
    key: &str,
    shutdown: &CancellationToken,
) -> Option<Option<kait_core::AppId>> {
    let found = until_done("reading an MQTT message's application", shutdown, || {
        store.get_application(key)
    })
    .await?;
    Some(found.ok().flatten().map(|app| app.id))
}

/// Stores one mapped message. `true` once it is committed or cannot be (no such application:
/// logged and counted); a store failure is retried until it succeeds (a retried message may
/// then commit after a later one of its device); `false` only when the server stops first.
async fn store_one(
    store: &dyn Store,
    route_id: &MqttRouteId,
    mapped: &kait_devices::DeviceMessage,
    app_id: Option<kait_core::AppId>,
    attachment: Option<Attachment>,
    shutdown: &CancellationToken,
) -> bool {
    let no_application = || {
        outcome("no_application");
        tracing::warn!(route = %route_id, app = %mapped.app, "an MQTT message for an application that does not exist");
        true
    };
    let Some(app_id) = app_id else {
        return no_application();
    };
    let stored = until_done("storing an MQTT message", shutdown, || {
        accept(store, mapped, app_id.clone(), attachment.clone())
    })
    .await;
    match stored {
        None => false,
        Some(Ok(())) => {
            outcome("accepted");
            true
        }
        Some(Err(StoreError::Conflict(_))) => {
            outcome("duplicate");
            true
        }
        // Deleted since the batch looked it up (`until_done` retries every other failure).
        Some(Err(_)) => no_application(),
    }
}

/// A binary payload larger than its route's `attachmentAboveBytes`, stored as an attachment
/// of the application; `None` when it stays in the message (small, JSON, or the blob store
/// failed: then it is sent raw rather than lost).
async fn attach_if_large(
    media: &kait_media::Media,
    store: &dyn Store,
    app_id: &AppId,
    route: &Route,
    message: &DeviceMessage,
) -> Option<Attachment> {
    let Body::Raw { bytes, .. } = &message.body else {
        return None;
    };
    if bytes.len() <= route.attachment_above_bytes? {
        return None;
    }
    let id = AttachmentId::generate();
    let content_type = kait_media::sniff::detect(bytes).unwrap_or("application/octet-stream");
    let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        axum::body::Bytes::copy_from_slice(bytes),
    )]);
    let stored = match media
        .blobs
        .store(id.as_str(), content_type, body, media.max_upload_bytes)
        .await
    {
        Ok(stored) => stored,
        Err(error) => {
            tracing::warn!(%error, "storing a device payload as an attachment failed; it is sent raw");
            return None;
        }
    };
    let attachment = Attachment {
        id,
        app_id: app_id.clone(),
        content_type: content_type.to_owned(),
        size: stored.size,
        sha256: stored.sha256,
        filename: None,
        created_at: now_millis(),
    };
    match store.create_attachment(attachment.clone()).await {
        Ok(recorded) => Some(recorded),
        Err(error) => {
            tracing::warn!(%error, "recording a device payload's attachment failed; it is sent raw");
            let _ = media.blobs.delete(attachment.id.as_str()).await;
            None
        }
    }
}

async fn accept(
    store: &dyn Store,
    mapped: &kait_devices::DeviceMessage,
    app_id: kait_core::AppId,
    attachment: Option<Attachment>,
) -> Result<(), StoreError> {
    let (payload, raw) = match &mapped.body {
        // The bytes are in the attachment; the payload says what they are and where from.
        _ if attachment.is_some() => (
            serde_json::json!({
                "segments": mapped.segments,
                "contentType": attachment.as_ref().map(|a| a.content_type.clone()),
                "size": attachment.as_ref().map(|a| a.size),
            })
            .to_string(),
            None,
        ),
        Body::Json(text) => (text.clone(), None),
        Body::Raw {
            content_type,
            bytes,
        } => (
            "{}".to_owned(),
            Some(RawPayload {
                content_type: (*content_type).to_owned(),
                body: bytes.clone(),
                headers: Vec::new(),
            }),
        ),
    };
    store
        .create_message(NewMessage::new(Message {
            id: MessageId::generate(),
            app_id,
            event_type: mapped.event_type.clone(),
            event_id: mapped.event_id.clone(),
            channels: None,
            ordering_key: mapped.ordering_key.clone(),
            payload,
            raw,
            attachments: attachment.into_iter().collect(),
            created_at: kait_core::time::now_millis(),
            deliver_at: None,
        }))
        .await
        .map(drop)
}
