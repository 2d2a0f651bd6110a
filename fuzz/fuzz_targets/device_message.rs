//! Device messages (issue 16): any topic and payload a device publishes, through a route: no
//! panic; what becomes a message has a valid event type, ordering key and event id, and a
//! JSON body only when the payload is a JSON object (else the bytes as they came).
#![no_main]

use kait_devices::{Body, Route, RouteSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|byte| *byte == b'\n') else {
        return;
    };
    let (topic, payload) = (&data[..split], &data[split + 1..]);
    let topic = String::from_utf8_lossy(topic);
    let route = Route::parse(&RouteSpec {
        topic: "sites/{site}/devices/{device}/events/{event}".into(),
        app: None,
        app_segment: Some("site".into()),
        event_type: "device.{event}".into(),
        ordering_key: None,
        event_id_pointer: Some("/id".into()),
    })
    .expect("the route parses");
    let Some(Ok(message)) = route.message(&topic, payload, 64) else {
        return;
    };
    assert!(kait_core::validate::event_type_name(&message.event_type).is_ok());
    assert!(kait_core::validate::uid(&message.app).is_ok());
    if let Some(key) = &message.ordering_key {
        assert!(kait_core::validate::ordering_key(key).is_ok());
    }
    if let Some(id) = &message.event_id {
        assert!(kait_core::validate::key("eventId", id).is_ok());
    }
    match message.body {
        Body::Json(text) => {
            assert_eq!(text.as_bytes(), payload);
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok());
        }
        Body::Raw { bytes, .. } => assert_eq!(bytes, payload),
    }
});
