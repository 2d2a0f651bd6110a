//! Operational webhooks: events about Kait itself (`endpoint.disabled`,
//! `message.attempt.exhausted`, `message.attempt.failing`, `endpoint.created/updated/deleted`)
//! sent to the endpoints the operator configured.
//!
//! They travel the same road as every other webhook: each event is a message of a reserved
//! application (uid `kait-operational`) whose endpoints are the operational webhook endpoints
//! (`/api/v1/operational-webhook/endpoint`, Svix's API, and the one the
//! `--operational-webhook-url` flag keeps, uid [`CONFIGURED_ENDPOINT_UID`]), so they are
//! durable, signed, retried, filtered by event type and visible in the API like any delivery.
//! Events about that application itself are never emitted, so a failing operational endpoint
//! cannot feed itself. While the application has no endpoint nothing is written at all: the
//! check is redone only when the store's config epoch moves (any node's change moves it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{AppId, Application, Endpoint, Message, MessageId};

use crate::{NewMessage, PageRequest, Store, StoreResult};

/// The uid of the reserved application that carries operational events.
pub const OPERATIONAL_APP_UID: &str = "kait-operational";
/// The uid of the endpoint `--operational-webhook-url` keeps (created, updated, and removed
/// when the flag goes).
pub const CONFIGURED_ENDPOINT_UID: &str = "configured";

/// Emits operational events; a no-op when switched off (tests that build parts alone).
#[derive(Clone, Default)]
pub struct OperationalEvents {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// The reserved application, once it exists.
    app: RwLock<Option<AppId>>,
    /// Whether it has an endpoint, as of config epoch `checked_epoch` (`u64::MAX`: never).
    listening: AtomicBool,
    checked_epoch: AtomicU64,
}

impl OperationalEvents {
    /// Operational webhooks switched off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Operational events for `store`. With `configured` (the flags' URL and secret), makes
    /// sure the reserved application has the endpoint [`CONFIGURED_ENDPOINT_UID`] for it;
    /// without, removes that endpoint if an earlier start left one. Endpoints made through
    /// the API are the API's.
    pub async fn start(
        store: Arc<dyn Store>,
        configured: Option<(&str, Secret)>,
    ) -> StoreResult<Self> {
        let events = Self {
            inner: Some(Arc::new(Inner {
                store: store.clone(),
                app: RwLock::new(None),
                listening: AtomicBool::new(false),
                checked_epoch: AtomicU64::new(u64::MAX),
            })),
        };
        match configured {
            Some((url, secret)) => {
                let app_id = events.ensure_app().await?.expect("switched on");
                keep_configured_endpoint(store.as_ref(), &app_id, url, secret).await?;
            }
            None => {
                if let Some(application) = store.get_application(OPERATIONAL_APP_UID).await?
                    && let Some(endpoint) = store
                        .get_endpoint(&application.id, CONFIGURED_ENDPOINT_UID)
                        .await?
                {
                    store.delete_endpoint(&application.id, &endpoint.id).await?;
                }
            }
        }
        Ok(events)
    }

    /// The reserved application, created if it does not exist yet (for the operational
    /// endpoint routes); `None` when switched off.
    pub async fn ensure_app(&self) -> StoreResult<Option<AppId>> {
        let Some(inner) = &self.inner else {
            return Ok(None);
        };
        let store = inner.store.as_ref();
        let application = match store.get_application(OPERATIONAL_APP_UID).await? {
            Some(application) => application,
            None => {
                let now = now_millis();
                let created = store
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
                    .await;
                match created {
                    Ok(application) => application,
                    // Another request or node made it first.
                    Err(crate::StoreError::Conflict(_)) => store
                        .get_application(OPERATIONAL_APP_UID)
                        .await?
                        .ok_or(crate::StoreError::NotFound)?,
                    Err(error) => return Err(error),
                }
            }
        };
        *inner.app.write().expect("not poisoned") = Some(application.id.clone());
        Ok(Some(application.id))
    }

    /// Sends `{"type", "timestamp", "data"}` as an operational webhook, if any endpoint
    /// listens. Failures are logged: an operational event must never make the operation it
    /// reports fail.
    pub async fn emit(&self, event_type: &str, about_app: &AppId, data: serde_json::Value) {
        let Some(inner) = &self.inner else {
            return;
        };
        let app_id = match inner.listening().await {
            Ok(Some(app_id)) => app_id,
            Ok(None) => return,
            Err(error) => {
                tracing::error!(%error, event_type, "looking up operational endpoints failed");
                return;
            }
        };
        if *about_app == app_id {
            return;
        }
        let now = now_millis();
        let payload = serde_json::json!({
            "type": event_type,
            "timestamp": kait_core::time::to_datetime(now),
            "data": data,
        });
        let message = NewMessage::new(Message {
            id: MessageId::generate(),
            app_id,
            event_type: event_type.to_owned(),
            event_id: None,
            channels: None,
            ordering_key: None,
            payload: payload.to_string(),
            raw: None,
            created_at: now,
            attachments: Vec::new(),
            deliver_at: None,
        });
        if let Err(error) = inner.store.create_message(message).await {
            tracing::error!(%error, event_type, "recording an operational event failed");
        }
    }
}

impl Inner {
    /// The reserved application if it has an endpoint: read again only after the config
    /// epoch moved, so a quiet configuration costs one atomic load per event.
    async fn listening(&self) -> StoreResult<Option<AppId>> {
        let epoch = self.store.config_epoch();
        if self.checked_epoch.load(Ordering::Acquire) != epoch {
            let app = self
                .store
                .get_application(OPERATIONAL_APP_UID)
                .await?
                .map(|application| application.id);
            let listening = match &app {
                Some(app_id) => !self
                    .store
                    .list_endpoints(
                        app_id,
                        PageRequest {
                            limit: 1,
                            ..Default::default()
                        },
                    )
                    .await?
                    .items
                    .is_empty(),
                None => false,
            };
            *self.app.write().expect("not poisoned") = app;
            self.listening.store(listening, Ordering::Release);
            self.checked_epoch.store(epoch, Ordering::Release);
        }
        if !self.listening.load(Ordering::Acquire) {
            return Ok(None);
        }
        Ok(self.app.read().expect("not poisoned").clone())
    }
}

/// Creates or updates the flags' endpoint. A store from before the API (one endpoint, no
/// uid) has its endpoint adopted rather than a second one made.
async fn keep_configured_endpoint(
    store: &dyn Store,
    app_id: &AppId,
    url: &str,
    secret: Secret,
) -> StoreResult<()> {
    let now = now_millis();
    let mut existing = store.get_endpoint(app_id, CONFIGURED_ENDPOINT_UID).await?;
    if existing.is_none() {
        existing = store
            .list_endpoints(
                app_id,
                PageRequest {
                    limit: 2,
                    ..Default::default()
                },
            )
            .await?
            .items
            .into_iter()
            .find(|endpoint| {
                endpoint.uid.is_none() && endpoint.description == "operational events"
            });
    }
    match existing {
        Some(endpoint)
            if endpoint.url == url
                && endpoint.secret == secret
                && !endpoint.disabled
                && endpoint.uid.as_deref() == Some(CONFIGURED_ENDPOINT_UID) => {}
        Some(endpoint) => {
            store
                .update_endpoint(Endpoint {
                    url: url.to_owned(),
                    secret,
                    disabled: false,
                    uid: Some(CONFIGURED_ENDPOINT_UID.to_owned()),
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
                        uid: Some(CONFIGURED_ENDPOINT_UID.to_owned()),
                        ..Endpoint::new(app_id.clone(), url.to_owned(), secret, now)
                    },
                    10_000,
                )
                .await?;
        }
    }
    Ok(())
}
