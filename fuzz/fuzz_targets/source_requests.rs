//! Requests to an incoming source (issue 13): the headers, the body and the source's own
//! `config` object are the outside world's to choose. Reading a config and verifying a request
//! must never panic, and a request that verifies under a provider's scheme must carry that
//! provider's signature header.
#![no_main]

use kait_sources::{SourceConfig, SourceKind, verify};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(4, '\n');
    let (Some(kind), Some(config), Some(headers)) = (fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let body = fields.next().unwrap_or_default().as_bytes();
    let kind = SourceKind::ALL[kind.len() % SourceKind::ALL.len()];
    let config = serde_json::from_str(config).unwrap_or(serde_json::Value::Null);
    let Ok(config) = SourceConfig::parse(kind, &config) else {
        return;
    };
    let _ = config.public();
    let headers: Vec<(&str, &str)> = headers
        .split('\t')
        .filter_map(|pair| pair.split_once(':'))
        .collect();
    if verify(&config, &headers[..], body, NOW).is_ok() {
        let signed_by = match kind {
            SourceKind::Stripe => Some("stripe-signature"),
            SourceKind::Shopify => Some("x-shopify-hmac-sha256"),
            SourceKind::Slack => Some("x-slack-signature"),
            _ => None,
        };
        if let Some(header) = signed_by {
            assert!(
                headers.iter().any(|(name, _)| name.eq_ignore_ascii_case(header)),
                "verified without {header}"
            );
        }
    }
});
