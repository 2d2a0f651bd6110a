//! Attachments on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Attachment, AttachmentId};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows;
use crate::columns;
use crate::{Attachments, StoreResult};

fn attachment_row(row: &Row<'_>) -> rusqlite::Result<Attachment> {
    Ok(Attachment {
        id: AttachmentId::from_trusted(row.get(0)?),
        app_id: AppId::from_trusted(row.get(1)?),
        content_type: row.get(2)?,
        size: row.get::<_, i64>(3)? as u64,
        sha256: row.get(4)?,
        filename: row.get(5)?,
        created_at: row.get(6)?,
    })
}

#[async_trait]
impl Attachments for SqliteStore {
    async fn create_attachment(&self, attachment: Attachment) -> StoreResult<Attachment> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO attachment ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        columns::ATTACHMENT
                    ))?
                    .execute(params![
                        attachment.id.as_str(),
                        attachment.app_id.as_str(),
                        attachment.content_type,
                        i64::try_from(attachment.size).unwrap_or(i64::MAX),
                        attachment.sha256,
                        attachment.filename,
                        attachment.created_at,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "an attachment with this id already exists")
                    })?;
                Ok(attachment)
            })
            .await
    }

    async fn get_attachment(&self, id: &AttachmentId) -> StoreResult<Option<Attachment>> {
        let id = id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM attachment WHERE id = ?1",
                    columns::ATTACHMENT
                ))?
                .query_row([id.as_str()], attachment_row)
                .optional()?)
        })
        .await
    }

    async fn app_attachments(
        &self,
        app_id: &AppId,
        ids: &[AttachmentId],
    ) -> StoreResult<Vec<Attachment>> {
        let app_id = app_id.clone();
        let ids = ids.to_vec();
        self.read(move |connection| {
            let mut lookup = connection.prepare_cached(&format!(
                "SELECT {} FROM attachment WHERE id = ?1 AND app_id = ?2",
                columns::ATTACHMENT
            ))?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(attachment) = lookup
                    .query_row([id.as_str(), app_id.as_str()], attachment_row)
                    .optional()?
                {
                    found.push(attachment);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn take_unused_attachments(
        &self,
        unreferenced_before: Millis,
        batch: usize,
    ) -> StoreResult<Vec<AttachmentId>> {
        self.writer
            .write(move |context| {
                let ids: Vec<String> = context
                    .connection
                    .prepare_cached(
                        "SELECT id FROM attachment WHERE referenced = 0 AND created_at < ?1 \
                         UNION ALL \
                         SELECT a.id FROM attachment a WHERE a.referenced = 1 AND NOT EXISTS \
                         (SELECT 1 FROM message_attachment r WHERE r.attachment_id = a.id) \
                         LIMIT ?2",
                    )?
                    .query_map(params![unreferenced_before, batch as i64], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut delete = context
                    .connection
                    .prepare_cached("DELETE FROM attachment WHERE id = ?1")?;
                for id in &ids {
                    delete.execute([id])?;
                }
                Ok(ids.into_iter().map(AttachmentId::from_trusted).collect())
            })
            .await
    }
}
