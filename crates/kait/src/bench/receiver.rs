//! The bench's webhook receiver: verifies every signature and records each arrival's
//! latency from the send time the load client wrote into the payload.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use kait_core::signing::{Secret, SigningKey};

use super::*;

/// What the receiver saw.
pub(super) struct Arrivals {
    /// (endpoint path, webhook id) → how many times it arrived.
    pub(super) counts: HashMap<(String, String), u32>,
    pub(super) latencies_micros: Vec<u64>,
    /// (sent, arrived) in µs since the epoch, each first arrival: which phase of a run a
    /// webhook belongs to (the `overload` scenario).
    pub(super) timeline: Vec<(u64, u64)>,
    pub(super) last_arrival: Option<Instant>,
}

pub(super) struct ReceiverState {
    pub(super) epoch: Instant,
    /// While set, webhooks are refused with 503 and not counted (the `backlog` scenario).
    pub(super) down: std::sync::atomic::AtomicBool,
    /// When the first webhook was accepted.
    pub(super) first_arrival: Mutex<Option<Instant>>,
    pub(super) key: SigningKey,
    pub(super) arrivals: Mutex<Arrivals>,
    pub(super) received: AtomicU64,
    pub(super) bad_signatures: AtomicU64,
}

pub(super) struct BenchReceiver {
    pub(super) address: std::net::SocketAddr,
    pub(super) state: Arc<ReceiverState>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for BenchReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the send time the load client put at the start of the payload: `{"t":<micros>,`.
pub(super) fn sent_micros(body: &[u8]) -> Option<u64> {
    let digits = body.strip_prefix(b"{\"t\":")?;
    let end = digits.iter().position(|byte| !byte.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

impl BenchReceiver {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(ReceiverState {
            epoch: Instant::now(),
            down: std::sync::atomic::AtomicBool::new(false),
            first_arrival: Mutex::new(None),
            key: Secret::parse(BENCH_SECRET)?.signing_key(),
            arrivals: Mutex::new(Arrivals {
                counts: HashMap::new(),
                latencies_micros: Vec::new(),
                timeline: Vec::new(),
                last_arrival: None,
            }),
            received: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move { state.receive(uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }
}

impl ReceiverState {
    pub(super) fn receive(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
        let now = Instant::now();
        self.received.fetch_add(1, Ordering::Relaxed);
        if uri.path() == "/raw" {
            return StatusCode::OK;
        }
        if self.down.load(Ordering::Relaxed) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        self.first_arrival
            .lock()
            .expect("first arrival lock")
            .get_or_insert(now);
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let Some(msg_id) = header("webhook-id") else {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        };
        let timestamp = header("webhook-timestamp").and_then(|text| text.parse::<i64>().ok());
        let signed = match (timestamp, header("webhook-signature")) {
            (Some(timestamp), Some(signature)) => {
                self.key.matches_any(msg_id, timestamp, &body, signature)
            }
            _ => false,
        };
        if !signed {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::UNAUTHORIZED;
        }
        let arrived = now.duration_since(self.epoch).as_micros() as u64;
        let sent = sent_micros(&body);
        let mut arrivals = self.arrivals.lock().expect("arrivals lock");
        let count = arrivals
            .counts
            .entry((uri.path().to_owned(), msg_id.to_owned()))
            .or_default();
        *count += 1;
        let first = *count == 1;
        if let Some(sent) = sent {
            arrivals.latencies_micros.push(arrived.saturating_sub(sent));
            if first {
                arrivals.timeline.push((sent, arrived));
            }
        }
        arrivals.last_arrival = Some(now);
        StatusCode::OK
    }
}

pub(super) fn payload(epoch: Instant, pad: &str) -> String {
    format!(
        "{{\"t\":{},\"pad\":\"{pad}\"}}",
        epoch.elapsed().as_micros()
    )
}
