//! Incoming sources, the pipe's receiving half: who may send webhooks to Kait, how their
//! requests are verified, and the token in their receiving URL. Configuration like
//! applications and endpoints: a change names the revision it read (see [`crate::config`]).
//! The source's `config` (provider secrets) and tokens are sealed at rest.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{MessageId, ReceivedId, Source, SourceId};

use crate::{Page, PageRequest, StoreResult};

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
    /// The source's received requests, newest first.
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
}
