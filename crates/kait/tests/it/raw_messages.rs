//! Raw (non-JSON) messages (issue 15, part 1): Svix's `transformationsParams.rawPayload`, the
//! Kait route for any body, XML endpoints receiving them unchanged, and the `MessageIn`
//! fields that must work or be refused, never dropped.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Receiver, TestServer, assert_signed_bytes};

/// Posts a body of any type to `…/msg/raw` with the query given.
async fn post_raw(
    server: &TestServer,
    app: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/app/{app}/msg/raw?{query}",
            server.base_url
        ))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(body.to_vec());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn raw_bodies_reach_json_and_xml_endpoints_byte_for_byte() {
    let server = TestServer::start().await;
    let (json_receiver, xml_receiver) = (Receiver::start().await, Receiver::start().await);
    let app = server.create_app("cameras").await;
    let json_endpoint = server
        .create_endpoint(&app, json!({ "url": json_receiver.url }))
        .await;
    let xml_endpoint = server
        .create_endpoint(&app, json!({ "url": xml_receiver.url, "format": "xml" }))
        .await;

    let csv = "camera,event\r\ndoor-1,  motion \r\n";
    let (status, text) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &json!({
                "eventType": "camera.report",
                "payload": {},
                "transformationsParams": {
                    "rawPayload": csv,
                    "headers": { "content-type": "text/csv" }
                }
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    assert_eq!(
        text["raw"],
        json!({ "contentType": "text/csv", "text": csv })
    );
    // Not JSON-shaped JSON: kept as sent, whitespace and all.
    let spaced = "{ \"a\" :  1 }";
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            &json!({
                "eventType": "camera.report",
                "payload": {},
                "transformationsParams": { "rawPayload": spaced }
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let jpeg = [
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0xFF,
    ];
    let (status, binary) = post_raw(
        &server,
        &app,
        "eventType=camera.snapshot&orderingKey=door-1",
        Some("image/jpeg"),
        &jpeg,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{binary}");
    assert_eq!(binary["raw"]["contentType"], "image/jpeg");
    assert_eq!(binary["orderingKey"], "door-1");

    let expected: [(&str, &str, &[u8]); 3] = [
        (text["id"].as_str().unwrap(), "text/csv", csv.as_bytes()),
        ("", "application/json", spaced.as_bytes()),
        (binary["id"].as_str().unwrap(), "image/jpeg", &jpeg),
    ];
    for (receiver, endpoint) in [
        (&json_receiver, &json_endpoint),
        (&xml_receiver, &xml_endpoint),
    ] {
        let received = receiver.wait_for(3, Duration::from_secs(10)).await;
        let secret = server.secret(&app, endpoint["id"].as_str().unwrap()).await;
        for (msg_id, content_type, body) in expected {
            let webhook = received
                .iter()
                .find(|webhook| &webhook.body[..] == body)
                .unwrap_or_else(|| panic!("{content_type} body not received as sent"));
            if !msg_id.is_empty() {
                assert_eq!(webhook.header("webhook-id"), msg_id);
            }
            assert_eq!(webhook.header("content-type"), content_type);
            assert_signed_bytes(webhook, &secret);
        }
    }

    // Listing shows the raw body, as text or in base64.
    let (status, listed) = server
        .get(&format!(
            "/api/v1/app/{app}/msg/{}",
            binary["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["raw"]["base64"], "/9j/4AAQSkZJRgD/");
    assert!(listed["raw"]["text"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn message_fields_work_or_are_refused_never_dropped() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("fields").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let send = |body: Value| {
        let server = &server;
        let app = app.clone();
        async move {
            server
                .post(&format!("/api/v1/app/{app}/msg"), &body.to_string())
                .await
        }
    };
    let base = json!({ "eventType": "a.b", "payload": { "x": 1 } });
    let with = |extra: Value| {
        let mut body = base.clone();
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };

    // Refused, each at its field.
    for (extra, field) in [
        (json!({ "colour": "red" }), None),
        (json!({ "tags": ["a"] }), Some("tags")),
        (
            json!({ "payloadRetentionPeriod": 7 }),
            Some("payloadRetentionPeriod"),
        ),
        (
            json!({ "payloadRetentionHours": 1 }),
            Some("payloadRetentionHours"),
        ),
        (
            json!({ "payloadRetentionPeriod": 90, "payloadRetentionHours": 2160 }),
            Some("payloadRetentionHours"),
        ),
        (
            json!({ "transformationsParams": { "rawPayload": "x", "extra": 1 } }),
            None,
        ),
        (
            json!({ "transformationsParams": { "rawPayload": "x", "headers": { "x-a": "b" } } }),
            Some("transformationsParams"),
        ),
        (
            json!({ "transformationsParams": { "headers": { "content-type": "text/plain" } } }),
            Some("transformationsParams"),
        ),
        // A raw body with a payload as well: which one is meant?
        (
            json!({ "transformationsParams": { "rawPayload": "x" } }),
            Some("payload"),
        ),
    ] {
        let (status, answer) = send(with(extra.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{extra}: {answer}"
        );
        if let Some(field) = field {
            assert_eq!(
                answer["detail"][0]["loc"],
                json!(["body", field]),
                "{answer}"
            );
        }
        assert!(answer["detail"][0]["msg"].as_str().is_some(), "{answer}");
    }
    // Accepted as Svix documents them: a retention at least as long as the server's (90 days
    // by default; what the older Python SDK always sends), empty tags.
    for extra in [
        json!({ "payloadRetentionPeriod": 90 }),
        json!({ "payloadRetentionHours": 2160, "tags": [] }),
        json!({ "tags": null, "application": null }),
    ] {
        let (status, answer) = send(with(extra.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{extra}: {answer}");
    }
    receiver.wait_for(3, Duration::from_secs(10)).await;

    // `application` makes the application under the path's uid when it is missing …
    let (status, answer) = server
        .post(
            "/api/v1/app/new-camera/msg",
            &with(json!({ "application": { "name": "New camera", "metadata": { "site": "b" } } }))
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let (status, made) = server.get("/api/v1/app/new-camera").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(made["name"], "New camera");
    assert_eq!(made["metadata"]["site"], "b");
    // … is ignored when it exists, and refused where it cannot apply.
    let (status, _) = server
        .post(
            "/api/v1/app/new-camera/msg",
            &with(json!({ "application": { "name": "Other name" } })).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        server.get("/api/v1/app/new-camera").await.1["name"],
        "New camera"
    );
    for (path, application) in [
        (
            "/api/v1/app/other-camera/msg",
            json!({ "name": "x", "uid": "not-the-path" }),
        ),
        (
            "/api/v1/app/app_2bGa8yAvR3yGgT9wGgWnqgJKf3N/msg",
            json!({ "name": "x" }),
        ),
        ("/api/v1/app/third-camera/msg", json!({ "name": "" })),
    ] {
        let (status, answer) = server
            .post(
                path,
                &with(json!({ "application": application })).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {answer}");
        assert_eq!(answer["detail"][0]["loc"], json!(["body", "application"]));
    }
    // Without `application`, a missing one is still a 404.
    let (status, _) = send(base.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = server
        .post("/api/v1/app/nobody/msg", &base.to_string())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The raw route's own bad input.
    for (query, parameter) in [
        ("orderingKey=k", "eventType"),
        ("eventType=a.b&eventType=c.d", "eventType"),
        ("eventType=a.b&colour=red", "colour"),
    ] {
        let (status, answer) = post_raw(&server, &app, query, Some("text/plain"), b"x").await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {answer}"
        );
        assert_eq!(answer["detail"][0]["loc"], json!(["query", parameter]));
    }
    let (status, answer) = post_raw(
        &server,
        &app,
        "eventType=bad%20type",
        Some("text/plain"),
        b"x",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = post_raw(&server, &app, "eventType=a.b", None, b"\x00\x01").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["raw"]["contentType"], "application/octet-stream");
    server.stop().await;
}
