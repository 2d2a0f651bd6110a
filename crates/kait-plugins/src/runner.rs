//! Runs the actions of a plugin's reply (the dispatcher's [`ReplyRunner`]).
//!
//! Each allowed action runs through the store (messages, the plugin's endpoint) or the device
//! link (commands); what it creates has an id derived from the attempt and its place in the
//! reply. Every action's result goes to the audit log under the attempt's id.

use std::sync::Arc;

use async_trait::async_trait;
use kait_core::scope::Scopes;
use kait_core::time::now_millis;
use kait_core::{AttemptId, DeviceCommandId, Message, MessageId, validate};
use kait_dispatch::ReplyRunner;
use kait_pipe::{DeviceCommands, definition};
use kait_store::{
    AuditEntry, ClaimedDelivery, CommandStatus, DeviceCommand, Installation, NewMessage, Store,
    StoreError,
};
use serde_json::Value;

use crate::reply::{self, Action, Reply};

/// How often a change of the plugin's endpoint is tried again when another change won.
const CHANGE_ATTEMPTS: usize = 8;

pub struct Replies {
    store: Arc<dyn Store>,
    devices: Option<Arc<dyn DeviceCommands>>,
}

impl Replies {
    pub fn new(store: Arc<dyn Store>, devices: Option<Arc<dyn DeviceCommands>>) -> Self {
        Self { store, devices }
    }

    /// The installation whose endpoint received the delivery.
    async fn installation(&self, delivery: &ClaimedDelivery) -> Option<Installation> {
        match self
            .store
            .list_installations(Some(&delivery.app_id), None)
            .await
        {
            Ok(installations) => installations
                .into_iter()
                .find(|installation| installation.endpoint_id == delivery.endpoint_id),
            Err(error) => {
                tracing::warn!(%error, "reading the installation of a plugin's endpoint failed");
                None
            }
        }
    }

    async fn run(
        &self,
        installation: &Installation,
        attempt_id: &AttemptId,
        index: usize,
        action: Action,
    ) -> Result<String, String> {
        let derived = [attempt_id.as_str(), &index.to_string()];
        match action {
            Action::CreateMessage {
                event_type,
                payload,
                event_id,
                channels,
            } => {
                validate::event_type_name(&event_type)
                    .map_err(|error| format!("eventType: {error}"))?;
                if !payload.is_object() {
                    return Err("payload: must be an object".into());
                }
                let event_id = event_id
                    .unwrap_or_else(|| format!("reply-{}", MessageId::derived(&derived).as_str()));
                validate::key("eventId", &event_id)?;
                let channels = match channels {
                    Some(channels) => {
                        validate::channels(channels.iter())?;
                        Some(channels.into_iter().collect())
                    }
                    None => None,
                };
                let message = Message {
                    id: MessageId::generate(),
                    app_id: installation.app_id.clone(),
                    event_type: event_type.clone(),
                    event_id: Some(event_id),
                    channels,
                    ordering_key: None,
                    payload: payload.to_string(),
                    raw: None,
                    created_at: now_millis(),
                    attachments: Vec::new(),
                    deliver_at: None,
                };
                match self.store.create_message(NewMessage::new(message)).await {
                    Ok(accepted) => Ok(format!("message {} ({event_type})", accepted.message.id)),
                    Err(StoreError::Conflict(_)) => Ok(format!("{event_type} was created before")),
                    Err(error) => Err(error.to_string()),
                }
            }
            Action::SendCommand {
                device,
                name,
                payload,
                timeout_ms,
                expires_in_ms,
            } => {
                let devices = self
                    .devices
                    .as_ref()
                    .ok_or("device commands need an MQTT broker (--mqtt-url)")?;
                kait_devices::check_segment("device", &device)?;
                kait_devices::check_segment("name", &name)?;
                // The same bounds and defaults as a pipe's `publish`.
                let timeout_ms = timeout_ms.unwrap_or(definition::DEFAULT_COMMAND_TIMEOUT_MS);
                let expires_in_ms =
                    expires_in_ms.unwrap_or(definition::DEFAULT_COMMAND_EXPIRES_IN_MS);
                if !definition::COMMAND_TIMEOUT_MS.contains(&timeout_ms)
                    || !definition::COMMAND_EXPIRES_IN_MS.contains(&expires_in_ms)
                {
                    return Err("timeoutMs: 100 to 300000; expiresInMs: 1 s to 7 days".into());
                }
                let application = self
                    .store
                    .get_application(installation.app_id.as_str())
                    .await
                    .map_err(|error| error.to_string())?
                    .ok_or("the application is gone")?;
                let payload = if payload.is_null() {
                    Value::Object(Default::default())
                } else {
                    payload
                };
                let command = DeviceCommand {
                    id: DeviceCommandId::derived(&derived),
                    app_id: application.id.clone(),
                    device,
                    name,
                    payload: payload.to_string(),
                    asynchronous: true,
                    status: CommandStatus::Sent,
                    timeout_ms,
                    created_at: now_millis(),
                    deadline_at: 0,
                    reply: None,
                    finished_at: None,
                };
                let app_key = application
                    .uid
                    .unwrap_or_else(|| application.id.as_str().to_owned());
                let sent = devices
                    .send_command(&app_key, command, expires_in_ms)
                    .await?;
                Ok(format!(
                    "command {} to {} {}",
                    sent.id,
                    sent.device,
                    sent.status.as_str()
                ))
            }
            Action::PatchEndpoint {
                disabled,
                description,
                event_types,
            } => {
                if let Some(event_types) = &event_types {
                    for name in event_types {
                        validate::event_type_name(name)
                            .map_err(|error| format!("eventTypes: {error}"))?;
                    }
                }
                for _ in 0..CHANGE_ATTEMPTS {
                    let mut endpoint = self
                        .store
                        .get_endpoint_by_id(&installation.endpoint_id)
                        .await
                        .map_err(|error| error.to_string())?
                        .ok_or("the plugin's endpoint is gone")?;
                    if let Some(disabled) = disabled {
                        endpoint.disabled = disabled;
                    }
                    if let Some(description) = &description {
                        endpoint.description = description.clone();
                    }
                    if let Some(event_types) = &event_types {
                        endpoint.event_types = Some(event_types.iter().cloned().collect());
                    }
                    endpoint.updated_at = now_millis();
                    match self.store.update_endpoint(endpoint).await {
                        Ok(endpoint) => {
                            return Ok(format!(
                                "endpoint {}{}",
                                endpoint.id,
                                if endpoint.disabled { " paused" } else { "" }
                            ));
                        }
                        Err(StoreError::Stale(_)) => continue,
                        Err(error) => return Err(error.to_string()),
                    }
                }
                Err("the endpoint kept changing under the action".into())
            }
            Action::Acknowledge => Ok("acknowledged".into()),
        }
    }
}

#[async_trait]
impl ReplyRunner for Replies {
    async fn run_reply(&self, delivery: &ClaimedDelivery, attempt_id: &AttemptId, body: &str) {
        let actions = match reply::read(body) {
            Reply::Plain => return,
            Reply::Actions(actions) => actions,
            Reply::Unreadable(reason) => vec![Err(reason)],
        };
        let Some(installation) = self.installation(delivery).await else {
            return;
        };
        let replies_allowed = match self.store.get_plugin(installation.plugin_id.as_str()).await {
            Ok(Some(plugin)) => plugin.manifest["replyActions"].as_bool().unwrap_or(false),
            _ => false,
        };
        let scopes = Scopes::parse(&installation.scopes).unwrap_or_default();
        let mut entries = Vec::with_capacity(actions.len());
        for (index, action) in actions.into_iter().enumerate() {
            let (subject, outcome) = match action {
                Err(reason) => ("unreadable".to_owned(), Err(reason)),
                Ok(action) => {
                    let subject = action.name().to_owned();
                    match reply::decide(replies_allowed, &scopes, &action) {
                        Err(reason) => (subject, Err(reason)),
                        Ok(()) => (
                            subject,
                            self.run(&installation, attempt_id, index, action).await,
                        ),
                    }
                }
            };
            let (decision, detail) = match outcome {
                Ok(done) => ("done", done),
                Err(reason) => ("refused", reason),
            };
            entries.push(AuditEntry {
                seq: 0,
                at: now_millis(),
                plugin_id: installation.plugin_id.clone(),
                installation_id: installation.id.clone(),
                app_id: installation.app_id.clone(),
                kind: "action".into(),
                subject: format!("{index}: {subject}"),
                decision: decision.into(),
                detail,
                attempt_id: Some(attempt_id.as_str().to_owned()),
            });
        }
        if let Err(error) = self.store.append_audit(entries).await {
            tracing::warn!(%error, attempt = %attempt_id, "recording a plugin's reply actions failed");
        }
    }
}
