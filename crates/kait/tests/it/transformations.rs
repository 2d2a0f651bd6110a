//! Endpoint transformations (issue 14): set through the official Svix client, run at delivery
//! in the sandbox; hostile code fails its own attempts while other deliveries go on.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::Receiver;
use crate::support::{TestServer, assert_signed, source_with_endpoint};

const REWRITE: &str = r#"
function handler(webhook) {
    webhook.method = "PUT";
    webhook.url = webhook.url + "/rewritten?via=" + webhook.eventType;
    webhook.payload = { total: webhook.payload.cents / 100, currency: "EUR" };
    return webhook;
}"#;

const CANCEL_SMALL: &str = r#"
function handler(webhook) {
    webhook.cancel = webhook.payload.cents < 1000;
    return webhook;
}"#;

async fn endpoint_id(server: &TestServer, app_id: &str, url: &str) -> String {
    server.create_endpoint(app_id, json!({ "url": url })).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn svix_client_sets_a_rewriting_and_a_cancelling_transformation() {
    let server = TestServer::start().await;
    let rewritten = Receiver::start().await;
    let filtered = Receiver::start().await;
    let app_id = server.create_app("shop").await;
    let rewriting = endpoint_id(&server, &app_id, &rewritten.url).await;
    let cancelling = endpoint_id(&server, &app_id, &filtered.url).await;
    let svix = server.svix();

    // The current client's `endpoint.transformation.patch`, and the older
    // `transformation_partial_update`: the same route.
    let patch: svix::models::EndpointTransformationPatch =
        serde_json::from_value(json!({ "code": REWRITE, "enabled": true })).unwrap();
    svix.endpoint()
        .transformation()
        .patch(app_id.clone(), rewriting.clone(), patch)
        .await
        .expect("transformation set");
    #[allow(deprecated)]
    svix.endpoint()
        .transformation_partial_update(
            app_id.clone(),
            cancelling.clone(),
            svix::models::EndpointTransformationIn {
                code: Some(CANCEL_SMALL.into()),
                enabled: Some(true),
            },
        )
        .await
        .expect("transformation set the older way");
    let shown = svix
        .endpoint()
        .transformation()
        .get(app_id.clone(), rewriting.clone())
        .await
        .unwrap();
    assert_eq!(shown.code.as_deref(), Some(REWRITE));
    assert_eq!(shown.enabled, Some(true));
    assert!(shown.updated_at.is_some());

    let small = server
        .send(&app_id, "order.paid", json!({ "cents": 250 }))
        .await;
    let large = server
        .send(&app_id, "order.paid", json!({ "cents": 125000 }))
        .await;

    let received = rewritten.wait_for(2, Duration::from_secs(20)).await;
    let secret = server.secret(&app_id, &rewriting).await;
    for webhook in &received {
        assert_eq!(webhook.method, axum::http::Method::PUT);
        assert_eq!(webhook.uri.to_string(), "/webhook/rewritten?via=order.paid");
        assert_eq!(webhook.json()["currency"], "EUR");
        assert_signed(webhook, &secret);
    }
    let mut totals: Vec<f64> = received
        .iter()
        .map(|webhook| webhook.json()["total"].as_f64().unwrap())
        .collect();
    totals.sort_by(f64::total_cmp);
    assert_eq!(totals, [2.5, 1250.0]);

    // The cancelling endpoint gets the large order only; the small one is canceled, not failed.
    let passed = filtered.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(passed[0].json(), json!({ "cents": 125000 }));
    assert_eq!(passed[0].header("webhook-id"), large);
    let attempts = server
        .wait_until(
            &format!("/api/v1/app/{app_id}/attempt/endpoint/{cancelling}"),
            Duration::from_secs(10),
            |body| body["data"].as_array().is_some_and(|data| data.len() == 2),
        )
        .await;
    let canceled = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attempt| attempt["msgId"] == small.as_str())
        .expect("the small order's attempt is logged");
    assert_eq!(canceled["status"], 4, "{canceled}");
    assert!(
        canceled["response"]
            .as_str()
            .unwrap()
            .contains("canceled by the endpoint's transformation")
    );
    let stats = server
        .get(&format!("/api/v1/app/{app_id}/endpoint/{cancelling}/stats"))
        .await
        .1;
    assert_eq!(stats["canceled"], 1, "{stats}");
    assert_eq!(stats["fail"], 0, "{stats}");

    // Switched off, the code is kept and webhooks go out unchanged.
    let off: svix::models::EndpointTransformationPatch =
        serde_json::from_value(json!({ "enabled": false })).unwrap();
    svix.endpoint()
        .transformation()
        .patch(app_id.clone(), rewriting.clone(), off)
        .await
        .unwrap();
    let plain = server
        .send(&app_id, "order.paid", json!({ "cents": 1 }))
        .await;
    let received = rewritten.wait_for(3, Duration::from_secs(20)).await;
    let last = received
        .iter()
        .find(|webhook| webhook.header("webhook-id") == plain)
        .unwrap();
    assert_eq!(last.method, axum::http::Method::POST);
    assert_eq!(last.json(), json!({ "cents": 1 }));
    let kept = server
        .get(&format!(
            "/api/v1/app/{app_id}/endpoint/{rewriting}/transformation"
        ))
        .await
        .1;
    assert_eq!(kept["code"], REWRITE);
    assert_eq!(kept["enabled"], false);
    server.stop().await;
}

#[tokio::test]
async fn hostile_transformations_fail_their_own_attempts_while_others_deliver() {
    let server = TestServer::start().await;
    let healthy = Receiver::start().await;
    let hostile_receiver = Receiver::start().await;
    let app_id = server.create_app("hostile").await;
    endpoint_id(&server, &app_id, &healthy.url).await;
    let cases = [
        ("function handler(w) { for (;;) {} }", "ran longer than"),
        (
            "function handler(w) { function f(n) { return f(n + 1) + 1; } return f(0); }",
            "recursed too deeply",
        ),
        (
            "function handler(w) { w.payload.big = 'x'.repeat((1 << 30) - 1); return w; }",
            "bytes of memory",
        ),
        (
            "function handler(w) { process.exit(1); return w; }",
            "process is not defined",
        ),
        (
            "function handler(w) { require('fs').readFileSync('/etc/passwd'); return w; }",
            "require is not defined",
        ),
        (
            "function handler(w) { fetch('http://127.0.0.1:1/'); return w; }",
            "fetch is not defined",
        ),
        ("function handler(w) { throw new Error('nope'); }", "nope"),
        (
            "function handler(w) { w.method = 'DELETE'; return w; }",
            "method must be POST or PUT",
        ),
    ];
    let mut hostile = Vec::new();
    for (code, _) in &cases {
        let id = endpoint_id(&server, &app_id, &hostile_receiver.url).await;
        let (status, body) = server
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/app/{app_id}/endpoint/{id}/transformation"),
                Some(&json!({ "code": code, "enabled": true }).to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{code}: {body}");
        hostile.push(id);
    }

    let mut sent = Vec::new();
    for n in 0..20 {
        sent.push(server.send(&app_id, "reading", json!({ "n": n })).await);
    }
    let delivered = healthy.wait_for(20, Duration::from_secs(30)).await;
    assert_eq!(delivered.len(), 20);

    for ((_, reason), id) in cases.iter().zip(&hostile) {
        let attempts = server
            .wait_until(
                &format!("/api/v1/app/{app_id}/attempt/endpoint/{id}"),
                Duration::from_secs(30),
                |body| body["data"].as_array().is_some_and(|data| data.len() >= 20),
            )
            .await;
        for attempt in attempts["data"].as_array().unwrap() {
            assert_eq!(attempt["status"], 2, "{attempt}");
            let response = attempt["response"].as_str().unwrap();
            assert!(
                response.contains("transformation failed") && response.contains(reason),
                "expected {reason:?} in {response:?}"
            );
        }
    }
    assert_eq!(hostile_receiver.count(), 0, "no hostile webhook was sent");
    // The server is still whole: it accepts and delivers after all that.
    let after = server.send(&app_id, "reading", json!({ "n": 99 })).await;
    let delivered = healthy.wait_for(21, Duration::from_secs(20)).await;
    assert!(
        delivered
            .iter()
            .any(|webhook| webhook.header("webhook-id") == after)
    );
    assert_eq!(sent.len(), 20);
    server.stop().await;
}

#[tokio::test]
async fn bad_transformations_are_refused_before_they_are_saved() {
    let server = TestServer::start().await;
    let app_id = server.create_app("strict").await;
    let id = endpoint_id(&server, &app_id, "https://example.com/hook").await;
    let path = format!("/api/v1/app/{app_id}/endpoint/{id}/transformation");
    let patch = |body: Value| {
        let server = &server;
        let path = &path;
        async move {
            server
                .request(reqwest::Method::PATCH, path, Some(&body.to_string()))
                .await
        }
    };
    for (body, field, says) in [
        (
            json!({ "code": "function handler(w) {", "enabled": true }),
            "code",
            "does not compile",
        ),
        (
            json!({ "code": "function other(w) { return w; }" }),
            "code",
            "no function `handler`",
        ),
        (json!({ "enabled": true }), "enabled", "without code"),
        (json!({ "code": "x".repeat(70_000) }), "code", "longer than"),
        (
            json!({ "code": "function handler(w) { return w; }", "variables": { "k": "v" } }),
            "variables",
            "not supported",
        ),
    ] {
        let (status, answer) = patch(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(
            answer["detail"][0]["loc"],
            json!(["body", field]),
            "{answer}"
        );
        assert!(
            answer["detail"][0]["msg"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
    let (status, answer) = patch(json!({ "code": 5 })).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (_, shown) = server.get(&path).await;
    assert_eq!(
        shown,
        json!({ "code": null, "enabled": false, "updatedAt": null })
    );
    server.stop().await;
}

#[tokio::test]
async fn the_test_route_runs_code_on_a_sample() {
    let server = TestServer::start().await;
    let app_id = server.create_app("try").await;
    let id = endpoint_id(&server, &app_id, "https://example.com/hook").await;
    let path = format!("/api/v1/app/{app_id}/endpoint/{id}/transformation/test");
    let (status, ran) = server
        .post(
            &path,
            &json!({ "code": REWRITE, "payload": { "cents": 990 }, "eventType": "order.paid" })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(
        ran["result"],
        json!({
            "method": "PUT",
            "url": "https://example.com/hook/rewritten?via=order.paid",
            "payload": { "total": 9.9, "currency": "EUR" },
            "cancel": false
        })
    );
    assert_eq!(ran["error"], Value::Null);
    let (status, failed) = server
        .post(
            &path,
            &json!({ "code": "function handler(w) { while (true) {} }", "payload": {} })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["result"], Value::Null);
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("ran longer than")
    );
    // Without code, the endpoint's saved code runs; with none saved that is a 422.
    let (status, answer) = server
        .post(&path, &json!({ "payload": {} }).to_string())
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = server
        .post(
            &path,
            &json!({ "code": REWRITE, "payload": [1] }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn an_ingest_endpoint_transformation_reshapes_a_received_request() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let source = source_with_endpoint(
        &client,
        &server.base_url,
        json!({ "name": "shop", "type": "generic-webhook", "config": {} }),
        &receiver.url,
    )
    .await;
    let source_id = source["id"].as_str().unwrap();
    let (_, endpoints) = server
        .get(&format!("/ingest/api/v1/source/{source_id}/endpoint"))
        .await;
    let endpoint = endpoints["data"][0]["id"].as_str().unwrap();
    let path = format!("/ingest/api/v1/source/{source_id}/endpoint/{endpoint}/transformation");
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &path,
            Some(
                &json!({
                    "code": "function handler(w) { w.payload = { seen: w.payload.order.id }; return w; }",
                    "enabled": true
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    assert_eq!(server.get(&path).await.1["enabled"], true);

    let response = client
        .post(source["ingestUrl"].as_str().unwrap())
        .header("content-type", "application/json")
        .body(r#"{"order": {"id": "ord_7"}, "padding": "   "}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let received = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received[0].json(), json!({ "seen": "ord_7" }));
    assert_eq!(received[0].header("content-type"), "application/json");

    let (status, ran) = server
        .post(
            &format!("{path}/test"),
            &json!({ "payload": { "order": { "id": "x" } } }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["result"]["payload"], json!({ "seen": "x" }));
    server.stop().await;
}
