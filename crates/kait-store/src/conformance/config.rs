//! Configuration: the config epoch, and changes that race each other. Every change to an
//! application or endpoint is a read-modify-write that names the revision it read; a write
//! from an older read is refused (`Stale`) and made again on top of the newer state, so no
//! change is silently undone.

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{Application, Endpoint, EndpointId};

use super::{application, endpoint, message, outcome};
use crate::{NextStep, Store, StoreError};

/// Reads, changes and writes an endpoint until no other change overtakes it (what the API's
/// `retry_stale` does for every endpoint route).
async fn change_endpoint(
    store: &dyn Store,
    id: &EndpointId,
    change: impl Fn(Endpoint) -> Endpoint,
) -> Endpoint {
    loop {
        let current = store.get_endpoint_by_id(id).await.unwrap().unwrap();
        match store.update_endpoint(change(current)).await {
            Err(StoreError::Stale(_)) => continue,
            other => return other.unwrap(),
        }
    }
}

/// A rotation: a new secret, the one read kept for a grace period of a minute.
fn rotated(secret: Secret) -> impl Fn(Endpoint) -> Endpoint {
    move |current| Endpoint {
        previous_secret: Some((current.secret.clone(), now_millis() + 60_000)),
        secret: secret.clone(),
        ..current
    }
}

/// Endpoint changes move the config epoch before they are acknowledged.
pub async fn endpoint_changes_move_the_epoch_before_they_are_acknowledged(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let before = store.config_epoch();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let after_create = store.config_epoch();
    assert!(after_create > before);
    store
        .update_endpoint(Endpoint {
            disabled: true,
            ..created
        })
        .await
        .unwrap();
    assert!(store.config_epoch() > after_create);
}

/// Issue 12: a PATCH that read the endpoint before the store auto-disabled it cannot write
/// it back enabled; made again on the new state, it keeps the endpoint disabled.
pub async fn a_stale_endpoint_write_cannot_undo_auto_disable(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let read_by_patch = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let mut failed = outcome(
        claim.deliveries[0].delivery_id,
        &claim.deliveries[0],
        NextStep::GiveUp,
    );
    failed.attempt.created_at = now_millis() - 10_000;
    let disabled = store
        .record_outcomes(vec![failed].into(), Some(1_000))
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1);

    let stale = store
        .update_endpoint(Endpoint {
            description: "from the patch".into(),
            ..read_by_patch
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Stale("endpoint"))),
        "{stale:?}"
    );
    let patched = change_endpoint(store, &created.id, |current| Endpoint {
        description: "from the patch".into(),
        ..current
    })
    .await;
    assert!(patched.disabled, "the PATCH did not re-enable the endpoint");
    assert_eq!(patched.description, "from the patch");
    let stored = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.disabled);
    assert_eq!(stored.revision, patched.revision);
}

/// Issue 12: a header change that read the endpoint before a rotation was written cannot
/// put the old secret back (the new one was already returned to its caller).
pub async fn a_rotation_racing_a_header_change_is_kept(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let read_by_headers = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    let new_secret = Secret::generate();
    change_endpoint(store, &created.id, rotated(new_secret.clone())).await;
    let headers = [("x-tenant".to_owned(), "a".to_owned())].into();
    let stale = store
        .update_endpoint(Endpoint {
            headers,
            ..read_by_headers
        })
        .await;
    assert!(matches!(stale, Err(StoreError::Stale(_))), "{stale:?}");
    change_endpoint(store, &created.id, |current| Endpoint {
        headers: [("x-tenant".to_owned(), "a".to_owned())].into(),
        ..current
    })
    .await;
    let stored = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.secret, new_secret,
        "the rotated secret is still current"
    );
    assert_eq!(
        stored.headers.get("x-tenant").map(String::as_str),
        Some("a")
    );
}

/// Issue 12: two rotations that read the same state: the second is made again on top of the
/// first, so the newest secret is current and the first one still verifies.
pub async fn racing_rotations_keep_the_newest_current_and_the_one_before_verifying(
    store: &dyn Store,
) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let first_read = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    let second_read = first_read.clone();
    let (first, second) = (Secret::generate(), Secret::generate());
    store
        .update_endpoint(rotated(first.clone())(first_read))
        .await
        .unwrap();
    let stale = store
        .update_endpoint(rotated(second.clone())(second_read))
        .await;
    assert!(matches!(stale, Err(StoreError::Stale(_))), "{stale:?}");
    let stored = change_endpoint(store, &created.id, rotated(second.clone())).await;
    assert_eq!(stored.secret, second);
    let (previous, until) = stored.previous_secret.expect("a grace period");
    assert_eq!(
        previous, first,
        "the first rotation's secret still verifies"
    );
    assert!(until > now_millis());
}

/// Issue 12: rotations running at once each return a secret that was current at some point:
/// the last one stays current, and the one it replaced (another rotation's) still verifies.
pub async fn concurrent_rotations_chain_their_secrets(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let secrets: Vec<Secret> = (0..8).map(|_| Secret::generate()).collect();
    let rotations = secrets
        .iter()
        .map(|secret| change_endpoint(store, &created.id, rotated(secret.clone())));
    let results = futures_util::future::join_all(rotations).await;
    let mut revisions: Vec<u64> = results.iter().map(|endpoint| endpoint.revision).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 8, "each rotation was its own change");
    let stored = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert!(secrets.contains(&stored.secret));
    let (previous, _) = stored.previous_secret.expect("a grace period");
    assert!(
        secrets.contains(&previous) && previous != stored.secret,
        "the secret before the last rotation is another rotation's"
    );
}

/// Issue 12: two changes of different fields of one application, from the same read: both
/// end up stored.
pub async fn racing_application_changes_both_survive(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let first_read = store
        .get_application(app.id.as_str())
        .await
        .unwrap()
        .unwrap();
    let second_read = first_read.clone();
    let renamed = store
        .update_application(Application {
            name: "renamed".into(),
            ..first_read
        })
        .await
        .unwrap();
    assert_eq!(renamed.revision, app.revision + 1);
    let metadata = [("team".to_owned(), "video".to_owned())].into();
    let stale = store
        .update_application(Application {
            metadata,
            ..second_read
        })
        .await;
    assert!(
        matches!(stale, Err(StoreError::Stale("application"))),
        "{stale:?}"
    );
    loop {
        let current = store
            .get_application(app.id.as_str())
            .await
            .unwrap()
            .unwrap();
        let change = Application {
            metadata: [("team".to_owned(), "video".to_owned())].into(),
            ..current
        };
        match store.update_application(change).await {
            Err(StoreError::Stale(_)) => continue,
            other => {
                other.unwrap();
                break;
            }
        }
    }
    let stored = store
        .get_application(app.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name, "renamed");
    assert_eq!(
        stored.metadata.get("team").map(String::as_str),
        Some("video")
    );
    let gone = store
        .update_application(Application {
            id: kait_core::AppId::generate(),
            ..stored
        })
        .await;
    assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
}

/// Disabling a gone endpoint (410) is one change: done once, a no-op after, and a write from
/// before it is refused.
pub async fn disabling_a_gone_endpoint_is_one_change(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let epoch = store.config_epoch();
    let disabled = store
        .disable_endpoint(&created.id, now_millis())
        .await
        .unwrap()
        .expect("it was enabled");
    assert!(disabled.disabled);
    assert!(store.config_epoch() > epoch);
    assert!(
        store
            .disable_endpoint(&created.id, now_millis())
            .await
            .unwrap()
            .is_none()
    );
    let stale = store.update_endpoint(created.clone()).await;
    assert!(matches!(stale, Err(StoreError::Stale(_))), "{stale:?}");
    let missing = store
        .disable_endpoint(&EndpointId::generate(), now_millis())
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
}
