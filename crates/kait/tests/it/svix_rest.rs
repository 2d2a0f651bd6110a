//! The rest of the Svix open-source route set (issue 18), driven by the official Rust client
//! where it has them: operational webhook endpoints, `send-example`, erasing a message's or an
//! attempt's content, `auth/logout`, and `health/ping`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use svix::models::{
    AppPortalAccessIn, EndpointIn, EventExampleIn, EventTypeIn,
    OperationalWebhookEndpointHeadersIn, OperationalWebhookEndpointIn,
    OperationalWebhookEndpointSecretIn, OperationalWebhookEndpointUpsertIn,
};

use crate::support::{Receiver, TestServer, assert_signed};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_webhook_endpoints_through_the_svix_client() {
    let server = TestServer::start().await;
    let svix = server.svix();
    let ops = Receiver::start().await;
    let operational = svix.operational_webhook().endpoint();
    assert!(operational.list(None).await.unwrap().data.is_empty());

    let mut input = OperationalWebhookEndpointIn::new(ops.url.clone());
    input.uid = Some("pager".into());
    input.description = Some("the on-call pager".into());
    input.event_types = Some(BTreeSet::from(["endpoint.created".to_owned()]));
    input.headers = Some(BTreeMap::from([("x-team".to_owned(), "sre".to_owned())]));
    let created = operational.create(input, None).await.unwrap();
    assert!(created.id.starts_with("ep_"));
    assert_eq!(created.description, "the on-call pager");
    let by_uid = operational.get("pager".into()).await.unwrap();
    assert_eq!(by_uid.id, created.id);
    assert_eq!(operational.list(None).await.unwrap().data.len(), 1);
    let headers = operational.get_headers(created.id.clone()).await.unwrap();
    assert_eq!(
        headers.headers.get("x-team").map(String::as_str),
        Some("sre")
    );
    let secret = operational
        .get_secret(created.id.clone())
        .await
        .unwrap()
        .key;

    // An endpoint made in an application is reported, signed with the operational secret and
    // carrying the custom header; its deletion is filtered out by the event types.
    let app = server.create_app("watched").await;
    let endpoint = server
        .create_endpoint(&app, json!({"url": "http://127.0.0.1:9/never"}))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let received = ops.wait_for(1, WAIT).await;
    assert_eq!(received[0].json()["type"], "endpoint.created");
    assert_eq!(received[0].json()["data"]["endpointId"], endpoint_id);
    assert_eq!(received[0].header("x-team"), "sre");
    assert_signed(&received[0], &secret);

    // Rotating: the next event is signed with the new key (and the old one, in the grace).
    operational
        .rotate_secret(
            created.id.clone(),
            OperationalWebhookEndpointSecretIn::new(),
            None,
        )
        .await
        .unwrap();
    let rotated = operational
        .get_secret(created.id.clone())
        .await
        .unwrap()
        .key;
    assert_ne!(rotated, secret);
    operational
        .set_headers(
            created.id.clone(),
            OperationalWebhookEndpointHeadersIn::new(BTreeMap::from([(
                "x-team".to_owned(),
                "platform".to_owned(),
            )])),
        )
        .await
        .unwrap();
    server
        .create_endpoint(&app, json!({"url": "http://127.0.0.1:9/again"}))
        .await;
    let received = ops.wait_for(2, WAIT).await;
    assert_eq!(received[1].header("x-team"), "platform");
    assert_signed(&received[1], &rotated);

    // PUT replaces (the event types go: every event from now on), and a new uid creates.
    let mut replace = OperationalWebhookEndpointUpsertIn::new(ops.url.clone());
    replace.description = Some("everything".into());
    let replaced = operational
        .upsert(created.id.clone(), replace)
        .await
        .unwrap();
    assert_eq!(replaced.id, created.id);
    assert_eq!(replaced.event_types, None);
    let fresh = operational
        .upsert(
            "second".into(),
            OperationalWebhookEndpointUpsertIn::new(ops.url.clone()),
        )
        .await
        .unwrap();
    assert_eq!(fresh.uid.as_deref(), Some("second"));
    assert_eq!(operational.list(None).await.unwrap().data.len(), 2);

    // The operational application's own endpoints are not reported (no feedback loop), and
    // after deleting both, nothing more is written for anyone.
    operational.delete(fresh.id.clone()).await.unwrap();
    operational.delete(created.id.clone()).await.unwrap();
    assert!(operational.list(None).await.unwrap().data.is_empty());
    assert!(operational.get(created.id.clone()).await.is_err());
    server
        .create_endpoint(&app, json!({"url": "http://127.0.0.1:9/third"}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ops.count(),
        2,
        "nothing after the operational endpoints went"
    );
    let (_, messages) = server.get("/api/v1/app/kait-operational/msg").await;
    let types: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types.len(), 3, "created, created, updated: {types:?}");

    // Bad input: 422 with the field, nothing made.
    let (status, body) = server
        .post(
            "/api/v1/operational-webhook/endpoint",
            r#"{"url": "not a url", "eventTypes": ["bad type!"]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "validation_error");
    assert!(operational.list(None).await.unwrap().data.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_example_sends_the_schema_example_to_that_endpoint_only() {
    let server = TestServer::start().await;
    let svix = server.svix();
    let mut schema = EventTypeIn::new("camera.motion".into(), "Motion seen".into());
    schema.schemas = Some(json!({
        "1": {"type": "object", "examples": [{"camera": "old"}]},
        "2": {"type": "object", "examples": [{"camera": "gate"}, {"camera": "dock"}]},
    }));
    svix.event_type().create(schema, None).await.unwrap();
    let (target, other) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("site").await;
    // The target does not even subscribe to the type: an example goes to it regardless.
    let mut target_in = EndpointIn::new(target.url.clone());
    target_in.event_types = Some(BTreeSet::from(["door.opened".to_owned()]));
    let target_endpoint = svix
        .endpoint()
        .create(app.clone(), target_in, None)
        .await
        .unwrap();
    svix.endpoint()
        .create(app.clone(), EndpointIn::new(other.url.clone()), None)
        .await
        .unwrap();

    let sent = svix
        .endpoint()
        .send_example(
            app.clone(),
            target_endpoint.id.clone(),
            EventExampleIn::new("camera.motion".into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(sent.event_type, "camera.motion");
    assert_eq!(sent.payload, json!({"camera": "gate"}));
    let mut second = EventExampleIn::new("camera.motion".into());
    second.example_index = Some(1);
    svix.endpoint()
        .send_example(app.clone(), target_endpoint.id.clone(), second, None)
        .await
        .unwrap();
    let mut given = EventExampleIn::new("anything.at.all".into());
    given.payload = Some(json!({"hand": "made"}));
    svix.endpoint()
        .send_example(app.clone(), target_endpoint.id.clone(), given, None)
        .await
        .unwrap();
    let received = target.wait_for(3, WAIT).await;
    let secret = server.secret(&app, &target_endpoint.id).await;
    let mut payloads: Vec<_> = received
        .iter()
        .map(|webhook| {
            assert_signed(webhook, &secret);
            webhook.json()
        })
        .collect();
    payloads.sort_by_key(|payload| payload.to_string());
    assert_eq!(
        payloads,
        vec![
            json!({"camera": "dock"}),
            json!({"camera": "gate"}),
            json!({"hand": "made"})
        ]
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        other.count(),
        0,
        "examples reach only the endpoint asked for"
    );

    // Bad input: no such example, no such event type, a payload that is not an object.
    let path = format!(
        "/api/v1/app/{app}/endpoint/{}/send-example",
        target_endpoint.id
    );
    for (body, field) in [
        (
            json!({"eventType": "camera.motion", "exampleIndex": 2}),
            "exampleIndex",
        ),
        (json!({"eventType": "no.such.type"}), "eventType"),
        (
            json!({"eventType": "camera.motion", "payload": [1]}),
            "payload",
        ),
        (json!({"eventType": "bad type!"}), "eventType"),
    ] {
        let (status, answer) = server.post(&path, &body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["detail"][0]["loc"][1], field, "{answer}");
    }
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/ep_none/send-example"),
            r#"{"eventType": "camera.motion"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(target.count(), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_content_keeps_the_records_and_stops_sending() {
    // Retries two seconds apart, so the erasure lands between the first attempt and the retry.
    let server = TestServer::start_with(|config| {
        config.retry_schedule =
            kait_core::retry::RetrySchedule::new(vec![Duration::from_secs(2); 3]);
    })
    .await;
    let svix = server.svix();
    // The receiver refuses the message with personal data, so it is pending a retry.
    let receiver = Receiver::start_with(|received, _| {
        if received.json().get("email").is_some() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    })
    .await;
    let app = server.create_app("privacy").await;
    let endpoint = server
        .create_endpoint(&app, json!({"url": receiver.url}))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let kept = server
        .send(&app, "user.updated", json!({"name": "Kim"}))
        .await;
    let msg_id = server
        .send(&app, "user.updated", json!({"email": "kim@example.com"}))
        .await;
    let attempt = server.first_attempt(&app, &msg_id, WAIT).await;
    let attempt_id = attempt["id"].as_str().unwrap().to_owned();

    svix.message()
        .expunge_content(app.clone(), msg_id.clone())
        .await
        .unwrap();
    let (_, message) = server.get(&format!("/api/v1/app/{app}/msg/{msg_id}")).await;
    assert_eq!(message["payload"], json!({}), "{message}");
    assert_eq!(message["eventType"], "user.updated", "the record stays");
    let (_, other) = server.get(&format!("/api/v1/app/{app}/msg/{kept}")).await;
    assert_eq!(
        other["payload"],
        json!({"name": "Kim"}),
        "other messages untouched"
    );

    // Nothing more is sent for it: the retry is canceled, and a resend is refused.
    server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            WAIT,
            |body| body["data"][0]["status"] == 4,
        )
        .await;
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint/{endpoint_id}/resend"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let delivered_email = receiver
        .received()
        .iter()
        .filter(|webhook| webhook.json().get("email").is_some())
        .count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let delivered_email = delivered_email.max(
        receiver
            .received()
            .iter()
            .filter(|webhook| webhook.json().get("email").is_some())
            .count(),
    );
    assert_eq!(delivered_email, 1, "only the attempt before the erasure");
    assert!(
        receiver
            .received()
            .iter()
            .all(|webhook| webhook.body.len() > 2),
        "an erased payload is never sent"
    );

    // An attempt's stored response can be erased too; the attempt stays.
    svix.message_attempt()
        .expunge_content(app.clone(), msg_id.clone(), attempt_id.clone())
        .await
        .unwrap();
    let (_, erased) = server
        .get(&format!(
            "/api/v1/app/{app}/msg/{msg_id}/attempt/{attempt_id}"
        ))
        .await;
    assert_eq!(erased["response"], "", "{erased}");
    assert_eq!(erased["responseStatusCode"], 503);

    // Unknown ids: 404, and nothing else changes.
    for path in [
        format!("/api/v1/app/{app}/msg/msg_none/content"),
        format!("/api/v1/app/{app}/msg/{msg_id}/attempt/atmpt_none/content"),
        format!("/api/v1/app/app_none/msg/{kept}/content"),
    ] {
        let (status, body) = server.request(Method::DELETE, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, other) = server.get(&format!("/api/v1/app/{app}/msg/{kept}")).await;
    assert_eq!(other["payload"], json!({"name": "Kim"}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_only_the_presented_portal_token() {
    let server = TestServer::start().await;
    let svix = server.svix();
    let app = server.create_app("portal").await;
    let first = svix
        .authentication()
        .app_portal_access(app.clone(), AppPortalAccessIn::new(), None)
        .await
        .unwrap();
    let second = svix
        .authentication()
        .app_portal_access(app.clone(), AppPortalAccessIn::new(), None)
        .await
        .unwrap();
    // The link opens Kait's own portal, the token in the fragment (never sent to a server).
    assert!(
        first
            .url
            .ends_with(&format!("/portal/#app={app}&token={}", first.token)),
        "{}",
        first.url
    );
    let path = format!("/api/v1/app/{app}");
    let (status, _) = server
        .request_with(Method::GET, &path, None, Some(&first.token), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .request_with(
            Method::POST,
            "/api/v1/auth/logout",
            None,
            Some(&first.token),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .request_with(Method::GET, &path, None, Some(&first.token), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the logged-out token");
    let (status, _) = server
        .request_with(Method::GET, &path, None, Some(&second.token), &[])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another session's token still works"
    );

    // The admin token is not logged out this way; no token at all is 401.
    let (status, body) = server
        .request(Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["code"], "not_an_app_token");
    let (status, _) = server
        .request_with(Method::POST, "/api/v1/auth/logout", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_says_what_it_may_do() {
    let server = TestServer::start().await;
    let svix = server.svix();
    let app = server.create_app("portal").await;
    let (status, admin) = server.get("/api/v1/auth/token").await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(admin["kind"], "admin");
    assert_eq!(
        admin["capabilities"].as_array().unwrap().len(),
        6,
        "{admin}"
    );

    let mut read_only = AppPortalAccessIn::new();
    // Deprecated by Svix in favour of capabilities, still honoured (and still sent).
    #[allow(deprecated)]
    {
        read_only.read_only = Some(true);
    }
    let mut secrets = AppPortalAccessIn::new();
    secrets.capabilities = Some(
        [svix::models::AppPortalCapability::ManageEndpointSecret]
            .into_iter()
            .collect(),
    );
    let cases = [
        (
            AppPortalAccessIn::new(),
            json!([
                "ViewBase",
                "ViewEndpointSecret",
                "ManageEndpointSecret",
                "ManageTransformations",
                "CreateAttempts",
                "ManageEndpoint"
            ]),
        ),
        (read_only, json!(["ViewBase"])),
        // Managing the secret implies seeing it.
        (
            secrets,
            json!(["ViewBase", "ViewEndpointSecret", "ManageEndpointSecret"]),
        ),
    ];
    for (asked, expected) in cases {
        let access = svix
            .authentication()
            .app_portal_access(app.clone(), asked, None)
            .await
            .unwrap();
        let (status, told) = server
            .request_with(
                Method::GET,
                "/api/v1/auth/token",
                None,
                Some(&access.token),
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{told}");
        assert_eq!(told["kind"], "app");
        assert_eq!(told["appId"], app.as_str());
        assert_eq!(told["capabilities"], expected);
    }
    let (status, _) = server
        .request_with(
            Method::GET,
            "/api/v1/auth/token",
            None,
            Some("appsk_unknown"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ping_needs_no_token() {
    let server = TestServer::start().await;
    let response = server
        .http
        .get(format!("{}/api/v1/health/ping", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    server.svix().health().get().await.unwrap();
    server.stop().await;
}

/// `GET …/attempt/{id}/request`: the body each receiver got, byte for byte (the message's own,
/// a transformation's, an XML rendering), with the headers as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_shows_the_request_it_sent() {
    let server = TestServer::start().await;
    let (plain, transformed, xml) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let app = server.create_app("requests").await;
    let mut endpoint_ids = Vec::new();
    for body in [
        json!({"url": plain.url}),
        json!({"url": transformed.url, "headers": {"x-api-key": "receiver-credential"}}),
        json!({"url": xml.url, "format": "xml"}),
    ] {
        let endpoint = server.create_endpoint(&app, body).await;
        endpoint_ids.push(endpoint["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = server
        .request(
            Method::PATCH,
            &format!(
                "/api/v1/app/{app}/endpoint/{}/transformation",
                endpoint_ids[1]
            ),
            Some(
                &json!({
                    "code": "function handler(webhook) { webhook.method = 'PUT'; \
                             webhook.payload = { wrapped: webhook.payload }; return webhook; }",
                    "enabled": true
                })
                .to_string(),
            ),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");
    let msg_id = server.send(&app, "order.paid", json!({"cents": 250})).await;

    let mut kept = Vec::new();
    for (receiver, endpoint_id) in [&plain, &transformed, &xml].into_iter().zip(&endpoint_ids) {
        let received = receiver.wait_for(1, WAIT).await.remove(0);
        let attempts = server
            .wait_until(
                &format!("/api/v1/app/{app}/attempt/endpoint/{endpoint_id}"),
                WAIT,
                |body| body["data"].as_array().is_some_and(|data| !data.is_empty()),
            )
            .await;
        let attempt_id = attempts["data"][0]["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/app/{app}/msg/{msg_id}/attempt/{attempt_id}/request");
        let (status, sent) = server.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        assert_eq!(
            sent["body"].as_str().unwrap().as_bytes(),
            &received.body[..],
            "the body as received"
        );
        assert_eq!(sent["method"], received.method.as_str());
        assert_eq!(sent["url"], attempts["data"][0]["url"]);
        let header = |name: &str| {
            sent["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|header| header["name"] == name)
                .map(|header| header["value"].as_str().unwrap().to_owned())
        };
        for name in ["webhook-id", "webhook-timestamp", "content-type"] {
            assert_eq!(
                header(name).as_deref(),
                Some(received.header(name)),
                "{name}"
            );
        }
        kept.push((
            path,
            sent["bodyKept"].as_bool().unwrap(),
            header("x-api-key"),
        ));
    }
    assert_eq!(
        kept.iter()
            .map(|(_, body_kept, _)| *body_kept)
            .collect::<Vec<_>>(),
        [false, true, true],
        "kept only where it was not the message's own body"
    );
    assert_eq!(
        kept[1].2.as_deref(),
        Some("(not shown)"),
        "a custom header's value is the receiver's credential"
    );

    // Erasing the message's content erases what the attempts sent of it too.
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("/api/v1/app/{app}/msg/{msg_id}/content"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (path, _, _) in &kept {
        let (status, sent) = server.get(path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sent["body"], "", "{path}: {sent}");
    }

    let (status, body) = server
        .get(&format!(
            "/api/v1/app/{app}/msg/{msg_id}/attempt/atmpt_2Ln3aTxw9CFCKCz3bHjXzYVCBvQ/request"
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    server.stop().await;
}
