//! OpenTelemetry traces over OTLP (issue 18): one trace per message, from the request that
//! accepted it through every attempt, received by a collector in the test, in both of OTLP/HTTP's
//! encodings.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use kait::telemetry::OtlpProtocol;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Receiver, TestServer};

/// An OTLP/HTTP collector on loopback that keeps every span it is sent. Protobuf requests
/// are decoded with the OpenTelemetry project's own message types and turned into the OTLP
/// JSON mapping, so one set of assertions reads both encodings.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    let request: Value = match headers["content-type"].to_str().unwrap() {
                        "application/json" => serde_json::from_slice(&body).expect("OTLP JSON"),
                        "application/x-protobuf" => serde_json::to_value(
                            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(body)
                                .expect("OTLP protobuf"),
                        )
                        .unwrap(),
                        other => panic!("an OTLP request as {other}"),
                    };
                    for resource in request["resourceSpans"].as_array().unwrap() {
                        let service = resource["resource"]["attributes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|attribute| attribute["key"] == "service.name")
                            .map(|attribute| attribute["value"]["stringValue"].clone());
                        assert_eq!(service, Some(json!("kait")));
                        for scope in resource["scopeSpans"].as_array().unwrap() {
                            kept.lock()
                                .unwrap()
                                .extend(scope["spans"].as_array().unwrap().clone());
                        }
                    }
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, spans }
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

fn attribute<'a>(span: &'a Value, key: &str) -> &'a Value {
    let found = span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|attribute| attribute["key"] == key)
        .unwrap_or_else(|| panic!("no {key} on {span}"));
    &found["value"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_ingest_through_every_attempt_json() {
    one_trace_runs_from_ingest_through_every_attempt(OtlpProtocol::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_ingest_through_every_attempt_protobuf() {
    one_trace_runs_from_ingest_through_every_attempt(OtlpProtocol::Protobuf).await;
}

async fn one_trace_runs_from_ingest_through_every_attempt(protocol: OtlpProtocol) {
    let collector = Collector::start().await;
    let endpoint = collector.url.clone();
    let server = TestServer::start_with(move |config| {
        config.otlp = Some((endpoint, protocol));
        config.traceparent_to_receivers = true;
    })
    .await;
    // The receiver fails the first attempt: two attempts, one trace.
    let receiver = Receiver::start_with(|_, n| {
        if n == 0 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    })
    .await;
    let app = server.create_app("traced").await;
    server
        .create_endpoint(&app, json!({"url": receiver.url}))
        .await;
    let producer = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, message) = server
        .request_with(
            reqwest::Method::POST,
            &format!("/api/v1/app/{app}/msg"),
            Some(&json!({"eventType": "camera.motion", "payload": {"camera": "gate"}}).to_string()),
            Some(crate::support::ADMIN_TOKEN),
            &[("traceparent", producer)],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{message}");
    let msg_id = message["id"].as_str().unwrap().to_owned();
    let received = receiver.wait_for(2, Duration::from_secs(10)).await;
    // Stopping flushes what is batched.
    server.stop().await;

    let spans = collector.spans();
    let accept: Vec<&Value> = spans
        .iter()
        .filter(|span| span["name"] == "kait.message.accept")
        .collect();
    assert_eq!(accept.len(), 1, "{spans:?}");
    let root = accept[0];
    assert_eq!(
        attribute(root, "kait.msg_id")["stringValue"],
        msg_id.as_str()
    );
    assert_eq!(
        attribute(root, "kait.event_type")["stringValue"],
        "camera.motion"
    );
    let trace_id = root["traceId"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    assert_eq!(
        root["parentSpanId"].as_str().unwrap_or(""),
        "",
        "the message's trace starts here"
    );
    assert_eq!(
        root["links"][0]["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "linked to the producer"
    );
    let attempts: Vec<&Value> = spans
        .iter()
        .filter(|span| span["name"] == "kait.attempt")
        .collect();
    assert_eq!(attempts.len(), 2, "{spans:?}");
    for attempt in &attempts {
        assert_eq!(attempt["traceId"], trace_id.as_str());
        assert_eq!(attempt["parentSpanId"], root["spanId"]);
    }
    let codes: Vec<i64> = attempts
        .iter()
        .map(|attempt| {
            attribute(attempt, "http.response.status_code")["intValue"]
                .as_str()
                .map_or_else(
                    || {
                        attribute(attempt, "http.response.status_code")["intValue"]
                            .as_i64()
                            .unwrap()
                    },
                    |text| text.parse().unwrap(),
                )
        })
        .collect();
    assert!(codes.contains(&503) && codes.contains(&200), "{codes:?}");

    // Receivers were told which attempt span they are answering.
    for webhook in &received {
        let header = webhook.header("traceparent");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(parts[1], trace_id, "{header}");
        assert!(
            attempts.iter().any(|attempt| attempt["spanId"] == parts[2]),
            "{header} names no attempt span"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_otlp_endpoint_receivers_get_no_traceparent() {
    let server = TestServer::start().await;
    let receiver = Receiver::start().await;
    let app = server.create_app("untraced").await;
    server
        .create_endpoint(&app, json!({"url": receiver.url}))
        .await;
    server.send(&app, "a.b", json!({})).await;
    let received = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(received[0].headers.get("traceparent").is_none());
    server.stop().await;
}
