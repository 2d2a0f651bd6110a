//! Bodies received by incoming sources (issue 13), read as the receiving path reads them:
//! the content type and the bytes are the sender's to choose. Reading a body (JSON scanned
//! for depth, XML through the mapping, forms) and naming its event must never panic; the JSON
//! reading is always a JSON object; a body sent as JSON (not raw) is an object, byte for byte
//! the body; an event type is always a valid event type name.
#![no_main]

use kait_sources::{SourceKind, body, event_type};
use libfuzzer_sys::fuzz_target;

const MAX_DEPTH: usize = 32;

fuzz_target!(|data: &[u8]| {
    let (head, bytes) = match data.iter().position(|byte| *byte == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let (content_type, event_header) = head.split_once('\t').unwrap_or((&head, ""));
    let content_type = [
        "application/json",
        "text/xml",
        "application/x-www-form-urlencoded",
        content_type,
    ][content_type.len() % 4];
    let read = body::read(Some(content_type), bytes, MAX_DEPTH);
    let reading: serde_json::Value =
        serde_json::from_str(&read.payload).expect("the JSON reading is JSON");
    assert!(reading.is_object(), "the JSON reading is an object");
    if !read.raw {
        assert_eq!(read.payload.as_bytes(), bytes, "a JSON body is kept byte for byte");
    }
    let headers = [
        ("x-github-event", event_header),
        ("x-shopify-topic", event_header),
    ];
    for kind in SourceKind::ALL {
        let name = event_type(kind, &headers[..], &read.payload);
        assert!(
            kait_core::validate::event_type_name(&name).is_ok(),
            "{name:?} is no event type name"
        );
    }
});
