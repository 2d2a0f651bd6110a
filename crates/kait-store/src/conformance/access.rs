//! Access: app tokens, remembered responses, pull consumers.

use kait_core::AppId;
use kait_core::access::{Capabilities, Capability};
use kait_core::time::now_millis;

use super::{application, endpoint};
use crate::{AppTokenGrant, IdempotentResponse, NewAppToken, Store, StoreError};

fn token(app_id: &AppId, hash: &str, expires_at: i64, session_id: Option<&str>) -> NewAppToken {
    NewAppToken {
        app_id: app_id.clone(),
        token_hash: hash.into(),
        expires_at,
        capabilities: Capabilities::of(&[Capability::ViewBase, Capability::CreateAttempts]),
        session_id: session_id.map(str::to_owned),
    }
}

fn remembered(app_id: Option<&AppId>) -> IdempotentResponse {
    IdempotentResponse {
        app_id: app_id.cloned(),
        fingerprint: "f1".into(),
        status: 201,
        body: b"{}".to_vec(),
    }
}

/// Expired `Idempotency-Key` responses and app tokens are deleted; live ones stay.
pub async fn purges_expired_responses_and_tokens(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    store
        .save_idempotent_response("k", "POST /app", remembered(None))
        .await
        .unwrap();
    store
        .create_app_token(token(&app.id, "hash-old", 1_000, None))
        .await
        .unwrap();
    store
        .create_app_token(token(&app.id, "hash-live", now_millis() + 60_000, None))
        .await
        .unwrap();
    let day = 24 * 3600 * 1000;
    // Nothing has expired yet but the old token.
    assert_eq!(store.purge_expired(now_millis(), day).await.unwrap(), 1);
    assert_eq!(
        store
            .idempotent_response("k", "POST /app", 0)
            .await
            .unwrap(),
        Some(remembered(None))
    );
    // A day and a bit later the response goes too; the live token has expired by then as well.
    assert_eq!(
        store
            .purge_expired(now_millis() + day + 1_000, day)
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .idempotent_response("k", "POST /app", 0)
            .await
            .unwrap()
            .is_none()
    );
}

/// Issue 11: a token comes back with its capabilities; `expire-all` ends an application's
/// tokens (or only those of named sessions) and no other application's.
pub async fn app_tokens_carry_capabilities_and_expire_all(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let other = store.create_application(application()).await.unwrap();
    let later = now_millis() + 3_600_000;
    for (app_id, hash, session) in [
        (&app.id, "a-1", Some("s1")),
        (&app.id, "a-2", Some("s2")),
        (&app.id, "a-3", None),
        (&other.id, "b-1", Some("s1")),
    ] {
        store
            .create_app_token(token(app_id, hash, later, session))
            .await
            .unwrap();
    }
    let grant =
        |hash: &'static str| async move { store.app_for_token(hash, now_millis()).await.unwrap() };
    assert_eq!(
        grant("a-1").await,
        Some(AppTokenGrant {
            app_id: app.id.clone(),
            capabilities: Capabilities::of(&[Capability::ViewBase, Capability::CreateAttempts]),
        })
    );
    // Only session s1 of this application.
    let now = now_millis();
    assert_eq!(
        store
            .expire_app_tokens(&app.id, Some(vec!["s1".into()]), now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(grant("a-1").await, None);
    assert!(grant("a-2").await.is_some() && grant("a-3").await.is_some());
    assert!(grant("b-1").await.is_some(), "another application's token");
    // Then every token of the application.
    store
        .expire_app_tokens(&app.id, None, now_millis())
        .await
        .unwrap();
    assert_eq!((grant("a-2").await, grant("a-3").await), (None, None));
    assert!(grant("b-1").await.is_some());
}

/// `POST /api/v1/auth/logout`: one token ends; the others of its application live on.
pub async fn a_portal_token_ends_alone(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let later = now_millis() + 3_600_000;
    for hash in ["t-1", "t-2"] {
        store
            .create_app_token(token(&app.id, hash, later, None))
            .await
            .unwrap();
    }
    assert!(store.end_app_token("t-1").await.unwrap());
    assert!(!store.end_app_token("t-1").await.unwrap(), "already ended");
    assert!(!store.end_app_token("unknown").await.unwrap());
    assert_eq!(
        store.app_for_token("t-1", now_millis()).await.unwrap(),
        None
    );
    assert!(
        store
            .app_for_token("t-2", now_millis())
            .await
            .unwrap()
            .is_some()
    );
}

/// Issue 11: a remembered response belongs to its application and goes when it is deleted,
/// so a new application with the same uid and key is never answered with it.
pub async fn remembered_responses_go_with_their_application(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let other = store.create_application(application()).await.unwrap();
    for (key, app_id) in [("k1", &app.id), ("k2", &other.id)] {
        store
            .save_idempotent_response(key, "POST /endpoint", remembered(Some(app_id)))
            .await
            .unwrap();
    }
    store.delete_application(&app.id).await.unwrap();
    assert_eq!(
        store
            .idempotent_response("k1", "POST /endpoint", 0)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .idempotent_response("k2", "POST /endpoint", 0)
            .await
            .unwrap(),
        Some(remembered(Some(&other.id)))
    );
}

/// Issue 11: consumer names are the caller's, so their number per endpoint is bounded;
/// existing consumers keep moving at the bound.
pub async fn consumers_per_endpoint_are_bounded(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let polling = store
        .create_endpoint(endpoint(&app.id, None), 10)
        .await
        .unwrap();
    for consumer in ["a", "b"] {
        store
            .set_consumer_position(&polling.id, consumer, 1, 2)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.set_consumer_position(&polling.id, "c", 1, 2).await,
        Err(StoreError::LimitReached(_))
    ));
    store
        .set_consumer_position(&polling.id, "a", 7, 2)
        .await
        .unwrap();
    assert_eq!(store.consumer_position(&polling.id, "a").await.unwrap(), 7);
}
