//! Delivery under faults: dead, slow, rate-limited and failing receivers.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::support::{Blackhole, Receiver, TestServer};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_never_delays_a_healthy_one() {
    let server = TestServer::start_with(|config| {
        config.request_timeout = Duration::from_secs(30);
        config.endpoint_in_flight = 16;
    })
    .await;
    let blackhole = Blackhole::start().await;
    let healthy = Receiver::start().await;
    let app = server.create_app("isolation").await;
    let dead = server
        .create_endpoint(&app, json!({ "url": blackhole.url }))
        .await;
    server
        .create_endpoint(&app, json!({ "url": healthy.url }))
        .await;

    let burst = 1000;
    let url = format!("{}/api/v1/app/{app}/msg", server.base_url);
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (http, url) = (server.http.clone(), url.clone());
        senders.push(tokio::spawn(async move {
            for index in (sender..burst).step_by(8) {
                let body =
                    json!({ "eventType": "burst.item", "payload": { "i": index } }).to_string();
                let response = http
                    .post(&url)
                    .bearer_auth(crate::support::ADMIN_TOKEN)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    healthy.wait_for(burst, WAIT).await;

    let dead_id = dead["id"].as_str().unwrap();
    let (_, stats) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{dead_id}/stats"))
        .await;
    let unfinished = stats["pending"].as_u64().unwrap() + stats["sending"].as_u64().unwrap();
    assert_eq!(
        unfinished, burst as u64,
        "every dead-endpoint delivery is still pending: {stats}"
    );
    assert_eq!(stats["success"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_deliveries_without_dropping_any() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("throttled").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url, "throttleRate": 20 }))
        .await;
    for index in 0..21 {
        server.send(&app, "tick", json!({ "i": index })).await;
    }
    let received = receiver.wait_for(21, WAIT).await;
    let span = received[20].at - received[0].at;
    // 20 gaps of at least 50 ms each: a lower bound on correctness, not a speed figure.
    assert!(span >= Duration::from_millis(950), "took {span:?}");
    assert_eq!(receiver.count(), 21, "none dropped");
    server.stop().await;
}

/// A receiver that fails the first attempt of every message it is told to, and records the
/// order in which messages succeeded.
async fn flaky_ordered_receiver(
    fail_first_of: impl Fn(&serde_json::Value) -> bool + Send + Sync + 'static,
) -> (Receiver, &'static Mutex<Vec<(String, u64)>>) {
    let successes: &'static Mutex<Vec<(String, u64)>> = Box::leak(Box::new(Mutex::new(Vec::new())));
    let seen: Mutex<HashSet<String>> = Mutex::new(HashSet::new());
    let receiver = Receiver::start_with(move |received, _| {
        let payload = received.json();
        let msg_id = received.header("webhook-id").to_owned();
        if fail_first_of(&payload) && seen.lock().unwrap().insert(msg_id) {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        let key = payload["key"].as_str().unwrap_or_default().to_owned();
        successes
            .lock()
            .unwrap()
            .push((key, payload["i"].as_u64().unwrap()));
        StatusCode::OK
    })
    .await;
    (receiver, successes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_endpoint_delivers_in_message_order_despite_failures() {
    let server = TestServer::start().await;
    let (receiver, successes) =
        flaky_ordered_receiver(|payload| payload["i"].as_u64().unwrap() % 3 == 1).await;
    let app = server.create_app("fifo").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url, "ordering": "fifo" }))
        .await;
    assert_eq!(endpoint["ordering"], "fifo");
    for index in 0..12 {
        server.send(&app, "step", json!({ "i": index })).await;
    }
    receiver.wait_for(12 + 4, WAIT).await;
    let order: Vec<u64> = successes
        .lock()
        .unwrap()
        .clone()
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    assert_eq!(order, (0..12).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordering_keeps_each_key_in_order_and_keys_independent() {
    let server = TestServer::start().await;
    // Every "door" message fails once; "window" messages never do.
    let (receiver, successes) = flaky_ordered_receiver(|payload| payload["key"] == "door").await;
    let app = server.create_app("keys").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url, "ordering": "key" }))
        .await;
    for index in 0..16 {
        let key = if index % 2 == 0 { "door" } else { "window" };
        let body = json!({ "eventType": "sensor", "orderingKey": key, "payload": { "i": index, "key": key } });
        let (status, message) = server
            .post(&format!("/api/v1/app/{app}/msg"), &body.to_string())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(message["orderingKey"], key);
    }
    receiver.wait_for(16 + 8, WAIT).await;
    let sequence = successes.lock().unwrap().clone();
    for key in ["door", "window"] {
        let order: Vec<u64> = sequence
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, i)| *i)
            .collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted, "{key} kept its order");
        assert_eq!(order.len(), 8);
    }
    // The stuck key did not hold the other back: some window message succeeded before the
    // last door message did.
    let last_door = sequence.iter().rposition(|(k, _)| k == "door").unwrap();
    let first_window = sequence.iter().position(|(k, _)| k == "window").unwrap();
    assert!(first_window < last_door, "{sequence:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let server = TestServer::start().await;
    let arrivals: &'static Mutex<Vec<Instant>> = Box::leak(Box::new(Mutex::new(Vec::new())));
    let receiver = Receiver::start_responding(move |_, index| {
        arrivals.lock().unwrap().push(Instant::now());
        if index == 0 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let app = server.create_app("retry-after").await;
    server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    server.send(&app, "a.b", json!({})).await;
    receiver.wait_for(2, WAIT).await;
    let arrivals = arrivals.lock().unwrap().clone();
    // The schedule says 50 ms; the receiver asked for a second.
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(950),
        "{:?}",
        arrivals[1] - arrivals[0]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_endpoint_at_once() {
    let server = TestServer::start().await;
    let receiver = Receiver::start_with(|_, _| StatusCode::GONE).await;
    let app = server.create_app("gone").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let msg_id = server.send(&app, "a.b", json!({})).await;
    server
        .wait_until(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            WAIT,
            |body| body["disabled"] == true,
        )
        .await;
    // The attempt's outcome is written a moment after the endpoint is disabled; once it is
    // (success 0 or failure 2, not pending 1 or sending 3), it must be a final failure.
    let states = server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            WAIT,
            |body| matches!(body["data"][0]["status"].as_i64(), Some(0 | 2)),
        )
        .await;
    assert_eq!(states["data"][0]["status"], 2, "no retries after 410");
    assert_eq!(receiver.count(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_pauses_a_failing_endpoint() {
    let server = TestServer::start_with(|config| {
        config.breaker.threshold = 3;
        config.breaker.initial_cooldown = Duration::from_secs(3600);
        config.endpoint_in_flight = 1;
    })
    .await;
    let receiver = Receiver::start_with(|_, _| StatusCode::INTERNAL_SERVER_ERROR).await;
    let app = server.create_app("breaker").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    for index in 0..6 {
        server.send(&app, "a.b", json!({ "i": index })).await;
    }
    let stats = server
        .wait_until(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/stats"),
            WAIT,
            |body| body["circuitState"] == "open",
        )
        .await;
    assert_eq!(receiver.count(), 3, "nothing sent after the breaker opened");
    let unfinished = stats["pending"].as_u64().unwrap() + stats["sending"].as_u64().unwrap();
    assert_eq!(unfinished, 6, "all six wait, none dropped: {stats}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_resends_failed_deliveries_with_the_same_ids() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let server = TestServer::start().await;
    let healthy: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let receiver = Receiver::start_with(move |_, _| {
        if healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::BAD_GATEWAY
        }
    })
    .await;
    let svix = server.svix();
    let app = server.create_app("recover").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": receiver.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for index in 0..3 {
        ids.push(server.send(&app, "a.b", json!({ "i": index })).await);
    }
    for msg_id in &ids {
        server
            .wait_until(
                &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
                WAIT,
                |body| body["data"][0]["status"] == 2,
            )
            .await;
    }
    healthy.store(true, Ordering::SeqCst);
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let task = svix
        .endpoint()
        .recover(
            app.clone(),
            endpoint_id.clone(),
            svix::models::RecoverIn::new(since),
            None,
        )
        .await
        .unwrap();
    assert_eq!(task.task, svix::models::BackgroundTaskType::EndpointRecover);
    let received = receiver.wait_for(9 + 3, WAIT).await;
    let resent: HashSet<String> = received[9..]
        .iter()
        .map(|webhook| webhook.header("webhook-id").to_owned())
        .collect();
    assert_eq!(resent, ids.iter().cloned().collect::<HashSet<_>>());
    let attempts = server
        .wait_until(
            &format!("/api/v1/app/{app}/attempt/endpoint/{endpoint_id}?status=0"),
            WAIT,
            |body| body["data"].as_array().is_some_and(|data| data.len() == 3),
        )
        .await;
    assert_eq!(
        attempts["data"][0]["triggerType"], 1,
        "recovered attempts are manual"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_missing_sends_what_an_endpoint_never_had() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("replay").await;
    let before: Vec<String> = send_before_endpoint(&server, &app).await;
    let endpoint = server
        .create_endpoint(
            &app,
            json!({ "url": receiver.url, "eventTypes": ["wanted"] }),
        )
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, task) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/replay-missing"),
            &json!({ "since": since }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["count"], 2);
    let received = receiver.wait_for(2, WAIT).await;
    let ids: HashSet<String> = received
        .iter()
        .map(|w| w.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids, before.iter().take(2).cloned().collect::<HashSet<_>>());
    // A second replay finds nothing missing.
    let (_, again) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/replay-missing"),
            &json!({ "since": since }).to_string(),
        )
        .await;
    assert_eq!(again["count"], 0);
    let (status, _) = server
        .post(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}/replay-missing"),
            &json!({ "since": since, "until": "2000-01-01T00:00:00Z" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}

/// Two wanted messages and one of another type, sent before any endpoint exists.
async fn send_before_endpoint(server: &TestServer, app: &str) -> Vec<String> {
    vec![
        server.send(app, "wanted", json!({ "n": 1 })).await,
        server.send(app, "wanted", json!({ "n": 2 })).await,
        server.send(app, "unwanted", json!({ "n": 3 })).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_disabled_and_reported_by_operational_webhooks() {
    const DISABLE_AFTER: Duration = Duration::from_secs(2);
    const OPS_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let ops = Receiver::start().await;
    let ops_url = ops.url.clone();
    let server = TestServer::start_with(move |config| {
        // Five attempts within about 200 ms: the fourth reports "failing", the fifth "exhausted".
        // The disabling window is ten times that, so a loaded CI machine (PostgreSQL under both
        // suites at once) that stretches the retries still does not disable on the first message.
        config.retry_schedule =
            kait_core::retry::RetrySchedule::new(vec![Duration::from_millis(50); 4]);
        config.disable_after = DISABLE_AFTER;
        config.operational_webhook = Some((
            ops_url,
            kait_core::signing::Secret::parse(OPS_SECRET).unwrap(),
        ));
    })
    .await;
    let failing = Receiver::start_with(|_, _| StatusCode::INTERNAL_SERVER_ERROR).await;
    let app = server.create_app("watched").await;
    let endpoint = server
        .create_endpoint(&app, json!({ "url": failing.url }))
        .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    // The first message runs out of retries well within DISABLE_AFTER; the endpoint stays enabled.
    let msg_id = server.send(&app, "a.b", json!({})).await;
    server
        .wait_until(
            &format!("/api/v1/app/{app}/msg/{msg_id}/endpoint"),
            WAIT,
            |body| body["data"][0]["status"] == 2,
        )
        .await;
    let (_, still) = server
        .get(&format!("/api/v1/app/{app}/endpoint/{endpoint_id}"))
        .await;
    assert_eq!(still["disabled"], false);
    // A failure more than DISABLE_AFTER after the first one, with no success between: disabled.
    tokio::time::sleep(DISABLE_AFTER + Duration::from_millis(100)).await;
    server.send(&app, "a.b", json!({})).await;
    server
        .wait_until(
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            WAIT,
            |body| body["disabled"] == true,
        )
        .await;
    // Turning it back on and deleting it are reported too.
    let (status, _) = server
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            Some(r#"{"disabled": false}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/app/{app}/endpoint/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + WAIT;
    let events = loop {
        let received = ops.received();
        let types: HashSet<String> = received
            .iter()
            .map(|webhook| webhook.json()["type"].as_str().unwrap().to_owned())
            .collect();
        if [
            "endpoint.created",
            "endpoint.disabled",
            "message.attempt.failing",
            "message.attempt.exhausted",
            "endpoint.updated",
            "endpoint.deleted",
        ]
        .iter()
        .all(|wanted| types.contains(*wanted))
        {
            break received;
        }
        assert!(
            Instant::now() < deadline,
            "operational events so far: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for event in &events {
        crate::support::assert_signed(event, OPS_SECRET);
        assert_eq!(event.json()["data"]["appId"], app.as_str());
    }
    let disabled = events
        .iter()
        .map(|event| event.json())
        .find(|event| event["type"] == "endpoint.disabled")
        .unwrap();
    assert_eq!(disabled["data"]["endpointId"], endpoint_id.as_str());
    assert_eq!(disabled["data"]["trigger"], "automatic");
    let exhausted = events
        .iter()
        .map(|event| event.json())
        .find(|event| event["type"] == "message.attempt.exhausted")
        .unwrap();
    assert_eq!(exhausted["data"]["msgId"], msg_id.as_str());
    assert_eq!(exhausted["data"]["lastAttempt"]["responseStatusCode"], 500);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_kept_response_size_are_configurable() {
    let server = TestServer::start_with(|config| {
        config.request_timeout = Duration::from_millis(300);
        config.max_response_bytes = 100;
    })
    .await;
    let blackhole = Blackhole::start().await;
    let chatty = Receiver::start_responding(|_, _| {
        (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(10_000)).into_response()
    })
    .await;
    let app = server.create_app("limits").await;
    let slow = server
        .create_endpoint(&app, json!({ "url": blackhole.url }))
        .await;
    let verbose = server
        .create_endpoint(&app, json!({ "url": chatty.url }))
        .await;
    server.send(&app, "a.b", json!({})).await;
    for (endpoint, check) in [(&slow, "timed out"), (&verbose, "xxxxxxxxxx")] {
        let endpoint_id = endpoint["id"].as_str().unwrap();
        let attempts = server
            .wait_until(
                &format!("/api/v1/app/{app}/attempt/endpoint/{endpoint_id}"),
                WAIT,
                |body| body["data"].as_array().is_some_and(|data| !data.is_empty()),
            )
            .await;
        let response = attempts["data"][0]["response"].as_str().unwrap();
        assert!(response.contains(check), "{response}");
        assert!(response.len() <= 100, "kept {} bytes", response.len());
    }
    server.stop().await;
}
