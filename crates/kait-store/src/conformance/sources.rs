//! Incoming sources: their records, with the provider secrets and tokens they carry.

use kait_core::time::now_millis;
use kait_core::{RawPayload, ReceivedId, Source, SourceId};
use serde_json::json;

use super::{application, endpoint, message};
use crate::{PageRequest, ReceivedOutcome, ReceivedRequest, Store, StoreError};

pub fn source(uid: Option<&str>) -> Source {
    let now = now_millis();
    Source {
        id: SourceId::generate(),
        uid: uid.map(str::to_owned),
        name: "GitHub".into(),
        kind: "github".into(),
        config: json!({ "secret": "It's a Secret to Everybody" }),
        metadata: [("team".to_owned(), "video".to_owned())].into(),
        token: "tok_current_0123456789".into(),
        previous_token: None,
        created_at: now,
        updated_at: now,
        revision: 0,
    }
}

/// Issue 13: a source is created, found by id and uid with its config and token intact,
/// listed in pages, changed only from its current revision, and deleted.
pub async fn sources_are_kept_with_their_secrets(store: &dyn Store) {
    let created = store.create_source(source(Some("github"))).await.unwrap();
    let by_id = store
        .get_source(created.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id, created);
    let by_uid = store.get_source("github").await.unwrap().unwrap();
    assert_eq!(
        by_uid.config,
        json!({ "secret": "It's a Secret to Everybody" })
    );
    assert_eq!(by_uid.token, "tok_current_0123456789");
    let taken = store.create_source(source(Some("github"))).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");

    let rotated = store
        .update_source(Source {
            token: "tok_next_9876543210".into(),
            previous_token: Some((created.token.clone(), now_millis() + 86_400_000)),
            ..by_id.clone()
        })
        .await
        .unwrap();
    assert_eq!(rotated.revision, created.revision + 1);
    let stored = store.get_source("github").await.unwrap().unwrap();
    assert_eq!(stored.token, "tok_next_9876543210");
    assert_eq!(
        stored
            .previous_token
            .as_ref()
            .map(|(token, _)| token.as_str()),
        Some("tok_current_0123456789")
    );
    let stale = store
        .update_source(Source {
            name: "from an older read".into(),
            ..by_id
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Stale("source"))),
        "{stale:?}"
    );

    for _ in 0..3 {
        store.create_source(source(None)).await.unwrap();
    }
    let first = store
        .list_sources(PageRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    assert!(!first.done);
    let rest = store
        .list_sources(PageRequest {
            limit: 10,
            iterator: Some(first.items[1].id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.done);

    store.delete_source(&created.id).await.unwrap();
    assert!(store.get_source("github").await.unwrap().is_none());
    let gone = store.delete_source(&created.id).await;
    assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
    let missing = store.update_source(source(None)).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}

fn received(source_id: &SourceId, event_id: &str) -> ReceivedRequest {
    ReceivedRequest {
        id: ReceivedId::generate(),
        source_id: source_id.clone(),
        received_at: now_millis(),
        outcome: ReceivedOutcome::Accepted,
        reason: None,
        content_type: Some("application/x-www-form-urlencoded".into()),
        size: 11,
        event_id: Some(event_id.into()),
        msg_id: None,
    }
}

/// Issue 13: a received request becomes a message with its raw body (bytes that are not
/// UTF-8, content type, extra headers) and a log entry in one transaction; the same event
/// id again is logged as a duplicate of the first message and makes no second delivery;
/// refusals are logged without a message; deleting the source takes its log with it.
pub async fn received_requests_are_logged_with_their_message(store: &dyn Store) {
    let sender = store.create_source(source(None)).await.unwrap();
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 10)
        .await
        .unwrap();
    let raw = RawPayload {
        content_type: "application/x-www-form-urlencoded".into(),
        body: b"a=1&b=\xff\x00z".to_vec(),
        headers: vec![("svix-ingest-query".into(), "x=1".into())],
    };
    let accept = |event_id: &str| {
        let mut new = message(&app.id, "github.push", None);
        new.message.payload = r#"{"a":"1"}"#.into();
        new.message.raw = Some(raw.clone());
        new.idempotency_key = Some(format!("ingest:{event_id}"));
        new.received = Some(received(&sender.id, event_id));
        new
    };
    let first = store.create_message(accept("delivery-1")).await.unwrap();
    assert!(first.created);
    assert_eq!(first.deliveries, 1);
    let again = store.create_message(accept("delivery-1")).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.message.id, first.message.id);

    let stored = store
        .get_message(&app.id, first.message.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.raw.as_ref(), Some(&raw));
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1, "a duplicate makes no delivery");
    assert_eq!(claim.deliveries[0].raw.as_deref(), Some(&raw));

    let mut refused = received(&sender.id, "delivery-2");
    refused.outcome = ReceivedOutcome::Refused;
    refused.reason = Some("signature mismatch".into());
    store.record_received(refused.clone()).await.unwrap();

    let log = store
        .list_received(
            &sender.id,
            PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let outcomes: Vec<_> = log.items.iter().map(|entry| entry.outcome).collect();
    assert_eq!(log.items.len(), 3, "{outcomes:?}");
    assert!(outcomes.contains(&ReceivedOutcome::Accepted));
    assert!(outcomes.contains(&ReceivedOutcome::Duplicate));
    for entry in log
        .items
        .iter()
        .filter(|entry| entry.outcome != ReceivedOutcome::Refused)
    {
        assert_eq!(entry.msg_id.as_ref(), Some(&first.message.id));
        assert_eq!(entry.size, 11);
    }
    assert_eq!(
        store
            .get_received(&sender.id, &refused.id)
            .await
            .unwrap()
            .as_ref(),
        Some(&refused)
    );
    let other = store.create_source(source(None)).await.unwrap();
    assert!(
        store
            .get_received(&other.id, &refused.id)
            .await
            .unwrap()
            .is_none(),
        "an entry is found only under its own source"
    );

    // The log is history: purged with the attempt log, then with its source.
    assert_eq!(
        store
            .purge_history(None, Some(now_millis() + 1), 100)
            .await
            .unwrap(),
        3
    );
    store.record_received(refused.clone()).await.unwrap();
    store.delete_source(&sender.id).await.unwrap();
    let log = store
        .list_received(
            &sender.id,
            PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(log.items.is_empty());
}

/// Issue 13: a cron source's last tick only moves forward and goes with the source; a
/// source's application is made once, however often it is asked for.
pub async fn cron_ticks_only_move_forward(store: &dyn Store) {
    let sender = store.create_source(source(None)).await.unwrap();
    assert!(store.last_ticks().await.unwrap().is_empty());
    store.record_tick(&sender.id, 2_000).await.unwrap();
    store.record_tick(&sender.id, 1_000).await.unwrap();
    assert_eq!(store.last_ticks().await.unwrap()[&sender.id], 2_000);
    store.record_tick(&sender.id, 3_000).await.unwrap();
    assert_eq!(store.last_ticks().await.unwrap()[&sender.id], 3_000);

    let first = crate::source_application(store, &sender.id).await.unwrap();
    let again = crate::source_application(store, &sender.id).await.unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(
        first.uid.as_deref(),
        Some(crate::source_app_uid(&sender.id).as_str())
    );

    store.delete_source(&sender.id).await.unwrap();
    assert!(store.last_ticks().await.unwrap().is_empty());
}
