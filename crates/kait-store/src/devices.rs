//! Devices (issue 16): the routes from MQTT topics to events, the registry of devices seen
//! (presence), and the commands sent to devices with their replies.
//!
//! A route's definition is JSON the store keeps but does not read (`kait-devices` owns its
//! meaning), like a pipe's.
//!
//! Every change of a device's or a command's state is a conditional write (`online` only
//! while offline, `replied` only while waiting, …) that says whether it made the change, so
//! that with several nodes exactly one of them acts on each transition. The deadlines
//! (a device's silence, a command's reply or expiry) are columns of those rows, indexed: the
//! durable timers of the device world, found by [`Devices::next_device_deadline`] and
//! claimed by those conditional writes.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, DeviceCommandId, MqttRouteId};

use crate::StoreResult;

/// A route as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttRoute {
    pub id: MqttRouteId,
    /// `kait_devices::RouteSpec` as JSON.
    pub spec: serde_json::Value,
    pub created_at: Millis,
}

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub app_id: AppId,
    /// The device's id (its topic's `{device}` segment).
    pub device: String,
    pub online: bool,
    pub last_seen_at: Millis,
    /// When it goes offline unless heard from (online devices of a route with a silence
    /// timeout).
    pub silent_at: Option<Millis>,
    /// When `online` last changed.
    pub changed_at: Millis,
}

/// A device heard from: a message on one of its routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSeen {
    pub app_id: AppId,
    pub device: String,
    pub at: Millis,
    pub silent_at: Option<Millis>,
}

/// Where a command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    /// Waiting for its device to come online (until `deadline_at`).
    Queued,
    /// Published; waiting for the reply (until `deadline_at`).
    Sent,
    Replied,
    /// Sent, and no reply came in time.
    TimedOut,
    /// Queued, and the device did not come online in time.
    Expired,
}

impl CommandStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Replied => "replied",
            Self::TimedOut => "timedOut",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Sent,
            Self::Replied,
            Self::TimedOut,
            Self::Expired,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Still waiting for something (the device, or its reply).
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Queued | Self::Sent)
    }
}

/// A command to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCommand {
    pub id: DeviceCommandId,
    pub app_id: AppId,
    pub device: String,
    pub name: String,
    /// The JSON published to the device.
    pub payload: String,
    /// Answered with 202, its outcome an event (`device.command.replied`/`…timeout`); a
    /// synchronous command's caller gets the outcome in the response instead.
    pub asynchronous: bool,
    pub status: CommandStatus,
    /// How long a sent command waits for its reply.
    pub timeout_ms: u64,
    pub created_at: Millis,
    /// Queued: when it expires unsent; sent: when its reply is late.
    pub deadline_at: Millis,
    /// The reply's payload, as the device sent it.
    pub reply: Option<Vec<u8>>,
    pub finished_at: Option<Millis>,
}

#[async_trait]
pub trait Devices: Send + Sync + 'static {
    async fn create_mqtt_route(&self, route: MqttRoute) -> StoreResult<MqttRoute>;
    /// Every route, oldest first (the API bounds how many there are).
    async fn list_mqtt_routes(&self) -> StoreResult<Vec<MqttRoute>>;
    async fn get_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<Option<MqttRoute>>;
    /// `NotFound` when there is no such route.
    async fn delete_mqtt_route(&self, id: &MqttRouteId) -> StoreResult<()>;
}

/// The registry of devices seen (presence) and the commands sent to them.
#[async_trait]
pub trait DeviceRegistry: Send + Sync + 'static {
    /// Records that known online devices were heard from (last seen, next silence deadline);
    /// returns the indexes of those it did not touch: unknown or offline, each a transition
    /// the caller announces and then records with [`Devices::device_online`].
    async fn touch_devices(&self, seen: &[DeviceSeen]) -> StoreResult<Vec<usize>>;
    /// Records the device online (creating it); `true` if it was not already.
    async fn device_online(&self, seen: &DeviceSeen) -> StoreResult<bool>;
    /// Records an online device offline at `at`, if its silence deadline is still
    /// `if_silent_at` (when given: a device heard from since keeps its state); `true` if this
    /// call made the change.
    async fn device_offline(
        &self,
        app_id: &AppId,
        device: &str,
        if_silent_at: Option<Millis>,
        at: Millis,
    ) -> StoreResult<bool>;
    async fn get_device(&self, app_id: &AppId, device: &str) -> StoreResult<Option<Device>>;
    /// An application's devices by id, after `after`, at most `limit`.
    async fn list_devices(
        &self,
        app_id: &AppId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Device>>;
    /// Online devices whose silence deadline has passed, at most `limit`.
    async fn silent_devices(&self, now: Millis, limit: usize) -> StoreResult<Vec<Device>>;

    async fn create_device_command(&self, command: DeviceCommand) -> StoreResult<DeviceCommand>;
    async fn get_device_command(&self, id: &DeviceCommandId) -> StoreResult<Option<DeviceCommand>>;
    /// Moves a waiting command to `status` (with the reply, if any); the command as it now
    /// is if this call made the change, `None` if it was not waiting (any more).
    async fn finish_device_command(
        &self,
        id: &DeviceCommandId,
        status: CommandStatus,
        reply: Option<Vec<u8>>,
        at: Millis,
    ) -> StoreResult<Option<DeviceCommand>>;
    /// Marks a device's queued, unexpired commands sent (each now waiting `timeout_ms` for
    /// its reply) and returns them, oldest first, to be published by the caller.
    async fn send_queued_commands(
        &self,
        app_id: &AppId,
        device: &str,
        now: Millis,
    ) -> StoreResult<Vec<DeviceCommand>>;
    /// Waiting commands whose deadline has passed, at most `limit`.
    async fn due_device_commands(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<DeviceCommand>>;
    /// The earliest deadline of any kind: an online device's silence, a waiting command's.
    async fn next_device_deadline(&self) -> StoreResult<Option<Millis>>;
}
