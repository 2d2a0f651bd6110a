//! Attachments: their records, the messages that reference them, and when they may go.

use kait_core::time::now_millis;
use kait_core::{AppId, Attachment, AttachmentId, MediaSettings};

use super::{application, endpoint, message, outcome};
use crate::{NextStep, Store};

fn attachment(app_id: &AppId, created_at: i64) -> Attachment {
    Attachment {
        id: AttachmentId::generate(),
        app_id: app_id.clone(),
        content_type: "video/mp4".into(),
        size: 52_428_800,
        sha256: "ab".repeat(32),
        filename: Some("clip.mp4".into()),
        created_at,
    }
}

pub async fn attachments_travel_with_messages_and_go_with_the_last(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let other = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let now = now_millis();
    let clip = store
        .create_attachment(attachment(&app.id, now))
        .await
        .unwrap();
    let snapshot = store
        .create_attachment(Attachment {
            content_type: "image/jpeg".into(),
            filename: None,
            ..attachment(&app.id, now)
        })
        .await
        .unwrap();
    let stale_upload = store
        .create_attachment(attachment(&app.id, now - 100_000))
        .await
        .unwrap();
    let foreign = store
        .create_attachment(attachment(&other.id, now))
        .await
        .unwrap();
    assert_eq!(
        store.get_attachment(&clip.id).await.unwrap(),
        Some(clip.clone())
    );
    assert_eq!(
        store
            .get_attachment(&AttachmentId::generate())
            .await
            .unwrap(),
        None
    );
    // Only this application's, in the order asked.
    let asked = [snapshot.id.clone(), foreign.id.clone(), clip.id.clone()];
    assert_eq!(
        store.app_attachments(&app.id, &asked).await.unwrap(),
        vec![snapshot.clone(), clip.clone()]
    );

    // Two messages reference the clip, one the snapshot too; a claim carries the records.
    let mut first = message(&app.id, "camera.motion", None);
    first.message.attachments = vec![clip.clone(), snapshot.clone()];
    let first = store.create_message(first).await.unwrap();
    assert_eq!(
        store
            .get_message(&app.id, first.message.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .attachments,
        vec![clip.clone(), snapshot.clone()]
    );
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    assert_eq!(
        claim.deliveries[0].attachments.as_deref(),
        Some(&[clip.clone(), snapshot.clone()][..])
    );
    let mut second = message(&app.id, "camera.motion", None);
    second.message.attachments = vec![clip.clone()];
    let second = store.create_message(second).await.unwrap();
    let claim2 = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let finished: Vec<_> = claim
        .deliveries
        .iter()
        .chain(&claim2.deliveries)
        .map(|delivery| outcome(delivery.delivery_id, delivery, NextStep::Succeeded))
        .collect();
    store.record_outcomes(finished.into(), None).await.unwrap();

    // Referenced ones stay however old; the stale upload nobody referenced goes.
    let taken = store
        .take_unused_attachments(now - 1_000, 100)
        .await
        .unwrap();
    assert_eq!(taken, vec![stale_upload.id.clone()]);
    assert_eq!(store.get_attachment(&stale_upload.id).await.unwrap(), None);

    // Purging the first message frees the snapshot (its only message), not the clip.
    let purge_before = first.message.created_at + 1;
    assert!(second.message.created_at >= first.message.created_at);
    let mut purged = 0;
    while store
        .get_message(&app.id, first.message.id.as_str())
        .await
        .unwrap()
        .is_some()
    {
        purged += store
            .purge_history(Some(purge_before), None, 1)
            .await
            .unwrap();
        assert!(purged <= 2, "purged more than the two messages");
    }
    let still_there = store
        .get_message(&app.id, second.message.id.as_str())
        .await
        .unwrap()
        .is_some();
    let mut taken = store
        .take_unused_attachments(now - 1_000, 100)
        .await
        .unwrap();
    taken.sort();
    let mut expected = vec![snapshot.id.clone()];
    if !still_there {
        // Created in the same millisecond: purged together.
        expected.push(clip.id.clone());
        expected.sort();
    }
    assert_eq!(taken, expected);
    if still_there {
        assert!(store.get_attachment(&clip.id).await.unwrap().is_some());
        // Deleting the application drops its messages: the clip goes with the last.
        store.delete_application(&app.id).await.unwrap();
        assert_eq!(
            store
                .take_unused_attachments(now - 1_000, 100)
                .await
                .unwrap(),
            vec![clip.id.clone()]
        );
    }
    // Another application's fresh upload is untouched.
    assert!(store.get_attachment(&foreign.id).await.unwrap().is_some());
}

pub async fn an_endpoint_keeps_its_media_settings(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let plain = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let media = MediaSettings {
        link_ttl_secs: Some(600),
        inline_max_bytes: Some(4096),
    };
    let created = store
        .create_endpoint(
            kait_core::Endpoint {
                media,
                ..endpoint(&app.id, None)
            },
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get_endpoint(&app.id, created.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .media,
        media
    );
    assert_eq!(
        store
            .get_endpoint(&app.id, plain.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .media,
        MediaSettings::default()
    );
    let updated = store
        .update_endpoint(kait_core::Endpoint {
            media: MediaSettings::default(),
            ..created
        })
        .await
        .unwrap();
    assert_eq!(
        store
            .get_endpoint(&app.id, updated.id.as_str())
            .await
            .unwrap()
            .unwrap()
            .media,
        MediaSettings::default()
    );
}
