//! Links to an attachment signed for one endpoint: `/media/{id}?ep=…&exp=…&sig=…`.
//!
//! The link is the receiver's only credential for the bytes, so it names the endpoint it was
//! made for (a leaked link says whose it was), expires (each attempt signs a fresh one, so a
//! retry hours later still works), and is an HMAC-SHA256 over the attachment, the endpoint
//! and the expiry under a key derived from the server's sealing key (the same on every node;
//! links made under the key before a rotation keep working until they expire).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest query string a link has (ids are short; anything longer is not ours).
pub const MAX_QUERY_BYTES: usize = 512;

/// Keys that sign links: the current one signs, all verify.
#[derive(Clone)]
pub struct LinkKeys {
    keys: Vec<[u8; 32]>,
}

impl std::fmt::Debug for LinkKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "LinkKeys({} keys)", self.keys.len())
    }
}

/// Why a link is refused (all answered 403: a receiver can do nothing but ask for a new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is incomplete or malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    Forged,
    #[error("the link has expired")]
    Expired,
}

/// What a valid link grants: this endpoint's receiver may read the attachment until then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub endpoint_id: String,
    pub expires_at: i64,
}

impl LinkKeys {
    /// `current` signs; `previous` (keys before a rotation) still verify.
    pub fn new(current: [u8; 32], previous: impl IntoIterator<Item = [u8; 32]>) -> Self {
        let mut keys = vec![current];
        keys.extend(previous);
        Self { keys }
    }

    fn mac(key: &[u8; 32], attachment_id: &str, endpoint_id: &str, expires_at: i64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"kait-media-link.v1\n");
        mac.update(attachment_id.as_bytes());
        mac.update(b"\n");
        mac.update(endpoint_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires_at.to_string().as_bytes());
        mac
    }

    /// The query string of a link to `attachment_id` for `endpoint_id` valid until
    /// `expires_at` (Unix seconds). Ids are URL-safe as they are.
    pub fn sign(&self, attachment_id: &str, endpoint_id: &str, expires_at: i64) -> String {
        let signature = Self::mac(&self.keys[0], attachment_id, endpoint_id, expires_at)
            .finalize()
            .into_bytes();
        format!(
            "ep={endpoint_id}&exp={expires_at}&sig={}",
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// Checks a link's query string for `attachment_id` at `now` (Unix seconds). Every
    /// parameter must be there once and nothing else; the signature is compared in constant
    /// time; expiry is checked after the signature, so a forged expiry is "forged".
    pub fn verify(&self, attachment_id: &str, query: &str, now: i64) -> Result<Grant, LinkError> {
        if query.len() > MAX_QUERY_BYTES {
            return Err(LinkError::Malformed);
        }
        let (mut endpoint, mut expires, mut signature) = (None, None, None);
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "ep" => &mut endpoint,
                "exp" => &mut expires,
                "sig" => &mut signature,
                _ => return Err(LinkError::Malformed),
            };
            if slot.replace(value).is_some() {
                return Err(LinkError::Malformed);
            }
        }
        let (Some(endpoint), Some(expires), Some(signature)) = (endpoint, expires, signature)
        else {
            return Err(LinkError::Malformed);
        };
        let expires_at: i64 = expires
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| expires.parse().ok())
            .flatten()
            .ok_or(LinkError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature.as_bytes())
            .map_err(|_| LinkError::Malformed)?;
        let valid = self.keys.iter().any(|key| {
            Self::mac(key, attachment_id, &endpoint, expires_at)
                .verify_slice(&signature)
                .is_ok()
        });
        if !valid {
            return Err(LinkError::Forged);
        }
        if expires_at <= now {
            return Err(LinkError::Expired);
        }
        Ok(Grant {
            endpoint_id: endpoint.into_owned(),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> LinkKeys {
        LinkKeys::new([7; 32], [[3; 32]])
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let query = keys().sign("att_1", "ep_1", 1_000);
        let grant = keys().verify("att_1", &query, 999).unwrap();
        assert_eq!(grant.endpoint_id, "ep_1");
        assert_eq!(grant.expires_at, 1_000);
        assert_eq!(
            keys().verify("att_1", &query, 1_000),
            Err(LinkError::Expired)
        );
    }

    #[test]
    fn a_link_made_under_the_previous_key_still_verifies() {
        let before_rotation = LinkKeys::new([3; 32], []);
        let query = before_rotation.sign("att_1", "ep_1", 1_000);
        assert!(keys().verify("att_1", &query, 0).is_ok());
        // But not once that key is dropped.
        assert_eq!(
            LinkKeys::new([7; 32], []).verify("att_1", &query, 0),
            Err(LinkError::Forged)
        );
    }

    #[test]
    fn altered_links_are_forged() {
        let query = keys().sign("att_1", "ep_1", 1_000);
        assert_eq!(keys().verify("att_2", &query, 0), Err(LinkError::Forged));
        let other_endpoint = query.replace("ep=ep_1", "ep=ep_2");
        assert_eq!(
            keys().verify("att_1", &other_endpoint, 0),
            Err(LinkError::Forged)
        );
        let later = query.replace("exp=1000", "exp=9000");
        assert_eq!(keys().verify("att_1", &later, 0), Err(LinkError::Forged));
        let mut flipped = query.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == 'A' { 'B' } else { 'A' });
        assert!(keys().verify("att_1", &flipped, 0).is_err());
    }

    #[test]
    fn malformed_links_are_refused() {
        let query = keys().sign("att_1", "ep_1", 1_000);
        for bad in [
            String::new(),
            "ep=ep_1&exp=1000".to_owned(),
            format!("{query}&extra=1"),
            format!("{query}&ep=ep_1"),
            query.replace("exp=1000", "exp=-1000"),
            query.replace("exp=1000", "exp=1e3"),
            query.replace("sig=", "sig=***"),
            format!("{query}{}", "a".repeat(600)),
        ] {
            assert_eq!(
                keys().verify("att_1", &bad, 0),
                Err(LinkError::Malformed),
                "{bad}"
            );
        }
    }
}
