//! The operator dashboard's sign-in: the admin token, exchanged once for a session cookie.
//!
//! The cookie is `{expiry}.{mac}`, an HMAC-SHA256 under a key derived from the admin token,
//! so it is checked on any node without a session table, and changing the admin token ends
//! every session. It is `HttpOnly` (scripts never see it) and `SameSite=Strict` (no other site
//! can make the browser send it). A request that changes something must also carry the
//! session's CSRF token in `X-Kait-Csrf` (a second MAC of the same expiry, given to the page
//! at sign-in): a form or link from elsewhere cannot set that header.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "kait_session";
/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-kait-csrf";
/// How long a session lasts.
pub const LIFETIME_SECS: i64 = 12 * 3600;

/// The MAC key of sessions, derived from the admin token.
fn key(admin_token: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"kait dashboard session v1\0")
        .chain_update(admin_token.as_bytes())
        .finalize()
        .into()
}

fn mac(admin_token: &str, purpose: &str, expires_at: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key(admin_token)).expect("any key length");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(expires_at.to_string().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A new session until `expires_at` (seconds): the cookie value and the CSRF token.
pub fn issue(admin_token: &str, expires_at: i64) -> (String, String) {
    (
        format!("{expires_at}.{}", mac(admin_token, "session", expires_at)),
        csrf_token(admin_token, expires_at),
    )
}

fn csrf_token(admin_token: &str, expires_at: i64) -> String {
    mac(admin_token, "csrf", expires_at)
}

/// The session's expiry if `cookie` is a session this admin token issued and `now` is
/// before its end.
pub fn check(admin_token: &str, cookie: &str, now: i64) -> Option<i64> {
    let (expires_at, presented) = cookie.split_once('.')?;
    let expires_at: i64 = expires_at.parse().ok()?;
    let expected = mac(admin_token, "session", expires_at);
    (crate::auth::constant_time_eq(presented.as_bytes(), expected.as_bytes()) && now < expires_at)
        .then_some(expires_at)
}

/// Whether `presented` is the CSRF token of the session ending at `expires_at`.
pub fn csrf_matches(admin_token: &str, expires_at: i64, presented: &str) -> bool {
    crate::auth::constant_time_eq(
        presented.as_bytes(),
        csrf_token(admin_token, expires_at).as_bytes(),
    )
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_the_admin_tokens_until_it_ends() {
        let (cookie, csrf) = issue("admin-1", 1_000);
        assert_eq!(check("admin-1", &cookie, 999), Some(1_000));
        assert_eq!(check("admin-1", &cookie, 1_000), None, "ended");
        assert_eq!(check("admin-2", &cookie, 999), None, "another admin token");
        assert!(csrf_matches("admin-1", 1_000, &csrf));
        assert!(!csrf_matches("admin-1", 1_001, &csrf));
        assert!(!csrf_matches("admin-1", 1_000, ""));
        assert_ne!(cookie.split_once('.').unwrap().1, csrf, "two MACs");
    }

    #[test]
    fn forged_and_malformed_cookies_are_refused() {
        let (cookie, _) = issue("admin", 1_000);
        let (_, mac) = cookie.split_once('.').unwrap();
        for forged in [
            format!("2000.{mac}"),
            "1000.".to_owned(),
            "1000".to_owned(),
            String::new(),
            format!("x.{mac}"),
            format!("1000.{}", &mac[1..]),
        ] {
            assert_eq!(check("admin", &forged, 0), None, "{forged}");
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let header = "theme=dark; kait_session=12.ab; other=1";
        assert_eq!(cookie_value(header, COOKIE), Some("12.ab"));
        assert_eq!(cookie_value(header, "missing"), None);
        assert_eq!(cookie_value("kait_session_x=1", COOKIE), None);
    }
}
