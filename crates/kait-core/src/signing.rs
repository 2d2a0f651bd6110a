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
/// Prefixes of an Ed25519 secret (signing) key and public (verifying) key.
pub const ED25519_SECRET_PREFIX: &str = "whsk_";
pub const ED25519_PUBLIC_PREFIX: &str = "whpk_";
/// Random bytes in a generated secret (Svix uses 24, giving 32 base64 characters).
const GENERATED_SECRET_BYTES: usize = 24;
/// Bounds on a caller-supplied secret's key length, after base64 decoding.
const MIN_KEY_BYTES: usize = 24;
const MAX_KEY_BYTES: usize = 75;
/// Length of a base64 HMAC-SHA256 signature, and of a base64 Ed25519 signature.
const SIGNATURE_BASE64_LEN: usize = 44;
const ED25519_SIGNATURE_BASE64_LEN: usize = 88;
/// How far a webhook's timestamp may be from now before verification fails.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 5 * 60;

/// The signature schemes of the Standard Webhooks spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC-SHA256 with a shared secret (`v1`).
    Symmetric,
    /// Ed25519: Kait keeps the secret key, receivers verify with the public key (`v1a`).
    Ed25519,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Symmetric => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hmac-sha256" | "v1" => Some(Self::Symmetric),
            "ed25519" | "v1a" => Some(Self::Ed25519),
            _ => None,
        }
    }
}

/// An endpoint's signing secret: `whsec_<base64 key>` (HMAC) or `whsk_<base64 seed>` (Ed25519).
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Symmetric(Vec<u8>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(…)")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "secret must be `whsec_` plus base64 of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, or `whsk_` plus a base64 Ed25519 key"
    )]
    Malformed,
}

fn decode_ed25519_seed(encoded: &str) -> Result<[u8; 32], SecretError> {
    let bytes = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
    // A bare 32-byte seed, or the common 64-byte seed-then-public-key form.
    match bytes.len() {
        32 | 64 => Ok(bytes[..32].try_into().expect("length checked")),
        _ => Err(SecretError::Malformed),
    }
}

impl Secret {
    /// A new random symmetric secret.
    pub fn generate() -> Self {
        Self::generate_for(Scheme::Symmetric)
    }

    pub fn generate_for(scheme: Scheme) -> Self {
        match scheme {
            Scheme::Symmetric => {
                let mut key = vec![0u8; GENERATED_SECRET_BYTES];
                rand::rng().fill_bytes(&mut key);
                Self::Symmetric(key)
            }
            Scheme::Ed25519 => {
                let mut seed = [0u8; 32];
                rand::rng().fill_bytes(&mut seed);
                Self::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed)))
            }
        }
    }

    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Symmetric(_) => Scheme::Symmetric,
            Self::Ed25519(_) => Scheme::Ed25519,
        }
    }

    /// Parses `whsec_<base64>` (the prefix is optional, as in Svix) or `whsk_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if let Some(encoded) = text.strip_prefix(ED25519_SECRET_PREFIX) {
            let seed = decode_ed25519_seed(encoded)?;
            return Ok(Self::Ed25519(Box::new(
                ed25519_dalek::SigningKey::from_bytes(&seed),
            )));
        }
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if !(MIN_KEY_BYTES..=MAX_KEY_BYTES).contains(&key.len()) {
            return Err(SecretError::Malformed);
        }
        Ok(Self::Symmetric(key))
    }

    /// Parses without the length bounds: for verifying with secrets issued elsewhere,
    /// such as the Standard Webhooks test vector.
    pub fn parse_lenient(text: &str) -> Result<Self, SecretError> {
        if text.starts_with(ED25519_SECRET_PREFIX) {
            return Self::parse(text);
        }
        let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
        if key.is_empty() {
            return Err(SecretError::Malformed);
        }
        Ok(Self::Symmetric(key))
    }

    /// The wire form, `whsec_<base64>` or `whsk_<base64 seed>`.
    pub fn to_wire(&self) -> String {
        match self {
            Self::Symmetric(key) => format!("{SECRET_PREFIX}{}", BASE64.encode(key)),
            Self::Ed25519(key) => {
                format!("{ED25519_SECRET_PREFIX}{}", BASE64.encode(key.to_bytes()))
            }
        }
    }

    /// What a receiver needs to verify: the shared secret, or only the public key.
    pub fn verification_key(&self) -> String {
        match self {
            Self::Symmetric(_) => self.to_wire(),
            Self::Ed25519(key) => format!(
                "{ED25519_PUBLIC_PREFIX}{}",
                BASE64.encode(key.verifying_key().to_bytes())
            ),
        }
    }

    pub fn signing_key(&self) -> SigningKey {
        match self {
            Self::Symmetric(key) => SigningKey::Hmac(
                HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            ),
            Self::Ed25519(key) => SigningKey::Ed25519(key.clone()),
        }
    }
}

/// A prepared signer: an HMAC-SHA256 state with the key already absorbed (cheap to clone per
/// message), or an Ed25519 key.
#[derive(Clone)]
pub enum SigningKey {
    Hmac(HmacSha256),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningKey(…)")
    }
}

/// Feeds `"{msg_id}.{timestamp}.{body}"` to `update` without building the string.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8], mut update: impl FnMut(&[u8])) {
    update(msg_id.as_bytes());
    update(b".");
    update(timestamp.to_string().as_bytes());
    update(b".");
    update(body);
}

fn signed_content_bytes(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    signed_content(msg_id, timestamp, body, |part| {
        content.extend_from_slice(part)
    });
    content
}

impl SigningKey {
    fn mac(keyed: &HmacSha256, msg_id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = keyed.clone();
        signed_content(msg_id, timestamp, body, |part| mac.update(part));
        mac.finalize().into_bytes().into()
    }

    /// The `v1,<base64>` (HMAC) or `v1a,<base64>` (Ed25519) signature of one webhook.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        match self {
            Self::Hmac(keyed) => {
                let mut signature = String::with_capacity(3 + SIGNATURE_BASE64_LEN);
                signature.push_str("v1,");
                BASE64.encode_string(Self::mac(keyed, msg_id, timestamp, body), &mut signature);
                signature
            }
            Self::Ed25519(key) => {
                use ed25519_dalek::Signer;
                let content = signed_content_bytes(msg_id, timestamp, body);
                let mut signature = String::with_capacity(4 + ED25519_SIGNATURE_BASE64_LEN);
                signature.push_str("v1a,");
                BASE64.encode_string(key.sign(&content).to_bytes(), &mut signature);
                signature
            }
        }
    }

    /// Whether any `v1,` entry of a space-separated `webhook-signature` header matches.
    /// Entries of other versions are skipped; empty or wrong-length ones never match.
    pub fn matches_any(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        match self {
            Self::Hmac(keyed) => {
                let expected = Self::mac(keyed, msg_id, timestamp, body);
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
            Self::Ed25519(key) => {
                ed25519_matches_any(&key.verifying_key(), msg_id, timestamp, body, header)
            }
        }
    }
}

/// Whether any `v1a,` entry verifies with `public_key` (strict Ed25519 verification).
fn ed25519_matches_any(
    public_key: &ed25519_dalek::VerifyingKey,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let content = signed_content_bytes(msg_id, timestamp, body);
    header.split(' ').any(|entry| {
        let Some(encoded) = entry.strip_prefix("v1a,") else {
            return false;
        };
        if encoded.len() != ED25519_SIGNATURE_BASE64_LEN {
            return false;
        }
        let Ok(bytes) = BASE64.decode(encoded) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        public_key
            .verify_strict(&content, &ed25519_dalek::Signature::from_bytes(&bytes))
            .is_ok()
    })
}

/// What a receiver verifies with: a shared secret (`whsec_`), or a public key (`whpk_`).
#[derive(Clone)]
pub enum VerificationKey {
    Signing(SigningKey),
    Ed25519Public(ed25519_dalek::VerifyingKey),
}

impl VerificationKey {
    /// Parses `whsec_…`, `whsk_…` or `whpk_…`.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        if let Some(encoded) = text.strip_prefix(ED25519_PUBLIC_PREFIX) {
            let bytes = BASE64.decode(encoded).map_err(|_| SecretError::Malformed)?;
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretError::Malformed)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| SecretError::Malformed)?;
            return Ok(Self::Ed25519Public(key));
        }
        Ok(Self::Signing(Secret::parse_lenient(text)?.signing_key()))
    }

    pub fn matches_any(&self, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        match self {
            Self::Signing(key) => key.matches_any(msg_id, timestamp, body, header),
            Self::Ed25519Public(key) => ed25519_matches_any(key, msg_id, timestamp, body, header),
        }
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
    key: &VerificationKey,
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
    // The timestamp is the sender's: a far one must not overflow (a panic in debug builds,
    // and in release a wrapped skew that would pass the tolerance check).
    let skew = now_seconds.saturating_sub(timestamp);
    if skew
        .checked_abs()
        .is_none_or(|skew| skew > tolerance_seconds)
    {
        return Err(VerifyError::TimestampOutOfTolerance(skew));
    }
    if key.matches_any(msg_id, timestamp, body, signature_header) {
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

    /// Found while writing the `signature_headers` fuzz target: a timestamp near `i64::MIN`
    /// overflowed the skew (a panic with overflow checks, a wrapped value without them).
    #[test]
    fn far_timestamps_are_out_of_tolerance_not_overflows() {
        let key = VerificationKey::parse(SPEC_SECRET).unwrap();
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX, -1] {
            let result = verify(
                &key,
                Some(SPEC_ID),
                Some(&timestamp.to_string()),
                Some(SPEC_SIGNATURE),
                SPEC_BODY,
                SPEC_TIMESTAMP,
                DEFAULT_TOLERANCE_SECONDS,
            );
            assert!(
                matches!(result, Err(VerifyError::TimestampOutOfTolerance(_))),
                "{timestamp}: {result:?}"
            );
        }
    }

    #[test]
    fn verifies_the_standard_webhooks_example() {
        let key = VerificationKey::parse(SPEC_SECRET).unwrap();
        let result = verify(
            &key,
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
        let key = VerificationKey::parse(SPEC_SECRET).unwrap();
        let result = verify(
            &key,
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
    fn ed25519_signs_and_verifies_with_the_public_key() {
        let secret = Secret::generate_for(Scheme::Ed25519);
        assert!(secret.to_wire().starts_with("whsk_"));
        let public = secret.verification_key();
        assert!(public.starts_with("whpk_"));
        let signature = secret
            .signing_key()
            .sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert!(signature.starts_with("v1a,"));
        let verifier = VerificationKey::parse(&public).unwrap();
        assert!(verifier.matches_any(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &signature));
        assert!(!verifier.matches_any(SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY, &signature));
        assert!(!verifier.matches_any(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, "v1a,"));
        assert!(!verifier.matches_any(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, &signature[..50]));
        let round_trip = Secret::parse(&secret.to_wire()).unwrap();
        assert_eq!(round_trip, secret);
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
