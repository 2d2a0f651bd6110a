//! Commands out, replies in: the bridge as the API's [`DeviceLink`].
//!
//! A command is published at QoS 1 to the command topic with MQTT 5 properties: the
//! response topic `{reply prefix}/{commandId}`, the command id as correlation data, and a
//! message expiry of its timeout (a broker holding it for an offline device drops it once
//! nobody waits for the answer). Every node subscribes to the reply topics, so the node whose
//! request waits sees the reply wherever the command was finished; the store's conditional
//! finish makes one node announce it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kait_api::DeviceLink;
use kait_core::time::{Millis, now_millis};
use kait_core::{AppId, DeviceCommandId};
use kait_devices::CommandTarget;
use kait_pipe::DeviceCommands;
use kait_store::{CommandStatus, DeviceCommand, Store};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::{AsyncClient, EventLoop};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Connected, MqttConfig, events, until_done};

/// The MQTT client and what the node waits for.
pub struct Bridge {
    pub(super) store: Arc<dyn Store>,
    pub(super) config: MqttConfig,
    pub(super) client: AsyncClient,
    pub(super) connected: Connected,
    /// Where large binary payloads go as attachments (`None`: attachments are off).
    pub(super) media: Option<kait_media::Media>,
    /// Synchronous commands this node's requests wait for.
    waiters: Mutex<HashMap<DeviceCommandId, oneshot::Sender<DeviceCommand>>>,
    /// A deadline may have come earlier (the sweeper listens).
    pub(super) deadlines_changed: Notify,
    shutdown: CancellationToken,
}

impl Bridge {
    /// The bridge and the event loop that [`super::run`] drives.
    pub fn new(
        store: Arc<dyn Store>,
        config: MqttConfig,
        media: Option<kait_media::Media>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Arc<Self>, EventLoop)> {
        let (client, events) = AsyncClient::new(config.own_options()?, 4096);
        let bridge = Arc::new(Self {
            store,
            config,
            client,
            connected: Connected::default(),
            media,
            waiters: Mutex::default(),
            deadlines_changed: Notify::new(),
            shutdown,
        });
        Ok((bridge, events))
    }

    async fn send(&self, app_key: &str, command: &DeviceCommand) -> Result<(), String> {
        let topic = self.config.command_topic.render(CommandTarget {
            app: app_key,
            device: &command.device,
            name: &command.name,
            command_id: command.id.as_str(),
        });
        let properties = PublishProperties {
            response_topic: Some(self.config.reply_topic.for_command(command.id.as_str())),
            correlation_data: Some(command.id.as_str().to_owned().into_bytes().into()),
            content_type: Some("application/json".to_owned()),
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(command.timeout_ms.div_ceil(1000).max(1) as u32),
            ..Default::default()
        };
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                command.payload.clone().into_bytes(),
                properties,
            )
            .await
            .map_err(|error| error.to_string())?;
        metrics::counter!("kait_device_commands_published_total").increment(1);
        Ok(())
    }

    /// Publishes a device's queued commands, now that it is online (each marked sent first,
    /// by one node).
    pub(super) async fn send_queued(
        &self,
        app_id: &AppId,
        device: &str,
        shutdown: &CancellationToken,
    ) -> Option<()> {
        let sent = until_done("sending a device's queued commands", shutdown, || {
            self.store
                .send_queued_commands(app_id, device, now_millis())
        })
        .await?
        .unwrap_or_default();
        if sent.is_empty() {
            return Some(());
        }
        let app_key = match self.store.get_application(app_id.as_str()).await {
            Ok(Some(app)) => app.uid.unwrap_or_else(|| app.id.into_string()),
            _ => app_id.as_str().to_owned(),
        };
        for command in &sent {
            if let Err(error) = self.send(&app_key, command).await {
                tracing::warn!(%error, command = %command.id, "publishing a queued command failed");
            }
        }
        self.deadlines_changed.notify_one();
        Some(())
    }

    /// A publish on a reply topic: finishes its command (announcing the reply of an
    /// asynchronous one) and hands it to a request of this node that waits for it. `None`
    /// only when the server stops first.
    pub(super) async fn on_reply(
        &self,
        publish: &Publish,
        shutdown: &CancellationToken,
    ) -> Option<()> {
        let topic = String::from_utf8_lossy(&publish.topic);
        let from_topic = self
            .config
            .reply_topic
            .command_of(&topic)
            .map(str::to_owned);
        let from_correlation = publish
            .properties
            .as_ref()
            .and_then(|properties| properties.correlation_data.as_ref())
            .and_then(|data| std::str::from_utf8(data).ok().map(str::to_owned));
        let Some(id) = from_topic
            .or(from_correlation)
            .and_then(|id| DeviceCommandId::parse(&id))
        else {
            super::outcome("reply_unknown");
            return Some(());
        };
        let store = self.store.as_ref();
        let Some(Ok(Some(command))) = until_done("reading a command", shutdown, || {
            store.get_device_command(&id)
        })
        .await
        else {
            super::outcome("reply_unknown");
            return Some(());
        };
        let now = now_millis();
        let mut finished = command.clone();
        if command.status.is_waiting() {
            finished.status = CommandStatus::Replied;
            finished.reply = Some(publish.payload.to_vec());
            finished.finished_at = Some(now);
            // Announced before it is recorded: a crash in between announces it again, as
            // the same event.
            if command.asynchronous {
                events::command_outcome(store, &finished, shutdown).await?;
            }
            let reply = publish.payload.to_vec();
            let recorded = until_done("recording a command's reply", shutdown, || {
                store.finish_device_command(&id, CommandStatus::Replied, Some(reply.clone()), now)
            })
            .await?;
            if let Ok(Some(recorded)) = recorded {
                finished = recorded;
            }
            super::outcome("reply");
        } else {
            super::outcome("reply_late");
        }
        if finished.status == CommandStatus::Replied
            && let Some(waiter) = self.waiters.lock().expect("not poisoned").remove(&id)
        {
            let _ = waiter.send(finished);
        }
        Some(())
    }
}

#[async_trait]
impl DeviceCommands for Bridge {
    async fn send_command(
        &self,
        app_key: &str,
        mut command: DeviceCommand,
        expires_in_ms: u64,
    ) -> Result<DeviceCommand, String> {
        let store = self.store.as_ref();
        if let Some(existing) = store
            .get_device_command(&command.id)
            .await
            .map_err(|error| error.to_string())?
        {
            return Ok(existing);
        }
        let now = now_millis();
        let offline = store
            .get_device(&command.app_id, &command.device)
            .await
            .map_err(|error| error.to_string())?
            .is_some_and(|known| !known.online);
        (command.status, command.deadline_at) = if offline {
            (CommandStatus::Queued, now + expires_in_ms as Millis)
        } else {
            (CommandStatus::Sent, now + command.timeout_ms as Millis)
        };
        command.created_at = now;
        store
            .create_device_command(command.clone())
            .await
            .map_err(|error| error.to_string())?;
        self.deadlines_changed.notify_one();
        if command.status == CommandStatus::Sent {
            self.send(app_key, &command).await?;
        } else if let Ok(Some(known)) = store.get_device(&command.app_id, &command.device).await
            && known.online
        {
            // It came online between the look and the record: what waits for it goes now.
            let _ = self
                .send_queued(&command.app_id, &command.device, &self.shutdown)
                .await;
        }
        Ok(command)
    }
}

impl DeviceLink for Bridge {
    fn wait_for_reply(&self, id: &DeviceCommandId) -> oneshot::Receiver<DeviceCommand> {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), sender);
        receiver
    }

    fn forget(&self, id: &DeviceCommandId) {
        self.waiters.lock().expect("not poisoned").remove(id);
    }

    fn connected(&self) -> bool {
        self.connected.get()
    }
}
