//! What pipes (and the API) need to send commands to devices: the MQTT bridge, which lives
//! in the binary, implements it. One path for every command: recorded first (queued when the
//! registry has its device offline, else sent), then published.

use async_trait::async_trait;
use kait_store::DeviceCommand;

#[async_trait]
pub trait DeviceCommands: Send + Sync + 'static {
    /// Records `command` and publishes it (or queues it, for `expires_in_ms`, when its device
    /// is known to be offline); `status`, `created_at` and `deadline_at` are set here. A
    /// command whose id is already recorded is returned as it stands and not sent again (a
    /// pipe run that is retried names the same command). `app_key` is the application's uid
    /// (or id), for a command topic's `{app}`. `Err` when it could not be recorded or handed
    /// to the MQTT client.
    async fn send_command(
        &self,
        app_key: &str,
        command: DeviceCommand,
        expires_in_ms: u64,
    ) -> Result<DeviceCommand, String>;
}
