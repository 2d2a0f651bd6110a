//! What the API needs from the MQTT bridge to send commands to devices. The bridge (in the
//! binary, which owns the MQTT client) implements it; the API stores each command first and
//! then asks the link to publish it, so a command is never published unrecorded.

use async_trait::async_trait;
use kait_core::DeviceCommandId;
use kait_store::DeviceCommand;

#[async_trait]
pub trait DeviceLink: Send + Sync + 'static {
    /// Publishes a command already recorded as sent. `app_key` is the application's uid (or
    /// id without one), for the `{app}` of the command topic. `Err` when the MQTT client has
    /// stopped; a broker that is away only delays the publish (the client queues it).
    async fn publish(&self, app_key: &str, command: &DeviceCommand) -> Result<(), String>;
    /// The reply (the command as finished) of a command this node waits for; register
    /// before publishing, so a fast reply is not missed. The receiver ends without a value if
    /// the waiter is dropped by [`DeviceLink::forget`].
    fn wait_for_reply(&self, id: &DeviceCommandId)
    -> tokio::sync::oneshot::Receiver<DeviceCommand>;
    /// Stops waiting for a command's reply.
    fn forget(&self, id: &DeviceCommandId);
    /// Whether the broker connection is up now (the health route shows it).
    fn connected(&self) -> bool;
    /// A command was recorded: its deadline may be the earliest the sweeper knows of.
    fn deadline_changed(&self);
    /// Sends a device's queued commands now if the registry says it is online (a command
    /// queued while its device came online is not left waiting for the next transition).
    async fn flush_if_online(&self, app_id: &kait_core::AppId, device: &str);
}
