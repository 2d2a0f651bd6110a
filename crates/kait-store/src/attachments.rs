//! Attachments (issue 15): what is known of each blob uploaded once and referenced by
//! messages (the claim check). The bytes live in the blob store (`kait-media`); the store keeps
//! the record and which messages reference it, so that retention can tell when a blob may go.
//!
//! A message's own copy of its attachments' records travels with the message (its
//! `attachments` column), so sending a webhook reads nothing more; the `message_attachment`
//! rows written in the message's transaction are only what keeps the blob.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Attachment, AttachmentId};

use crate::StoreResult;

#[async_trait]
pub trait Attachments: Send + Sync + 'static {
    /// Records an uploaded blob, once its bytes are stored.
    async fn create_attachment(&self, attachment: Attachment) -> StoreResult<Attachment>;
    async fn get_attachment(&self, id: &AttachmentId) -> StoreResult<Option<Attachment>>;
    /// The attachments of `app_id` among `ids`, in the order asked; an id that is unknown or
    /// belongs to another application is left out.
    async fn app_attachments(
        &self,
        app_id: &AppId,
        ids: &[AttachmentId],
    ) -> StoreResult<Vec<Attachment>>;
    /// Forgets up to `batch` attachments that may go: referenced once and by no message any
    /// more (their last one was purged or its application deleted), or never referenced and
    /// uploaded before `unreferenced_before`. Returns their ids, for the caller to delete the
    /// bytes (a blob whose deletion fails is left behind, never a record without its blob).
    async fn take_unused_attachments(
        &self,
        unreferenced_before: Millis,
        batch: usize,
    ) -> StoreResult<Vec<AttachmentId>>;
}
