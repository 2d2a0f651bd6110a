//! Device messages (issue 16): any topic and payload a device publishes, through an event
//! route and a presence route, and any reply topic: no panic; what becomes a message has a
//! valid event type, ordering key, event id and device, and a JSON body only when the payload
//! is a JSON object (else the bytes as they came); a status names a valid device; a reply
//! names a command id that is a valid topic level.
#![no_main]

use kait_devices::{Body, Reading, ReplyTopic, Route, RouteSpec, check_segment};
use libfuzzer_sys::fuzz_target;

fn route(presence: bool) -> Route {
    Route::parse(&RouteSpec {
        topic: if presence {
            "sites/{site}/devices/{device}/status".into()
        } else {
            "sites/{site}/devices/{device}/events/{event}".into()
        },
        app: None,
        app_segment: Some("site".into()),
        event_type: (!presence).then(|| "device.{event}".into()),
        ordering_key: None,
        event_id_pointer: (!presence).then(|| "/id".into()),
        presence,
        silence_timeout_secs: Some(60),
        attachment_above_bytes: Some(4096),
    })
    .expect("the route parses")
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|byte| *byte == b'\n') else {
        return;
    };
    let (topic, payload) = (&data[..split], &data[split + 1..]);
    let topic = String::from_utf8_lossy(topic);
    if let Some(id) = ReplyTopic::parse("kait/replies")
        .expect("a valid prefix")
        .command_of(&topic)
    {
        assert!(check_segment("commandId", id).is_ok());
    }
    if let Some(Ok(Reading::Status { app, device, .. })) = route(true).read(&topic, payload, 64) {
        assert!(kait_core::validate::uid(&app).is_ok());
        assert!(check_segment("device", &device).is_ok());
    }
    let Some(Ok(message)) = route(false).message(&topic, payload, 64) else {
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
    if let Some(device) = &message.device {
        assert!(check_segment("device", device).is_ok());
    }
    match message.body {
        Body::Json(text) => {
            assert_eq!(text.as_bytes(), payload);
            assert!(serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text).is_ok());
        }
        Body::Raw { bytes, .. } => assert_eq!(bytes, payload),
    }
});
