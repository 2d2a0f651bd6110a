//! Incoming sources, the pipe's receiving half: who may send webhooks to Kait, how their
//! requests are verified, and the token in their receiving URL. Configuration like
//! applications and endpoints: a change names the revision it read (see [`crate::config`]).
//! The source's `config` (provider secrets) and tokens are sealed at rest.

use async_trait::async_trait;
use kait_core::time::Millis;
use std::collections::HashMap;

use kait_core::{AppId, Application, MessageId, ReceivedId, Source, SourceId};

use crate::{Applications, Page, PageRequest, StoreError, StoreResult};

/// What became of a received request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceivedOutcome {
    /// Verified and kept: it is the message `msg_id`, forwarded to the source's endpoints.
    Accepted,
    /// Verified, but the sender's event id was seen before: `msg_id` is the earlier message.
    Duplicate,
    /// Not forwarded: the verification failed (`reason` says why).
    Refused,
    /// A handshake answered without forwarding (Slack's `url_verification`).
    Answered,
}

impl ReceivedOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
            Self::Answered => "answered",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Accepted,
            Self::Duplicate,
            Self::Refused,
            Self::Answered,
        ]
        .into_iter()
        .find(|outcome| outcome.as_str() == text)
    }
}

/// One entry of a source's log of received requests. The body itself lives in the message it
/// became (refused requests keep no body: the log is for diagnosis, not a second store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub id: ReceivedId,
    pub source_id: SourceId,
    pub received_at: Millis,
    pub outcome: ReceivedOutcome,
    /// Why verification failed, for `Refused`.
    pub reason: Option<String>,
    pub content_type: Option<String>,
    pub size: u64,
    /// The sender's own id of the event (`X-GitHub-Delivery`, `webhook-id`, Stripe's `id`).
    pub event_id: Option<String>,
    pub msg_id: Option<MessageId>,
}

#[async_trait]
pub trait Sources: Send + Sync + 'static {
    /// Creates a source; a taken `uid` is a `Conflict`.
    async fn create_source(&self, source: Source) -> StoreResult<Source>;
    /// Looks a source up by id, or by `uid` when the key is not a `src_` id.
    async fn get_source(&self, id_or_uid: &str) -> StoreResult<Option<Source>>;
    async fn list_sources(&self, page: PageRequest) -> StoreResult<Page<Source>>;
    /// Writes every field but id and `created_at` if the stored revision is still
    /// `source.revision` (else `Stale`); returns the stored record, revision moved on.
    async fn update_source(&self, source: Source) -> StoreResult<Source>;
    async fn delete_source(&self, id: &SourceId) -> StoreResult<()>;

    /// Logs a request that became no message (refused, or a handshake). Accepted requests are
    /// logged by `create_message` in the message's own transaction (`NewMessage::received`).
    async fn record_received(&self, request: ReceivedRequest) -> StoreResult<()>;
    /// The source's received requests, newest first (by id: to the second, as ids are time-ordered KSUIDs).
    async fn list_received(
        &self,
        source_id: &SourceId,
        page: PageRequest,
    ) -> StoreResult<Page<ReceivedRequest>>;
    async fn get_received(
        &self,
        source_id: &SourceId,
        id: &ReceivedId,
    ) -> StoreResult<Option<ReceivedRequest>>;

    /// The last tick each cron source fired.
    async fn last_ticks(&self) -> StoreResult<HashMap<SourceId, Millis>>;
    /// Records that the source fired its tick `at` (a later tick is kept if already there).
    async fn record_tick(&self, source_id: &SourceId, at: Millis) -> StoreResult<()>;
}

/// The uid of the application a source's events become messages of. Its endpoints are the
/// source's endpoints, so forwarding is ordinary delivery (signed with each endpoint's
/// secret, retried, rate-limited, logged, resendable under this uid).
pub fn source_app_uid(source_id: &SourceId) -> String {
    format!("kait-source-{source_id}")
}

/// The source's application, made on first use (and again if someone deleted it).
pub async fn source_application(
    store: &dyn Applications,
    source_id: &SourceId,
) -> StoreResult<Application> {
    let uid = source_app_uid(source_id);
    if let Some(application) = store.get_application(&uid).await? {
        return Ok(application);
    }
    let now = kait_core::time::now_millis();
    let application = Application {
        id: AppId::generate(),
        uid: Some(uid.clone()),
        name: format!("Incoming source {source_id}"),
        rate_limit: None,
        metadata: [("kaitSourceId".to_owned(), source_id.to_string())].into(),
        created_at: now,
        updated_at: now,
        revision: 0,
    };
    match store.create_application(application).await {
        // Made at the same moment by another request or node.
        Err(StoreError::Conflict(_)) => store
            .get_application(&uid)
            .await?
            .ok_or(StoreError::NotFound),
        other => other,
    }
}
