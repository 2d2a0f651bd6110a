//! Secrets at rest: endpoint signing secrets and custom headers are sealed before they are
//! written and opened as rows are read, with a key kept outside the database.
//!
//! A copy of the database (a stolen SQLite file, a `pg_dump`, a backup) then holds no usable
//! signing secret and no receiver credential. Sealing is ChaCha20-Poly1305 with a random
//! nonce; the associated data names the field and the endpoint, so a sealed value copied
//! into another row or column does not open. A sealed value reads
//! `kait:sealed:v1:<key id>:<base64 of nonce and ciphertext>`, where the key id is the first
//! four bytes of the key's SHA-256: a store holds the current key and any previous ones, and
//! opens a value with whichever it names. Values written before sealing existed are plain
//! text; they are read as they are and sealed again when the store opens
//! ([`SecretKeys::needs_resealing`]), which is also how a key rotation completes.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use kait_core::signing::Secret;
use kait_core::{Endpoint, Source};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::StoreError;

const PREFIX: &str = "kait:sealed:v1:";
const NONCE_BYTES: usize = 12;
/// The length of a key, raw.
pub const KEY_BYTES: usize = 32;

/// Why a stored value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error(
        "a secret was sealed with key {0}, which this node was not given \
         (every node needs the same secrets key; see --secrets-key-file)"
    )]
    UnknownKey(String),
    #[error("a sealed secret is damaged or belongs to another field")]
    Damaged,
    #[error("a secrets key must be {KEY_BYTES} bytes, base64-encoded")]
    BadKey,
}

impl SealError {
    /// A key this node was not given is its configuration's fault; anything else is data
    /// that does not open.
    fn into_store_error(self, context: &str) -> StoreError {
        match self {
            SealError::UnknownKey(_) => StoreError::InvalidConfig(format!("{context}: {self}")),
            other => StoreError::corrupt(format!("{context}: {other}")),
        }
    }
}

/// One key: the cipher and its id.
#[derive(Clone)]
pub struct SealingKey {
    id: String,
    cipher: ChaCha20Poly1305,
    /// Where keys for other purposes come from (see [`SealingKey::derive`]), so that one
    /// secret outside the database serves every node.
    subkey_base: [u8; 32],
}

impl SealingKey {
    pub fn from_bytes(bytes: &[u8; KEY_BYTES]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            id: digest[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect(),
            cipher: ChaCha20Poly1305::new(Key::from_slice(bytes)),
            subkey_base: Sha256::new()
                .chain_update(b"kait-subkeys.v1\n")
                .chain_update(bytes)
                .finalize()
                .into(),
        }
    }

    /// A key for `purpose` (e.g. signing attachment links), derived from this one: the same
    /// on every node that holds this key, independent of the sealing cipher and of other
    /// purposes' keys.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.subkey_base)
            .chain_update(purpose.as_bytes())
            .finalize()
            .into()
    }

    /// Reads a key in its text form (base64, as [`SealingKey::generate`] writes it).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        let bytes: [u8; KEY_BYTES] = bytes.try_into().map_err(|_| SealError::BadKey)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// A new random key and its text form.
    pub fn generate() -> (Self, String) {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        (Self::from_bytes(&bytes), text)
    }

    /// The key's id, as sealed values name it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "SealingKey({})", self.id)
    }
}

/// The keys a store seals and opens with.
#[derive(Debug, Clone)]
pub struct SecretKeys {
    current: SealingKey,
    previous: Vec<SealingKey>,
}

impl SecretKeys {
    /// Seals with `current`; opens with it or any of `previous` (during a rotation).
    pub fn new(current: SealingKey, previous: Vec<SealingKey>) -> Self {
        Self { current, previous }
    }

    /// Random keys, for tests.
    pub fn ephemeral() -> Self {
        Self::new(SealingKey::generate().0, Vec::new())
    }

    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// The keys for `purpose` derived from the current key and then the previous ones.
    pub fn derived(&self, purpose: &str) -> ([u8; 32], Vec<[u8; 32]>) {
        (
            self.current.derive(purpose),
            self.previous
                .iter()
                .map(|key| key.derive(purpose))
                .collect(),
        )
    }

    /// Seals `plaintext`, bound to `field` (e.g. `endpoint.secret:ep_…`).
    pub fn seal(&self, field: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: field.as_bytes(),
                },
            )
            .expect("sealing in memory cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!(
            "{PREFIX}{}:{}",
            self.current.id,
            base64::engine::general_purpose::STANDARD.encode(sealed)
        )
    }

    /// Opens a stored value bound to `field`; plain text from before sealing passes as it is.
    pub fn open<'a>(&self, field: &str, stored: &'a str) -> Result<Cow<'a, str>, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(Cow::Borrowed(stored));
        };
        let (key_id, encoded) = rest.split_once(':').ok_or(SealError::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id == key_id)
            .ok_or_else(|| SealError::UnknownKey(key_id.to_owned()))?;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| SealError::Damaged)?;
        if sealed.len() < NONCE_BYTES {
            return Err(SealError::Damaged);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let plaintext = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: field.as_bytes(),
                },
            )
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(plaintext)
            .map(Cow::Owned)
            .map_err(|_| SealError::Damaged)
    }

    /// Whether a stored value should be sealed again: plain text, or sealed with a key that
    /// is not the current one. An unknown key is an error, so a node given the wrong key
    /// stops at start-up instead of failing every delivery.
    pub fn needs_resealing(&self, stored: &str) -> Result<bool, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(true);
        };
        let key_id = rest.split_once(':').ok_or(SealError::Damaged)?.0;
        if key_id == self.current.id {
            return Ok(false);
        }
        if self.previous.iter().any(|key| key.id == key_id) {
            return Ok(true);
        }
        Err(SealError::UnknownKey(key_id.to_owned()))
    }
}

/// The associated data of an endpoint's sealed field.
pub fn endpoint_field(field: &str, endpoint_id: &str) -> String {
    format!("endpoint.{field}:{endpoint_id}")
}

/// The associated data a source's sealed field is bound to.
pub fn source_field(field: &str, source_id: &str) -> String {
    format!("source.{field}:{source_id}")
}

/// A source's sealed columns, as both backends write them.
pub struct SealedSource {
    pub config: String,
    pub token: String,
    pub previous_token: Option<String>,
}

/// A source's sealed columns as read back (the previous token only while it has an expiry).
pub struct StoredSourceSecrets {
    pub source_id: String,
    pub config: String,
    pub token: String,
    pub previous_token: Option<String>,
}

/// A table with sealed columns, as resealing at open walks it: three sealed text columns
/// (the last one nullable, and read only while `expiry` is set), and how one row is sealed
/// again with the current key (`None` when it already is).
pub struct SealedTable {
    pub table: &'static str,
    pub columns: [&'static str; 3],
    pub expiry: &'static str,
    pub reseal: fn(&SecretKeys, &str, [Option<String>; 3]) -> ResealedRow,
}

/// A row's three sealed columns sealed again, or `None` when they already were.
pub type ResealedRow = Result<Option<[Option<String>; 3]>, StoreError>;

/// Every table whose columns are sealed. A new sealed table is added here and both backends
/// reseal it on a key rotation.
pub const SEALED_TABLES: [SealedTable; 2] = [
    SealedTable {
        table: "endpoint",
        columns: ["secret", "headers", "previous_secret"],
        expiry: "previous_secret_expires_at",
        reseal: |keys, id, [secret, headers, previous_secret]| {
            let stored = StoredEndpointSecrets {
                endpoint_id: id.to_owned(),
                secret: secret.unwrap_or_default(),
                headers: headers.unwrap_or_default(),
                previous_secret,
            };
            Ok(keys.reseal_endpoint(&stored)?.map(|sealed| {
                [
                    Some(sealed.secret),
                    Some(sealed.headers),
                    sealed.previous_secret,
                ]
            }))
        },
    },
    SealedTable {
        table: "source",
        columns: ["config", "token", "previous_token"],
        expiry: "previous_token_expires_at",
        reseal: |keys, id, [config, token, previous_token]| {
            let stored = StoredSourceSecrets {
                source_id: id.to_owned(),
                config: config.unwrap_or_default(),
                token: token.unwrap_or_default(),
                previous_token,
            };
            Ok(keys.reseal_source(&stored)?.map(|sealed| {
                [
                    Some(sealed.config),
                    Some(sealed.token),
                    sealed.previous_token,
                ]
            }))
        },
    },
];

/// An endpoint's sealed columns, as both backends write them.
pub struct SealedEndpoint {
    pub secret: String,
    pub headers: String,
    pub previous_secret: Option<String>,
}

/// An endpoint row's sealed columns as read, for resealing.
pub struct StoredEndpointSecrets {
    pub endpoint_id: String,
    pub secret: String,
    pub headers: String,
    /// Only when it is still in use (it has an expiry).
    pub previous_secret: Option<String>,
}

/// An endpoint's sealed columns, opened.
pub struct OpenedEndpoint {
    pub secret: Secret,
    pub headers: BTreeMap<String, String>,
    pub previous_secret: Option<Secret>,
}

impl SecretKeys {
    pub fn seal_source(&self, source: &Source) -> SealedSource {
        let id = source.id.as_str();
        SealedSource {
            config: self.seal(&source_field("config", id), &source.config.to_string()),
            token: self.seal(&source_field("token", id), &source.token),
            previous_token: source
                .previous_token
                .as_ref()
                .map(|(token, _)| self.seal(&source_field("previous_token", id), token)),
        }
    }

    /// Opens a source's sealed columns: its config, token and previous token.
    pub fn open_source(
        &self,
        source_id: &str,
        config: &str,
        token: &str,
        previous_token: Option<&str>,
    ) -> Result<(serde_json::Value, String, Option<String>), StoreError> {
        let open = |field: &str, stored: &str| {
            self.open(&source_field(field, source_id), stored)
                .map(Cow::into_owned)
                .map_err(|error| error.into_store_error(&format!("source {source_id}")))
        };
        let config = serde_json::from_str(&open("config", config)?).map_err(|error| {
            StoreError::corrupt(format!("source {source_id}: config unreadable: {error}"))
        })?;
        let previous = previous_token
            .map(|stored| open("previous_token", stored))
            .transpose()?;
        Ok((config, open("token", token)?, previous))
    }

    /// The source's columns sealed again with the current key, or `None` when they already
    /// are (see [`SecretKeys::reseal_endpoint`]).
    pub fn reseal_source(
        &self,
        stored: &StoredSourceSecrets,
    ) -> Result<Option<SealedSource>, StoreError> {
        let needed = [
            Some(stored.config.as_str()),
            Some(stored.token.as_str()),
            stored.previous_token.as_deref(),
        ]
        .into_iter()
        .flatten()
        .map(|value| self.needs_resealing(value))
        .collect::<Result<Vec<bool>, SealError>>()
        .map_err(|error| error.into_store_error("resealing"))?
        .into_iter()
        .any(|needed| needed);
        if !needed {
            return Ok(None);
        }
        let id = stored.source_id.as_str();
        let reseal = |field: &str, value: &str| -> Result<String, StoreError> {
            let field = source_field(field, id);
            let plain = self
                .open(&field, value)
                .map_err(|error| error.into_store_error(&format!("source {id}")))?;
            Ok(self.seal(&field, &plain))
        };
        Ok(Some(SealedSource {
            config: reseal("config", &stored.config)?,
            token: reseal("token", &stored.token)?,
            previous_token: stored
                .previous_token
                .as_deref()
                .map(|value| reseal("previous_token", value))
                .transpose()?,
        }))
    }

    pub fn seal_endpoint(&self, endpoint: &Endpoint) -> SealedEndpoint {
        let id = endpoint.id.as_str();
        let headers = serde_json::to_string(&endpoint.headers).expect("headers serialize");
        SealedEndpoint {
            secret: self.seal(&endpoint_field("secret", id), &endpoint.secret.to_wire()),
            headers: self.seal(&endpoint_field("headers", id), &headers),
            previous_secret: endpoint.previous_secret.as_ref().map(|(secret, _)| {
                self.seal(&endpoint_field("previous_secret", id), &secret.to_wire())
            }),
        }
    }

    /// Opens an endpoint row's sealed columns (plain text from before sealing too).
    pub fn open_endpoint(
        &self,
        endpoint_id: &str,
        secret: &str,
        headers: &str,
        previous_secret: Option<&str>,
    ) -> Result<OpenedEndpoint, StoreError> {
        let open = |field: &str, stored: &str| {
            self.open(&endpoint_field(field, endpoint_id), stored)
                .map(Cow::into_owned)
                .map_err(|error| error.into_store_error(&format!("endpoint {endpoint_id}")))
        };
        let parse_secret = |text: String| {
            Secret::parse_lenient(&text).map_err(|error| {
                StoreError::corrupt(format!(
                    "endpoint {endpoint_id}: secret unreadable: {error}"
                ))
            })
        };
        let headers = serde_json::from_str(&open("headers", headers)?).map_err(|error| {
            StoreError::corrupt(format!(
                "endpoint {endpoint_id}: headers unreadable: {error}"
            ))
        })?;
        Ok(OpenedEndpoint {
            secret: parse_secret(open("secret", secret)?)?,
            headers,
            previous_secret: previous_secret
                .map(|stored| open("previous_secret", stored).and_then(parse_secret))
                .transpose()?,
        })
    }

    /// An endpoint row's sealed columns sealed anew with the current key, or `None` when
    /// they already are. Each backend only reads the rows and writes what this returns.
    pub fn reseal_endpoint(
        &self,
        stored: &StoredEndpointSecrets,
    ) -> Result<Option<SealedEndpoint>, StoreError> {
        let previous = stored.previous_secret.as_deref();
        let mut needed = false;
        for value in [
            Some(stored.secret.as_str()),
            Some(stored.headers.as_str()),
            previous,
        ]
        .into_iter()
        .flatten()
        {
            needed |= self
                .needs_resealing(value)
                .map_err(|error| error.into_store_error("resealing"))?;
        }
        if !needed {
            return Ok(None);
        }
        let id = stored.endpoint_id.as_str();
        let opened = self.open_endpoint(id, &stored.secret, &stored.headers, previous)?;
        let field = |name| endpoint_field(name, id);
        let headers = serde_json::to_string(&opened.headers).expect("headers serialize");
        Ok(Some(SealedEndpoint {
            secret: self.seal(&field("secret"), &opened.secret.to_wire()),
            headers: self.seal(&field("headers"), &headers),
            previous_secret: opened
                .previous_secret
                .map(|secret| self.seal(&field("previous_secret"), &secret.to_wire())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_field() {
        let keys = SecretKeys::ephemeral();
        let sealed = keys.seal("endpoint.secret:ep_1", "whsec_abc");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(
            keys.open("endpoint.secret:ep_1", &sealed).unwrap(),
            "whsec_abc"
        );
        // Moved to another endpoint's row, or another column: it does not open.
        assert_eq!(
            keys.open("endpoint.secret:ep_2", &sealed),
            Err(SealError::Damaged)
        );
        let other = SecretKeys::ephemeral();
        assert!(matches!(
            other.open("endpoint.secret:ep_1", &sealed),
            Err(SealError::UnknownKey(_))
        ));
        // Two seals of the same value differ (random nonce).
        assert_ne!(keys.seal("f", "x"), keys.seal("f", "x"));
    }

    #[test]
    fn plain_text_passes_and_is_marked_for_sealing() {
        let keys = SecretKeys::ephemeral();
        assert_eq!(keys.open("f", "whsec_plain").unwrap(), "whsec_plain");
        assert_eq!(keys.needs_resealing("whsec_plain"), Ok(true));
        assert_eq!(keys.needs_resealing(&keys.seal("f", "x")), Ok(false));
    }

    #[test]
    fn rotation_opens_old_values_and_reseals_them() {
        let (old, _) = SealingKey::generate();
        let (new, _) = SealingKey::generate();
        let before = SecretKeys::new(old.clone(), Vec::new());
        let sealed_old = before.seal("f", "secret");
        let during = SecretKeys::new(new.clone(), vec![old]);
        assert_eq!(during.open("f", &sealed_old).unwrap(), "secret");
        assert_eq!(during.needs_resealing(&sealed_old), Ok(true));
        let after = SecretKeys::new(new, Vec::new());
        assert!(matches!(
            after.needs_resealing(&sealed_old),
            Err(SealError::UnknownKey(_))
        ));
    }

    #[test]
    fn derived_keys_depend_on_key_and_purpose_only() {
        let (key, text) = SealingKey::generate();
        let again = SealingKey::parse(&text).unwrap();
        assert_eq!(key.derive("media-links"), again.derive("media-links"));
        assert_ne!(key.derive("media-links"), key.derive("other"));
        assert_ne!(
            key.derive("media-links"),
            SealingKey::generate().0.derive("media-links")
        );
        let keys = SecretKeys::new(key.clone(), vec![again]);
        let (current, previous) = keys.derived("media-links");
        assert_eq!(current, key.derive("media-links"));
        assert_eq!(previous.len(), 1);
    }

    #[test]
    fn keys_parse_from_their_text_form() {
        let (key, text) = SealingKey::generate();
        assert_eq!(
            SealingKey::parse(&format!("{text}\n")).unwrap().id(),
            key.id()
        );
        assert_eq!(
            SealingKey::parse("c2hvcnQ=").unwrap_err(),
            SealError::BadKey
        );
        assert_eq!(
            SealingKey::parse("not base64!").unwrap_err(),
            SealError::BadKey
        );
    }

    #[test]
    fn damaged_values_are_errors_not_panics() {
        let keys = SecretKeys::ephemeral();
        let id = keys.current_id().to_owned();
        for stored in [
            format!("{PREFIX}{id}"),
            format!("{PREFIX}{id}:"),
            format!("{PREFIX}{id}:AAAA"),
            format!("{PREFIX}{id}:!!!"),
        ] {
            assert_eq!(keys.open("f", &stored), Err(SealError::Damaged), "{stored}");
        }
    }
}
