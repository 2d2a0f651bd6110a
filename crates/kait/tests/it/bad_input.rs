//! Each kind of bad input gets its status and error code, and leaves other data intact.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, TestServer};

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required() {
    let server = TestServer::start().await;
    for token in [None, Some("wrong-token-of-good-length"), Some("")] {
        let (status, body) = server
            .request_with(Method::GET, "/api/v1/app", None, token, &[])
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(code(&body), "authentication_failed");
    }
    let (status, _) = server
        .request_with(Method::GET, "/api/v1/health", None, None, &[])
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "health needs no token");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_mistyped_bodies() {
    let server = TestServer::start().await;
    let (status, body) = server.post("/api/v1/app", "{\"name\": ").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    let (status, body) = server.post("/api/v1/app", "not json").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );

    let (status, body) = server.post("/api/v1/app", r#"{"name": 7}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(code(&body), "validation_error");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "name"]));

    let (status, body) = server.post("/api/v1/app", r#"{"uid": "x"}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "name"]));
    assert!(
        body["detail"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("missing field")
    );

    let (status, body) = server.post("/api/v1/app", r#"{"name": ""}"#).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let app = server.create_app("target").await;
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/msg"),
            r#"{"eventType": "a.b", "payload": [1, 2]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "payload"]));
    let (status, body) = server
        .post(&format!("/api/v1/app/{app}/msg"), r#"{"eventType": "a.b"}"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_not_found() {
    let server = TestServer::start().await;
    let app = server.create_app("known").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/x" }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    for path in [
        "/api/v1/app/app_2XdRrN8vX9sjxHNc4PSlnRkqxsu".to_owned(),
        "/api/v1/app/no-such-uid/endpoint".to_owned(),
        format!("/api/v1/app/{app}/endpoint/ep_2XdRrN8vX9sjxHNc4PSlnRkqxsu"),
        format!("/api/v1/app/{app}/msg/msg_2XdRrN8vX9sjxHNc4PSlnRkqxsu"),
        format!("/api/v1/app/{app}/msg/msg_2XdRrN8vX9sjxHNc4PSlnRkqxsu/endpoint"),
        format!("/api/v1/app/{app}/attempt/endpoint/ep_2XdRrN8vX9sjxHNc4PSlnRkqxsu"),
        "/api/v1/event-type/never.created".to_owned(),
        "/api/v1/no-such-route".to_owned(),
    ] {
        let (status, body) = server.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(code(&body), "not_found");
    }
    let (status, _) = server
        .post(
            "/api/v1/app/app_2XdRrN8vX9sjxHNc4PSlnRkqxsu/msg",
            r#"{"eventType": "a.b", "payload": {}}"#,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/msg/msg_2XdRrN8vX9sjxHNc4PSlnRkqxsu/endpoint/{endpoint_id}/resend"),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}

/// The ingest path caches which application a path key names: renaming or deleting the
/// application must take effect for the very next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_follow_application_renames_and_deletes() {
    let server = TestServer::start().await;
    let (status, app) = server
        .post("/api/v1/app", r#"{"name": "cached", "uid": "before"}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{app}");
    let app_id = app["id"].as_str().unwrap().to_owned();
    let message = r#"{"eventType": "a.b", "payload": {}}"#;
    for key in ["before", app_id.as_str()] {
        let (status, body) = server
            .post(&format!("/api/v1/app/{key}/msg"), message)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{key}: {body}");
    }

    let (status, body) = server
        .request(
            Method::PUT,
            &format!("/api/v1/app/{app_id}"),
            Some(r#"{"name": "cached", "uid": "after"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server.post("/api/v1/app/before/msg", message).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "not_found");
    let (status, body) = server.post("/api/v1/app/after/msg", message).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let (status, _) = server
        .request(Method::DELETE, &format!("/api/v1/app/{app_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for key in ["after", app_id.as_str()] {
        let (status, body) = server
            .post(&format!("/api/v1/app/{key}/msg"), message)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}: {body}");
        assert_eq!(code(&body), "not_found");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_over_the_limit_is_413() {
    let server = TestServer::start_with(|config| config.limits.max_body_bytes = 4096).await;
    let app = server.create_app("limits").await;
    let big = json!({ "eventType": "a.b", "payload": { "blob": "x".repeat(8192) } }).to_string();
    let (status, body) = server.post(&format!("/api/v1/app/{app}/msg"), &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(code(&body), "payload_too_large");
    let small = json!({ "eventType": "a.b", "payload": { "blob": "x" } }).to_string();
    let (status, _) = server.post(&format!("/api/v1/app/{app}/msg"), &small).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "a small message still goes through"
    );
    server.stop().await;
}

/// The body fields a 422 names, in order.
fn fields_of(body: &serde_json::Value) -> Vec<String> {
    body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["loc"][1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_fields_are_reported_together() {
    let server = TestServer::start().await;
    let app = server.create_app("fields").await;
    for url in [
        "ftp://example.com/hook",
        "http://",
        "not a url",
        "mailto:ops@example.com",
    ] {
        let (status, body) = server
            .post(
                &format!("/api/v1/app/{app}/endpoint"),
                &json!({ "url": url }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "url"]));
    }
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            &json!({
                "url": "file:///etc/passwd",
                "uid": "has space",
                "eventTypes": ["bad/name"],
                "headers": { "webhook-id": "spoofed" },
                "secret": "whsec_tooshort",
                "format": "yaml",
                "ordering": "sometimes",
                "kind": "carrier-pigeon"
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Issue 12: the choices read first (format, ordering, kind) no longer stop the check
    // early; every problem of the request comes back at once.
    assert_eq!(
        fields_of(&body),
        vec![
            "ordering",
            "format",
            "kind",
            "secret",
            "url",
            "uid",
            "eventTypes",
            "headers"
        ]
    );
    let endpoint = server
        .create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/x" }))
        .await;
    let (status, body) = server
        .request(
            Method::PATCH,
            &format!(
                "/api/v1/app/{app}/endpoint/{}",
                endpoint["id"].as_str().unwrap()
            ),
            Some(&json!({ "format": "yaml", "ordering": "never", "url": "nope" }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(fields_of(&body), vec!["ordering", "format", "url"]);

    for event_type in ["has space", "", "slash/no", &"x".repeat(300)] {
        let body = json!({ "eventType": event_type, "payload": {} }).to_string();
        let (status, response) = server.post(&format!("/api/v1/app/{app}/msg"), &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{event_type}: {response}"
        );
        assert_eq!(response["detail"][0]["loc"], json!(["body", "eventType"]));
        let (status, _) = server
            .post(
                "/api/v1/event-type",
                &json!({ "name": event_type, "description": "" }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{event_type}");
    }
    let (status, body) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{app}/msg?limit=0"),
            None,
            Some(ADMIN_TOKEN),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["query", "limit"]));
    let (status, _) = server
        .get(&format!("/api/v1/app/{app}/msg?before=yesterday"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_conflict_without_harming_the_original() {
    let server = TestServer::start().await;
    let (status, first) = server
        .post("/api/v1/app", r#"{"name": "one", "uid": "taken"}"#)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server
        .post("/api/v1/app", r#"{"name": "two", "uid": "taken"}"#)
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (_, still) = server.get("/api/v1/app/taken").await;
    assert_eq!(still["id"], first["id"]);
    assert_eq!(still["name"], "one");

    let app = first["id"].as_str().unwrap();
    server
        .create_endpoint(
            app,
            json!({ "url": "http://127.0.0.1:9/a", "uid": "primary" }),
        )
        .await;
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            &json!({ "url": "http://127.0.0.1:9/b", "uid": "primary" }).to_string(),
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (_, endpoint) = server
        .get(&format!("/api/v1/app/{app}/endpoint/primary"))
        .await;
    assert_eq!(endpoint["url"], "http://127.0.0.1:9/a");

    let message = json!({ "eventType": "a.b", "eventId": "evt-1", "payload": { "v": 1 } });
    let (status, original) = server
        .post(&format!("/api/v1/app/{app}/msg"), &message.to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let duplicate = json!({ "eventType": "a.b", "eventId": "evt-1", "payload": { "v": 2 } });
    let (status, body) = server
        .post(&format!("/api/v1/app/{app}/msg"), &duplicate.to_string())
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (_, kept) = server.get(&format!("/api/v1/app/{app}/msg/evt-1")).await;
    assert_eq!(kept["id"], original["id"]);
    assert_eq!(kept["payload"], json!({ "v": 1 }));

    let (status, _) = server
        .post(
            "/api/v1/event-type",
            r#"{"name": "a.b", "description": "x"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server
        .post(
            "/api/v1/event-type",
            r#"{"name": "a.b", "description": "y"}"#,
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_enforced() {
    let server = TestServer::start_with(|config| {
        config.limits.max_payload_depth = 4;
        config.limits.max_endpoints_per_app = 2;
        config.limits.max_endpoint_headers = 2;
        config.limits.max_header_bytes = 64;
    })
    .await;
    let app = server.create_app("limits").await;

    let deep = json!({ "eventType": "a.b", "payload": { "a": { "b": { "c": { "d": [1] } } } } });
    let (status, body) = server
        .post(&format!("/api/v1/app/{app}/msg"), &deep.to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "payload"]));
    let shallow = json!({ "eventType": "a.b", "payload": { "a": { "b": { "c": "[[[[[" } } } });
    let (status, _) = server
        .post(&format!("/api/v1/app/{app}/msg"), &shallow.to_string())
        .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "brackets inside strings do not count"
    );

    let headers =
        json!({ "url": "https://example.com/h", "headers": { "A": "1", "B": "2", "C": "3" } });
    let (status, body) = server
        .post(&format!("/api/v1/app/{app}/endpoint"), &headers.to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let long = json!({ "url": "https://example.com/h", "headers": { "X-Long": "v".repeat(100) } });
    let (status, _) = server
        .post(&format!("/api/v1/app/{app}/endpoint"), &long.to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    for _ in 0..2 {
        server
            .create_endpoint(&app, json!({ "url": "https://example.com/h" }))
            .await;
    }
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            r#"{"url": "https://example.com/h"}"#,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "limit_reached")
    );
    let (_, endpoints) = server.get(&format!("/api/v1/app/{app}/endpoint")).await;
    assert_eq!(
        endpoints["data"].as_array().unwrap().len(),
        2,
        "the existing ones are untouched"
    );
    server.stop().await;
}
