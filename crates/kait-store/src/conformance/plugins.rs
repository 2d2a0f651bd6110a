//! Plugins, installations and installation tokens.

use kait_core::{EndpointId, InstallationId, PluginId};
use serde_json::json;

use super::application;
use crate::{
    AuditEntry, Installation, NewInstallationToken, Plugin, Store, StoreError, TokenRefusal,
};

fn plugin(uid: &str, credential_hash: &str) -> Plugin {
    Plugin {
        id: PluginId::generate(),
        uid: Some(uid.to_owned()),
        manifest: json!({ "name": uid, "scopes": ["messages:read"] }),
        credential_hash: credential_hash.to_owned(),
        created_at: 5,
    }
}

fn installation(plugin: &Plugin, app_id: &kait_core::AppId) -> Installation {
    Installation {
        id: InstallationId::generate(),
        plugin_id: plugin.id.clone(),
        app_id: app_id.clone(),
        scopes: vec!["messages:read".into(), "devices:command:gate-*".into()],
        endpoint_id: EndpointId::generate(),
        granted_by: "admin".into(),
        created_at: 6,
    }
}

fn token(hash: &str, installation: &Installation, expires_at: i64) -> NewInstallationToken {
    NewInstallationToken {
        token_hash: hash.to_owned(),
        installation_id: installation.id.clone(),
        scopes: vec!["messages:read".into()],
        expires_at,
    }
}

pub async fn plugins_are_installed_and_tokens_live_with_their_installation(store: &dyn Store) {
    let camera = store
        .create_plugin(plugin("camera-ai", "hash-camera"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_plugin(plugin("camera-ai", "hash-other")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_plugin("camera-ai").await.unwrap(),
        Some(camera.clone())
    );
    assert_eq!(
        store.get_plugin(camera.id.as_str()).await.unwrap(),
        Some(camera.clone())
    );
    assert_eq!(
        store.plugin_for_credential("hash-camera").await.unwrap(),
        Some(camera.clone())
    );
    assert_eq!(store.plugin_for_credential("nope").await.unwrap(), None);

    let site = store.create_application(application()).await.unwrap();
    let other = store.create_application(application()).await.unwrap();
    let here = store
        .create_installation(installation(&camera, &site.id))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_installation(installation(&camera, &site.id))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let there = store
        .create_installation(installation(&camera, &other.id))
        .await
        .unwrap();
    assert_eq!(
        store.get_installation(&here.id).await.unwrap(),
        Some(here.clone())
    );
    assert_eq!(
        store
            .list_installations(Some(&site.id), None)
            .await
            .unwrap(),
        vec![here.clone()]
    );
    assert_eq!(
        store
            .list_installations(None, Some(&camera.id))
            .await
            .unwrap()
            .len(),
        2
    );

    // A token grants its installation's app and its own scopes until it expires.
    store
        .create_installation_token(token("t-live", &here, 1_000))
        .await
        .unwrap();
    store
        .create_installation_token(token("t-old", &here, 10))
        .await
        .unwrap();
    let grant = store
        .installation_for_token("t-live", 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (&grant.installation_id, &grant.plugin_id, &grant.app_id),
        (&here.id, &camera.id, &site.id)
    );
    assert_eq!(grant.scopes, vec!["messages:read".to_owned()]);
    assert_eq!(
        store.installation_for_token("t-old", 500).await.unwrap(),
        Err(TokenRefusal::Expired)
    );
    assert_eq!(
        store.installation_for_token("t-none", 500).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );

    // Revoking and uninstalling take tokens away at once.
    assert_eq!(store.revoke_installation_tokens(&here.id).await.unwrap(), 2);
    assert_eq!(
        store.installation_for_token("t-live", 500).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );
    store
        .create_installation_token(token("t-again", &here, 1_000))
        .await
        .unwrap();
    store.delete_installation(&here.id).await.unwrap();
    assert!(matches!(
        store.delete_installation(&here.id).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        store.installation_for_token("t-again", 500).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );

    // The application going takes its installations; the plugin going takes the rest.
    store
        .create_installation_token(token("t-there", &there, 1_000))
        .await
        .unwrap();
    store.delete_application(&other.id).await.unwrap();
    assert_eq!(store.get_installation(&there.id).await.unwrap(), None);
    assert_eq!(
        store.installation_for_token("t-there", 500).await.unwrap(),
        Err(TokenRefusal::Unknown)
    );
    let again = store
        .create_installation(installation(&camera, &site.id))
        .await
        .unwrap();
    store.delete_plugin(&camera.id).await.unwrap();
    assert_eq!(store.get_installation(&again.id).await.unwrap(), None);
    assert!(store.list_plugins().await.unwrap().is_empty());
    assert!(matches!(
        store.delete_plugin(&camera.id).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn the_audit_log_lists_newest_first_and_is_purged_with_history(store: &dyn Store) {
    let site = store.create_application(application()).await.unwrap();
    let other = store.create_application(application()).await.unwrap();
    let (first, second) = (PluginId::generate(), PluginId::generate());
    let entry = |plugin: &PluginId, app: &kait_core::AppId, at: i64, subject: &str| AuditEntry {
        seq: 0,
        at,
        plugin_id: plugin.clone(),
        installation_id: InstallationId::generate(),
        app_id: app.clone(),
        kind: "call".into(),
        subject: subject.into(),
        decision: "allowed".into(),
        detail: "200".into(),
        attempt_id: None,
    };
    store
        .append_audit(vec![
            entry(&first, &site.id, 10, "GET a"),
            entry(&second, &site.id, 20, "GET b"),
            entry(&first, &other.id, 30, "GET c"),
        ])
        .await
        .unwrap();
    let mut action = entry(&first, &site.id, 40, "createMessage");
    action.kind = "action".into();
    action.decision = "refused".into();
    action.detail = "needs messages:write:invoice.paid".into();
    action.attempt_id = Some("atmpt_1".into());
    store.append_audit(vec![action.clone()]).await.unwrap();

    let subjects = |entries: Vec<AuditEntry>| -> Vec<String> {
        entries.into_iter().map(|entry| entry.subject).collect()
    };
    let of_site = store
        .list_audit(Some(&site.id), None, None, 10)
        .await
        .unwrap();
    assert_eq!(of_site[0].attempt_id.as_deref(), Some("atmpt_1"));
    assert_eq!(of_site[0].decision, "refused");
    assert_eq!(
        subjects(of_site.clone()),
        ["createMessage", "GET b", "GET a"]
    );
    assert_eq!(
        subjects(
            store
                .list_audit(None, Some(&first), None, 10)
                .await
                .unwrap()
        ),
        ["createMessage", "GET c", "GET a"]
    );
    assert_eq!(
        subjects(
            store
                .list_audit(Some(&site.id), Some(&first), None, 10)
                .await
                .unwrap()
        ),
        ["createMessage", "GET a"]
    );
    // Pages: older than the last one seen.
    let page = store
        .list_audit(Some(&site.id), None, None, 2)
        .await
        .unwrap();
    assert_eq!(subjects(page.clone()), ["createMessage", "GET b"]);
    assert_eq!(
        subjects(
            store
                .list_audit(Some(&site.id), None, Some(page[1].seq), 2)
                .await
                .unwrap()
        ),
        ["GET a"]
    );
    // History older than 25 goes; the application going takes the rest of its log.
    while store.purge_history(None, Some(25), 100).await.unwrap() > 0 {}
    assert_eq!(
        subjects(store.list_audit(None, None, None, 10).await.unwrap()),
        ["createMessage", "GET c"]
    );
    store.delete_application(&other.id).await.unwrap();
    assert_eq!(
        subjects(store.list_audit(None, None, None, 10).await.unwrap()),
        ["createMessage"]
    );
}
