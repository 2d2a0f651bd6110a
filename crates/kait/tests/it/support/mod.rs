//! Test harness: a real Kait server on a random port, and real webhook receivers.

pub mod browser;
pub mod process;
pub mod receiver;
pub mod storage;

use std::time::Duration;

use kait::config::ServeConfig;
use kait_core::retry::RetrySchedule;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub use receiver::{Blackhole, Received, Receiver, private_ca_and_localhost_certificate};
pub use storage::Storage;

pub const ADMIN_TOKEN: &str = "kait_test_admin_token_0123456789";

/// A Kait server running in this process with its own storage (see [`Storage`]).
pub struct TestServer {
    pub base_url: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    storage: Storage,
}

impl TestServer {
    /// Starts a server that may deliver to 127.0.0.0/8 and retries quickly.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        // Server logs when asked for, e.g. RUST_LOG=kait=debug cargo test.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let storage = Storage::new().await;
        let mut config = ServeConfig::for_data_dir(storage.data_dir.path());
        storage.apply(&mut config);
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config.allow_networks = vec!["127.0.0.0/8".parse().unwrap()];
        config.retry_schedule =
            RetrySchedule::new(vec![Duration::from_millis(50), Duration::from_millis(100)]);
        config.request_timeout = Duration::from_secs(5);
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kait::serve::run(config, listener, shutdown.clone()));
        Self {
            base_url,
            http: reqwest::Client::new(),
            shutdown,
            task,
            storage,
        }
    }

    /// Where this server keeps its state.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The official Svix client library, pointed at this server.
    pub fn svix(&self) -> svix::api::Svix {
        svix::api::Svix::new(
            ADMIN_TOKEN.to_owned(),
            Some(svix::api::SvixOptions {
                server_url: Some(self.base_url.clone()),
                num_retries: Some(0),
                ..Default::default()
            }),
        )
    }

    /// Sends a request with the admin token and returns the status and JSON body (or Null).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        self.request_with(method, path, body, Some(ADMIN_TOKEN), &[])
            .await
    }

    pub async fn request_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{}", self.base_url, path));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await.expect("request reaches the server");
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "non-JSON body for {path}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates an application and returns its id.
    pub async fn create_app(&self, name: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/app",
                &serde_json::json!({ "name": name }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Creates an endpoint from a JSON body and returns the response body.
    pub async fn create_endpoint(&self, app_id: &str, body: Value) -> Value {
        let (status, body) = self
            .post(&format!("/api/v1/app/{app_id}/endpoint"), &body.to_string())
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Posts a message and returns its id.
    pub async fn send(&self, app_id: &str, event_type: &str, payload: Value) -> String {
        let body = serde_json::json!({ "eventType": event_type, "payload": payload });
        let (status, body) = self
            .post(&format!("/api/v1/app/{app_id}/msg"), &body.to_string())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// The secret of an endpoint.
    pub async fn secret(&self, app_id: &str, endpoint_id: &str) -> String {
        let (status, body) = self
            .get(&format!(
                "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    /// Polls until `check` returns true for the JSON at `path` (bounded by `timeout`).
    pub async fn wait_until(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (_, body) = self.get(path).await;
            if check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting on {path}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the first attempt of a message and returns it: the attempt log entry with
    /// `response` (the body, or why no response came) and `responseStatusCode`.
    pub async fn first_attempt(&self, app_id: &str, msg_id: &str, timeout: Duration) -> Value {
        let attempts = self
            .wait_until(
                &format!("/api/v1/app/{app_id}/attempt/msg/{msg_id}"),
                timeout,
                |body| body["data"].as_array().is_some_and(|data| !data.is_empty()),
            )
            .await;
        attempts["data"][0].clone()
    }

    /// Stops the server gracefully, waits for it and removes its storage.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.storage.remove().await;
    }
}

/// Verifies a received webhook with two independent implementations: the Standard Webhooks
/// crate (`webhook-*` headers) and the Svix library's verifier (`svix-*` headers).
pub fn assert_signed(received: &Received, secret: &str) {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&received.body, &received.headers)
        .unwrap_or_else(|error| panic!("standardwebhooks rejected the webhook: {error:?}"));
    svix::webhooks::Webhook::new(secret)
        .unwrap()
        .verify(&received.body, &received.headers)
        .unwrap_or_else(|error| panic!("svix rejected the webhook: {error:?}"));
}

/// POSTs JSON with the admin token; the answer's JSON on success, `None` on any failure (for
/// tests that post while servers are being killed).
pub async fn post_json(
    client: &reqwest::Client,
    url: String,
    body: String,
) -> Option<serde_json::Value> {
    let response = client
        .post(url)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

/// Creates an incoming source through `base_url` (`{name, type, config}`) and one endpoint of
/// it at `endpoint_url`; returns the source as the API answered (its `id`, `ingestUrl`, …).
pub async fn source_with_endpoint(
    client: &reqwest::Client,
    base_url: &str,
    source: Value,
    endpoint_url: &str,
) -> Value {
    let created = post_json(
        client,
        format!("{base_url}/ingest/api/v1/source"),
        source.to_string(),
    )
    .await
    .expect("source created");
    let source_id = created["id"].as_str().unwrap();
    post_json(
        client,
        format!("{base_url}/ingest/api/v1/source/{source_id}/endpoint"),
        serde_json::json!({ "url": endpoint_url }).to_string(),
    )
    .await
    .expect("source endpoint created");
    created
}

/// Checks a webhook's Standard Webhooks `v1` signature over a body of any bytes, computed
/// here from the spec: base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn assert_signed_bytes(webhook: &Received, secret: &str) {
    let engine = base64::engine::general_purpose::STANDARD;
    let key = base64::Engine::decode(&engine, secret.trim_start_matches("whsec_")).unwrap();
    let expected = base64::Engine::encode(
        &engine,
        crate::support::hmac_sha256(
            &key,
            &[
                webhook.header("webhook-id").as_bytes(),
                b".",
                webhook.header("webhook-timestamp").as_bytes(),
                b".",
                &webhook.body,
            ],
        ),
    );
    let signatures = webhook.header("webhook-signature");
    assert!(
        signatures
            .split(' ')
            .any(|signature| signature == format!("v1,{expected}")),
        "{signatures}"
    );
}

/// HMAC-SHA256 over the parts, one after the other.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}
