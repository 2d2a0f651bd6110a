//! Standard Webhooks verification of received requests (`kait verify`, `kait listen`): the
//! three header values and the body are the sender's to choose. Verification must never
//! panic, must accept what Kait signed with the same key, and must refuse anything else.
#![no_main]

use kait_core::signing::{self, Secret, VerificationKey};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.splitn(5, '\n');
    let (Some(key), Some(id), Some(timestamp), Some(signature)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return;
    };
    let body = fields.next().unwrap_or_default().as_bytes();
    let _ = Secret::parse(key);
    let Ok(verification) = VerificationKey::parse(key) else {
        return;
    };
    let result = signing::verify(
        &verification,
        Some(id),
        Some(timestamp),
        Some(signature),
        body,
        NOW,
        signing::DEFAULT_TOLERANCE_SECONDS,
    );
    // A forged signature never verifies: only one made with the secret itself does.
    if let Ok(secret) = Secret::parse(key) {
        let genuine = secret.signing_key().sign(id, NOW, body);
        let accepted = signing::verify(
            &verification,
            Some(id),
            Some(&NOW.to_string()),
            Some(&genuine),
            body,
            NOW,
            signing::DEFAULT_TOLERANCE_SECONDS,
        );
        assert!(
            accepted.is_ok(),
            "a genuine signature was refused: {accepted:?}"
        );
        if result.is_ok() {
            assert!(
                signature
                    .split(' ')
                    .any(|part| genuine.split(' ').any(|g| g == part)),
                "a signature Kait did not make verified"
            );
        }
    }
});
