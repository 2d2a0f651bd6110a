//! The message log, the delivery queue and housekeeping.

use kait_core::time::now_millis;
use kait_core::{AppId, DeliveryStatus, EndpointId, MessageId, TriggerType};

use super::{application, endpoint, message, outcome};
use crate::{ClaimedDelivery, NewMessage, NextStep, Outcome, Store, StoreError};

/// A message fans out to the endpoints whose filters take it; a claim takes each delivery
/// once; a retry falls due at its time; a success finishes it.
pub async fn fan_out_claim_and_outcomes(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let all = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    store
        .create_endpoint(endpoint(&app.id, Some(&["other.type"])), 100)
        .await
        .unwrap();

    let accepted = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(
        accepted.deliveries, 1,
        "the filtered endpoint gets no delivery"
    );

    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    let claimed = &claim.deliveries[0];
    assert_eq!(claimed.endpoint_id, all.id);
    assert_eq!(&*claimed.payload, "{}");
    assert!(
        store
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .is_empty(),
        "claimed once"
    );

    let retry_at = now_millis() + 60_000;
    store
        .record_outcomes(
            vec![outcome(
                claimed.delivery_id,
                claimed,
                NextStep::RetryAt(retry_at),
            )]
            .into(),
            None,
        )
        .await
        .unwrap();
    let later = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert!(later.deliveries.is_empty(), "not due before its time");
    assert_eq!(later.next_due_at, Some(retry_at));
    let due = store.claim_due(retry_at, 10, Vec::new()).await.unwrap();
    assert_eq!(due.deliveries[0].attempts_made, 1);
    store
        .record_outcomes(
            vec![outcome(
                due.deliveries[0].delivery_id,
                &due.deliveries[0],
                NextStep::Succeeded,
            )]
            .into(),
            None,
        )
        .await
        .unwrap();
    let states = store
        .list_delivery_states(&app.id, &accepted.message.id)
        .await
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Success);
    let counts = store.delivery_counts().await.unwrap();
    assert_eq!(counts, vec![(DeliveryStatus::Success, 1)]);
}

/// An endpoint failing without a success for longer than the limit is disabled, counted
/// from its first failure.
pub async fn an_endpoint_failing_too_long_is_disabled(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let fail = |claimed: &crate::ClaimedDelivery, at: i64| {
        let mut failed = outcome(
            claimed.delivery_id,
            claimed,
            NextStep::RetryAt(now_millis() + 60_000),
        );
        failed.attempt.created_at = at;
        failed
    };
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let an_hour_ago = now_millis() - 3_600_000;
    let disabled = store
        .record_outcomes(
            vec![fail(&claim.deliveries[0], an_hour_ago)].into(),
            Some(7_200_000),
        )
        .await
        .unwrap();
    assert!(disabled.is_empty(), "failing for an hour, the limit is two");
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let disabled = store
        .record_outcomes(
            vec![fail(&claim.deliveries[0], now_millis())].into(),
            Some(1_800_000),
        )
        .await
        .unwrap();
    assert_eq!(
        disabled.len(),
        1,
        "failing since the first failure, an hour ago"
    );
    assert_eq!(disabled[0].endpoint_id, created.id);
    assert_eq!(disabled[0].failing_since, an_hour_ago);
    let endpoint = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert!(endpoint.disabled);
}

/// Retention, the same on every store: old attempts and finished messages go, in batches;
/// a message still being delivered stays.
pub async fn purges_history_but_keeps_pending_work(store: &dyn Store) {
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
pub async fn claims_skip_full_endpoints(store: &dyn Store) {
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
pub async fn messages_need_a_live_application(store: &dyn Store) {
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
pub async fn counts_due_and_scheduled_deliveries(store: &dyn Store) {
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

/// Issue 14's `deliverAt`: a held message's deliveries are not claimed before their time,
/// the claim says when they fall due (so the dispatcher sleeps until then), and the message
/// keeps its time.
pub async fn deliver_at_holds_deliveries_until_their_time(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 10)
        .await
        .unwrap();
    let now = now_millis();
    let at = now + 60_000;
    let mut held = message(&app.id, "a.b", None);
    held.message.deliver_at = Some(at);
    let accepted = store.create_message(held).await.unwrap();
    assert_eq!(accepted.deliveries, 1);
    let early = store.claim_due(now + 1_000, 10, Vec::new()).await.unwrap();
    assert!(early.deliveries.is_empty(), "held until its time");
    assert_eq!(early.next_due_at, Some(at));
    let stored = store
        .get_message(&app.id, accepted.message.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.deliver_at, Some(at));
    let due = store.claim_due(at, 10, Vec::new()).await.unwrap();
    assert_eq!(due.deliveries.len(), 1);
    assert_eq!(due.deliveries[0].msg_id, accepted.message.id);
}

/// Issue 14: an endpoint's transformation is kept with it, and a delivery its transformation
/// canceled is finished as `Canceled` (not failed, not due again).
pub async fn transformations_are_kept_and_cancel_deliveries(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    assert_eq!(created.transformation, Default::default());
    let setting = kait_core::TransformationSetting {
        code: Some("function handler(w) { w.cancel = true; return w; }".into()),
        enabled: true,
        updated_at: Some(now_millis()),
    };
    store
        .update_endpoint(kait_core::Endpoint {
            transformation: setting.clone(),
            ..created.clone()
        })
        .await
        .unwrap();
    let read = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.transformation, setting);
    let listed = store
        .list_endpoints(
            &app.id,
            crate::PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items[0].transformation, setting);

    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let claimed = &claim.deliveries[0];
    let mut canceled = outcome(claimed.delivery_id, claimed, NextStep::Canceled);
    canceled.attempt.status = kait_core::DeliveryStatus::Canceled;
    canceled.reached_endpoint = false;
    store
        .record_outcomes(vec![canceled].into(), None)
        .await
        .unwrap();
    let counts = store.endpoint_delivery_counts(&created.id).await.unwrap();
    assert_eq!(counts, vec![(kait_core::DeliveryStatus::Canceled, 1)]);
    assert!(
        store
            .claim_due(now_millis() + 3_600_000, 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .is_empty(),
        "a canceled delivery is not due again"
    );
}

/// A message meant for one endpoint (a pipe's `forward` to a source endpoint) is delivered
/// there alone, past that endpoint's filters, and to nothing when it is disabled.
pub async fn a_message_for_one_endpoint_goes_there_alone(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let open = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let filtered = store
        .create_endpoint(endpoint(&app.id, Some(&["other.type"])), 100)
        .await
        .unwrap();
    let to = |endpoint: &kait_core::Endpoint| NewMessage {
        only_endpoint: Some(endpoint.id.clone()),
        ..message(&app.id, "a.b", None)
    };

    let accepted = store.create_message(to(&filtered)).await.unwrap();
    assert_eq!(accepted.deliveries, 1);
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let targets: Vec<_> = claim
        .deliveries
        .iter()
        .map(|delivery| delivery.endpoint_id.clone())
        .collect();
    assert_eq!(targets, vec![filtered.id.clone()], "not the open endpoint");

    store
        .update_endpoint(kait_core::Endpoint {
            disabled: true,
            ..filtered.clone()
        })
        .await
        .unwrap();
    let accepted = store.create_message(to(&filtered)).await.unwrap();
    assert_eq!(accepted.deliveries, 0, "a disabled endpoint gets nothing");

    let accepted = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(accepted.deliveries, 1, "the usual fan-out is unchanged");
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries[0].endpoint_id, open.id);
}

pub async fn waiting_for_the_ownership_check_uses_no_attempt(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let mut checked = endpoint(&app.id, None);
    checked.ownership = kait_core::OwnershipCheck::challenge();
    let checked = store.create_endpoint(checked, 100).await.unwrap();
    assert!(checked.ownership.pending(&checked.url));
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claimed = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    let delivery = claimed.deliveries[0].clone();
    assert_eq!(delivery.attempts_made, 0);

    // A wait puts it back without counting an attempt; a retry counts one.
    store
        .record_outcomes(
            vec![outcome(
                delivery.delivery_id,
                &delivery,
                NextStep::Wait(now_millis() - 1),
            )]
            .into(),
            None,
        )
        .await
        .unwrap();
    let again = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(again.deliveries.len(), 1, "due again after the wait");
    assert_eq!(again.deliveries[0].attempts_made, 0, "a wait is no attempt");
    store
        .record_outcomes(
            vec![outcome(
                delivery.delivery_id,
                &again.deliveries[0],
                NextStep::RetryAt(now_millis() - 1),
            )]
            .into(),
            None,
        )
        .await
        .unwrap();
    let retried = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(retried.deliveries[0].attempts_made, 1);

    // The check is recorded only for the URL the endpoint has, and only with the check on.
    let epoch = store.config_epoch();
    assert!(
        !store
            .verify_endpoint(&checked.id, "http://127.0.0.1:9/elsewhere", now_millis())
            .await
            .unwrap()
    );
    assert!(
        store
            .verify_endpoint(&checked.id, &checked.url, now_millis())
            .await
            .unwrap()
    );
    let verified = store
        .get_endpoint_by_id(&checked.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!verified.ownership.pending(&verified.url));
    assert_eq!(verified.revision, checked.revision + 1);
    assert!(store.config_epoch() > epoch, "caches learn of it");
    let plain = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    assert!(
        !store
            .verify_endpoint(&plain.id, &plain.url, now_millis())
            .await
            .unwrap()
    );
    // A changed URL is pending again.
    let moved = store
        .update_endpoint(kait_core::Endpoint {
            url: "http://127.0.0.1:9/moved".into(),
            ..verified
        })
        .await
        .unwrap();
    assert!(moved.ownership.pending(&moved.url));
}

/// `DELETE …/msg/{id}/content` and `…/attempt/{id}/content`: the payload and stored response
/// go, the records stay, pending work is canceled, a remembered response that carried the
/// message goes, and nothing of another message changes.
pub async fn erasing_content_keeps_records_and_cancels_pending_work(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let other_app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let mut private = message(&app.id, "user.updated", None);
    private.message.payload = r#"{"email":"kim@example.com"}"#.into();
    let private = store.create_message(private).await.unwrap().message;
    let mut kept = message(&app.id, "user.updated", None);
    kept.message.payload = r#"{"name":"Kim"}"#.into();
    let kept = store.create_message(kept).await.unwrap().message;
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 2);
    let later = now_millis() + 60_000;
    let outcomes: Vec<Outcome> = claim
        .deliveries
        .iter()
        .map(|claimed| {
            let mut retry = outcome(claimed.delivery_id, claimed, NextStep::RetryAt(later));
            retry.attempt.response = "the receiver's answer".into();
            // As a transformation would have sent it: the request is kept with the attempt.
            retry.attempt.sent = Some(kait_core::SentRequest {
                method: "PUT".into(),
                content_type: "application/json".into(),
                body: format!(r#"{{"about":"{}"}}"#, claimed.msg_id),
            });
            retry
        })
        .collect();
    let kept_attempt = outcomes
        .iter()
        .find(|outcome| outcome.attempt.msg_id == kept.id)
        .unwrap()
        .attempt
        .clone();
    let private_attempt = outcomes
        .iter()
        .find(|outcome| outcome.attempt.msg_id == private.id)
        .unwrap()
        .attempt
        .id
        .clone();
    store.record_outcomes(outcomes.into(), None).await.unwrap();
    let read = store
        .get_attempt(&app.id, &kept.id, &kept_attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.sent, kept_attempt.sent, "the sent request reads back");
    for (key, body) in [
        ("k1", format!(r#"{{"id":"{}"}}"#, private.id)),
        ("k2", format!(r#"{{"id":"{}"}}"#, kept.id)),
    ] {
        store
            .save_idempotent_response(
                key,
                "POST /msg",
                crate::IdempotentResponse {
                    app_id: Some(app.id.clone()),
                    fingerprint: "f".into(),
                    status: 202,
                    body: body.into_bytes(),
                },
            )
            .await
            .unwrap();
    }

    store
        .erase_message_content(&app.id, &private.id)
        .await
        .unwrap();
    let erased = store
        .get_message(&app.id, private.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert!(erased.content_erased());
    assert_eq!(erased.event_type, "user.updated", "the record stays");
    let attempt = store
        .get_attempt(&app.id, &private.id, &private_attempt)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        attempt.sent, None,
        "what the attempt sent carried the payload"
    );
    let other = store
        .get_attempt(&app.id, &kept.id, &kept_attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        other.sent, kept_attempt.sent,
        "another message's attempt keeps it"
    );
    let untouched = store
        .get_message(&app.id, kept.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.payload, r#"{"name":"Kim"}"#);
    let states = store
        .list_delivery_states(&app.id, &private.id)
        .await
        .unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Canceled);
    let due = store.claim_due(later, 10, Vec::new()).await.unwrap();
    assert_eq!(due.deliveries.len(), 1, "only the other message's retry");
    assert_eq!(due.deliveries[0].msg_id, kept.id);
    assert_eq!(
        store
            .idempotent_response("k1", "POST /msg", 0)
            .await
            .unwrap(),
        None,
        "the remembered response carried the payload"
    );
    assert!(
        store
            .idempotent_response("k2", "POST /msg", 0)
            .await
            .unwrap()
            .is_some()
    );

    store
        .erase_attempt_response(&app.id, &private.id, &private_attempt)
        .await
        .unwrap();
    let attempt = store
        .get_attempt(&app.id, &private.id, &private_attempt)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempt.response, "");
    assert_eq!(attempt.response_status_code, 500, "the attempt stays");
    store
        .erase_attempt_response(&app.id, &kept.id, &kept_attempt.id)
        .await
        .unwrap();
    let attempt = store
        .get_attempt(&app.id, &kept.id, &kept_attempt.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((attempt.response.as_str(), attempt.sent), ("", None));

    // Another application's ids, or unknown ones, are not found and change nothing.
    for result in [
        store.erase_message_content(&other_app.id, &kept.id).await,
        store
            .erase_message_content(&app.id, &MessageId::generate())
            .await,
        store
            .erase_attempt_response(&other_app.id, &private.id, &private_attempt)
            .await,
        store
            .erase_attempt_response(&app.id, &kept.id, &private_attempt)
            .await,
    ] {
        assert!(matches!(result, Err(StoreError::NotFound)), "{result:?}");
    }
    let untouched = store
        .get_message(&app.id, kept.id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.payload, r#"{"name":"Kim"}"#);
}

/// New deliveries to unordered endpoints go straight to the dispatcher's hand-off queue as
/// `Sending` (no claim needed); ordered endpoints and a full queue fall back to the claim.
/// On PostgreSQL the commit takes the endpoint for this node too, as a claim would.
pub async fn new_deliveries_are_handed_off_when_the_dispatcher_takes_them(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let concurrent = store
        .create_endpoint(endpoint(&app.id, Some(&["a.b"])), 100)
        .await
        .unwrap();
    let mut fifo = endpoint(&app.id, Some(&["a.b"]));
    fifo.ordering = kait_core::DeliveryOrder::Fifo;
    let fifo = store.create_endpoint(fifo, 100).await.unwrap();

    // Nobody took the queue yet: everything waits for a claim.
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(
        store.delivery_counts().await.unwrap(),
        vec![(DeliveryStatus::Pending, 2)]
    );
    let claimed = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claimed.deliveries.len(), 2);

    let closed: std::sync::Arc<std::sync::Mutex<Vec<EndpointId>>> = Default::default();
    let gate = closed.clone();
    let mut queue = store
        .handoff(std::sync::Arc::new(move |id: &EndpointId| {
            !gate.lock().unwrap().contains(id)
        }))
        .expect("the store hands off");
    let accepted = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let handed = queue.try_recv().expect("handed over with the commit");
    assert_eq!(handed.endpoint_id, concurrent.id);
    assert_eq!(handed.msg_id, accepted.message.id);
    assert_eq!(&*handed.payload, "{}");
    assert!(
        queue.try_recv().is_err(),
        "the FIFO endpoint's goes through the claim"
    );
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    assert_eq!(claim.deliveries[0].endpoint_id, fifo.id);

    // A failed job hands nothing over: its rows were rolled back.
    let duplicate = store
        .create_message(message(&app.id, "a.b", Some("evt")))
        .await
        .unwrap();
    let _ = queue.try_recv().expect("the first with this eventId");
    let again = store
        .create_message(message(&app.id, "a.b", Some("evt")))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))));
    assert!(queue.try_recv().is_err());
    drop(duplicate);

    // A lane that takes no hand-offs now (full, paused, breaker open) gets its deliveries
    // through the claim.
    closed.lock().unwrap().push(concurrent.id.clone());
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert!(queue.try_recv().is_err(), "the closed lane is skipped");
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(
        claim.deliveries.len(),
        3,
        "the FIFO one of evt, and both of the last"
    );
    closed.lock().unwrap().clear();

    // When the dispatcher is gone, new deliveries wait for a claim again.
    drop(queue);
    store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 2, "both of the last message");
}

/// A resend asked for while the delivery is being sent is neither lost nor sent twice at
/// once: it waits for the attempt in flight (and for retries the dispatcher holds), then the
/// delivery is due at once as a manual attempt with a fresh count, and only once.
pub async fn a_resend_while_sending_follows_the_attempt_in_flight(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let target = store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let accepted = store
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let msg_id = accepted.message.id.clone();
    let claim_now = || async { store.claim_due(now_millis(), 10, Vec::new()).await.unwrap() };
    let record = |claimed: &ClaimedDelivery, next| {
        let outcome = outcome(claimed.delivery_id, claimed, next);
        async move {
            store
                .record_outcomes(vec![outcome].into(), None)
                .await
                .unwrap()
        }
    };
    let sending = claim_now().await.deliveries[0].clone();

    store.resend(&app.id, &msg_id, &target.id).await.unwrap();
    assert!(
        claim_now().await.deliveries.is_empty(),
        "not claimed twice while in flight"
    );
    // A retry the dispatcher keeps in hand does not let go of the delivery yet.
    record(&sending, NextStep::RetryHeld(now_millis() + 60_000)).await;
    assert!(claim_now().await.deliveries.is_empty(), "still held");

    record(&sending, NextStep::Succeeded).await;
    let again = claim_now().await;
    assert_eq!(again.deliveries.len(), 1, "the resend follows the attempt");
    let resent = &again.deliveries[0];
    assert_eq!(resent.delivery_id, sending.delivery_id);
    assert_eq!(resent.attempts_made, 0, "a fresh count");
    assert_eq!(resent.trigger_type, TriggerType::Manual);
    record(resent, NextStep::Succeeded).await;
    let states = store.list_delivery_states(&app.id, &msg_id).await.unwrap();
    assert_eq!(states[0].status, DeliveryStatus::Success, "resent once");
    assert!(claim_now().await.deliveries.is_empty(), "and only once");

    // Erasing the message's content drops a resend still waiting for its attempt.
    store.resend(&app.id, &msg_id, &target.id).await.unwrap();
    let in_flight = claim_now().await.deliveries[0].clone();
    store.resend(&app.id, &msg_id, &target.id).await.unwrap();
    store.erase_message_content(&app.id, &msg_id).await.unwrap();
    record(&in_flight, NextStep::Succeeded).await;
    assert!(
        claim_now().await.deliveries.is_empty(),
        "an erased message is not resent"
    );
}
