//! The official Svix Rust client library, unchanged, against Kait.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use svix::models::{
    ApplicationIn, ApplicationPatch, EndpointHeadersIn, EndpointHeadersPatchIn, EndpointIn,
    EndpointPatch, EndpointSecretRotateIn, EventTypeIn, MessageIn, MessageStatus,
};

use crate::support::{Receiver, TestServer, assert_signed};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_and_event_types() {
    let server = TestServer::start().await;
    let svix = server.svix();
    svix.health().get().await.expect("health");

    let mut app_in = ApplicationIn::new("Cameras".into());
    app_in.uid = Some("site-7".into());
    app_in.throttle_rate = Some(100);
    let app = svix.application().create(app_in, None).await.unwrap();
    assert!(app.id.starts_with("app_"));
    assert_eq!(app.throttle_rate, Some(100));

    // The uid works wherever an app id does.
    let by_uid = svix.application().get("site-7".into()).await.unwrap();
    assert_eq!(by_uid.id, app.id);

    // get_or_create returns the existing app instead of failing on the uid.
    let mut again = ApplicationIn::new("Cameras".into());
    again.uid = Some("site-7".into());
    let existing = svix.application().get_or_create(again, None).await.unwrap();
    assert_eq!(existing.id, app.id);

    let mut patch = ApplicationPatch::new();
    patch.name = Some("Cameras, north".into());
    let patched = svix
        .application()
        .patch(app.id.clone(), patch)
        .await
        .unwrap();
    assert_eq!(patched.name, "Cameras, north");
    assert_eq!(
        patched.uid.as_deref(),
        Some("site-7"),
        "patch keeps unnamed fields"
    );

    let upserted = svix
        .application()
        .upsert(app.id.clone(), ApplicationIn::new("Renamed".into()))
        .await
        .unwrap();
    assert_eq!(upserted.name, "Renamed");

    let listed = svix.application().list(None).await.unwrap();
    assert_eq!(listed.data.len(), 1);
    assert!(listed.done);

    let event_type = svix
        .event_type()
        .create(
            EventTypeIn::new("camera.motion.detected".into(), "Motion seen".into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(event_type.name, "camera.motion.detected");
    let fetched = svix
        .event_type()
        .get("camera.motion.detected".into())
        .await
        .unwrap();
    assert_eq!(fetched.description, "Motion seen");
    svix.event_type()
        .delete("camera.motion.detected".into(), None)
        .await
        .unwrap();
    let after_archive = svix.event_type().list(None).await.unwrap();
    assert!(after_archive.data.is_empty(), "archived types are hidden");

    svix.application().delete(app.id.clone()).await.unwrap();
    assert!(svix.application().get(app.id).await.is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_messages_and_attempts() {
    let server = TestServer::start().await;
    let svix = server.svix();
    let receiver = Receiver::start().await;
    let app = svix
        .application()
        .create(ApplicationIn::new("Doorbells".into()), None)
        .await
        .unwrap();

    let mut endpoint_in = EndpointIn::new(receiver.url.clone());
    endpoint_in.event_types = Some(BTreeSet::from(["doorbell.rang".to_owned()]));
    endpoint_in.description = Some("front door".into());
    let endpoint = svix
        .endpoint()
        .create(app.id.clone(), endpoint_in, None)
        .await
        .unwrap();
    assert!(endpoint.id.starts_with("ep_"));

    // Secret rotation returns the new secret, which signs what follows.
    let old_secret = svix
        .endpoint()
        .get_secret(app.id.clone(), endpoint.id.clone())
        .await
        .unwrap();
    assert!(old_secret.key.starts_with("whsec_"));
    let rotated = svix
        .endpoint()
        .rotate_secret(
            app.id.clone(),
            endpoint.id.clone(),
            EndpointSecretRotateIn::new(),
            None,
        )
        .await
        .unwrap();
    assert_ne!(rotated.key, old_secret.key);

    svix.endpoint()
        .set_headers(
            app.id.clone(),
            endpoint.id.clone(),
            EndpointHeadersIn::new(BTreeMap::from([("X-Site".to_owned(), "7".to_owned())])),
        )
        .await
        .unwrap();
    svix.endpoint()
        .patch_headers(
            app.id.clone(),
            endpoint.id.clone(),
            EndpointHeadersPatchIn::new(BTreeMap::from([("X-Zone".to_owned(), "a".to_owned())])),
        )
        .await
        .unwrap();
    let headers = svix
        .endpoint()
        .get_headers(app.id.clone(), endpoint.id.clone())
        .await
        .unwrap();
    assert_eq!(headers.headers.len(), 2);

    let mut message_in = MessageIn::new(
        "doorbell.rang".into(),
        serde_json::json!({ "door": "front", "pressed": 2 }),
    );
    message_in.event_id = Some("ring-0001".into());
    let message = svix
        .message()
        .create(app.id.clone(), message_in, None)
        .await
        .unwrap();
    assert!(message.id.starts_with("msg_"));
    // Filtered out: never delivered.
    svix.message()
        .create(
            app.id.clone(),
            MessageIn::new("doorbell.battery".into(), serde_json::json!({})),
            None,
        )
        .await
        .unwrap();

    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    let webhook = &received[0];
    assert_signed(webhook, &rotated.key);
    assert_eq!(webhook.header("webhook-id"), message.id);
    assert_eq!(webhook.header("svix-id"), message.id);
    assert_eq!(webhook.header("x-site"), "7");
    assert_eq!(webhook.header("x-zone"), "a");
    assert_eq!(webhook.header("content-type"), "application/json");
    assert_eq!(
        webhook.json(),
        serde_json::json!({ "door": "front", "pressed": 2 })
    );

    let fetched = svix
        .message()
        .get(app.id.clone(), "ring-0001".into(), None)
        .await
        .unwrap();
    assert_eq!(
        fetched.id, message.id,
        "a message can be fetched by eventId"
    );
    let messages = svix.message().list(app.id.clone(), None).await.unwrap();
    assert_eq!(messages.data.len(), 2);

    let attempts = server
        .wait_until(
            &format!("/api/v1/app/{}/attempt/endpoint/{}", app.id, endpoint.id),
            Duration::from_secs(10),
            |body| body["data"].as_array().is_some_and(|data| data.len() == 1),
        )
        .await;
    assert_eq!(attempts["data"][0]["responseStatusCode"], 200);
    let by_endpoint = svix
        .message_attempt()
        .list_by_endpoint(app.id.clone(), endpoint.id.clone(), None)
        .await
        .unwrap();
    assert_eq!(by_endpoint.data[0].msg_id, message.id);
    assert_eq!(by_endpoint.data[0].status, MessageStatus::Success);
    let by_message = svix
        .message_attempt()
        .list_by_msg(app.id.clone(), message.id.clone(), None)
        .await
        .unwrap();
    let attempt = &by_message.data[0];
    let single = svix
        .message_attempt()
        .get(app.id.clone(), message.id.clone(), attempt.id.clone(), None)
        .await
        .unwrap();
    assert_eq!(single.id, attempt.id);
    let destinations = svix
        .message_attempt()
        .list_attempted_destinations(app.id.clone(), message.id.clone(), None)
        .await
        .unwrap();
    assert_eq!(destinations.data.len(), 1);
    assert_eq!(destinations.data[0].status, MessageStatus::Success);
    let endpoint_messages = svix
        .message_attempt()
        .list_attempted_messages(app.id.clone(), endpoint.id.clone(), None)
        .await
        .unwrap();
    assert_eq!(endpoint_messages.data.len(), 1);

    // Resend delivers again under the same message id.
    svix.message_attempt()
        .resend(
            app.id.clone(),
            message.id.clone(),
            endpoint.id.clone(),
            None,
        )
        .await
        .unwrap();
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(received[1].header("webhook-id"), message.id);
    assert_signed(&received[1], &rotated.key);

    let mut patch = EndpointPatch::new();
    patch.disabled = Some(true);
    let disabled = svix
        .endpoint()
        .patch(app.id.clone(), endpoint.id.clone(), patch)
        .await
        .unwrap();
    assert_eq!(disabled.disabled, Some(true));
    svix.endpoint()
        .delete(app.id.clone(), endpoint.id.clone())
        .await
        .unwrap();
    assert!(
        svix.endpoint()
            .list(app.id.clone(), None)
            .await
            .unwrap()
            .data
            .is_empty()
    );
    server.stop().await;
}

/// Older client libraries put a trailing slash on every path and use the older field names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_and_older_field_names() {
    let server = TestServer::start().await;
    let (status, app) = server
        .post("/api/v1/app/", r#"{"name": "legacy", "rateLimit": 12}"#)
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{app}");
    assert_eq!(app["rateLimit"], 12);
    assert_eq!(app["throttleRate"], 12);
    let app_id = app["id"].as_str().unwrap();
    let (status, endpoint) = server
        .post(
            &format!("/api/v1/app/{app_id}/endpoint/"),
            r#"{"url": "https://example.com/hook", "version": 1, "filterTypes": ["a.b"], "rateLimit": 5}"#,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{endpoint}");
    assert_eq!(endpoint["filterTypes"], serde_json::json!(["a.b"]));
    assert_eq!(endpoint["eventTypes"], serde_json::json!(["a.b"]));
    assert_eq!(endpoint["rateLimit"], 5);
    assert_eq!(endpoint["throttleRate"], 5);
    let (status, listed) = server.get(&format!("/api/v1/app/{app_id}/endpoint/")).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    let (status, _) = server.get("/api/v1/health/").await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);

    // Event type PATCH keeps what it does not name; DELETE with expunge removes for good.
    server
        .post(
            "/api/v1/event-type/",
            r#"{"name": "a.b", "description": "first"}"#,
        )
        .await;
    let (status, patched) = server
        .request(
            reqwest::Method::PATCH,
            "/api/v1/event-type/a.b/",
            Some(r#"{"deprecated": true}"#),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{patched}");
    assert_eq!(patched["description"], "first");
    assert_eq!(patched["deprecated"], true);
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            "/api/v1/event-type/a.b?expunge=true",
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let (status, _) = server.get("/api/v1/event-type/a.b").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    server.stop().await;
}
