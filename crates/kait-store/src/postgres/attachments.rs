//! Attachments on PostgreSQL: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Attachment, AttachmentId};
use tokio_postgres::Row;

use super::{PgStore, rows};
use crate::columns;
use crate::{Attachments, StoreResult};

fn attachment_row(row: &Row) -> StoreResult<Attachment> {
    Ok(Attachment {
        id: AttachmentId::from_trusted(row.try_get(0)?),
        app_id: AppId::from_trusted(row.try_get(1)?),
        content_type: row.try_get(2)?,
        size: row.try_get::<_, i64>(3)? as u64,
        sha256: row.try_get(4)?,
        filename: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

#[async_trait]
impl Attachments for PgStore {
    async fn create_attachment(&self, attachment: Attachment) -> StoreResult<Attachment> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO attachment ({}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    columns::ATTACHMENT
                ),
                &[
                    &attachment.id.as_str(),
                    &attachment.app_id.as_str(),
                    &attachment.content_type,
                    &i64::try_from(attachment.size).unwrap_or(i64::MAX),
                    &attachment.sha256,
                    &attachment.filename,
                    &attachment.created_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an attachment with this id already exists")
            })?;
        Ok(attachment)
    }

    async fn get_attachment(&self, id: &AttachmentId) -> StoreResult<Option<Attachment>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM attachment WHERE id = $1",
                    columns::ATTACHMENT
                ),
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(attachment_row).transpose()
    }

    async fn app_attachments(
        &self,
        app_id: &AppId,
        ids: &[AttachmentId],
    ) -> StoreResult<Vec<Attachment>> {
        let wanted: Vec<&str> = ids.iter().map(AttachmentId::as_str).collect();
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {} FROM attachment WHERE id = ANY($1) AND app_id = $2",
                    columns::ATTACHMENT
                ),
                &[&wanted, &app_id.as_str()],
            )
            .await?;
        let mut found = rows
            .iter()
            .map(attachment_row)
            .collect::<StoreResult<Vec<_>>>()?;
        found.sort_by_key(|attachment| ids.iter().position(|id| *id == attachment.id));
        Ok(found)
    }

    async fn take_unused_attachments(
        &self,
        unreferenced_before: Millis,
        batch: usize,
    ) -> StoreResult<Vec<AttachmentId>> {
        let rows = self
            .client()
            .await?
            .query(
                "DELETE FROM attachment WHERE id IN ( \
                   (SELECT id FROM attachment WHERE referenced = 0 AND created_at < $1 LIMIT $2) \
                   UNION ALL \
                   (SELECT a.id FROM attachment a WHERE a.referenced = 1 AND NOT EXISTS \
                     (SELECT 1 FROM message_attachment r WHERE r.attachment_id = a.id) LIMIT $2)) \
                 RETURNING id",
                &[&unreferenced_before, &(batch as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| Ok(AttachmentId::from_trusted(row.try_get(0)?)))
            .collect()
    }
}
