//! Operational webhooks: events about Kait itself (`endpoint.disabled`,
//! `message.attempt.exhausted`, `message.attempt.failing`, `endpoint.created/updated/deleted`)
//! sent to an endpoint the operator configured.
//!
//! They travel the same road as every other webhook: each event is a message of a reserved
//! application (uid `kait-operational`) whose single endpoint is the operator's URL, so they
//! are durable, signed, retried and visible in the API like any delivery. Events about that
//! application itself are never emitted, so a failing operational endpoint cannot feed itself.

use std::sync::Arc;

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{AppId, Application, Endpoint, Message, MessageId};

use crate::{ConfigStore, MessageLog, NewMessage, PageRequest, StoreResult};

/// The uid of the reserved application that carries operational events.
pub const OPERATIONAL_APP_UID: &str = "kait-operational";

/// Emits operational events; a no-op when none is configured.
#[derive(Clone, Default)]
pub struct OperationalEvents {
    target: Option<(Arc<dyn MessageLog>, AppId)>,
}

impl OperationalEvents {
    /// Operational webhooks switched off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Makes sure the reserved application exists with one endpoint for `url` signed with
    /// `secret`, updating it if the configuration changed.
    pub async fn setup(
        config: &dyn ConfigStore,
        messages: Arc<dyn MessageLog>,
        url: &str,
        secret: Secret,
    ) -> StoreResult<Self> {
        let store = config;
        let now = now_millis();
        let application = match store.get_application(OPERATIONAL_APP_UID).await? {
            Some(application) => application,
            None => {
                store
                    .create_application(Application {
                        id: AppId::generate(),
                        uid: Some(OPERATIONAL_APP_UID.to_owned()),
                        name: "Kait operational events".to_owned(),
                        rate_limit: None,
                        metadata: Default::default(),
                        created_at: now,
                        updated_at: now,
                        revision: 0,
                    })
                    .await?
            }
        };
        let existing = store
            .list_endpoints(
                &application.id,
                PageRequest {
                    limit: 1,
                    ..Default::default()
                },
            )
            .await?
            .items
            .into_iter()
            .next();
        match existing {
            Some(endpoint)
                if endpoint.url == url && endpoint.secret == secret && !endpoint.disabled => {}
            Some(endpoint) => {
                store
                    .update_endpoint(Endpoint {
                        url: url.to_owned(),
                        secret,
                        disabled: false,
                        updated_at: now,
                        ..endpoint
                    })
                    .await?;
            }
            None => {
                store
                    .create_endpoint(
                        Endpoint {
                            description: "operational events".to_owned(),
                            ..Endpoint::new(application.id.clone(), url.to_owned(), secret, now)
                        },
                        1,
                    )
                    .await?;
            }
        }
        Ok(Self {
            target: Some((messages, application.id)),
        })
    }

    /// Whether `app_id` is the reserved application (events about it are not emitted).
    pub fn is_operational_app(&self, app_id: &AppId) -> bool {
        self.target.as_ref().is_some_and(|(_, id)| id == app_id)
    }

    /// Sends `{"type", "timestamp", "data"}` as an operational webhook. Failures are logged:
    /// an operational event must never make the operation it reports fail.
    pub async fn emit(&self, event_type: &str, about_app: &AppId, data: serde_json::Value) {
        let Some((store, app_id)) = &self.target else {
            return;
        };
        if about_app == app_id {
            return;
        }
        let now = now_millis();
        let payload = serde_json::json!({
            "type": event_type,
            "timestamp": kait_core::time::to_datetime(now),
            "data": data,
        });
        let message = NewMessage {
            message: Message {
                id: MessageId::generate(),
                app_id: app_id.clone(),
                event_type: event_type.to_owned(),
                event_id: None,
                channels: None,
                ordering_key: None,
                payload: payload.to_string(),
                raw: None,
                created_at: now,
                attachments: Vec::new(),
                deliver_at: None,
            },
            idempotency_key: None,
            received: None,
            only_endpoint: None,
        };
        if let Err(error) = store.create_message(message).await {
            tracing::error!(%error, event_type, "recording an operational event failed");
        }
    }
}
