//! What the API needs from the MQTT bridge to send commands to devices. The bridge (in the
//! binary, which owns the MQTT client) implements it; a command goes the one way every
//! command goes ([`kait_pipe::DeviceCommands`]: recorded first, then published), and a
//! synchronous request waits here for its reply.

use kait_core::DeviceCommandId;
use kait_store::DeviceCommand;

pub trait DeviceLink: kait_pipe::DeviceCommands {
    /// The reply (the command as finished) of a command this node waits for; register
    /// before sending, so a fast reply is not missed. The receiver ends without a value if
    /// the waiter is dropped by [`DeviceLink::forget`].
    fn wait_for_reply(&self, id: &DeviceCommandId)
    -> tokio::sync::oneshot::Receiver<DeviceCommand>;
    /// Stops waiting for a command's reply.
    fn forget(&self, id: &DeviceCommandId);
    /// Whether the broker connection is up now (the health route shows it).
    fn connected(&self) -> bool;
}
