//! A real HTTP webhook receiver on 127.0.0.1:0 that records every request and answers with
//! a status chosen per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_else(|| panic!("missing header {name}"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("webhook body is JSON")
    }
}

type Responder = dyn Fn(&Received, usize) -> Response + Send + Sync;

struct State {
    received: Mutex<Vec<Received>>,
    arrivals: Notify,
    counter: AtomicUsize,
    respond: Box<Responder>,
}

pub struct Receiver {
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers 200 to everything.
    pub async fn start() -> Self {
        Self::start_with(|_, _| StatusCode::OK).await
    }

    /// A receiver whose answer to the n-th request (from 0) is `respond(request, n)`.
    pub async fn start_with(
        respond: impl Fn(&Received, usize) -> StatusCode + Send + Sync + 'static,
    ) -> Self {
        Self::start_responding(move |received, index| respond(received, index).into_response())
            .await
    }

    /// Like `start_with`, for answers with headers (e.g. `Retry-After`).
    pub async fn start_responding(
        respond: impl Fn(&Received, usize) -> Response + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            arrivals: Notify::new(),
            counter: AtomicUsize::new(0),
            respond: Box::new(respond),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move {
                let received = Received {
                    headers,
                    body,
                    at: std::time::Instant::now(),
                };
                let index = state.counter.fetch_add(1, Ordering::SeqCst);
                let status = (state.respond)(&received, index);
                state.received.lock().unwrap().push(received);
                state.arrivals.notify_waiters();
                status
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    /// The distinct `webhook-id`s seen (retries and duplicates count once).
    pub fn distinct_ids(&self) -> std::collections::HashSet<String> {
        self.state
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|webhook| webhook.header("webhook-id").to_owned())
            .collect()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Waits until at least `count` requests arrived; panics after `timeout`.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrival = self.state.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrival).await.is_err() {
                panic!(
                    "expected {count} webhooks at {}, got {}",
                    self.url,
                    self.count()
                );
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A receiver that accepts connections and never answers: a dead endpoint.
pub struct Blackhole {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { url, task }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
