//! Device routes, the device registry, commands.

use kait_core::{AppId, DeviceCommandId, MqttRouteId};
use serde_json::json;

use crate::{CommandStatus, DeviceCommand, DeviceSeen, MqttRoute, Store, StoreError};

pub async fn mqtt_routes_are_kept_until_deleted(store: &dyn Store) {
    assert!(store.list_mqtt_routes().await.unwrap().is_empty());
    let route = |topic: &str| MqttRoute {
        id: MqttRouteId::generate(),
        spec: json!({ "topic": topic, "app": "site-7", "eventType": "device.{event}" }),
        created_at: 7,
    };
    let first = store
        .create_mqtt_route(route("a/{device}/{event}"))
        .await
        .unwrap();
    let second = store
        .create_mqtt_route(route("b/{device}/{event}"))
        .await
        .unwrap();
    assert_eq!(
        store.get_mqtt_route(&first.id).await.unwrap(),
        Some(first.clone())
    );
    let listed = store.list_mqtt_routes().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&first) && listed.contains(&second));
    store.delete_mqtt_route(&first.id).await.unwrap();
    assert!(matches!(
        store.delete_mqtt_route(&first.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_mqtt_route(&first.id).await.unwrap(), None);
    assert_eq!(store.list_mqtt_routes().await.unwrap(), vec![second]);
}

pub async fn devices_go_online_and_offline_once_per_change(store: &dyn Store) {
    let app = AppId::generate();
    let seen = |device: &str, at: i64, silent_at: Option<i64>| DeviceSeen {
        app_id: app.clone(),
        device: device.to_owned(),
        at,
        silent_at,
    };
    // Unknown devices are not touched: their first message is a transition.
    assert_eq!(
        store
            .touch_devices(&[seen("a", 10, Some(70)), seen("b", 10, None)])
            .await
            .unwrap(),
        vec![0, 1]
    );
    assert!(store.device_online(&seen("a", 10, Some(70))).await.unwrap());
    assert!(
        !store.device_online(&seen("a", 11, Some(71))).await.unwrap(),
        "already online: no second transition"
    );
    assert!(store.device_online(&seen("b", 10, None)).await.unwrap());
    // Known online devices are touched, in one batch (the last of a device's wins).
    assert_eq!(
        store
            .touch_devices(&[
                seen("a", 20, Some(80)),
                seen("c", 20, None),
                seen("a", 30, Some(90))
            ])
            .await
            .unwrap(),
        vec![1]
    );
    let a = store.get_device(&app, "a").await.unwrap().unwrap();
    assert_eq!(
        (a.online, a.last_seen_at, a.silent_at, a.changed_at),
        (true, 30, Some(90), 10)
    );
    assert_eq!(store.next_device_deadline().await.unwrap(), Some(90));
    // Silence: due at 90, and only the deadline read may take it offline.
    assert!(store.silent_devices(89, 10).await.unwrap().is_empty());
    let silent = store.silent_devices(95, 10).await.unwrap();
    assert_eq!(
        silent.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(),
        vec!["a"]
    );
    assert!(
        !store.device_offline(&app, "a", Some(85), 95).await.unwrap(),
        "heard from since"
    );
    assert!(store.device_offline(&app, "a", Some(90), 95).await.unwrap());
    assert!(
        !store.device_offline(&app, "a", Some(90), 95).await.unwrap(),
        "once"
    );
    let a = store.get_device(&app, "a").await.unwrap().unwrap();
    assert_eq!((a.online, a.silent_at, a.changed_at), (false, None, 95));
    assert_eq!(
        store.touch_devices(&[seen("a", 100, None)]).await.unwrap(),
        vec![0]
    );
    // A last will: offline whatever the deadline.
    assert!(store.device_offline(&app, "b", None, 96).await.unwrap());
    assert_eq!(store.next_device_deadline().await.unwrap(), None);
    let listed = store.list_devices(&app, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    let after = store.list_devices(&app, Some("a"), 10).await.unwrap();
    assert_eq!(
        after.iter().map(|d| d.device.as_str()).collect::<Vec<_>>(),
        vec!["b"]
    );
    assert!(
        store
            .list_devices(&AppId::generate(), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn commands_wait_then_finish_once(store: &dyn Store) {
    let app = AppId::generate();
    let command = |status: CommandStatus, deadline_at: i64| DeviceCommand {
        id: DeviceCommandId::generate(),
        app_id: app.clone(),
        device: "valve-1".into(),
        name: "close".into(),
        payload: r#"{"force":true}"#.into(),
        asynchronous: true,
        status,
        timeout_ms: 1000,
        created_at: 5,
        deadline_at,
        reply: None,
        finished_at: None,
    };
    let sent = store
        .create_device_command(command(CommandStatus::Sent, 1005))
        .await
        .unwrap();
    assert_eq!(
        store.get_device_command(&sent.id).await.unwrap(),
        Some(sent.clone())
    );
    let queued = store
        .create_device_command(command(CommandStatus::Queued, 500))
        .await
        .unwrap();
    let expired = store
        .create_device_command(command(CommandStatus::Queued, 50))
        .await
        .unwrap();
    assert_eq!(store.next_device_deadline().await.unwrap(), Some(50));
    let due: Vec<_> = store.due_device_commands(100, 10).await.unwrap();
    assert_eq!(due, vec![expired.clone()]);
    let finished = store
        .finish_device_command(&expired.id, CommandStatus::Expired, None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (finished.status, finished.finished_at),
        (CommandStatus::Expired, Some(100))
    );
    // The device comes online at 200: its unexpired queued command is sent, waiting 1 s.
    let now_sent = store
        .send_queued_commands(&app, "valve-1", 200)
        .await
        .unwrap();
    assert_eq!(now_sent.len(), 1);
    assert_eq!(
        (&now_sent[0].id, now_sent[0].status, now_sent[0].deadline_at),
        (&queued.id, CommandStatus::Sent, 1200)
    );
    assert!(
        store
            .send_queued_commands(&app, "valve-1", 200)
            .await
            .unwrap()
            .is_empty()
    );
    // A reply finishes a command once; a late timeout then changes nothing.
    let replied = store
        .finish_device_command(
            &sent.id,
            CommandStatus::Replied,
            Some(b"ok\xff".to_vec()),
            300,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replied.reply.as_deref(), Some(&b"ok\xff"[..]));
    assert_eq!(
        store
            .finish_device_command(&sent.id, CommandStatus::TimedOut, None, 1100)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.next_device_deadline().await.unwrap(), Some(1200));
    assert_eq!(
        store
            .get_device_command(&sent.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        CommandStatus::Replied
    );
    // Ended commands are history, purged with the attempt log; a waiting one stays.
    store.purge_history(None, Some(301), 100).await.unwrap();
    assert_eq!(store.get_device_command(&sent.id).await.unwrap(), None);
    assert_eq!(store.get_device_command(&expired.id).await.unwrap(), None);
    assert!(
        store
            .get_device_command(&queued.id)
            .await
            .unwrap()
            .is_some()
    );
}

pub async fn devices_and_commands_go_with_their_application(store: &dyn Store) {
    let app = store
        .create_application(super::application())
        .await
        .unwrap();
    let other = store
        .create_application(super::application())
        .await
        .unwrap();
    let mut commands = Vec::new();
    for app_id in [&app.id, &other.id] {
        store
            .device_online(&DeviceSeen {
                app_id: app_id.clone(),
                device: "valve-1".into(),
                at: 10,
                silent_at: Some(1_000),
            })
            .await
            .unwrap();
        commands.push(
            store
                .create_device_command(DeviceCommand {
                    id: DeviceCommandId::generate(),
                    app_id: app_id.clone(),
                    device: "valve-1".into(),
                    name: "close".into(),
                    payload: "{}".into(),
                    asynchronous: true,
                    status: CommandStatus::Sent,
                    timeout_ms: 1000,
                    created_at: 10,
                    deadline_at: 1_010,
                    reply: None,
                    finished_at: None,
                })
                .await
                .unwrap(),
        );
    }
    store.delete_application(&app.id).await.unwrap();
    assert_eq!(store.get_device(&app.id, "valve-1").await.unwrap(), None);
    assert_eq!(
        store.get_device_command(&commands[0].id).await.unwrap(),
        None
    );
    assert!(
        store
            .get_device(&other.id, "valve-1")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_device_command(&commands[1].id)
            .await
            .unwrap()
            .is_some()
    );
}
