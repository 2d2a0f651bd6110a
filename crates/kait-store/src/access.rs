//! Access: app-scoped tokens (by their hash) and the responses remembered for
//! `Idempotency-Key` repeats.

use async_trait::async_trait;
use kait_core::AppId;
use kait_core::access::Capabilities;
use kait_core::time::Millis;

use crate::StoreResult;

/// A response to a POST with an `Idempotency-Key`, kept so that a repeat gets it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentResponse {
    /// The application the request acted on (resolved from the path), so the entry goes
    /// when the application does and never answers for a later one with the same `uid`.
    pub app_id: Option<AppId>,
    /// A hash of the request body: a repeat with another body is refused, not answered.
    pub fingerprint: String,
    pub status: u16,
    pub body: Vec<u8>,
}

/// An app-scoped token to remember (by its hash).
#[derive(Debug, Clone)]
pub struct NewAppToken {
    pub app_id: AppId,
    pub token_hash: String,
    pub expires_at: Millis,
    pub capabilities: Capabilities,
    /// Svix's `sessionId`: `expire-all` may name sessions to expire only their tokens.
    pub session_id: Option<String>,
}

/// What a presented, unexpired app-scoped token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTokenGrant {
    pub app_id: AppId,
    pub capabilities: Capabilities,
}

#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// The response first given to a POST with this `Idempotency-Key` and request line, if it
    /// was given after `not_before`.
    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>>;
    /// Remembers the response to a POST with an `Idempotency-Key` (the first one wins).
    /// Deleting its application deletes it.
    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()>;
    /// Remembers a token (by its hash) confined to one application, with its capabilities.
    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()>;
    /// What a token grants, if it exists and has not expired at `now`.
    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>>;
    /// Makes the application's tokens (only those of `session_ids`, if given) expire at
    /// `expires_at` at the latest. Returns how many tokens it shortened.
    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64>;
    /// Ends one token at once (a portal's logout). Returns whether it was there.
    async fn end_app_token(&self, token_hash: &str) -> StoreResult<bool>;
}
