//! Records for the stores' own tests.

use std::collections::BTreeSet;

use kait_core::signing::Secret;
use kait_core::time::now_millis;
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryStatus, Endpoint, EndpointId, Message,
    MessageId, TriggerType,
};

use crate::{ClaimedDelivery, NewMessage, NextStep, Outcome};

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
