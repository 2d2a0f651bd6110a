//! Plugins (issue 17, first part): registration, installation with granted scopes, the
//! exchange of a plugin's credential for installation tokens, and the rights those tokens
//! have, walked over every route of the router (read from the OpenAPI document, which the
//! router's own route table produces, so a new route cannot be forgotten).

use axum::http::StatusCode;
use kait_core::scope::{ScopeKind, Scopes};
use reqwest::Method;
use serde_json::{Value, json};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;

use crate::support::TestServer;

/// Routes that take no admin token (their own credentials, or none).
const PUBLIC: &[&str] = &[
    "/api/v1/health",
    "/api/v1/health/ping",
    "/api/v1/openapi.json",
    "/metrics",
    "/media/{attachment_id}",
    "/ingest/api/v1/source/{source_id}/in/{token}",
    "/api/v1/plugin/token",
];

/// Every protected operation of the router: method, path template, the scope it needs.
fn operations() -> Vec<(Method, String, Option<ScopeKind>)> {
    let document = kait_api::openapi_document();
    let mut operations = Vec::new();
    for (path, item) in &document.paths.paths {
        if PUBLIC.contains(&path.as_str()) {
            continue;
        }
        for (method, operation) in [
            (Method::GET, &item.get),
            (Method::POST, &item.post),
            (Method::PUT, &item.put),
            (Method::PATCH, &item.patch),
            (Method::DELETE, &item.delete),
        ] {
            if operation.is_some() {
                let scope = kait_api::auth::scope_for(
                    &axum::http::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                    path,
                );
                operations.push((method, path.clone(), scope));
            }
        }
    }
    operations
}

/// The path with `app` for `{app_id}` and a placeholder for every other parameter (the
/// token is judged before anything in the path is looked up).
fn fill(template: &str, app: &str) -> String {
    let mut path = String::new();
    for (index, part) in template.split('{').enumerate() {
        if index == 0 {
            path.push_str(part);
            continue;
        }
        let (name, rest) = part.split_once('}').unwrap();
        path.push_str(if name == "app_id" { app } else { "x1" });
        path.push_str(rest);
    }
    path
}

fn all_scopes() -> Vec<&'static str> {
    ScopeKind::ALL.iter().map(|kind| kind.as_str()).collect()
}

/// Registers a plugin asking for `scopes`; returns its id and credential.
async fn register(server: &TestServer, uid: &str, scopes: &[&str]) -> (String, String) {
    let (status, plugin) = server
        .post(
            "/api/v1/plugin",
            &json!({
                "name": uid, "uid": uid, "url": "http://127.0.0.1:9/plugin",
                "eventTypes": ["camera.motion"], "scopes": scopes
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    let credential = plugin["credential"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("plsk_"));
    (plugin["id"].as_str().unwrap().to_owned(), credential)
}

async fn install(server: &TestServer, app: &str, plugin: &str, scopes: Option<&[&str]>) -> Value {
    let (status, installation) = server
        .post(
            &format!("/api/v1/app/{app}/installation"),
            &json!({ "plugin": plugin, "scopes": scopes }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{installation}");
    installation
}

/// Exchanges the credential for a token of the plugin's installation in `app`.
async fn token(server: &TestServer, credential: &str, body: Value) -> (StatusCode, Value) {
    server
        .request_with(
            Method::POST,
            "/api/v1/plugin/token",
            Some(&body.to_string()),
            Some(credential),
            &[],
        )
        .await
}

async fn token_for(server: &TestServer, credential: &str, app: &str, scopes: &[&str]) -> String {
    let (status, answer) = token(server, credential, json!({ "app": app, "scopes": scopes })).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

async fn call(
    server: &TestServer,
    method: &Method,
    path: &str,
    token: &str,
) -> (StatusCode, Value) {
    let body = matches!(*method, Method::POST | Method::PUT | Method::PATCH).then_some("{}");
    server
        .request_with(method.clone(), path, body, Some(token), &[])
        .await
}

#[tokio::test]
async fn installation_tokens_reach_exactly_their_scopes_on_every_route() {
    let server = TestServer::start().await;
    let home = server.create_app("home").await;
    let elsewhere = server.create_app("elsewhere").await;
    let (plugin, credential) = register(&server, "camera-ai", &all_scopes()).await;
    let installation = install(&server, &home, &plugin, None).await;
    install(&server, &elsewhere, &plugin, None).await;
    assert_eq!(
        installation["scopes"].as_array().unwrap().len(),
        ScopeKind::ALL.len()
    );

    // One token per scope kind, holding everything that does not satisfy it.
    let mut lacking = std::collections::HashMap::new();
    for kind in ScopeKind::ALL {
        let others: Vec<&str> = all_scopes()
            .into_iter()
            .filter(|scope| !Scopes::parse(&[*scope]).unwrap().allows(kind))
            .collect();
        lacking.insert(kind, token_for(&server, &credential, &home, &others).await);
    }
    let full_home = token_for(&server, &credential, &home, &all_scopes()).await;
    let full_elsewhere = token_for(&server, &credential, &elsewhere, &all_scopes()).await;
    let (status, short) = token(
        &server,
        &credential,
        json!({ "app": home, "expiresInSecs": 1 }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{short}");
    let short = short["token"].as_str().unwrap().to_owned();

    let operations = operations();
    assert!(
        operations.len() > 60,
        "the route table: {}",
        operations.len()
    );
    let mut open = 0;
    for (method, template, scope) in &operations {
        let path = fill(template, &home);
        match scope {
            Some(kind) => {
                open += 1;
                let (status, body) = call(&server, method, &path, &lacking[kind]).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("insufficient_scope")),
                    "{method} {template} without {kind}: {body}"
                );
                assert!(body["detail"].as_str().unwrap().contains(kind.as_str()));
                if template.contains("{app_id}") {
                    let (status, body) = call(&server, method, &path, &full_elsewhere).await;
                    assert_eq!(
                        status,
                        StatusCode::FORBIDDEN,
                        "{method} {template} with another application's token: {body}"
                    );
                }
            }
            None => {
                let (status, body) = call(&server, method, &path, &full_home).await;
                assert_eq!(
                    (status, body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("forbidden")),
                    "{method} {template} is not open to plugins: {body}"
                );
            }
        }
    }
    assert!(open > 30, "routes open to plugins: {open}");
    // Every one of those calls is in the audit log, refused by the middleware with its reason.
    let (status, audit) = server
        .get(&format!("/api/v1/app/{home}/plugin-audit?limit=250"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let refused = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["decision"] == "refused")
        .count();
    assert!(
        refused >= open,
        "{refused} refusals logged for {open} routes"
    );

    // Within its scopes and application, a token works.
    let (status, app) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{home}"),
            None,
            Some(&full_home),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{app}");
    let message = json!({ "eventType": "camera.motion", "payload": { "zone": 3 } }).to_string();
    let (status, body) = server
        .request_with(
            Method::POST,
            &format!("/api/v1/app/{home}/msg"),
            Some(&message),
            Some(&full_home),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Pipes are not under an application's path: a plugin sees only its application's.
    let mut pipes = Vec::new();
    for app in [&home, &elsewhere] {
        let (status, pipe) = server
            .post(
                "/api/v1/pipe",
                &json!({
                    "name": "relay",
                    "trigger": { "app": app, "eventTypes": ["camera.motion"] },
                    "actions": [{ "type": "emit", "app": app, "eventType": "camera.seen" }]
                })
                .to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{pipe}");
        pipes.push(pipe["id"].as_str().unwrap().to_owned());
    }
    let (status, listed) = server
        .request_with(Method::GET, "/api/v1/pipe", None, Some(&full_home), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let seen: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pipe| pipe["id"].as_str().unwrap())
        .collect();
    assert_eq!(seen, [pipes[0].as_str()]);
    for (pipe, expected) in [
        (&pipes[0], StatusCode::OK),
        (&pipes[1], StatusCode::NOT_FOUND),
    ] {
        let (status, _) = server
            .request_with(
                Method::GET,
                &format!("/api/v1/pipe/{pipe}/run"),
                None,
                Some(&full_home),
                &[],
            )
            .await;
        assert_eq!(status, expected, "{pipe}");
    }

    // Expired: 401 everywhere.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (method, template, _) in &operations {
        let (status, _) = call(&server, method, &fill(template, &home), &short).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "expired: {method} {template}"
        );
    }

    // Revoked mid-flight: 401 from that moment, on every route.
    let (status, _) = server
        .post(
            &format!(
                "/api/v1/app/{home}/installation/{}/revoke-tokens",
                installation["id"].as_str().unwrap()
            ),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (method, template, _) in &operations {
        let (status, _) = call(&server, method, &fill(template, &home), &full_home).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "revoked: {method} {template}"
        );
    }
    // The other installation's tokens live on; uninstalling ends them too.
    let (status, _) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{elsewhere}"),
            None,
            Some(&full_elsewhere),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, installations) = server
        .get(&format!("/api/v1/app/{elsewhere}/installation"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let there = installations["data"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .request(
            Method::DELETE,
            &format!("/api/v1/app/{elsewhere}/installation/{there}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{elsewhere}"),
            None,
            Some(&full_elsewhere),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn narrowed_scopes_and_grants_hold_and_bad_requests_are_refused() {
    let server = TestServer::start().await;
    let site = server.create_app("site").await;
    let (plugin, credential) = register(
        &server,
        "gatekeeper",
        &[
            "messages:write:camera.*",
            "devices:command:gate-*",
            "endpoints:read",
        ],
    )
    .await;
    // The installer grants less than asked: no device commands.
    let installation = install(&server, &site, &plugin, Some(&["messages:write:camera.*"])).await;
    assert_eq!(installation["scopes"], json!(["messages:write:camera.*"]));
    let token = token_for(&server, &credential, &site, &[]).await;
    let (status, granted) = self::token(&server, &credential, json!({ "app": site })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(granted["scopes"], json!(["messages:write:camera.*"]));
    let granted = granted["token"].as_str().unwrap().to_owned();
    let send = |event_type: &str| json!({ "eventType": event_type, "payload": {} }).to_string();
    let path = format!("/api/v1/app/{site}/msg");
    let (status, body) = server
        .request_with(
            Method::POST,
            &path,
            Some(&send("camera.motion")),
            Some(&granted),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = server
        .request_with(
            Method::POST,
            &path,
            Some(&send("invoice.paid")),
            Some(&granted),
            &[],
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("messages:write:invoice.paid")
    );
    // A token asked with no scopes holds none.
    let (status, _) = server
        .request_with(
            Method::POST,
            &path,
            Some(&send("camera.motion")),
            Some(&token),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad requests, each with its own answer.
    let (status, body) = self::token(&server, "plsk_wrong", json!({ "app": site })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = self::token(
        &server,
        &credential,
        json!({ "app": site, "scopes": ["devices:command"] }),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        "{body}"
    );
    let (status, body) = self::token(
        &server,
        &credential,
        json!({ "app": site, "expiresInSecs": 7200 }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let other = server.create_app("other").await;
    let (status, _) = self::token(&server, &credential, json!({ "app": other })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not installed there");
    let (status, body) = server
        .post(
            "/api/v1/plugin",
            &json!({ "name": "x", "url": "http://127.0.0.1:9/", "scopes": ["messages:delete"] })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{other}/installation"),
            &json!({ "plugin": plugin, "scopes": ["messages:write"] }).to_string(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "beyond the request: {body}"
    );
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{site}/installation"),
            &json!({ "plugin": plugin }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "installed twice: {body}");
    // An unknown plugin is the body's problem (422 at `plugin`), not a missing application.
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{site}/installation"),
            &json!({ "plugin": "plg_none" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "plugin"]),
        "{body}"
    );
    // A plugin's credential is not an API token.
    let (status, _) = server
        .request_with(
            Method::GET,
            &format!("/api/v1/app/{site}"),
            None,
            Some(&credential),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The example plugin: a small program that receives camera events and answers each with
/// actions — open the gate (a device command), raise `camera.person`, and try `invoice.paid`,
/// which its grant does not allow.
async fn example_plugin(gate: String) -> crate::support::Receiver {
    crate::support::Receiver::start_responding(move |received, _| {
        let event = received.json();
        // The ownership check comes first: echo its challenge.
        if event["type"] == "endpoint.verification" {
            return axum::Json(json!({ "challenge": event["challenge"] })).into_response();
        }
        let actions = json!({ "actions": [
            { "type": "sendCommand", "device": gate, "name": "open",
              "payload": { "because": event["zone"] } },
            { "type": "createMessage", "eventType": "invoice.paid", "payload": { "amount": 1 } },
            { "type": "createMessage", "eventType": "camera.person",
              "payload": { "zone": event["zone"] } },
        ]});
        ([("content-type", "application/json")], actions.to_string()).into_response()
    })
    .await
}

#[tokio::test]
async fn an_example_plugin_answers_camera_events_with_a_device_command_within_its_grant() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let url =
        std::env::var("KAIT_TEST_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into());
    let broker = kait::mqtt::MqttConfig::parse(&url, None).unwrap();
    assert!(
        std::net::TcpStream::connect((broker.host.as_str(), broker.port)).is_ok(),
        "no MQTT broker at {url}: start Mosquitto or set KAIT_TEST_MQTT_URL"
    );
    let prefix = format!("kait-test-{:08x}", rand::random::<u32>());
    let server = TestServer::start_with(|config| {
        config.mqtt =
            Some(kait::mqtt::MqttConfig::parse(&url, Some(format!("{prefix}-kait"))).unwrap());
    })
    .await;
    let gate = format!("{prefix}-gate");
    // The gate: a device subscribed to its commands.
    let (device, mut events) = AsyncClient::new(
        MqttOptions::new(format!("{prefix}-device"), broker.host.clone(), broker.port),
        64,
    );
    device
        .subscribe(format!("devices/{gate}/commands/+"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (commands_in, mut commands) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let _ = commands_in.send((publish.topic, publish.payload));
            }
        }
    });
    let plugin_program = example_plugin(gate.clone()).await;

    let site = server.create_app("site").await;
    let (status, plugin) = server
        .post(
            "/api/v1/plugin",
            &json!({
                "name": "Camera AI", "uid": format!("{prefix}-camera-ai"),
                "url": plugin_program.url, "eventTypes": ["camera.motion"],
                "scopes": ["messages:read", "messages:write:camera.*",
                           format!("devices:command:{prefix}-gate*")],
                "replyActions": true
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plugin}");
    install(&server, &site, plugin["id"].as_str().unwrap(), None).await;

    let motion = server
        .send(&site, "camera.motion", json!({ "zone": 3 }))
        .await;
    // The gate gets its command, once.
    let (topic, payload) = tokio::time::timeout(Duration::from_secs(20), commands.recv())
        .await
        .expect("the gate got a command")
        .unwrap();
    assert_eq!(topic, format!("devices/{gate}/commands/open"));
    assert_eq!(
        serde_json::from_slice::<Value>(&payload).unwrap(),
        json!({ "because": 3 })
    );
    // The reply's three actions are in the audit log under the one attempt: two done, the
    // message outside the grant refused with the scope it lacks.
    let attempt = server
        .first_attempt(&site, &motion, Duration::from_secs(10))
        .await;
    let attempt_id = attempt["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let actions = loop {
        let (_, audit) = server
            .get(&format!("/api/v1/app/{site}/plugin-audit"))
            .await;
        let actions: Vec<Value> = audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["kind"] == "action")
            .cloned()
            .collect();
        if actions.len() >= 3 || tokio::time::Instant::now() > deadline {
            break actions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut summary: Vec<(String, String, String)> = actions
        .iter()
        .map(|entry| {
            assert_eq!(entry["attemptId"], attempt_id.as_str());
            (
                entry["subject"].as_str().unwrap().to_owned(),
                entry["decision"].as_str().unwrap().to_owned(),
                entry["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    summary.sort();
    assert_eq!(summary.len(), 3, "{summary:?}");
    assert_eq!(
        (&summary[0].0[..], &summary[0].1[..]),
        ("0: sendCommand", "done")
    );
    assert_eq!(
        (&summary[1].0[..], &summary[1].1[..], &summary[1].2[..]),
        (
            "1: createMessage",
            "refused",
            "needs the scope messages:write:invoice.paid"
        )
    );
    assert_eq!(
        (&summary[2].0[..], &summary[2].1[..]),
        ("2: createMessage", "done")
    );
    // What it was allowed to create exists; what it was refused does not.
    let (_, people) = server
        .get(&format!("/api/v1/app/{site}/msg?event_types=camera.person"))
        .await;
    assert_eq!(people["data"].as_array().unwrap().len(), 1, "{people}");
    assert_eq!(people["data"][0]["payload"], json!({ "zone": 3 }));
    let (_, invoices) = server
        .get(&format!("/api/v1/app/{site}/msg?event_types=invoice.paid"))
        .await;
    assert!(
        invoices["data"].as_array().unwrap().is_empty(),
        "{invoices}"
    );
    // Exactly once per attempt: nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(commands.try_recv().is_err(), "one command per attempt");
    // The plugin's endpoint was checked first (its program echoed the challenge), then
    // got the one camera.motion (camera.person is not among its event types).
    let bodies: Vec<Value> = plugin_program
        .received()
        .iter()
        .map(|webhook| webhook.json())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[0]["type"], "endpoint.verification");
    assert_eq!(bodies[1], json!({ "zone": 3 }));
}

/// A receiver that echoes the ownership challenge only once `echo` is set, and answers 200
/// to everything else.
async fn challenged_receiver(echo: Arc<AtomicBool>) -> crate::support::Receiver {
    crate::support::Receiver::start_responding(move |received, _| {
        let body = received.json();
        if body["type"] == "endpoint.verification" && echo.load(Ordering::SeqCst) {
            return axum::Json(json!({ "challenge": body["challenge"] })).into_response();
        }
        StatusCode::OK.into_response()
    })
    .await
}

fn verifications(receiver: &crate::support::Receiver) -> usize {
    receiver
        .received()
        .iter()
        .filter(|webhook| webhook.json()["type"] == "endpoint.verification")
        .count()
}

fn deliveries(receiver: &crate::support::Receiver) -> Vec<Value> {
    receiver
        .received()
        .iter()
        .map(|webhook| webhook.json())
        .filter(|body| body["type"] != "endpoint.verification")
        .collect()
}

#[tokio::test]
async fn the_ownership_challenge_holds_deliveries_until_the_receiver_echoes_it() {
    let server = TestServer::start().await;
    let app = server.create_app("owned").await;
    let echo = Arc::new(AtomicBool::new(false));
    let receiver = challenged_receiver(echo.clone()).await;
    let endpoint = server
        .create_endpoint(
            &app,
            json!({ "url": receiver.url, "verification": "challenge" }),
        )
        .await;
    assert_eq!(
        (&endpoint["verification"], &endpoint["verified"]),
        (&json!("challenge"), &json!(false))
    );
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let secret = server.secret(&app, &endpoint_id).await;

    // The receiver does not echo: the message waits; what it received is the signed check.
    let first = server.send(&app, "order.paid", json!({ "n": 1 })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while verifications(&receiver) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ownership check came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    crate::support::assert_signed(&receiver.received()[0], &secret);
    let attempt = server
        .first_attempt(&app, &first, Duration::from_secs(10))
        .await;
    assert!(
        attempt["response"]
            .as_str()
            .unwrap()
            .contains("waiting for the endpoint's ownership check"),
        "{attempt}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        deliveries(&receiver).is_empty(),
        "nothing delivered before the check"
    );

    // It echoes: at the next check the message goes, and the endpoint says it is verified.
    echo.store(true, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while deliveries(&receiver).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never delivered after the echo"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(deliveries(&receiver), [json!({ "n": 1 })]);
    let (_, endpoint) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}"))
        .await;
    assert_eq!(endpoint["verified"], true, "{endpoint}");
    // The wait used up no retry: the delivery succeeded on its first real attempt (logged a
    // moment after the receiver has it).
    server
        .wait_until(
            &format!("/api/v1/app/{app}/attempt/msg/{first}"),
            Duration::from_secs(10),
            |attempts| {
                attempts["data"].as_array().is_some_and(|data| {
                    data.iter()
                        .any(|attempt| attempt["responseStatusCode"] == 200)
                })
            },
        )
        .await;
    // Verified, the next message goes without a check.
    let checks = verifications(&receiver);
    server.send(&app, "order.paid", json!({ "n": 2 })).await;
    receiver.wait_for(checks + 2, Duration::from_secs(10)).await;
    assert_eq!(verifications(&receiver), checks, "no check once verified");

    // A new URL is checked again: its receiver does not echo, so the next message waits.
    let moved = challenged_receiver(Arc::new(AtomicBool::new(false))).await;
    let (status, patched) = server
        .request(
            Method::PATCH,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            Some(&json!({ "url": moved.url }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["verified"], false);
    server.send(&app, "order.paid", json!({ "n": 3 })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while verifications(&moved) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new URL was not checked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deliveries(&moved).is_empty());

    // A bad setting is refused.
    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            &json!({ "url": receiver.url, "verification": "sometimes" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
