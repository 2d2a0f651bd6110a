//! Incoming sources, the pipe's receiving half: who may send webhooks to Kait, how their
//! requests are verified, and the token in their receiving URL. Configuration like
//! applications and endpoints: a change names the revision it read (see [`crate::config`]).
//! The source's `config` (provider secrets) and tokens are sealed at rest.

use async_trait::async_trait;
use kait_core::{Source, SourceId};

use crate::{Page, PageRequest, StoreResult};

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
}
