//! Standard Webhooks signatures (`webhook-signature: v1,<base64 HMAC-SHA256>`).
//!
//! The signed content is `"{msg_id}.{timestamp}.{body}"`, keyed with the base64-decoded part
//! of the endpoint's `whsec_…` secret. [`SigningKey`] keeps the HMAC state after the key has
//! been absorbed, so each delivery only clones it instead of re-deriving the key schedule.
//! Verification (used by `kait listen`, `kait verify` and the tests) rejects empty, truncated
//! and wrong-length signatures, which some published verifiers have accepted.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix every symmetric secret carries on the wire.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a generated secret (Svix uses 24, giving 32 base64 characters).
const GENERATED_SECRET_BYTES: usize = 24;
/// Bounds on a caller-supplied secret's key length, after base64 decoding.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 75;
/// Length of a base64 HMAC-SHA256 signature.
const SIGNATURE_BASE64_LEN: usize = 44;
/// How far a webhook's timestamp may be from now before verification fails.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

/// An endpoint's signing secret: `whsec_` plus base64 of the key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(…)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "secret must be base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, optionally prefixed with `whsec_`"
    )]
    Malformed,
}

impl Secret {
    /// A new random secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>` (the prefix is optional, as in Svix).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Malformed);
        }
        Ok(Self { key })
    }

    /// Parses without the length bounds: for verifying with secrets issued elsewhere,
    /// such as the Standard Webhooks test vector.
    pub fn parse_lenient(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if key.is_empty() {
            return Err(SecretError::Malformed);
        }
        Ok(Self { key })
    }

    /// The wire form, `whsec_<base64>`.
    pub fn to_wire(&self) -> String {
        format!("{SECRET_PREFIX}{}", BASE64.encode(&self.key))
    }

    pub fn signing_key(&self) -> SigningKey {
        SigningKey {
            keyed: HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length"),
        }
    }
}

/// An HMAC-SHA256 state with the key already absorbed; cheap to clone per message.
#[derive(Clone)]
pub struct SigningKey {
    keyed: HmacSha256,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The `v1,<base64>` signature of one webhook.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signature = String::with_capacity(3 + SIGNATURE_BASE64_LEN);
        signature.push_str("v1,");
        BASE64.encode_string(self.mac(msg_id, timestamp, body), &mut signature);
        signature
    }

    /// Whether any `v1,` entry of a space-separated `webhook-signature` header matches.
    /// Entries of other versions are skipped; empty or wrong-length ones never match.
    pub fn matches_any(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.mac(msg_id, timestamp, body);
        header.split(' ').any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            if encoded.len() != SIGNATURE_BASE64_LEN {
                return false;
            }
            match BASE64.decode(encoded) {
                Ok(candidate) => constant_time_eq(&candidate, &expected),
                Err(_) => false,
            }
        })
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Why a received webhook failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("timestamp is not an integer")]
    BadTimestamp,
    #[error("timestamp is {0} s away from now, more than the tolerance")]
    TimestampOutOfTolerance(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a webhook from its three Standard Webhooks header values.
pub fn verify(
    secret: &Secret,
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signature_header: Option<&str>,
    body: &[u8],
    now_seconds: i64,
    tolerance_seconds: i64,
) -> Result<(), VerifyError> {
    let msg_id = msg_id.ok_or(VerifyError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(VerifyError::MissingHeader("webhook-timestamp"))?;
    let signature_header =
        signature_header.ok_or(VerifyError::MissingHeader("webhook-signature"))?;
    let timestamp: i64 = timestamp.parse().map_err(|_| VerifyError::BadTimestamp)?;
    let skew = now_seconds - timestamp;
    if skew.abs() > tolerance_seconds {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    if secret
        .signing_key()
        .matches_any(msg_id, timestamp, body, signature_header)
    {
        Ok(())
    } else {
        Err(VerifyError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published example.
    const SPEC_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SPEC_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const SPEC_TIMESTAMP: i64 = 1_649_367_553;
    const SPEC_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SPEC_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    #[test]
    fn signs_the_standard_webhooks_example() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let signature = secret
            .signing_key()
            .sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_the_standard_webhooks_example() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let result = verify(
            &secret,
            Some(SPEC_ID),
            Some(&SPEC_TIMESTAMP.to_string()),
            Some(&format!("v1a,ignored {SPEC_SIGNATURE}")),
            SPEC_BODY,
            SPEC_TIMESTAMP + 10,
            DEFAULT_TOLERANCE_SECONDS,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn rejects_empty_truncated_and_tampered_signatures() {
        let key = Secret::parse(SPEC_SECRET).unwrap().signing_key();
        for header in [
            "",
            "v1,",
            "v1",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kk",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=AAAA",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkx=",
            "v2,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ] {
            assert!(
                !key.matches_any(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, header),
                "accepted {header:?}"
            );
        }
        assert!(!key.matches_any(SPEC_ID, SPEC_TIMESTAMP, b"{}", SPEC_SIGNATURE));
    }

    #[test]
    fn rejects_old_timestamps() {
        let secret = Secret::parse(SPEC_SECRET).unwrap();
        let result = verify(
            &secret,
            Some(SPEC_ID),
            Some(&SPEC_TIMESTAMP.to_string()),
            Some(SPEC_SIGNATURE),
            SPEC_BODY,
            SPEC_TIMESTAMP + DEFAULT_TOLERANCE_SECONDS + 1,
            DEFAULT_TOLERANCE_SECONDS,
        );
        assert!(matches!(
            result,
            Err(VerifyError::TimestampOutOfTolerance(_))
        ));
    }

    #[test]
    fn generated_secrets_round_trip() {
        let secret = Secret::generate();
        let wire = secret.to_wire();
        assert!(wire.starts_with("whsec_"));
        assert_eq!(wire.len(), 6 + 32);
        assert_eq!(Secret::parse(&wire).unwrap(), secret);
    }

    #[test]
    fn rejects_malformed_secrets() {
        for text in [
            "whsec_",
            "whsec_!!!!",
            "whsec_c2hvcnQ=",
            "not base64 at all",
        ] {
            assert_eq!(Secret::parse(text), Err(SecretError::Malformed), "{text}");
        }
    }
}
