//! Each scheme against vectors from outside Kait: the providers' own documentation (GitHub,
//! Slack, the Standard Webhooks spec) or signatures computed with Python's `hmac` module
//! (Stripe, Shopify), never with Kait's own signer. And each way a request is refused.

use serde_json::json;

use super::*;
use crate::config::SourceKind;

fn config(kind: SourceKind, config: serde_json::Value) -> SourceConfig {
    SourceConfig::parse(kind, &config).unwrap()
}

fn refused(result: Result<Verified, Refusal>) -> String {
    result.expect_err("refused").0
}

/// GitHub's documentation ("Validating webhook deliveries"): secret "It's a Secret to
/// Everybody", payload "Hello, World!".
#[test]
fn github_documented_vector() {
    let github = config(
        SourceKind::Github,
        json!({ "secret": "It's a Secret to Everybody" }),
    );
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let headers = [
        ("X-Hub-Signature-256", signature),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ];
    let verified = verify(&github, &headers[..], b"Hello, World!", 0).unwrap();
    assert_eq!(
        verified.event_id.as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert!(refused(verify(&github, &headers[..], b"Hello, World?", 0)).contains("does not match"));
    for bad in [
        "sha256=",
        "sha1=757107ea",
        "sha256=zz",
        "757107ea0eb2509fc211221cce984b8a",
    ] {
        let headers = [("X-Hub-Signature-256", bad)];
        assert!(
            verify(&github, &headers[..], b"Hello, World!", 0).is_err(),
            "{bad}"
        );
    }
    let none: [(&str, &str); 0] = [];
    assert!(refused(verify(&github, &none[..], b"Hello, World!", 0)).contains("missing"));
    // Without a secret (optional in Svix's model) nothing is checked.
    let open = config(SourceKind::Github, json!({}));
    assert!(verify(&open, &none[..], b"anything", 0).is_ok());
}

/// Slack's documentation ("Verifying requests from Slack"): its example signing secret,
/// timestamp and slash-command body.
#[test]
fn slack_documented_vector() {
    let slack = config(
        SourceKind::Slack,
        json!({ "secret": "8f742231b10e8888abcd99yyyzzz85a5" }),
    );
    let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let headers = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ];
    assert!(verify(&slack, &headers[..], body.as_bytes(), 1531420618 + 10).is_ok());
    // The same request six minutes later is a replay.
    let late = refused(verify(
        &slack,
        &headers[..],
        body.as_bytes(),
        1531420618 + 360,
    ));
    assert!(late.contains("a replay"), "{late}");
    assert!(verify(&slack, &headers[..], b"token=changed", 1531420618).is_err());
    let empty = [
        ("X-Slack-Request-Timestamp", "1531420618"),
        ("X-Slack-Signature", "v0="),
    ];
    assert!(verify(&slack, &empty[..], body.as_bytes(), 1531420618).is_err());
}

#[test]
fn slack_url_verification_is_answered_with_its_challenge() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let slack = config(SourceKind::Slack, json!({ "secret": secret }));
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let timestamp = "1700000000";
    let digest = mac(
        secret.as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    )
    .finalize()
    .into_bytes();
    let signature = format!("v0={}", hex::encode(digest));
    let headers = [
        ("X-Slack-Request-Timestamp", timestamp),
        ("X-Slack-Signature", signature.as_str()),
    ];
    let verified = verify(&slack, &headers[..], body, 1700000000).unwrap();
    assert_eq!(
        verified.challenge.as_deref(),
        Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );
}

/// The Standard Webhooks specification's example, under both header spellings.
#[test]
fn standard_webhooks_spec_vector() {
    let source = config(
        SourceKind::StandardWebhooks,
        json!({ "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }),
    );
    let body = br#"{"test": 2432232314}"#;
    for prefix in ["webhook", "svix"] {
        let (id, timestamp, signature) = (
            format!("{prefix}-id"),
            format!("{prefix}-timestamp"),
            format!("{prefix}-signature"),
        );
        let headers = [
            (id.as_str(), "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            (timestamp.as_str(), "1614265330"),
            (
                signature.as_str(),
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        let verified = verify(&source, &headers[..], body, 1614265330).unwrap();
        assert_eq!(
            verified.event_id.as_deref(),
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        assert!(verify(&source, &headers[..], body, 1614265330 + 600).is_err());
        let empty = [
            (id.as_str(), "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            (timestamp.as_str(), "1614265330"),
            (signature.as_str(), "v1,"),
        ];
        assert!(verify(&source, &empty[..], body, 1614265330).is_err());
    }
}

/// Stripe: signed with Python's `hmac` (`hmac.new(secret.encode(), f"{t}.{body}".encode(),
/// sha256).hexdigest()`), including a roll with the old secret's signature listed first.
#[test]
fn stripe_signatures_from_an_independent_signer() {
    let stripe = config(
        SourceKind::Stripe,
        json!({ "secret": "whsec_test_secret_0123456789" }),
    );
    let body = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}"#;
    let current = "2e536652a17af3ed8d9d8b2fb7e1cd06c6a2585edd7414d5eef7e30c03e16910";
    let old = "1f2007c6d518b938459beba94417cb6c6d7cdc385ee7ce2aaca261e45899f2c1";
    let rolling = format!("t=1700000000,v1={old},v1={current},v0=ignored");
    let headers = [("Stripe-Signature", rolling.as_str())];
    let verified = verify(&stripe, &headers[..], body, 1700000100).unwrap();
    assert_eq!(
        verified.event_id.as_deref(),
        Some("evt_1NG8Du2eZvKYlo2CUI79vXWy")
    );
    assert!(refused(verify(&stripe, &headers[..], body, 1700000301)).contains("a replay"));
    let only_old = format!("t=1700000000,v1={old}");
    let headers = [("Stripe-Signature", only_old.as_str())];
    assert!(verify(&stripe, &headers[..], body, 1700000000).is_err());
    for bad in [
        "t=1700000000",
        "t=1700000000,v1=",
        "v1=2e536652a17af3ed8d9d8b2fb7e1cd06c6a2585edd7414d5eef7e30c03e16910",
        "t=soon,v1=2e53",
        "garbage",
    ] {
        let headers = [("Stripe-Signature", bad)];
        assert!(
            verify(&stripe, &headers[..], body, 1700000000).is_err(),
            "{bad}"
        );
    }
}

/// Shopify: signed with Python's `hmac` (base64 of the HMAC-SHA256 of the body).
#[test]
fn shopify_signature_from_an_independent_signer() {
    let shopify = config(
        SourceKind::Shopify,
        json!({ "secret": "shpss_0123456789abcdef" }),
    );
    let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let headers = [
        (
            "X-Shopify-Hmac-Sha256",
            "ne+Twf3BMrJ3AMcsdK/cwASHZl8vw1iJXvr4ORLXiaU=",
        ),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ];
    let verified = verify(&shopify, &headers[..], body, 0).unwrap();
    assert_eq!(
        verified.event_id.as_deref(),
        Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    );
    assert!(verify(&shopify, &headers[..], b"{}", 0).is_err());
    let malformed = [("X-Shopify-Hmac-Sha256", "%%%")];
    assert!(refused(verify(&shopify, &malformed[..], body, 0)).contains("base64"));
}

#[test]
fn generic_sources_check_only_what_they_were_given() {
    let none: [(&str, &str); 0] = [];
    let open = config(SourceKind::GenericWebhook, json!({}));
    assert!(verify(&open, &none[..], b"x", 0).is_ok());
    let bearer = config(
        SourceKind::GenericWebhook,
        json!({ "bearerToken": "tok-123" }),
    );
    let good = [("authorization", "Bearer tok-123")];
    assert!(verify(&bearer, &good[..], b"x", 0).is_ok());
    for bad in ["Bearer tok-124", "Bearer tok-12", "Basic dTpw", "tok-123"] {
        let headers = [("authorization", bad)];
        assert!(verify(&bearer, &headers[..], b"x", 0).is_err(), "{bad}");
    }
    assert!(refused(verify(&bearer, &none[..], b"x", 0)).contains("missing"));
    let basic = config(
        SourceKind::GenericWebhook,
        json!({ "basicAuth": { "username": "u", "password": "p" } }),
    );
    let good = [("Authorization", "Basic dTpw")];
    assert!(verify(&basic, &good[..], b"x", 0).is_ok());
    let wrong = [("Authorization", "Basic dTpx")];
    assert!(verify(&basic, &wrong[..], b"x", 0).is_err());
}

#[test]
fn cron_sources_take_no_requests() {
    let cron = config(
        SourceKind::Cron,
        json!({ "schedule": "* * * * *", "payload": "{}" }),
    );
    let none: [(&str, &str); 0] = [];
    assert!(verify(&cron, &none[..], b"{}", 0).is_err());
}

#[test]
fn constant_time_equality_is_equality() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(constant_time_eq(b"", b""));
}
