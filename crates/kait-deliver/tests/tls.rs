//! The sender over TLS, against a real rustls server on loopback with a certificate from a CA
//! made for the test: trusted when the CA is configured, refused (as a connection failure, with
//! the reason) when it is not or when the name does not match.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kait_core::signing::{Secret, VerificationKey, verify};
use kait_deliver::{AttemptResult, EgressPolicy, SendError, Sender, SenderConfig, Target, Webhook};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the TLS receiver saw of one request.
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

/// A test CA and an HTTPS receiver on 127.0.0.1 whose certificate it issued for `localhost`.
struct TlsReceiver {
    address: SocketAddr,
    ca: CertificateDer<'static>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl TlsReceiver {
    async fn start() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake; that is the
                    // point of some tests, not an error here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let record = record.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await?.to_bytes();
                                record.lock().unwrap().push(Seen {
                                    headers: parts.headers,
                                    body,
                                });
                                Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(
                                    "thanks",
                                ))))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            address,
            ca: ca.der().clone(),
            seen,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/webhook", self.address.port())
    }
}

fn sender(extra_roots: Vec<CertificateDer<'static>>) -> Sender {
    let config = SenderConfig {
        request_timeout: Duration::from_secs(10),
        extra_root_certificates: extra_roots,
        ..SenderConfig::default()
    };
    // The receiver is on loopback, which the guard refuses unless allowed (`localhost` may
    // resolve to ::1 too, and one forbidden address refuses the whole name).
    let policy = EgressPolicy::new(vec![
        "127.0.0.0/8".parse().unwrap(),
        "::1/128".parse().unwrap(),
    ]);
    Sender::new(config, policy).unwrap()
}

async fn send(sender: &Sender, url: &str, body: &'static str) -> AttemptResult {
    let target = Target::parse(url).unwrap();
    let key = Secret::parse(SECRET).unwrap().signing_key();
    sender
        .send(Webhook {
            target: &target,
            method: http::Method::POST,
            msg_id: "msg_tls",
            timestamp: 1_700_000_000,
            body: Bytes::from_static(body.as_bytes()),
            content_type: http::HeaderValue::from_static("application/json"),
            message_headers: None,
            trace_parent: None,
            signing_key: &key,
            previous_signing_key: None,
            custom_headers: &HeaderMap::new(),
        })
        .await
}

#[tokio::test]
async fn delivers_signed_webhooks_to_a_trusted_certificate() {
    let receiver = TlsReceiver::start().await;
    let sender = sender(vec![receiver.ca.clone()]);
    let url = receiver.url("localhost");
    for n in 0..3 {
        let result = send(&sender, &url, r#"{"over":"tls"}"#).await;
        assert_eq!(result.status_code(), 200, "attempt {n}: {result:?}");
        assert_eq!(result.log_text(), "thanks");
    }
    let seen = receiver.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let first = &seen[0];
    assert_eq!(first.body, r#"{"over":"tls"}"#);
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.headers["webhook-id"], "msg_tls");
    assert_eq!(first.headers["svix-id"], "msg_tls");
    assert!(
        first.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("Kait/")
    );
    let header = |name: &str| first.headers.get(name).map(|v| v.to_str().unwrap());
    verify(
        &VerificationKey::parse(SECRET).unwrap(),
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
        &first.body,
        1_700_000_000,
        300,
    )
    .expect("the signature verifies");
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_connection_failure() {
    let receiver = TlsReceiver::start().await;
    // Only the platform's roots: the test CA is unknown.
    let result = send(&sender(Vec::new()), &receiver.url("localhost"), "{}").await;
    match result {
        AttemptResult::NoResponse {
            error: SendError::Connect(reason),
            ..
        } => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a refused certificate, got {other:?}"),
    }
    assert!(receiver.seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_is_a_connection_failure() {
    let receiver = TlsReceiver::start().await;
    // Trusted CA, but the certificate names `localhost`, not the address.
    let result = send(
        &sender(vec![receiver.ca.clone()]),
        &receiver.url("127.0.0.1"),
        "{}",
    )
    .await;
    match result {
        AttemptResult::NoResponse {
            error: SendError::Connect(reason),
            ..
        } => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a name mismatch, got {other:?}"),
    }
    assert!(receiver.seen.lock().unwrap().is_empty());
}
