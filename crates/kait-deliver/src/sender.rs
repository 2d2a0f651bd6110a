//! One signed POST per call, over a shared keep-alive connection pool.
//!
//! Built on hyper-util's pooled client rather than reqwest: the sender is the hot path of every
//! delivery, and reqwest's layers (URL to URI conversion, boxed timeout and redirect futures,
//! its own header handling) cost a measurable share of the server's CPU per webhook
//! (BENCHMARKS.md has the profile and the A/B). What reqwest gave is kept here explicitly: a
//! resolver that checks every address with the egress guard, rustls with the platform's
//! roots, connect and whole-request timeouts, no redirects, no proxy.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kait_core::signing::SigningKey;
use rustls::pki_types::CertificateDer;

use crate::guard::{BlockedAddress, EgressPolicy};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Whole-request limit, connect to last body byte.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Bytes of the response body kept for the attempt log.
    pub max_response_body: usize,
    /// Idle keep-alive connections kept per host.
    pub max_idle_per_host: usize,
    /// Certificate authorities trusted beside the platform's (a private CA, or a test's).
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_body: 4 * 1024,
            max_idle_per_host: 256,
            extra_root_certificates: Vec::new(),
        }
    }
}

/// An endpoint URL parsed once (the dispatcher keeps it with the endpoint), so an attempt
/// neither parses it again nor looks for a literal address in it.
#[derive(Debug, Clone)]
pub struct Target {
    uri: Uri,
    /// The host when it is a literal IP address: checked against the guard at every attempt
    /// (host names are checked as they resolve).
    literal: Option<std::net::IpAddr>,
}

impl Target {
    /// Parses with the WHATWG URL parser (which normalises odd IPv4 spellings such as
    /// `0x7f.1`, so the guard sees the real address), then keeps the `http::Uri` hyper sends to.
    pub fn parse(url: &str) -> Result<Self, SendError> {
        let url = url::Url::parse(url).map_err(|error| SendError::InvalidUrl(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::InvalidUrl(format!(
                "scheme {} is not http or https",
                url.scheme()
            )));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(SendError::InvalidUrl("no host".into())),
        };
        // The fragment is never sent; the rest of the normalised URL is a valid URI.
        let without_fragment = &url[..url::Position::AfterQuery];
        let uri = without_fragment
            .parse::<Uri>()
            .map_err(|error| SendError::InvalidUrl(error.to_string()))?;
        Ok(Self { uri, literal })
    }
}

/// One webhook to send.
pub struct Webhook<'a> {
    pub target: &'a Target,
    /// POST, unless an endpoint transformation chose PUT.
    pub method: Method,
    pub msg_id: &'a str,
    /// Unix seconds, signed and sent as `webhook-timestamp`.
    pub timestamp: i64,
    pub body: Bytes,
    pub content_type: HeaderValue,
    pub signing_key: &'a SigningKey,
    /// During a secret rotation's grace period, the old key signs too.
    pub previous_signing_key: Option<&'a SigningKey>,
    /// The endpoint's custom headers, already validated.
    pub custom_headers: &'a HeaderMap,
    /// Headers of this message itself (a received request's `svix-ingest-*`), after the
    /// endpoint's; the signature headers still win.
    pub message_headers: Option<&'a HeaderMap>,
    /// W3C `traceparent` of this attempt, when receivers are given Kait's trace.
    pub trace_parent: Option<HeaderValue>,
}

/// Why no HTTP response came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("blocked by the egress guard: {0}")]
    Blocked(BlockedAddress),
    #[error("invalid url: {0}")]
    InvalidUrl(String),
    #[error("timed out")]
    Timeout,
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response arrived (any status; 2xx is success).
    Response {
        status: u16,
        /// The first bytes of the body, lossily decoded as UTF-8.
        body: String,
        duration: Duration,
        /// The receiver's `Retry-After` on a 429 or 503, as a delay from now.
        retry_after: Option<Duration>,
    },
    /// No response: the reason and how long it took to find out.
    NoResponse {
        error: SendError,
        duration: Duration,
    },
}

impl AttemptResult {
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Response { status, .. } if (200..300).contains(status))
    }

    pub fn duration(&self) -> Duration {
        match self {
            Self::Response { duration, .. } | Self::NoResponse { duration, .. } => *duration,
        }
    }

    /// The receiver asked for a pause (429 or 503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Response { retry_after, .. } => *retry_after,
            Self::NoResponse { .. } => None,
        }
    }

    /// The HTTP status, or 0 when no response came (Svix's convention).
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Response { status, .. } => *status,
            Self::NoResponse { .. } => 0,
        }
    }

    /// Text for the attempt log: the response body, or the reason none came.
    pub fn log_text(&self) -> String {
        match self {
            Self::Response { body, .. } => body.clone(),
            Self::NoResponse { error, .. } => error.to_string(),
        }
    }
}

/// Resolves host names and refuses the whole lookup if any address is forbidden, so the
/// connection can only go to addresses that were checked.
#[derive(Clone)]
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, ResolveError>> + Send>>;
type ResolveError = Box<dyn StdError + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy.check(address.ip())?;
            }
            Ok(addresses.into_iter())
        })
    }
}

type Connector = HttpsConnector<HttpConnector<GuardedResolver>>;

/// The webhook HTTP client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Sender {
    client: Client<Connector, Full<Bytes>>,
    policy: Arc<EgressPolicy>,
    config: Arc<SenderConfig>,
    user_agent: HeaderValue,
}

impl Sender {
    pub fn new(config: SenderConfig, policy: EgressPolicy) -> Result<Self, SendError> {
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&config.extra_root_certificates)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            // A pooled connection the receiver closed while it was idle (receivers often keep
            // them for seconds, not a minute) fails a request before any byte of it is
            // written; such a request is sent again on a fresh connection (hyper only does
            // this when nothing was written, so it cannot duplicate a webhook), rather than
            // logged as a failed attempt and retried minutes later.
            .retry_canceled_requests(true)
            .build(connector);
        Ok(Self {
            client,
            policy,
            config: Arc::new(config),
            user_agent: HeaderValue::from_static(concat!("Kait/", env!("CARGO_PKG_VERSION"))),
        })
    }

    /// Checks a URL's literal IP host against the guard (host names are checked when
    /// resolved). Used at endpoint creation to refuse forbidden literals early.
    pub fn check_url(&self, url: &str) -> Result<(), SendError> {
        self.check_target(&Target::parse(url)?)
    }

    fn check_target(&self, target: &Target) -> Result<(), SendError> {
        if let Some(address) = target.literal {
            self.policy.check(address).map_err(SendError::Blocked)?;
        }
        Ok(())
    }

    /// Signs and sends one webhook.
    pub async fn send(&self, webhook: Webhook<'_>) -> AttemptResult {
        let started = Instant::now();
        match self.try_send(webhook).await {
            Ok((status, body, retry_after)) => AttemptResult::Response {
                status,
                body,
                duration: started.elapsed(),
                retry_after,
            },
            Err(error) => AttemptResult::NoResponse {
                error,
                duration: started.elapsed(),
            },
        }
    }

    async fn try_send(
        &self,
        webhook: Webhook<'_>,
    ) -> Result<(u16, String, Option<Duration>), SendError> {
        self.check_target(webhook.target)?;
        let mut signature =
            webhook
                .signing_key
                .sign(webhook.msg_id, webhook.timestamp, &webhook.body);
        if let Some(previous) = webhook.previous_signing_key {
            // Standard Webhooks: several signatures, space-separated.
            signature.push(' ');
            signature.push_str(&previous.sign(webhook.msg_id, webhook.timestamp, &webhook.body));
        }
        let mut request = Request::new(Full::new(webhook.body));
        *request.method_mut() = webhook.method;
        *request.uri_mut() = webhook.target.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(webhook.custom_headers.len() + 8);
        for (name, value) in webhook.custom_headers {
            headers.append(name, value.clone());
        }
        if let Some(message_headers) = webhook.message_headers {
            for (name, value) in message_headers {
                headers.insert(name, value.clone());
            }
        }
        if let Some(trace_parent) = webhook.trace_parent {
            headers.insert("traceparent", trace_parent);
        }
        headers.insert(USER_AGENT, self.user_agent.clone());
        headers.insert(CONTENT_TYPE, webhook.content_type);
        let id = header_value(webhook.msg_id)?;
        let timestamp = HeaderValue::from(webhook.timestamp);
        let signature = header_value(&signature)?;
        for (name, value) in [
            ("webhook-id", &id),
            ("webhook-timestamp", &timestamp),
            ("webhook-signature", &signature),
            ("svix-id", &id),
            ("svix-timestamp", &timestamp),
            ("svix-signature", &signature),
        ] {
            headers.insert(HeaderName::from_static(name), value.clone());
        }
        // One deadline for connecting, sending and reading the kept part of the response.
        tokio::time::timeout(self.config.request_timeout, self.exchange(request))
            .await
            .unwrap_or(Err(SendError::Timeout))
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(u16, String, Option<Duration>), SendError> {
        let response = self.client.request(request).await.map_err(classify)?;
        let status = response.status().as_u16();
        let retry_after = if matches!(status, 429 | 503) {
            response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, std::time::SystemTime::now()))
        } else {
            None
        };
        let mut body = response.into_body();
        let mut kept = Vec::new();
        // Read only as much of the body as is kept; the rest is not worth the bandwidth (the
        // connection is then dropped rather than drained, which is the cheaper of the two).
        while kept.len() < self.config.max_response_body {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                }
                // The status already arrived; a body cut short does not change the outcome.
                Some(Err(_)) | None => break,
            }
        }
        kept.truncate(self.config.max_response_body);
        Ok((
            status,
            String::from_utf8_lossy(&kept).into_owned(),
            retry_after,
        ))
    }
}

/// The certificates in a PEM file's text (other PEM sections, such as keys, are ignored), for
/// [`SenderConfig::extra_root_certificates`]. At least one is required, so that a wrong file is
/// an error at start-up rather than a silent no-op.
pub fn read_pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("not valid PEM: {error}"))?;
    if certificates.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certificates)
}

/// rustls with the platform's certificate verifier (the system roots, plus `extra_roots`),
/// for any TLS client of Kait's (the MQTT bridge's too).
pub fn tls_client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, String> {
    tls_config(extra_roots).map_err(|error| error.to_string())
}

/// rustls with the platform's certificate verifier (the system roots, plus any extra ones).
/// The connector sets ALPN to HTTP/1.1 itself.
fn tls_config(extra_roots: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, SendError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.iter().cloned(),
            provider.clone(),
        )
    }
    .map_err(|error| SendError::Request(format!("TLS setup: {error}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| SendError::Request(format!("TLS setup: {error}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// `Retry-After` as delay-seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

fn header_value(text: &str) -> Result<HeaderValue, SendError> {
    HeaderValue::from_str(text).map_err(|error| SendError::Request(error.to_string()))
}

/// Turns a client error into the reason recorded for the attempt.
fn classify(error: hyper_util::client::legacy::Error) -> SendError {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&error);
    let mut timed_out = false;
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedAddress>() {
            return SendError::Blocked(blocked.clone());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = cause.source();
    }
    if timed_out {
        SendError::Timeout
    } else if error.is_connect() {
        SendError::Connect(error_chain(&error))
    } else {
        SendError::Request(error_chain(&error))
    }
}

/// The error and its causes on one line, for the attempt log.
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{SendError, Target, parse_retry_after};

    #[test]
    fn targets_know_their_literal_address() {
        let literal = Target::parse("http://10.0.0.1:8080/hook").unwrap();
        assert_eq!(literal.literal, Some("10.0.0.1".parse().unwrap()));
        let v6 = Target::parse("https://[::1]/hook").unwrap();
        assert_eq!(v6.literal, Some("::1".parse().unwrap()));
        assert_eq!(
            Target::parse("https://example.com/hook").unwrap().literal,
            None
        );
        // Odd spellings of an IPv4 address are normalised by the URL parser, so the guard
        // sees the real address.
        let odd = Target::parse("http://0x7f.1/hook").unwrap();
        assert_eq!(odd.literal, Some("127.0.0.1".parse().unwrap()));
        assert!(matches!(
            Target::parse("not a url"),
            Err(SendError::InvalidUrl(_))
        ));
    }

    #[test]
    fn pem_certificates_are_read_and_garbage_refused() {
        // Two certificates (any DER inside the armour parses; verification happens later),
        // with a key section between them that is skipped.
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n\
                   -----BEGIN PRIVATE KEY-----\nMAMCAQI=\n-----END PRIVATE KEY-----\n\
                   -----BEGIN CERTIFICATE-----\nMAMCAQM=\n-----END CERTIFICATE-----\n";
        let certificates = super::read_pem_certificates(pem.as_bytes()).unwrap();
        assert_eq!(certificates.len(), 2);
        assert_eq!(certificates[1].as_ref(), &[0x30, 0x03, 0x02, 0x01, 0x03]);
        let none = super::read_pem_certificates(b"just text\n").unwrap_err();
        assert!(none.contains("no PEM certificate"), "{none}");
        let broken = super::read_pem_certificates(
            b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err();
        assert!(broken.contains("not valid PEM"), "{broken}");
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }
}
