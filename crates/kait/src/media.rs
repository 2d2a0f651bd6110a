//! The media half of `kait serve`: which blob store attachments use (and whether this
//! configuration can have attachments at all), and the sweep that deletes blobs no message
//! needs any more.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kait_media::{Blobs, LinkKeys, Media};
use kait_store::Attachments;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;

/// What the link keys are derived for (see `SealingKey::derive`).
const LINK_KEY_PURPOSE: &str = "media-links";

/// An upload no message referenced is deleted after this long.
pub const UNREFERENCED_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How many records one sweep step takes.
const SWEEP_BATCH: usize = 100;

/// The media configuration for `config`, or `None` when attachments are off: on PostgreSQL
/// without `--blob-url`, since every node must read the blobs any node stored. Refuses (at
/// start-up, with the reason) what cannot work: a PostgreSQL cluster's blobs under one node's
/// data dir.
pub fn open(config: &ServeConfig, public_url: &str) -> anyhow::Result<Option<Media>> {
    if config.postgres.is_some() {
        let Some(url) = &config.blob_url else {
            tracing::warn!(
                "attachments are off: on PostgreSQL every node must read the blobs any node \
                 stored; set --blob-url s3://bucket/prefix or file:///a/directory/all/nodes/mount"
            );
            return Ok(None);
        };
        check_shared(url, &config.data_dir)?;
    }
    let blobs = Blobs::open(config.blob_url.as_deref(), &config.data_dir)
        .context("opening the attachment store (--blob-url)")?;
    let (current, previous) = config.secret_keys()?.derived(LINK_KEY_PURPOSE);
    tracing::info!(store = blobs.describe(), "attachments enabled");
    Ok(Some(Media {
        blobs,
        links: LinkKeys::new(current, previous),
        public_url: public_url.into(),
        max_upload_bytes: config.max_attachment_bytes,
    }))
}

/// Refuses a PostgreSQL node's `--blob-url file://…` inside its own data dir: the other
/// nodes could not read what it stores there.
pub fn check_shared(url: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let Ok(kait_media::blobs::BlobUrl::Directory(path)) = kait_media::blobs::check_url(url) else {
        return Ok(());
    };
    let absolute = |path: &std::path::Path| {
        path.canonicalize()
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.to_owned())
    };
    if absolute(&path).starts_with(absolute(data_dir)) {
        bail!(
            "--blob-url {url} is inside this node's data dir ({}): the other PostgreSQL nodes \
             cannot read it; use a bucket (s3://…) or a directory every node mounts",
            data_dir.display()
        );
    }
    Ok(())
}

/// One sweep: forgets the attachments nothing needs (see
/// [`Attachments::take_unused_attachments`]) and deletes their blobs. Returns how many went.
pub async fn sweep(
    store: &dyn Attachments,
    blobs: &Blobs,
    now: kait_core::time::Millis,
) -> kait_store::StoreResult<usize> {
    let unreferenced_before = now - UNREFERENCED_LIFETIME.as_millis() as i64;
    let mut total = 0;
    loop {
        let ids = store
            .take_unused_attachments(unreferenced_before, SWEEP_BATCH)
            .await?;
        for id in &ids {
            if let Err(error) = blobs.delete(id.as_str()).await {
                tracing::warn!(%error, %id, "deleting an unused attachment's blob failed; it stays behind");
            }
        }
        total += ids.len();
        if ids.len() < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

/// Sweeps every `interval` until shutdown.
pub async fn run_sweeps(
    store: Arc<dyn Attachments>,
    blobs: Blobs,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match sweep(store.as_ref(), &blobs, kait_core::time::now_millis()).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "unused attachments deleted"),
            Err(error) => tracing::warn!(%error, "sweeping unused attachments failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kait_core::{AppId, Application, Attachment, AttachmentId, Message, MessageId};
    use kait_store::prelude::*;
    use kait_store::{NewMessage, SqliteOptions, SqliteStore};

    #[tokio::test]
    async fn a_sweep_deletes_the_blobs_no_message_needs() {
        let dir = std::env::temp_dir().join(format!("kait-sweep-{}", AttachmentId::generate()));
        let store = SqliteStore::open(SqliteOptions::new(
            dir.join("data"),
            kait_store::sealing::SecretKeys::ephemeral(),
        ))
        .unwrap();
        let blobs = Blobs::local(&dir.join("blobs")).unwrap();
        let app = store
            .create_application(Application {
                id: AppId::generate(),
                uid: None,
                name: "cameras".into(),
                rate_limit: None,
                metadata: Default::default(),
                created_at: 0,
                updated_at: 0,
                revision: 0,
            })
            .await
            .unwrap();
        let now = kait_core::time::now_millis();
        let upload = |created_at| {
            let id = AttachmentId::generate();
            let attachment = Attachment {
                id: id.clone(),
                app_id: app.id.clone(),
                content_type: "text/plain".into(),
                size: 5,
                sha256: String::new(),
                filename: None,
                created_at,
            };
            (id, attachment)
        };
        let (kept_id, kept) = upload(now - 2 * UNREFERENCED_LIFETIME.as_millis() as i64);
        let (stale_id, stale) = upload(now - 2 * UNREFERENCED_LIFETIME.as_millis() as i64);
        let (fresh_id, fresh) = upload(now);
        for attachment in [&kept, &stale, &fresh] {
            blobs
                .store(
                    attachment.id.as_str(),
                    "text/plain",
                    futures_util::stream::iter([Ok::<_, String>(Bytes::from_static(b"hello"))]),
                    100,
                )
                .await
                .unwrap();
            store.create_attachment(attachment.clone()).await.unwrap();
        }
        store
            .create_message(NewMessage::new(Message {
                id: MessageId::generate(),
                app_id: app.id.clone(),
                event_type: "camera.motion".into(),
                event_id: None,
                channels: None,
                ordering_key: None,
                payload: "{}".into(),
                raw: None,
                attachments: vec![kept.clone()],
                created_at: now,
                deliver_at: None,
            }))
            .await
            .unwrap();

        assert_eq!(sweep(&store, &blobs, now).await.unwrap(), 1);
        assert!(blobs.read(stale_id.as_str(), None).await.is_err());
        assert!(blobs.read(kept_id.as_str(), None).await.is_ok());
        assert!(blobs.read(fresh_id.as_str(), None).await.is_ok());
        // With its message gone (no endpoints: nothing pending), the kept one goes too.
        store.purge_history(Some(now + 1), None, 10).await.unwrap();
        assert_eq!(sweep(&store, &blobs, now).await.unwrap(), 1);
        assert!(blobs.read(kept_id.as_str(), None).await.is_err());
        assert!(blobs.read(fresh_id.as_str(), None).await.is_ok());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
