//! One signed POST per call, over a shared keep-alive client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kait_core::signing::SigningKey;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect;

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
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            max_response_body: 4 * 1024,
            max_idle_per_host: 256,
        }
    }
}

/// An endpoint URL parsed once (the dispatcher keeps it with the endpoint), so an attempt
/// neither parses it again nor looks for a literal address in it.
#[derive(Debug, Clone)]
pub struct Target {
    url: reqwest::Url,
    /// The host when it is a literal IP address: checked against the guard at every attempt
    /// (host names are checked as they resolve).
    literal: Option<std::net::IpAddr>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, SendError> {
        let url =
            reqwest::Url::parse(url).map_err(|error| SendError::InvalidUrl(error.to_string()))?;
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(std::net::IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(std::net::IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(SendError::InvalidUrl("no host".into())),
        };
        Ok(Self { url, literal })
    }
}

/// One webhook to send.
pub struct Webhook<'a> {
    pub target: &'a Target,
    pub msg_id: &'a str,
    /// Unix seconds, signed and sent as `webhook-timestamp`.
    pub timestamp: i64,
    pub body: Bytes,
    pub content_type: &'static str,
    pub signing_key: &'a SigningKey,
    /// During a secret rotation's grace period, the old key signs too.
    pub previous_signing_key: Option<&'a SigningKey>,
    /// The endpoint's custom headers, already validated.
    pub custom_headers: &'a HeaderMap,
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
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            for address in &addresses {
                policy.check(address.ip())?;
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The webhook HTTP client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
    config: Arc<SenderConfig>,
}

impl Sender {
    pub fn new(config: SenderConfig, policy: EgressPolicy) -> Result<Self, SendError> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("Kait/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .build()
            .map_err(|error| SendError::Request(error.to_string()))?;
        Ok(Self {
            client,
            policy,
            config: Arc::new(config),
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
        let mut headers = webhook.custom_headers.clone();
        headers.reserve(7);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(webhook.content_type));
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
        let mut response = self
            .client
            .post(webhook.target.url.clone())
            .headers(headers)
            .body(webhook.body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status().as_u16();
        let retry_after = if matches!(status, 429 | 503) {
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, std::time::SystemTime::now()))
        } else {
            None
        };
        let mut body = Vec::new();
        // Read only as much of the body as is kept; the rest is not worth the bandwidth.
        while body.len() < self.config.max_response_body {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The status already arrived; a body cut short does not change the outcome.
                Err(_) => break,
            }
        }
        body.truncate(self.config.max_response_body);
        Ok((
            status,
            String::from_utf8_lossy(&body).into_owned(),
            retry_after,
        ))
    }
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

/// Turns a reqwest error into the reason recorded for the attempt.
fn classify(error: reqwest::Error) -> SendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<BlockedAddress>() {
            return SendError::Blocked(blocked.clone());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        SendError::Timeout
    } else if error.is_connect() {
        SendError::Connect(error_chain(&error))
    } else {
        SendError::Request(error_chain(&error))
    }
}

/// The error and its causes on one line, for the attempt log.
fn error_chain(error: &dyn std::error::Error) -> String {
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
