//! Proof that a request came from the source's sender, one scheme per provider.
//!
//! Every comparison of a signature or credential is constant-time (an attacker timing the
//! answers learns nothing about the expected value), an empty or malformed signature is
//! refused rather than skipped, and signed timestamps are held to the provider's tolerance so
//! that a captured request cannot be replayed later.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use kait_core::signing::{DEFAULT_TOLERANCE_SECONDS, VerificationKey};
use sha2::Sha256;

use crate::config::SourceConfig;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's and Slack's tolerance for their signed timestamps, in seconds.
pub const PROVIDER_TOLERANCE_SECONDS: i64 = 300;

/// Request headers, looked up case-insensitively by the caller's implementation.
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| *value)
    }
}

/// What a verified request tells besides being genuine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The sender's own id for this event (`X-GitHub-Delivery`, Stripe's event `id`,
    /// `webhook-id`, …): a retry of the same event carries it again and is de-duplicated.
    pub event_id: Option<String>,
    /// Slack's `url_verification`: the challenge to answer with (the request is not an event
    /// and goes no further).
    pub challenge: Option<String>,
}

/// Why a request was refused (answered 401, recorded, never forwarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(reason.into()))
}

fn required<'h>(headers: &'h (impl Headers + ?Sized), name: &str) -> Result<&'h str, Refusal> {
    match headers.header(name) {
        Some(value) if !value.trim().is_empty() => Ok(value.trim()),
        Some(_) => refuse(format!("header {name} is empty")),
        None => refuse(format!("header {name} is missing")),
    }
}

/// Checks `body` and `headers` against the source's scheme at `now` (Unix seconds).
pub fn verify(
    config: &SourceConfig,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    match config {
        SourceConfig::GenericWebhook {
            bearer_token,
            basic,
        } => generic(bearer_token.as_deref(), basic.as_ref(), headers),
        SourceConfig::Cron { .. } => {
            refuse("a cron source produces its events; it takes no requests")
        }
        SourceConfig::StandardWebhooks { secret } => standard_webhooks(secret, headers, body, now),
        SourceConfig::Github { secret } => github(secret.as_deref(), headers, body),
        SourceConfig::Stripe { secret } => stripe(secret, headers, body, now),
        SourceConfig::Shopify { secret } => shopify(secret, headers, body),
        SourceConfig::Slack { secret } => slack(secret, headers, body, now),
    }
}

/// Equality that takes as long whatever the contents (the length is not secret: it is the
/// same for every valid value of a scheme). Written out rather than pulled in: five lines.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn generic(
    bearer_token: Option<&str>,
    basic: Option<&(String, String)>,
    headers: &(impl Headers + ?Sized),
) -> Result<Verified, Refusal> {
    if bearer_token.is_none() && basic.is_none() {
        return Ok(Verified::default());
    }
    let authorization = required(headers, "authorization")?;
    let (scheme, credentials) = authorization
        .split_once(' ')
        .map_or((authorization, ""), |(scheme, rest)| (scheme, rest.trim()));
    let accepted = if scheme.eq_ignore_ascii_case("bearer") {
        bearer_token.is_some_and(|token| constant_time_eq(token.as_bytes(), credentials.as_bytes()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64.decode(credentials).unwrap_or_default();
        basic.is_some_and(|(user, password)| {
            constant_time_eq(format!("{user}:{password}").as_bytes(), &decoded)
        })
    } else {
        false
    };
    if accepted {
        Ok(Verified {
            event_id: headers.header("idempotency-key").map(str::to_owned),
            challenge: None,
        })
    } else {
        refuse("the Authorization header does not carry this source's credentials")
    }
}

/// Svix and the Standard Webhooks spec: `webhook-*` headers, or Svix's `svix-*` names.
fn standard_webhooks(
    secret: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    let key = VerificationKey::parse(secret)
        .map_err(|error| Refusal(format!("the source's secret is unusable: {error}")))?;
    let prefix = if headers.header("webhook-signature").is_some() {
        "webhook"
    } else {
        "svix"
    };
    let id = required(headers, &format!("{prefix}-id"))?;
    let timestamp = required(headers, &format!("{prefix}-timestamp"))?;
    let signature = required(headers, &format!("{prefix}-signature"))?;
    kait_core::signing::verify(
        &key,
        Some(id),
        Some(timestamp),
        Some(signature),
        body,
        now,
        DEFAULT_TOLERANCE_SECONDS,
    )
    .map_err(|error| Refusal(error.to_string()))?;
    Ok(Verified {
        event_id: Some(id.to_owned()),
        challenge: None,
    })
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
fn github(
    secret: Option<&str>,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Verified, Refusal> {
    let event_id = headers.header("x-github-delivery").map(str::to_owned);
    if let Some(secret) = secret {
        let header = required(headers, "x-hub-signature-256")?;
        let Some(hex_digest) = header.strip_prefix("sha256=") else {
            return refuse("X-Hub-Signature-256 must start with sha256=");
        };
        let signature = hex::decode(hex_digest)
            .map_err(|_| Refusal("X-Hub-Signature-256 is not hex".into()))?;
        mac(secret.as_bytes(), &[body])
            .verify_slice(&signature)
            .map_err(|_| Refusal("X-Hub-Signature-256 does not match the body".into()))?;
    }
    Ok(Verified {
        event_id,
        challenge: None,
    })
}

/// Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of `{t}.{body}`
/// keyed with the secret string's bytes; several `v1` while a secret is being rolled.
fn stripe(
    secret: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    let header = required(headers, "stripe-signature")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            return refuse("Stripe-Signature is malformed");
        };
        match key {
            "t" => timestamp = Some(value),
            "v1" => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| Refusal("Stripe-Signature has no t=".into()))?;
    within_tolerance("Stripe-Signature", timestamp, now)?;
    if signatures.is_empty() {
        return refuse("Stripe-Signature has no v1 signature");
    }
    let expected = mac(secret.as_bytes(), &[timestamp.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    let matches = signatures.iter().any(|signature| {
        hex::decode(signature).is_ok_and(|signature| constant_time_eq(&signature, &expected))
    });
    if !matches {
        return refuse("no v1 signature in Stripe-Signature matches the body");
    }
    let event_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|event| event.get("id")?.as_str().map(str::to_owned));
    Ok(Verified {
        event_id,
        challenge: None,
    })
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the raw body>`.
fn shopify(
    secret: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Verified, Refusal> {
    let header = required(headers, "x-shopify-hmac-sha256")?;
    let signature = BASE64
        .decode(header)
        .map_err(|_| Refusal("X-Shopify-Hmac-Sha256 is not base64".into()))?;
    mac(secret.as_bytes(), &[body])
        .verify_slice(&signature)
        .map_err(|_| Refusal("X-Shopify-Hmac-Sha256 does not match the body".into()))?;
    Ok(Verified {
        event_id: headers.header("x-shopify-webhook-id").map(str::to_owned),
        challenge: None,
    })
}

/// Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{ts}:{body}">` with
/// `X-Slack-Request-Timestamp`; a verified `url_verification` is answered with its challenge.
fn slack(
    secret: &str,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    let timestamp = required(headers, "x-slack-request-timestamp")?;
    within_tolerance("X-Slack-Request-Timestamp", timestamp, now)?;
    let header = required(headers, "x-slack-signature")?;
    let Some(hex_digest) = header.strip_prefix("v0=") else {
        return refuse("X-Slack-Signature must start with v0=");
    };
    let signature =
        hex::decode(hex_digest).map_err(|_| Refusal("X-Slack-Signature is not hex".into()))?;
    mac(
        secret.as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    )
    .verify_slice(&signature)
    .map_err(|_| Refusal("X-Slack-Signature does not match the body".into()))?;
    let event = serde_json::from_slice::<serde_json::Value>(body).ok();
    let field = |name: &str| {
        event
            .as_ref()
            .and_then(|event| event.get(name)?.as_str().map(str::to_owned))
    };
    let challenge = (field("type").as_deref() == Some("url_verification"))
        .then(|| field("challenge"))
        .flatten();
    Ok(Verified {
        event_id: field("event_id"),
        challenge,
    })
}

fn within_tolerance(header: &str, timestamp: &str, now: i64) -> Result<(), Refusal> {
    let at: i64 = timestamp
        .parse()
        .map_err(|_| Refusal(format!("{header}'s timestamp is not an integer")))?;
    let skew = now.saturating_sub(at).saturating_abs();
    if skew > PROVIDER_TOLERANCE_SECONDS {
        return refuse(format!(
            "{header}'s timestamp is {skew} s from now, more than {PROVIDER_TOLERANCE_SECONDS} s (a replay?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
