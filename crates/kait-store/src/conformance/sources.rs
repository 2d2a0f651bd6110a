//! Incoming sources: their records, with the provider secrets and tokens they carry.

use kait_core::time::now_millis;
use kait_core::{Source, SourceId};
use serde_json::json;

use crate::{PageRequest, Store, StoreError};

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
