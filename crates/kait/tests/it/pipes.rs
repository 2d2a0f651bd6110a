//! Pipes (issue 14): the abandoned cart and the silent sensor end to end, with short waits;
//! bad definitions refused; runs recorded. The kill -9 versions are in `durability.rs`.

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::TestServer;
use crate::support::receiver::Receiver;

/// Cart updates keyed by cart id; an order for the cart within `within_ms` ends the wait;
/// otherwise `cart.abandoned` is emitted into the shop's application.
pub fn abandoned_cart_pipe(app: &str, within_ms: u64) -> Value {
    json!({
        "name": "abandoned carts",
        "uid": "abandoned-carts",
        "trigger": { "app": app, "eventTypes": ["cart.updated"] },
        "actions": [{
            "type": "expect",
            "key": "e => e.payload.cartId",
            "eventTypes": ["order.placed"],
            "withinMs": within_ms,
            "restart": true,
            "onMatch": [{
                "type": "emit", "app": app, "eventType": "cart.converted",
                "payload": "e => ({ cartId: e.payload.cartId })"
            }],
            "onTimeout": [{
                "type": "emit", "app": app, "eventType": "cart.abandoned",
                "payload": "e => ({ cartId: e.payload.cartId, total: e.payload.total })"
            }]
        }]
    })
}

/// Every reading restarts a wait per device; `device.silent` when none came within the time.
pub fn silent_sensor_pipe(app: &str, within_ms: u64) -> Value {
    json!({
        "name": "silent sensors",
        "trigger": { "app": app, "eventTypes": ["device.reading"] },
        "actions": [{
            "type": "expect",
            "key": "e => e.payload.device",
            "withinMs": within_ms,
            "restart": true,
            "onTimeout": [{
                "type": "emit", "app": app, "eventType": "device.silent",
                "payload": "e => ({ device: e.payload.device, lastReading: e.timestamp })"
            }]
        }]
    })
}

async fn create_pipe(server: &TestServer, body: Value) -> Value {
    let (status, created) = server.post("/api/v1/pipe", &body.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// An application with one endpoint, at `receiver`, for the given event types.
async fn app_with_endpoint(
    server: &TestServer,
    name: &str,
    receiver: &Receiver,
    types: &[&str],
) -> String {
    let app_id = server.create_app(name).await;
    server
        .create_endpoint(
            &app_id,
            json!({ "url": receiver.url, "filterTypes": types }),
        )
        .await;
    app_id
}

#[tokio::test]
async fn an_abandoned_cart_is_reported_and_a_bought_one_is_not() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app_id = app_with_endpoint(
        &server,
        "shop",
        &receiver,
        &["cart.abandoned", "cart.converted"],
    )
    .await;
    let pipe = create_pipe(&server, abandoned_cart_pipe(&app_id, 1_500)).await;
    assert_eq!(pipe["appId"], app_id.as_str());
    assert_eq!(pipe["trigger"]["eventTypes"], json!(["cart.updated"]));

    let started = Instant::now();
    for (cart, total) in [("c-bought", 10), ("c-left", 25), ("c-left", 30)] {
        server
            .send(
                &app_id,
                "cart.updated",
                json!({ "cartId": cart, "total": total }),
            )
            .await;
    }
    server
        .send(&app_id, "order.placed", json!({ "cartId": "c-bought" }))
        .await;

    let received = receiver.wait_for(2, Duration::from_secs(20)).await;
    let mut kinds: Vec<(String, Value)> = received
        .iter()
        .map(|webhook| {
            let body = webhook.json();
            (body["cartId"].as_str().unwrap().to_owned(), body)
        })
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(kinds[0].1, json!({ "cartId": "c-bought" }), "converted");
    assert_eq!(
        kinds[1].1,
        json!({ "cartId": "c-left", "total": 30 }),
        "abandoned, with the last update (the wait restarted)"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1_400),
        "not reported before the wait ended"
    );
    // Exactly once: nothing more comes.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.count(), 2);

    let pipe_id = pipe["id"].as_str().unwrap();
    let (_, runs) = server.get(&format!("/api/v1/pipe/{pipe_id}/run")).await;
    let outcomes: Vec<&str> = runs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["outcome"].as_str().unwrap())
        .collect();
    assert!(outcomes.iter().all(|outcome| *outcome == "done"), "{runs}");
    assert_eq!(
        outcomes.len(),
        5,
        "three updates, the order, one time out: {runs}"
    );
    // The pipe's subscription is not one of the application's endpoints.
    let (_, endpoints) = server.get(&format!("/api/v1/app/{app_id}/endpoint")).await;
    assert_eq!(endpoints["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_sensor_that_stops_reporting_is_reported_silent_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app_id = app_with_endpoint(&server, "site", &receiver, &["device.silent"]).await;
    create_pipe(&server, silent_sensor_pipe(&app_id, 1_500)).await;

    // Readings every 200 ms for 2 s: never silent for 1.5 s (room for a stalled CI machine:
    // with 800 ms a send that took 600 ms once read as silence).
    for _ in 0..10 {
        server
            .send(
                &app_id,
                "device.reading",
                json!({ "device": "s-1", "celsius": 21 }),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(receiver.count(), 0, "reporting sensors are not silent");
    let stopped = Instant::now();
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json()["device"], "s-1");
    assert!(stopped.elapsed() >= Duration::from_millis(1_000));
    // Longer than the timeout again: still one report for one silence.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(receiver.count(), 1, "reported once");
    server.stop().await;
}

#[tokio::test]
async fn filters_transforms_and_delays_run_in_order() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app_id = app_with_endpoint(&server, "orders", &receiver, &["order.big"]).await;
    create_pipe(
        &server,
        json!({
            "name": "big orders, later",
            "trigger": {
                "app": app_id, "eventTypes": ["order.created"],
                "filter": "e => e.payload.total > 100"
            },
            "transform": "e => ({ id: e.payload.id, euros: e.payload.total })",
            "actions": [
                { "type": "delay", "ms": 500 },
                { "type": "emit", "app": app_id, "eventType": "order.big" }
            ]
        }),
    )
    .await;
    let started = Instant::now();
    server
        .send(
            &app_id,
            "order.created",
            json!({ "id": "o-1", "total": 50 }),
        )
        .await;
    server
        .send(
            &app_id,
            "order.created",
            json!({ "id": "o-2", "total": 500 }),
        )
        .await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json(), json!({ "id": "o-2", "euros": 500 }));
    assert!(started.elapsed() >= Duration::from_millis(450));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.count(), 1, "the small order was filtered out");
    server.stop().await;
}

#[tokio::test]
async fn bad_pipes_are_refused_with_where_and_why() {
    let server = TestServer::start().await;
    let app_id = server.create_app("strict").await;
    let good = abandoned_cart_pipe(&app_id, 1_000);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        change(&mut body);
        body
    };
    let cases = [
        (
            with(&|body| body["actions"][0]["key"] = json!("e => {")),
            json!(["body", "actions", "0", "key"]),
        ),
        (
            with(&|body| body["actions"][0]["withinMs"] = json!(0)),
            json!(["body", "actions", "0", "withinMs"]),
        ),
        (
            with(&|body| body["actions"][0]["type"] = json!("publish")),
            json!(["body"]),
        ),
        (
            with(&|body| body["trigger"]["eventTypes"] = json!([])),
            json!(["body", "trigger", "eventTypes"]),
        ),
        (
            with(&|body| body["trigger"]["source"] = json!("src_x")),
            json!(["body", "trigger"]),
        ),
        (
            with(&|body| body["transform"] = json!("not javascript (")),
            json!(["body", "transform"]),
        ),
    ];
    for (body, loc) in cases {
        let (status, answer) = server.post("/api/v1/pipe", &body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["detail"][0]["loc"], loc, "{answer}");
    }
    let (status, answer) = server
        .post(
            "/api/v1/pipe",
            &with(&|body| body["trigger"]["app"] = json!("no-such-app")).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = server.post("/api/v1/pipe", "{\"name\": 5}").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // The good one, then a change that may not move it to another application.
    let created = create_pipe(&server, good.clone()).await;
    let id = created["id"].as_str().unwrap();
    let other = server.create_app("other").await;
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{id}"),
            Some(&json!({ "trigger": { "app": other, "eventTypes": ["x"] } }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{id}"),
            Some(&json!({ "enabled": false, "name": "renamed" }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["enabled"], false);
    assert_eq!(answer["actions"], good["actions"]);
    let (status, _) = server
        .request(reqwest::Method::DELETE, &format!("/api/v1/pipe/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get(&format!("/api/v1/pipe/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test]
async fn a_pipe_on_a_source_acts_on_received_requests() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let app_id = app_with_endpoint(&server, "alerts", &receiver, &["alert.raised"]).await;
    let (status, source) = server
        .post(
            "/ingest/api/v1/source",
            &json!({ "name": "monitor", "type": "generic-webhook", "config": {} }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    create_pipe(
        &server,
        json!({
            "name": "alerts from the monitor",
            "trigger": {
                "source": source["id"], "eventTypes": ["generic-webhook"],
                "filter": "e => e.payload.level === 'critical'"
            },
            "actions": [{
                "type": "emit", "app": app_id, "eventType": "alert.raised",
                "payload": "e => ({ what: e.payload.what })"
            }]
        }),
    )
    .await;
    for level in ["info", "critical"] {
        let response = client
            .post(source["ingestUrl"].as_str().unwrap())
            .header("content-type", "application/json")
            .body(json!({ "level": level, "what": "disk" }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json(), json!({ "what": "disk" }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test]
async fn forward_sends_through_the_delivery_engine_signed_with_its_own_secret() {
    let server = TestServer::start().await;
    let (first, second) = (Receiver::start().await, Receiver::start().await);
    let app_id = server.create_app("devices").await;
    let pipe = create_pipe(
        &server,
        json!({
            "name": "relay",
            "trigger": { "app": app_id, "eventTypes": ["reading"] },
            "transform": "e => ({ device: e.payload.device })",
            "actions": [{ "type": "forward", "url": first.url }]
        }),
    )
    .await;
    let pipe_id = pipe["id"].as_str().unwrap();
    let relay_app = format!("kait-pipe-{pipe_id}");
    server
        .send(&app_id, "reading", json!({ "device": "d-1", "noise": 1 }))
        .await;
    let received = first.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json(), json!({ "device": "d-1" }));
    let secret = server.secret(&relay_app, "forward-0").await;
    crate::support::assert_signed(&received[0], &secret);

    // Pointed elsewhere: the same endpoint (and secret), a new URL.
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{pipe_id}"),
            Some(&json!({ "actions": [{ "type": "forward", "url": second.url }] }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    server
        .send(&app_id, "reading", json!({ "device": "d-2" }))
        .await;
    let received = second.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(received[0].json(), json!({ "device": "d-2" }));
    assert_eq!(server.secret(&relay_app, "forward-0").await, secret);
    assert_eq!(first.count(), 1);

    // A URL the egress guard refuses is a 422 at its place.
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{pipe_id}"),
            Some(
                &json!({ "actions": [{ "type": "forward", "url": "http://169.254.169.254/" }] })
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "actions", "0", "url"])
    );

    // Deleting the pipe deletes its forwarding application.
    server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/pipe/{pipe_id}"),
            None,
        )
        .await;
    assert_eq!(
        server.get(&format!("/api/v1/app/{relay_app}")).await.0,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

/// A generic-webhook source, by uid; returns its ingest URL.
async fn source(server: &TestServer, uid: &str) -> String {
    let (status, source) = server
        .post(
            "/ingest/api/v1/source",
            &json!({ "name": uid, "uid": uid, "type": "generic-webhook", "config": {} })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{source}");
    source["ingestUrl"].as_str().unwrap().to_owned()
}

async fn post_json(url: &str, body: Value) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_pipe_on_several_sources_forwards_to_one_source_endpoint() {
    let server = TestServer::start().await;
    let (runner, bystander) = (Receiver::start().await, Receiver::start().await);
    let github = source(&server, "github").await;
    let gitlab = source(&server, "gitlab").await;
    source(&server, "ci").await;
    // The target takes only a type the forwarded events do not have: an explicit forward
    // goes past filters. The other endpoint of the same source must get nothing.
    for (uid, url, types) in [
        ("runner", &runner.url, json!(["ci.only"])),
        ("bystander", &bystander.url, json!(null)),
    ] {
        let (status, answer) = server
            .post(
                "/ingest/api/v1/source/ci/endpoint",
                &json!({ "uid": uid, "url": url, "filterTypes": types }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let pipe = create_pipe(
        &server,
        json!({
            "name": "pushes to ci",
            "trigger": { "sources": ["github", "gitlab"], "eventTypes": ["generic-webhook"] },
            "transform": "e => ({ repo: e.payload.repo })",
            "actions": [{ "type": "forward", "source": "ci", "endpoint": "runner" }]
        }),
    )
    .await;
    let pipe_id = pipe["id"].as_str().unwrap().to_owned();
    assert_eq!(pipe["trigger"]["sources"], json!(["github", "gitlab"]));

    post_json(&github, json!({ "repo": "a", "noise": 1 })).await;
    post_json(&gitlab, json!({ "repo": "b" })).await;
    let received = runner.wait_for(2, Duration::from_secs(10)).await;
    let mut repos: Vec<Value> = received.iter().map(|r| r.json()["repo"].clone()).collect();
    repos.sort_by_key(|repo| repo.to_string());
    assert_eq!(repos, [json!("a"), json!("b")]);
    assert_eq!(
        received[0].json(),
        json!({ "repo": received[0].json()["repo"] })
    );
    let (status, secret) = server
        .get("/ingest/api/v1/source/ci/endpoint/runner/secret")
        .await;
    assert_eq!(status, StatusCode::OK, "{secret}");
    crate::support::assert_signed(&received[0], secret["key"].as_str().unwrap());

    // Down to one source: the other's requests no longer trigger it.
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{pipe_id}"),
            Some(
                &json!({ "trigger": { "sources": ["gitlab"], "eventTypes": ["generic-webhook"] } })
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    post_json(&github, json!({ "repo": "ignored" })).await;
    post_json(&gitlab, json!({ "repo": "c" })).await;
    let received = runner.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(received[2].json(), json!({ "repo": "c" }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runner.count(), 3, "github no longer triggers the pipe");
    assert_eq!(
        bystander.count(),
        0,
        "the forward went to its endpoint alone"
    );

    // Targets that do not exist are refused where they are named.
    for (action, loc) in [
        (
            json!({ "type": "forward", "source": "ci", "endpoint": "nope" }),
            json!(["body", "actions", "0", "endpoint"]),
        ),
        (
            json!({ "type": "forward", "source": "nope", "endpoint": "runner" }),
            json!(["body", "actions", "0", "source"]),
        ),
    ] {
        let (status, answer) = server
            .request(
                reqwest::Method::PATCH,
                &format!("/api/v1/pipe/{pipe_id}"),
                Some(&json!({ "actions": [action] }).to_string()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["detail"][0]["loc"], loc, "{answer}");
    }
    // A pipe on sources stays on sources.
    let app_id = server.create_app("elsewhere").await;
    let (status, answer) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/pipe/{pipe_id}"),
            Some(&json!({ "trigger": { "app": app_id, "eventTypes": ["x"] } }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");

    // Deleted: no source triggers it any more.
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/pipe/{pipe_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    post_json(&gitlab, json!({ "repo": "after" })).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runner.count(), 3);
    server.stop().await;
}
