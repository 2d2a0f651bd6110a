//! XML message bodies (`POST …/msg` with `Content-Type: application/xml`): parsing must never
//! panic or overflow the stack, must respect the depth bound, and what it accepts must render
//! back to XML that parses to the same JSON.
#![no_main]

use kait_core::xml::{Envelope, parse, render};
use libfuzzer_sys::fuzz_target;

const MAX_DEPTH: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(document) = parse(text, MAX_DEPTH) else {
        return;
    };
    let json = serde_json::to_string(&document.payload).expect("a map serializes");
    assert!(
        kait_core::validate::json_depth(&json) <= MAX_DEPTH,
        "depth bound exceeded"
    );
    let envelope = Envelope {
        id: "msg_1",
        event_type: "a.b",
        timestamp: "2026-01-01T00:00:00Z",
    };
    let rendered = String::from_utf8(render(&envelope, &document.payload)).expect("UTF-8");
    let again = parse(&rendered, MAX_DEPTH).expect("Kait's own rendering parses");
    assert_eq!(
        again.payload, document.payload,
        "the mapping does not round-trip"
    );
});
