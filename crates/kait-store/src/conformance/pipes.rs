//! Pipes, their runs and their timers.

use kait_core::time::now_millis;
use kait_core::{EndpointId, PipeId, PipeRunId};
use serde_json::json;

use super::{application, endpoint};
use crate::{IfScheduled, PageRequest, Pipe, PipeRun, Store, StoreError, Timer};

fn pipe(app_id: &kait_core::AppId, uid: &str) -> Pipe {
    Pipe {
        id: PipeId::generate(),
        uid: Some(uid.into()),
        name: "abandoned carts".into(),
        app_id: app_id.clone(),
        endpoint_id: EndpointId::generate(),
        definition: json!({ "trigger": { "eventTypes": ["cart.updated"] }, "actions": [] }),
        enabled: true,
        created_at: 1,
        updated_at: 1,
        revision: 0,
    }
}

fn page() -> PageRequest {
    PageRequest {
        limit: 10,
        ..Default::default()
    }
}

fn timer(pipe_id: &PipeId, id: &str, due_at: i64) -> Timer {
    Timer {
        id: id.into(),
        pipe_id: pipe_id.clone(),
        due_at,
        state: json!({ "resume": id }),
    }
}

pub async fn pipes_are_configuration_with_a_log_of_runs(store: &dyn Store) {
    let app = store.create_application(application()).await.unwrap();
    let created = store.create_pipe(pipe(&app.id, "carts")).await.unwrap();
    assert!(matches!(
        store.create_pipe(pipe(&app.id, "carts")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_pipe("carts").await.unwrap().unwrap(), created);
    // Its subscriptions: endpoints of kind `pipe` with its URL, in each application.
    let url = format!("kait:pipe/{}", created.id);
    let other_app = store.create_application(application()).await.unwrap();
    let mut subscriptions = Vec::new();
    for app_id in [&app.id, &other_app.id] {
        let subscription = store
            .create_endpoint(
                kait_core::Endpoint {
                    kind: kait_core::EndpointKind::Pipe,
                    url: url.clone(),
                    ..endpoint(app_id, None)
                },
                100,
            )
            .await
            .unwrap();
        subscriptions.push(subscription.id);
    }
    store
        .create_endpoint(
            kait_core::Endpoint {
                url: url.clone(),
                ..endpoint(&app.id, None)
            },
            100,
        )
        .await
        .unwrap();
    let mut found: Vec<_> = store
        .pipe_endpoints(&url)
        .await
        .unwrap()
        .into_iter()
        .map(|endpoint| endpoint.id)
        .collect();
    found.sort();
    subscriptions.sort();
    assert_eq!(found, subscriptions, "only endpoints of kind pipe");

    let epoch = store.config_epoch();
    let changed = store
        .update_pipe(Pipe {
            enabled: false,
            definition: json!({ "changed": true }),
            app_id: other_app.id.clone(),
            endpoint_id: subscriptions[1].clone(),
            ..created.clone()
        })
        .await
        .unwrap();
    assert!(
        store.config_epoch() > epoch,
        "a pipe change moves the config epoch"
    );
    assert_eq!(changed.revision, 1);
    assert!(matches!(
        store.update_pipe(created.clone()).await,
        Err(StoreError::Stale(_))
    ));
    let read = store.get_pipe(created.id.as_str()).await.unwrap().unwrap();
    assert_eq!(read.definition, json!({ "changed": true }));
    assert_eq!(
        (&read.app_id, &read.endpoint_id),
        (&other_app.id, &subscriptions[1])
    );
    assert!(!read.enabled);
    assert_eq!(store.list_pipes(page()).await.unwrap().items, vec![read]);

    for outcome in ["done", "filtered"] {
        store
            .record_pipe_run(PipeRun {
                id: PipeRunId::generate(),
                pipe_id: created.id.clone(),
                origin: "msg_x".into(),
                at: now_millis(),
                outcome: outcome.into(),
                detail: json!({ "filter": outcome == "done" }),
            })
            .await
            .unwrap();
    }
    let runs = store.list_pipe_runs(&created.id, page()).await.unwrap();
    assert_eq!(runs.items.len(), 2);
    store
        .schedule_timer(timer(&created.id, "t1", 5), IfScheduled::Keep)
        .await
        .unwrap();
    assert_eq!(store.count_timers(Some(&created.id)).await.unwrap(), 1);
    assert_eq!(
        store.count_timers(Some(&PipeId::generate())).await.unwrap(),
        0
    );

    store.delete_pipe(&created.id).await.unwrap();
    assert!(store.get_pipe("carts").await.unwrap().is_none());
    assert!(
        store
            .list_pipe_runs(&created.id, page())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store.count_timers(None).await.unwrap(),
        0,
        "timers go with the pipe"
    );
    assert!(matches!(
        store.delete_pipe(&created.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn timers_fire_once_and_a_wait_restarts_or_is_kept(store: &dyn Store) {
    let pipe_id = PipeId::generate();
    assert_eq!(store.next_timer_at().await.unwrap(), None);
    assert!(
        store
            .schedule_timer(timer(&pipe_id, "wait", 1_000), IfScheduled::Keep)
            .await
            .unwrap()
    );
    // Keep: a second schedule of the same wait changes nothing.
    assert!(
        !store
            .schedule_timer(timer(&pipe_id, "wait", 9_000), IfScheduled::Keep)
            .await
            .unwrap()
    );
    store
        .schedule_timer(timer(&pipe_id, "later", 5_000), IfScheduled::Keep)
        .await
        .unwrap();
    assert_eq!(store.next_timer_at().await.unwrap(), Some(1_000));
    assert!(store.claim_timers(999, 10, 2_000).await.unwrap().is_empty());

    // Claimed once: a second claimer (another node) gets nothing until the lease ends.
    let claimed = store.claim_timers(1_000, 10, 31_000).await.unwrap();
    assert_eq!(claimed, vec![timer(&pipe_id, "wait", 1_000)]);
    assert!(
        store
            .claim_timers(1_500, 10, 31_500)
            .await
            .unwrap()
            .is_empty()
    );
    // The lease ended (the claimer died): claimed again.
    let again = store.claim_timers(31_000, 10, 61_000).await.unwrap();
    assert_eq!(again.len(), 2, "the wait again, and `later` now due");

    // Restarted while claimed: finishing the old firing leaves the new wait in place.
    store
        .schedule_timer(timer(&pipe_id, "wait", 90_000), IfScheduled::Restart)
        .await
        .unwrap();
    store.finish_timers(&again).await.unwrap();
    assert_eq!(store.count_timers(None).await.unwrap(), 1);
    assert_eq!(store.next_timer_at().await.unwrap(), Some(90_000));
    assert!(store.cancel_timer("wait").await.unwrap());
    assert!(!store.cancel_timer("wait").await.unwrap());
    assert_eq!(store.count_timers(None).await.unwrap(), 0);
}
