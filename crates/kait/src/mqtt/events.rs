//! The events the device world makes itself: `device.online`, `device.offline`,
//! `device.command.replied`, `device.command.timeout`. Each has an event id derived from
//! the transition it announces, so announcing it again (after a crash, or from a second
//! node) is the same message: transitions are announced first and recorded after, and a
//! repeat is absorbed by the message log's event-id check.

use kait_api::DeviceCommandOut;
use kait_core::time::{Millis, now_millis, to_datetime};
use kait_core::{AppId, Message, MessageId};
use kait_store::{DeviceCommand, NewMessage, Store, StoreError};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::until_done;

/// Why a device's presence changed.
#[derive(Debug, Clone, Copy)]
pub enum Reason {
    /// It published on one of its routes.
    Message,
    /// A status on a presence route (e.g. its last will).
    Status,
    /// It was silent past its route's `silenceTimeoutSecs`.
    Silence,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Status => "status",
            Self::Silence => "silence",
        }
    }
}

/// `device.online`; `since` tells this transition from others of the device.
pub async fn online(
    store: &dyn Store,
    app_id: &AppId,
    device: &str,
    since: &str,
    reason: Reason,
    shutdown: &CancellationToken,
) -> Option<()> {
    let payload = json!({
        "device": device,
        "online": true,
        "reason": reason.as_str(),
        "at": to_datetime(now_millis()),
    });
    let event_id = format!("kait-online-{device}-{since}");
    emit(
        store,
        app_id,
        "device.online",
        event_id,
        device,
        payload,
        shutdown,
    )
    .await
}

/// `device.offline`.
pub async fn offline(
    store: &dyn Store,
    app_id: &AppId,
    device: &str,
    since: &str,
    last_seen_at: Millis,
    reason: Reason,
    shutdown: &CancellationToken,
) -> Option<()> {
    let payload = json!({
        "device": device,
        "online": false,
        "reason": reason.as_str(),
        "lastSeenAt": to_datetime(last_seen_at),
        "at": to_datetime(now_millis()),
    });
    let event_id = format!("kait-offline-{device}-{since}");
    emit(
        store,
        app_id,
        "device.offline",
        event_id,
        device,
        payload,
        shutdown,
    )
    .await
}

/// `device.command.replied` or `device.command.timeout`, with the command as it ends.
pub async fn command_outcome(
    store: &dyn Store,
    command: &DeviceCommand,
    shutdown: &CancellationToken,
) -> Option<()> {
    let (event_type, kind) = match command.status {
        kait_store::CommandStatus::Replied => ("device.command.replied", "replied"),
        _ => ("device.command.timeout", "timeout"),
    };
    let payload = serde_json::to_value(DeviceCommandOut::new(command)).unwrap_or_default();
    let event_id = format!("kait-{kind}-{}", command.id);
    emit(
        store,
        &command.app_id,
        event_type,
        event_id,
        &command.device,
        payload,
        shutdown,
    )
    .await
}

/// Stores one event (retrying store failures); a repeat of its event id is success. `None`
/// only when the server stops first.
async fn emit(
    store: &dyn Store,
    app_id: &AppId,
    event_type: &str,
    event_id: String,
    device: &str,
    payload: serde_json::Value,
    shutdown: &CancellationToken,
) -> Option<()> {
    let payload = payload.to_string();
    let created = until_done("storing a device event", shutdown, || {
        store.create_message(NewMessage::new(Message {
            id: MessageId::generate(),
            app_id: app_id.clone(),
            event_type: event_type.to_owned(),
            event_id: Some(event_id.clone()),
            channels: None,
            ordering_key: Some(device.to_owned()),
            payload: payload.clone(),
            raw: None,
            attachments: Vec::new(),
            created_at: now_millis(),
            deliver_at: None,
        }))
    })
    .await?;
    match created {
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(error) => tracing::warn!(%error, event_type, "a device event was not stored"),
    }
    metrics::counter!("kait_device_events_total", "type" => event_type.to_owned()).increment(1);
    Some(())
}
