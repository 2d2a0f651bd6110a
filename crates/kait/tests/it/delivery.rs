//! Delivery behaviour end to end: real server, real receivers, real signatures.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Blackhole, Receiver, TestServer, assert_signed};

const WAIT: Duration = Duration::from_secs(10);

/// Endpoint ids the message was bound for, from `/msg/{id}/endpoint`.
async fn destinations(server: &TestServer, app_id: &str, msg_id: &str) -> Vec<String> {
    let (status, body) = server
        .get(&format!("/api/v1/app/{app_id}/msg/{msg_id}/endpoint"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut ids: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|state| state["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_follows_event_type_filters_and_channels() {
    let server = TestServer::start().await;
    let app = server.create_app("fan-out").await;
    let open = server
        .create_endpoint(&app, json!({ "url": "http://127.0.0.1:9/open" }))
        .await;
    let typed = server
        .create_endpoint(
            &app,
            json!({ "url": "http://127.0.0.1:9/typed", "filterTypes": ["sensor.hot"] }),
        )
        .await;
    let channeled = server
        .create_endpoint(
            &app,
            json!({ "url": "http://127.0.0.1:9/chan", "channels": ["site-1"] }),
        )
        .await;
    assert_eq!(
        typed["eventTypes"],
        json!(["sensor.hot"]),
        "older name maps to the current one"
    );
    let id = |endpoint: &serde_json::Value| endpoint["id"].as_str().unwrap().to_owned();
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };

    let send = |event_type: &'static str, channels: serde_json::Value| {
        let body = json!({ "eventType": event_type, "payload": {}, "channels": channels });
        let server = &server;
        let app = app.clone();
        async move {
            let (status, body) = server
                .post(&format!("/api/v1/app/{app}/msg"), &body.to_string())
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let hot_on_site = send("sensor.hot", json!(["site-1"])).await;
    let cold = send("sensor.cold", serde_json::Value::Null).await;
    let cold_on_site = send("sensor.cold", json!(["site-1", "site-2"])).await;
    let hot_elsewhere = send("sensor.hot", json!(["site-9"])).await;

    assert_eq!(
        destinations(&server, &app, &hot_on_site).await,
        sorted(vec![id(&open), id(&typed), id(&channeled)])
    );
    assert_eq!(destinations(&server, &app, &cold).await, vec![id(&open)]);
    assert_eq!(
        destinations(&server, &app, &cold_on_site).await,
        sorted(vec![id(&open), id(&channeled)])
    );
    assert_eq!(
        destinations(&server, &app, &hot_elsewhere).await,
        sorted(vec![id(&open), id(&typed)])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_with_the_same_id_until_success() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with(|_, index| {
        if index < 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    })
    .await;
    let app = server.create_app("retries").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let secret = server.secret(&app, endpoint_id).await;
    let msg_id = server.send(&app, "job.done", json!({ "job": 1 })).await;

    let received = receiver.wait_for(3, WAIT).await;
    for webhook in &received {
        assert_eq!(webhook.header("webhook-id"), msg_id);
        assert_signed(webhook, &secret);
    }
    let attempts = server
        .wait_until(
            &format!("/api/v1/app/{app}/attempt/msg/{msg_id}"),
            WAIT,
            |body| body["data"].as_array().is_some_and(|data| data.len() == 3),
        )
        .await;
    let codes: Vec<_> = attempts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| {
            (
                attempt["responseStatusCode"].as_i64().unwrap(),
                attempt["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(codes, vec![(204, 0), (500, 2), (500, 2)], "newest first");
    let states = server
        .get(&format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"))
        .await
        .1;
    assert_eq!(states["data"][0]["status"], 0);
    assert_eq!(states["data"][0]["statusText"], "success");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_fails_once_the_schedule_is_exhausted() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with(|_, _| StatusCode::SERVICE_UNAVAILABLE).await;
    let app = server.create_app("exhaust").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let msg_id = server.send(&app, "job.done", json!({})).await;
    let states = server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            WAIT,
            |body| body["data"][0]["status"] == 2,
        )
        .await;
    assert_eq!(states["data"][0]["nextAttempt"], serde_json::Value::Null);
    assert_eq!(receiver.count(), 3, "one attempt plus two retries");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_apply_to_the_next_attempt() {
    let server = TestServer::start().await;
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let app = server.create_app("changes").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": first.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let secret = server.secret(&app, endpoint_id).await;

    server.send(&app, "a.b", json!({ "n": 1 })).await;
    assert_signed(&first.wait_for(1, WAIT).await[0], &secret);

    let (status, rotated) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/secret/rotate"),
            "{}",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    let (status, _) = server
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/headers"),
            Some(r#"{"headers": {"X-Generation": "2"}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.send(&app, "a.b", json!({ "n": 2 })).await;
    let webhook = &first.wait_for(2, WAIT).await[1];
    assert_signed(webhook, &new_secret);
    assert_eq!(webhook.header("x-generation"), "2");

    let (status, _) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            Some(&json!({ "url": second.url }).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.send(&app, "a.b", json!({ "n": 3 })).await;
    assert_eq!(second.wait_for(1, WAIT).await[0].json(), json!({ "n": 3 }));
    assert_eq!(first.count(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_endpoints_receive_nothing() {
    let server = TestServer::start().await;
    let enabled = Receiver::start().await;
    let disabled = Receiver::start().await;
    let app = server.create_app("disabled").await;
    server
        .create_endpoint(&app, json!({ "url": enabled.url }))
        .await;
    server
        .create_endpoint(&app, json!({ "url": disabled.url, "disabled": true }))
        .await;
    let msg_id = server.send(&app, "a.b", json!({})).await;
    enabled.wait_for(1, WAIT).await;
    assert_eq!(destinations(&server, &app, &msg_id).await.len(), 1);
    assert_eq!(disabled.count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_first_message() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("idempotent").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let body = json!({ "eventType": "a.b", "payload": { "once": true } }).to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, response) = server
            .request_with(
                reqwest::Method::POST,
                &format!("/api/v1/app/{app}/msg"),
                Some(&body),
                Some(crate::support::ADMIN_TOKEN),
                &[("idempotency-key", "order-17")],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(response["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    let listed = server.get(&format!("/api/v1/app/{app}/msg")).await.1;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    receiver.wait_for(1, WAIT).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_the_configured_ca() {
    let (receiver, ca) = Receiver::start_tls().await;
    // `localhost` may resolve to ::1 as well; every address it resolves to must be allowed.
    let trusting = TestServer::start_with(|config| {
        config.allow_networks.push("::1/128".parse().unwrap());
        config.extra_root_certificates = vec![ca];
    })
    .await;
    let app = trusting.create_app("tls").await;
    let endpoint = trusting
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let secret = trusting
        .secret(&app, endpoint["id"].as_str().unwrap())
        .await;
    let msg_id = trusting.send(&app, "a.b", json!({ "over": "tls" })).await;
    let webhook = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(webhook.header("webhook-id"), msg_id);
    assert_signed(&webhook, &secret);
    trusting.stop().await;

    // Without the CA the same receiver is refused, and the attempt log says why.
    let default_roots = TestServer::start_with(|config| {
        config.allow_networks.push("::1/128".parse().unwrap());
    })
    .await;
    let app = default_roots.create_app("tls").await;
    default_roots
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let msg_id = default_roots.send(&app, "a.b", json!({})).await;
    let attempt = default_roots.first_attempt(&app, &msg_id, WAIT).await;
    let reason = attempt["response"].as_str().unwrap();
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(attempt["responseStatusCode"], 0);
    assert_eq!(
        receiver.count(),
        1,
        "only the trusted server's webhook arrived"
    );
    default_roots.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_guard_refuses_non_public_targets() {
    // No networks allowed: loopback is off limits like any private address.
    let server = TestServer::start_with(|config| config.allow_networks.clear()).await;
    let receiver = Receiver::start().await;
    let app = server.create_app("guarded").await;
    for url in [
        receiver.url.clone(),
        "http://10.0.0.8/hook".into(),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://0x7f.1/hook".into(),
        "http://2130706433/hook".into(),
        "http://[::ffff:127.0.0.1]/hook".into(),
        "http://[::1]/hook".into(),
        "http://127.1/hook".into(),
        "http://0177.0.0.1/hook".into(),
        "http://0x7f000001/hook".into(),
        "http://100.64.0.1/hook".into(),
        "http://[fd00::1]/hook".into(),
        "http://[64:ff9b::a00:1]/hook".into(),
        "http://[::127.0.0.1]/hook".into(),
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

    // A host name is checked when resolved: localhost resolves to loopback and is refused.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    server
        .create_endpoint(
            &app,
            json!({ "url": format!("http://localhost:{port}/webhook") }),
        )
        .await;
    let msg_id = server.send(&app, "a.b", json!({})).await;
    let attempt = server.first_attempt(&app, &msg_id, WAIT).await;
    let reason = attempt["response"].as_str().unwrap();
    assert!(reason.contains("egress guard"), "{reason}");
    assert_eq!(attempt["responseStatusCode"], 0);
    assert_eq!(receiver.count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failures_and_never_followed() {
    let server = TestServer::start().await;
    let target = Receiver::start().await;
    let location = target.url.clone();
    let redirector = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_url = format!("http://{}/moved", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await.unwrap() });

    let app = server.create_app("redirects").await;
    server
        .create_endpoint(&app, json!({ "url": redirect_url }))
        .await;
    let msg_id = server.send(&app, "a.b", json!({})).await;
    let attempts = server
        .wait_until(
            &format!("/api/v1/app/{app}/attempt/msg/{msg_id}"),
            WAIT,
            |body| body["data"].as_array().is_some_and(|data| data.len() == 3),
        )
        .await;
    for attempt in attempts["data"].as_array().unwrap() {
        assert_eq!(attempt["responseStatusCode"], 307);
        assert_eq!(attempt["status"], 2);
    }
    assert_eq!(target.count(), 0, "the redirect target was never called");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_keeps_signing_during_the_grace_period() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("rotation").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let old_secret = server.secret(&app, endpoint_id).await;

    let (status, rotated) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/secret/rotate"),
            r#"{"gracePeriodSeconds": 2}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    server.send(&app, "a.b", json!({ "n": 1 })).await;
    let during = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    assert_signed(&during, &old_secret);
    assert_signed(&during, &new_secret);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    server.send(&app, "a.b", json!({ "n": 2 })).await;
    let after = receiver.wait_for(2, WAIT).await.remove(1);
    assert_eq!(after.header("webhook-signature").split(' ').count(), 1);
    assert_signed(&after, &new_secret);

    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/secret/rotate"),
            r#"{"gracePeriodSeconds": 99999999}"#,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_applies_to_every_post() {
    let server = TestServer::start().await;
    let post = |path: String, body: &'static str, key: &'static str| {
        let server = &server;
        async move {
            server
                .request_with(
                    reqwest::Method::POST,
                    &path,
                    Some(body),
                    Some(crate::support::ADMIN_TOKEN),
                    &[("idempotency-key", key)],
                )
                .await
        }
    };
    let (first_status, first) = post("/api/v1/app".into(), r#"{"name": "once"}"#, "k-1").await;
    let (again_status, again) = post("/api/v1/app/".into(), r#"{"name": "once"}"#, "k-1").await;
    assert_eq!(
        (first_status, again_status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(
        first["id"], again["id"],
        "a repeat returns the first response"
    );
    let (_, other) = post("/api/v1/app".into(), r#"{"name": "once"}"#, "k-2").await;
    assert_ne!(other["id"], first["id"], "another key is another request");
    let (_, apps) = server.get("/api/v1/app").await;
    assert_eq!(apps["data"].as_array().unwrap().len(), 2);

    let app = first["id"].as_str().unwrap();
    let endpoint_body = r#"{"url": "https://example.com/hook"}"#;
    let (_, endpoint) = post(format!("/api/v1/app/{app}/endpoint"), endpoint_body, "k-1").await;
    let (_, repeat) = post(format!("/api/v1/app/{app}/endpoint"), endpoint_body, "k-1").await;
    assert_eq!(
        endpoint["id"], repeat["id"],
        "the same key on another path is separate"
    );
    assert!(endpoint["id"].as_str().unwrap().starts_with("ep_"));
    let (_, endpoints) = server.get(&format!("/api/v1/app/{app}/endpoint")).await;
    assert_eq!(endpoints["data"].as_array().unwrap().len(), 1);

    // A rejected request is remembered too: the repeat gets the same 422.
    let (status, _) = post("/api/v1/app".into(), r#"{"name": ""}"#, "k-3").await;
    let (repeat_status, repeat) = post("/api/v1/app".into(), r#"{"name": ""}"#, "k-3").await;
    assert_eq!(
        (status, repeat_status),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::UNPROCESSABLE_ENTITY
        )
    );
    assert_eq!(repeat["code"], "validation_error");
    // The same key with another body is another request: refused, not answered (i11, 6).
    let (status, reused) = post("/api/v1/app".into(), r#"{"name": "fixed"}"#, "k-3").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");
    assert_eq!(reused["code"], "idempotency_key_reused");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_endpoints_sign_with_v1a() {
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::STANDARD;
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("asymmetric").await;
    let endpoint = server
        .create_endpoint(
            &app,
            json!({ "url": receiver.url, "signatureScheme": "ed25519" }),
        )
        .await;
    assert_eq!(endpoint["signatureScheme"], "ed25519");
    let public_key = server.secret(&app, endpoint["id"].as_str().unwrap()).await;
    let encoded = public_key
        .strip_prefix("whpk_")
        .expect("the public key is what is shown");
    let public_key =
        ed25519_compact::PublicKey::from_slice(&base64.decode(encoded).unwrap()).unwrap();

    let msg_id = server.send(&app, "a.b", json!({ "sensor": 4 })).await;
    let webhook = receiver.wait_for(1, WAIT).await.remove(0);
    let header = webhook.header("webhook-signature");
    let encoded = header.strip_prefix("v1a,").expect("an Ed25519 signature");
    let signature =
        ed25519_compact::Signature::from_slice(&base64.decode(encoded).unwrap()).unwrap();
    let signed = format!(
        "{msg_id}.{}.{}",
        webhook.header("webhook-timestamp"),
        String::from_utf8_lossy(&webhook.body)
    );
    // An independent Ed25519 implementation verifies what Kait signed.
    public_key
        .verify(signed.as_bytes(), &signature)
        .expect("valid signature");
    assert!(public_key.verify(b"tampered", &signature).is_err());

    let (status, body) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint"),
            &json!({ "url": receiver.url, "signatureScheme": "rsa" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_for_prometheus() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("metrics").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let msg_id = server.send(&app, "a.b", json!({})).await;
    receiver.wait_for(1, WAIT).await;
    server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            WAIT,
            |body| body["data"][0]["status"] == 0,
        )
        .await;
    // The recorder is shared by every server in this test process: check names and types,
    // and that the counters moved, not exact values.
    // It names endpoints, so it needs a token (issue 11).
    let anonymous = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .http
        .get(format!("{}/metrics", server.base_url))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("kait_messages_accepted_total") >= 1.0);
    assert!(value("kait_deliveries_total{outcome=\"success\"}") >= 1.0);
    assert!(value("kait_delivery_latency_seconds_count") >= 1.0);
    assert!(value("kait_attempt_duration_seconds_bucket") >= 0.0);
    assert!(value("kait_store_commit_seconds_count") >= 1.0);
    assert!(
        text.contains("# TYPE kait_store_commit_seconds histogram"),
        "{text}"
    );
    for series in [
        "kait_queue_depth{state=\"due\"}",
        "kait_queue_depth{state=\"scheduled\"}",
        "kait_endpoints_circuit{state=\"closed\"}",
        "kait_endpoints_circuit{state=\"open\"}",
        "kait_attempts_in_flight",
    ] {
        value(series);
    }

    // Per-endpoint gauges: three attempts hang on an endpoint that never answers. (Its id
    // is this test's own, so other servers sharing the recorder cannot disturb the value.)
    let blackhole = Blackhole::start().await;
    let stuck_app = server.create_app("metrics-stuck").await;
    let stuck = server
        .create_endpoint(&stuck_app, json!({ "url": blackhole.url }))
        .await;
    for _ in 0..3 {
        server.send(&stuck_app, "a.b", json!({})).await;
    }
    let series = format!(
        "kait_endpoint_attempts_in_flight{{endpoint=\"{}\"}} 3",
        stuck["id"].as_str().unwrap()
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = server
            .http
            .get(format!("{}/metrics", server.base_url))
            .bearer_auth(crate::support::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|line| line == series) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `{series}` in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await;
}

/// Issue 14: Svix's `deliverAt` holds a message until its time (the listing shows it); more
/// than 24 hours ahead is refused; a time already past delivers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_at_holds_a_message_until_its_time() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app_id = server.create_app("later").await;
    server
        .create_endpoint(&app_id, serde_json::json!({ "url": receiver.url }))
        .await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1_500);
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, held) = server
        .post(
            &format!("/api/v1/app/{app_id}/msg"),
            &serde_json::json!({ "eventType": "a.b", "payload": { "n": 1 }, "deliverAt": at_text })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    assert_eq!(held["deliverAt"], serde_json::json!(at_text));
    let (status, now) = server
        .post(
            &format!("/api/v1/app/{app_id}/msg"),
            &serde_json::json!({ "eventType": "a.b", "payload": { "n": 2 }, "deliverAt": "2001-01-01T00:00:00Z" })
                .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{now}");
    let (status, refused) = server
        .post(
            &format!("/api/v1/app/{app_id}/msg"),
            &serde_json::json!({
                "eventType": "a.b",
                "payload": {},
                "deliverAt": (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339()
            })
            .to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(
        refused["detail"][0]["loc"],
        serde_json::json!(["body", "deliverAt"])
    );

    let received = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(received[0].json()["n"], 2, "a past time delivers at once");
    let held_arrival = received
        .iter()
        .find(|webhook| webhook.json()["n"] == 1)
        .unwrap();
    let signed_at: i64 = held_arrival.header("webhook-timestamp").parse().unwrap();
    assert!(
        signed_at >= at.timestamp(),
        "not sent before deliverAt: signed at {signed_at}, deliverAt {}",
        at.timestamp()
    );
    server.stop().await;
}

/// With few attempts in flight (`max_in_flight` 2: a claim takes at most 8 deliveries), a
/// backlog in the store drains as attempts finish. The safety-net poll is an hour here: a
/// drain that waited for it (one claim's worth per poll, as it once did) never finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_past_a_small_claim_capacity() {
    const MESSAGES: usize = 40;
    let server = TestServer::start_with(|config| {
        config.max_in_flight = 2;
        config.dispatcher_poll_interval = Duration::from_secs(3600);
    })
    .await;
    let receiver = Receiver::start().await;
    let app = server.create_app("small").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    // Scheduled a moment ahead, so that they wait in the store and fall due together.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    for n in 0..MESSAGES {
        let body = json!({ "eventType": "a.b", "payload": { "n": n }, "deliverAt": at });
        let (status, answer) = server
            .post(&format!("/api/v1/app/{app}/msg"), &body.to_string())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    let received = receiver.wait_for(MESSAGES, Duration::from_secs(30)).await;
    let mut delivered: Vec<i64> = received
        .iter()
        .map(|webhook| webhook.json()["n"].as_i64().unwrap())
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, (0..MESSAGES as i64).collect::<Vec<_>>());
    server.stop().await;
}
