//! Records for the stores' own tests.

use std::collections::BTreeSet;

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryStatus, Endpoint, EndpointId, Message,
    MessageId, TriggerType,
};

use kait_core::access::{Capabilities, Capability};

use crate::{
    AppTokenGrant, ClaimedDelivery, IdempotentResponse, NewAppToken, NewMessage, NextStep, Outcome,
    StoreError,
};

pub fn application() -> Application {
    Application {
        id: AppId::generate(),
        uid: None,
        name: "test".into(),
        rate_limit: None,
        metadata: Default::default(),
        created_at: 0,
        updated_at: 0,
    }
}

pub fn endpoint(app_id: &AppId, event_types: Option<&[&str]>) -> Endpoint {
    Endpoint {
        id: EndpointId::generate(),
        app_id: app_id.clone(),
        uid: None,
        url: "http://127.0.0.1:9/hook".into(),
        description: String::new(),
        version: 1,
        disabled: false,
        event_types: event_types.map(|names| {
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<BTreeSet<_>>()
        }),
        channels: None,
        rate_limit: None,
        metadata: Default::default(),
        secret: Secret::generate(),
        previous_secret: None,
        headers: Default::default(),
        ordering: Default::default(),
        format: Default::default(),
        kind: Default::default(),
        created_at: 0,
        updated_at: 0,
    }
}

pub fn message(app_id: &AppId, event_type: &str, event_id: Option<&str>) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::generate(),
            app_id: app_id.clone(),
            event_type: event_type.into(),
            event_id: event_id.map(str::to_owned),
            channels: None,
            ordering_key: None,
            payload: "{}".into(),
            created_at: now_millis(),
        },
        idempotency_key: None,
    }
}

pub fn outcome(delivery_id: i64, claimed: &ClaimedDelivery, next: NextStep) -> Outcome {
    Outcome {
        delivery_id,
        attempt: Attempt {
            id: AttemptId::generate(),
            msg_id: claimed.msg_id.clone(),
            endpoint_id: claimed.endpoint_id.clone(),
            app_id: claimed.app_id.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            status: if next == NextStep::Succeeded {
                DeliveryStatus::Success
            } else {
                DeliveryStatus::Fail
            },
            response_status_code: 500,
            response: String::new(),
            response_duration_ms: 1,
            trigger_type: TriggerType::Scheduled,
            created_at: now_millis(),
        },
        next,
        reached_endpoint: true,
    }
}

/// Retention, the same on every store: old attempts and finished messages go, in batches;
/// a message still being delivered stays.
pub async fn purges_history_but_keeps_pending_work(store: &dyn crate::Store) {
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.push(
            store
                .create_message(message(&app.id, "a.b", None))
                .await
                .unwrap(),
        );
    }
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let outcomes: Vec<_> = claim
        .deliveries
        .iter()
        .map(|delivery| outcome(delivery.delivery_id, delivery, NextStep::Succeeded))
        .collect();
    store.record_outcomes(outcomes.into(), None).await.unwrap();
    let pending = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();

    let cutoff = now_millis() + 1;
    assert_eq!(store.purge_history(None, Some(cutoff), 2).await.unwrap(), 2);
    assert_eq!(
        store.purge_history(Some(cutoff), None, 100).await.unwrap(),
        3
    );
    assert_eq!(
        store
            .purge_history(Some(cutoff), Some(cutoff), 100)
            .await
            .unwrap(),
        1
    );
    for accepted in &delivered {
        assert!(
            store
                .get_message(&app.id, accepted.message.id.as_str())
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        store
            .get_message(&app.id, pending.message.id.as_str())
            .await
            .unwrap()
            .is_some(),
        "a message still being delivered is kept"
    );
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        vec![(DeliveryStatus::Pending, 1)]
    );
}

/// Claims leave the endpoints they are told to skip alone (their lanes are full), take the
/// others' deliveries oldest first, and report no due time for the skipped ones.
pub async fn claims_skip_full_endpoints(store: &dyn crate::Store) {
    let app = store.create_application(application()).await.unwrap();
    let full = store
        .create_endpoint(endpoint(&app.id, Some(&["full.lane"])), 100)
        .await
        .unwrap();
    let other = store
        .create_endpoint(endpoint(&app.id, Some(&["other.lane"])), 100)
        .await
        .unwrap();
    for _ in 0..5 {
        store
            .create_message(message(&app.id, "full.lane", None))
            .await
            .unwrap();
    }
    let mut expected = Vec::new();
    for _ in 0..3 {
        expected.push(
            store
                .create_message(message(&app.id, "other.lane", None))
                .await
                .unwrap()
                .message
                .id,
        );
    }
    let claim = store
        .claim_due(now_millis(), 10, vec![full.id.clone()])
        .await
        .unwrap();
    let claimed: Vec<_> = claim.deliveries.iter().map(|d| d.msg_id.clone()).collect();
    assert_eq!(claimed, expected, "only the other endpoint's, oldest first");
    assert!(claim.deliveries.iter().all(|d| d.endpoint_id == other.id));
    assert_eq!(
        claim.next_due_at, None,
        "the skipped endpoint's work is not reported"
    );

    let rest = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(rest.deliveries.len(), 5);
    assert!(rest.deliveries.iter().all(|d| d.endpoint_id == full.id));
}

/// A message for an application that does not exist (any more) is refused inside the write,
/// so an API that cached the application's id cannot leave orphaned messages behind; and
/// every application change moves the config epoch that such caches check.
pub async fn messages_need_a_live_application(store: &dyn crate::Store) {
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let (first, second) = (
        store
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap(),
        store
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap(),
    );
    assert!(first.created && second.created);

    let before_update = store.config_epoch();
    let mut renamed = app.clone();
    renamed.uid = Some("renamed".into());
    store.update_application(renamed).await.unwrap();
    let before_delete = store.config_epoch();
    assert_ne!(before_update, before_delete, "an update moves the epoch");
    store.delete_application(&app.id).await.unwrap();
    assert_ne!(
        store.config_epoch(),
        before_delete,
        "a delete moves the epoch"
    );

    let refused = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, crate::StoreError::NotFound),
        "{refused:?}"
    );
    let never = AppId::generate();
    assert!(matches!(
        store.create_message(message(&never, "a.b", None)).await,
        Err(crate::StoreError::NotFound)
    ));
    assert!(
        store.delivery_counts().await.unwrap().is_empty(),
        "no delivery written for a missing application"
    );

    // Another application in the same batch is not affected.
    let other = store.create_application(application()).await.unwrap();
    let (accepted, refused) = tokio::join!(
        store.create_message(message(&other.id, "a.b", None)),
        store.create_message(message(&never, "a.b", None)),
    );
    let accepted = accepted.unwrap();
    assert!(accepted.created);
    assert!(matches!(refused, Err(crate::StoreError::NotFound)));
    assert!(
        store
            .get_message(&other.id, accepted.message.id.as_str())
            .await
            .unwrap()
            .is_some()
    );
}

/// The queue-depth gauges' source: pending deliveries split by whether they are due.
pub async fn counts_due_and_scheduled_deliveries(store: &dyn crate::Store) {
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let now = now_millis();
    assert_eq!(store.queue_depth(now).await.unwrap(), Default::default());
    for _ in 0..3 {
        store
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap();
    }
    assert_eq!(
        store.queue_depth(now_millis()).await.unwrap(),
        crate::QueueDepth {
            due: 6,
            scheduled: 0
        }
    );
    // One delivery fails and is scheduled for a retry a minute from now; one succeeds.
    let claim = store.claim_due(now_millis(), 2, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 2);
    let retry_at = now_millis() + 60_000;
    let outcomes = vec![
        outcome(
            claim.deliveries[0].delivery_id,
            &claim.deliveries[0],
            NextStep::RetryAt(retry_at),
        ),
        outcome(
            claim.deliveries[1].delivery_id,
            &claim.deliveries[1],
            NextStep::Succeeded,
        ),
    ];
    store.record_outcomes(outcomes.into(), None).await.unwrap();
    assert_eq!(
        store.queue_depth(now_millis()).await.unwrap(),
        crate::QueueDepth {
            due: 4,
            scheduled: 1
        }
    );
    assert_eq!(
        store.queue_depth(retry_at).await.unwrap(),
        crate::QueueDepth {
            due: 5,
            scheduled: 0
        }
    );
}

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
pub async fn purges_expired_responses_and_tokens(store: &dyn crate::Store) {
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
pub async fn app_tokens_carry_capabilities_and_expire_all(store: &dyn crate::Store) {
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

/// Issue 11: a remembered response belongs to its application and goes when it is deleted,
/// so a new application with the same uid and key is never answered with it.
pub async fn remembered_responses_go_with_their_application(store: &dyn crate::Store) {
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
pub async fn consumers_per_endpoint_are_bounded(store: &dyn crate::Store) {
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
