//! Whole API requests against the real router and an embedded SQLite store: method, path and
//! query, content type and body are the fuzzer's. Every parser on the way (paths, iterators
//! and list parameters, JSON and XML bodies, idempotency keys, headers) must answer a client
//! error at worst: never a panic, a stack overflow or a 5xx.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use kait_api::{ApiContext, ApiState};
use kait_store::sealing::SecretKeys;
use kait_store::{SqliteOptions, SqliteStore, Store};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const TOKEN: &str = "kait_fuzz_admin_token_0123456789";

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    /// The fixture source's receiving path (`/ingest/api/v1/source/{id}/in/{token}`).
    receive_path: String,
    _data_dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(SqliteOptions::new(data_dir.path(), SecretKeys::ephemeral()))
                .unwrap(),
        );
        let state = ApiState::from(ApiContext {
            store,
            admin_token: TOKEN.into(),
            url_check: Arc::new(|_| Ok(())),
            circuit_state: Arc::new(|_| "closed"),
            limits: Default::default(),
            ops: kait_store::operational::OperationalEvents::off(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            metrics: Arc::new(String::new),
            app_ids: Default::default(),
            streams: Default::default(),
            metrics_token: None,
            public_url: "http://127.0.0.1:8071".into(),
            sources_changed: Default::default(),
            sources: Default::default(),
            source_slots: Default::default(),
            media: Some(kait_media::Media {
                blobs: kait_media::Blobs::local(&data_dir.path().join("blobs")).unwrap(),
                links: kait_media::LinkKeys::new([1; 32], []),
                public_url: "http://127.0.0.1:8071".into(),
                max_upload_bytes: 1 << 20,
            }),
            mqtt_routes_changed: Default::default(),
            devices: None,
            traces: None,
        });
        let app = runtime.block_on(async {
            let app = kait_api::router(state);
            // Something to find: an application, an endpoint and a message.
            for (path, body) in [
                ("/api/v1/app", r#"{"name":"fuzz","uid":"fuzz"}"#),
                (
                    "/api/v1/app/fuzz/endpoint",
                    r#"{"url":"https://example.com/h","uid":"ep"}"#,
                ),
                (
                    "/api/v1/app/fuzz/endpoint",
                    r#"{"kind":"polling","uid":"poll"}"#,
                ),
                (
                    "/api/v1/app/fuzz/msg",
                    r#"{"eventType":"a.b","payload":{"n":1}}"#,
                ),
                (
                    "/api/v1/pipe",
                    r#"{"name":"fuzz","uid":"fpipe","trigger":{"app":"fuzz","eventTypes":["a.b"]},"actions":[{"type":"expect","key":"e => e.id","withinMs":60000,"onTimeout":[{"type":"emit","app":"fuzz","eventType":"c.d"}]}]}"#,
                ),
            ] {
                let request = Request::post(path)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(Body::from(body))
                    .unwrap();
                app.clone().oneshot(request).await.unwrap();
            }
            // An incoming source with an endpoint, and its receiving path.
            let request = Request::post("/ingest/api/v1/source")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Body::from(
                    r#"{"name":"fuzz","uid":"fsrc","type":"generic-webhook","config":{}}"#,
                ))
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let source: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            let url = source["ingestUrl"].as_str().unwrap();
            let receive_path = url[url.find("/ingest/").unwrap()..].to_owned();
            let request = Request::post("/ingest/api/v1/source/fsrc/endpoint")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Body::from(r#"{"url":"https://example.com/in","uid":"sep"}"#))
                .unwrap();
            app.clone().oneshot(request).await.unwrap();
            (app, receive_path)
        });
        let (app, receive_path) = app;
        Harness {
            runtime,
            app,
            receive_path,
            _data_dir: data_dir,
        }
    })
}

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];
const CONTENT_TYPES: [&str; 3] = ["application/json", "application/xml", "text/plain"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (path, body) = text.split_once('\n').unwrap_or((&text, ""));
    let harness = harness();
    // `!…` goes below the fixture source's receiving URL, `~…` to the ingest API, `^…` to
    // the attachment links (`/media/…`).
    let uri = if let Some(rest) = path.strip_prefix('!') {
        format!("{}{rest}", harness.receive_path)
    } else if let Some(rest) = path.strip_prefix('^') {
        format!("/media/{rest}")
    } else if let Some(rest) = path.strip_prefix('~') {
        format!("/ingest/api/v1/{rest}")
    } else {
        format!("/api/v1/{path}")
    };
    let mut builder = Request::builder()
        .method(METHODS[usize::from(selector) % METHODS.len()].clone())
        .uri(uri.as_str())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header(
            "content-type",
            CONTENT_TYPES[usize::from(selector / 8) % CONTENT_TYPES.len()],
        );
    if selector & 0x80 != 0 {
        builder = builder.header("idempotency-key", "fuzz-key");
    }
    let Ok(request) = builder.body(Body::from(body.to_owned())) else {
        return;
    };
    harness.runtime.block_on(async {
        // Long-polls and streams wait by design: a bounded wait is not a finding.
        let Ok(response) =
            tokio::time::timeout(Duration::from_secs(2), harness.app.clone().oneshot(request))
                .await
        else {
            return;
        };
        let response = response.unwrap();
        assert!(
            !response.status().is_server_error(),
            "{} {uri} answered {}",
            METHODS[usize::from(selector) % METHODS.len()],
            response.status()
        );
    });
});
