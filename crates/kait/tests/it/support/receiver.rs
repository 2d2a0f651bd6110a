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
    pub method: axum::http::Method,
    /// The path and query the request was sent to.
    pub uri: axum::http::Uri,
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
        Self::serve(None, respond).await
    }

    async fn serve(
        tls: Option<tokio_rustls::TlsAcceptor>,
        respond: impl Fn(&Received, usize) -> Response + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(State {
            received: Mutex::new(Vec::new()),
            arrivals: Notify::new(),
            counter: AtomicUsize::new(0),
            respond: Box::new(respond),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: Bytes| {
                let state = handler_state.clone();
                async move {
                    let received = Received {
                        method,
                        uri,
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
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (url, task) = match tls {
            None => (
                format!("http://127.0.0.1:{port}/webhook"),
                tokio::spawn(async move {
                    axum::serve(listener, app).await.unwrap();
                }),
            ),
            Some(acceptor) => (
                format!("https://localhost:{port}/webhook"),
                tokio::spawn(serve_tls(listener, acceptor, app)),
            ),
        };
        Self { url, state, task }
    }

    /// A receiver that answers 200 over HTTPS at `https://localhost:<port>`, with a
    /// certificate issued by a CA made for the test; returns the CA's certificate too.
    pub async fn start_tls() -> (Self, rustls::pki_types::CertificateDer<'static>) {
        let (ca, leaf, leaf_key) = private_ca_and_localhost_certificate();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf],
            rustls::pki_types::PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let receiver = Self::serve(Some(acceptor), |_, _| StatusCode::OK.into_response()).await;
        (receiver, ca)
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

/// Serves `app` over TLS, one task per connection.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            // A client that refuses the certificate ends the handshake: not this side's error.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
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

/// A private certificate authority and a certificate it signed for `localhost`, with that
/// certificate's key: what a TLS server of a test presents, and what its client must trust.
pub fn private_ca_and_localhost_certificate() -> (
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::CertificateDer<'static>,
    rcgen::KeyPair,
) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    (ca.der().clone(), leaf.der().clone(), leaf_key)
}
