//! A route: which device messages (a topic pattern) become which Kait messages (the
//! application, fixed or named by a segment; the event type, a template; the ordering key,
//! by default the device; an event id read from the payload by JSON pointer), or which topics
//! carry devices' status (`presence`: online/offline, e.g. a last will) rather than events.

use std::collections::BTreeMap;

use kait_core::validate;
use serde::{Deserialize, Serialize};

use crate::topic::{Template, TopicPattern};

/// A route as written (the API's body, and what the store keeps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// `sites/{site}/devices/{device}/events/{event}`.
    pub topic: String,
    /// The application (id or uid) every message goes to…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// …or the segment whose value is the application's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_segment: Option<String>,
    /// `device.{event}`; required unless the route is a presence route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Default: `{device}` when the topic has that segment, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// A JSON pointer (`/id`) to the device's own id of the message in a JSON payload: the
    /// message's `eventId`, so a message the broker sends again is one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id_pointer: Option<String>,
    /// The topic carries each device's status (`online`/`offline`: its last will, and what it
    /// publishes when it connects), not events. Needs a `{device}` segment.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub presence: bool,
    /// A device heard on this route and then silent this long is offline. Needs a
    /// `{device}` segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_timeout_secs: Option<u64>,
    /// A payload that is not JSON and larger than this many bytes is stored as an
    /// attachment (the webhook carries a signed link instead of the bytes), where the server
    /// keeps attachments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_above_bytes: Option<u64>,
}

/// The largest `attachmentAboveBytes` (the bridge takes publishes of at most 1 MiB).
pub const MAX_ATTACHMENT_ABOVE_BYTES: u64 = 1024 * 1024;

/// The longest silence timeout a route may set (a week).
pub const MAX_SILENCE_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// Where a route's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    /// An application id or uid.
    Fixed(String),
    /// The segment holding the application's uid.
    Segment(String),
}

/// What is wrong with a route, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RouteError {
    pub field: &'static str,
    pub reason: String,
}

fn problem(field: &'static str, reason: impl Into<String>) -> RouteError {
    RouteError {
        field,
        reason: reason.into(),
    }
}

/// A route, checked and ready to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub topic: TopicPattern,
    pub app: AppSource,
    /// `None` for a presence route.
    pub event_type: Option<Template>,
    pub ordering_key: Option<Template>,
    pub event_id_pointer: Option<String>,
    pub presence: bool,
    pub silence_timeout_ms: Option<u64>,
    pub attachment_above_bytes: Option<usize>,
}

/// The body of a device message as Kait keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A JSON object: the message's payload as it came.
    Json(String),
    /// Anything else: sent byte for byte (`application/json` for JSON that is not an object,
    /// `application/octet-stream` otherwise).
    Raw {
        content_type: &'static str,
        bytes: Vec<u8>,
    },
}

/// One device message mapped by a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMessage {
    /// Application id or uid.
    pub app: String,
    pub event_type: String,
    pub ordering_key: Option<String>,
    pub event_id: Option<String>,
    pub body: Body,
    /// The topic's named segments.
    pub segments: BTreeMap<String, String>,
    /// The `{device}` segment, when the topic has one: the device the registry records.
    pub device: Option<String>,
}

/// What one publish on a route's topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// An event, to become a message.
    Event(DeviceMessage),
    /// A device's status on a presence route.
    Status {
        /// Application id or uid.
        app: String,
        device: String,
        online: bool,
    },
}

/// A device id as a topic segment carries it, checked: 1 to 128 bytes, none of `/ + # NUL`.
/// Device ids are also written into command topics, so the same rule holds there.
pub fn check_segment(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err(format!("{field} must be 1 to 128 bytes long"));
    }
    if value.contains(['/', '+', '#', '\0']) {
        return Err(format!("{field} may not contain `/`, `+`, `#` or NUL"));
    }
    Ok(())
}

/// Reads a status payload: `online`/`offline` (also `true`/`false`, `1`/`0`, `connected`/
/// `disconnected`), plain or as a JSON string, or a JSON object with a boolean `online` or a
/// string `status` of those words.
pub fn read_status(payload: &[u8]) -> Result<bool, String> {
    fn word(text: &str) -> Option<bool> {
        match text.trim().to_ascii_lowercase().as_str() {
            "online" | "true" | "1" | "connected" | "up" => Some(true),
            "offline" | "false" | "0" | "disconnected" | "down" => Some(false),
            _ => None,
        }
    }
    const MAX_STATUS: usize = 4096;
    let text = std::str::from_utf8(payload)
        .ok()
        .filter(|text| text.len() <= MAX_STATUS)
        .ok_or("a status is short UTF-8 text")?;
    if let Some(online) = word(text) {
        return Ok(online);
    }
    if validate::json_depth(text) <= 2
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
    {
        let found = match &value {
            serde_json::Value::String(status) => word(status),
            serde_json::Value::Object(fields) => match (fields.get("online"), fields.get("status"))
            {
                (Some(serde_json::Value::Bool(online)), _) => Some(*online),
                (_, Some(serde_json::Value::String(status))) => word(status),
                _ => None,
            },
            _ => None,
        };
        if let Some(online) = found {
            return Ok(online);
        }
    }
    Err("a status is `online` or `offline` (or {\"online\": true|false})".to_owned())
}

impl Route {
    pub fn parse(spec: &RouteSpec) -> Result<Self, RouteError> {
        let topic = TopicPattern::parse(&spec.topic).map_err(|reason| problem("topic", reason))?;
        let app = match (&spec.app, &spec.app_segment) {
            (Some(app), None) => {
                if app.is_empty() || app.len() > 256 {
                    return Err(problem("app", "must be an application id or uid"));
                }
                AppSource::Fixed(app.clone())
            }
            (None, Some(segment)) if topic.has_name(segment) => AppSource::Segment(segment.clone()),
            (None, Some(segment)) => {
                return Err(problem(
                    "appSegment",
                    format!("`{segment}` is not a segment of the topic"),
                ));
            }
            _ => return Err(problem("app", "give app or appSegment, one of them")),
        };
        let event_type = match (&spec.event_type, spec.presence) {
            (Some(text), false) => {
                Some(Template::parse(text, &topic).map_err(|reason| problem("eventType", reason))?)
            }
            (None, false) => return Err(problem("eventType", "an event route needs one")),
            (Some(_), true) => {
                return Err(problem(
                    "eventType",
                    "a presence route makes device.online and device.offline events, no others",
                ));
            }
            (None, true) => None,
        };
        if (spec.presence || spec.silence_timeout_secs.is_some()) && !topic.has_name("device") {
            let field = if spec.presence {
                "presence"
            } else {
                "silenceTimeoutSecs"
            };
            return Err(problem(field, "needs a `{device}` segment in the topic"));
        }
        if let Some(bytes) = spec.attachment_above_bytes
            && !(1..=MAX_ATTACHMENT_ABOVE_BYTES).contains(&bytes)
        {
            return Err(problem(
                "attachmentAboveBytes",
                format!("from 1 to {MAX_ATTACHMENT_ABOVE_BYTES} bytes"),
            ));
        }
        if let Some(secs) = spec.silence_timeout_secs
            && !(1..=MAX_SILENCE_TIMEOUT_SECS).contains(&secs)
        {
            return Err(problem(
                "silenceTimeoutSecs",
                format!("from 1 to {MAX_SILENCE_TIMEOUT_SECS} seconds"),
            ));
        }
        let ordering_key = match &spec.ordering_key {
            Some(text) => Some(
                Template::parse(text, &topic).map_err(|reason| problem("orderingKey", reason))?,
            ),
            None if topic.has_name("device") => {
                Some(Template::parse("{device}", &topic).expect("the topic names it"))
            }
            None => None,
        };
        if let Some(pointer) = &spec.event_id_pointer
            && (!pointer.starts_with('/') || pointer.len() > 256)
        {
            return Err(problem(
                "eventIdPointer",
                "a JSON pointer starts with `/` (e.g. `/id`) and has at most 256 bytes",
            ));
        }
        Ok(Self {
            topic,
            app,
            event_type,
            ordering_key,
            event_id_pointer: spec.event_id_pointer.clone(),
            presence: spec.presence,
            silence_timeout_ms: spec.silence_timeout_secs.map(|secs| secs * 1000),
            attachment_above_bytes: spec.attachment_above_bytes.map(|bytes| bytes as usize),
        })
    }

    /// What a publish on `topic` with `payload` is: `None` when the topic is not this
    /// route's; `Err` when it is but cannot be read (see [`Route::message`], [`read_status`]).
    pub fn read(
        &self,
        topic: &str,
        payload: &[u8],
        max_depth: usize,
    ) -> Option<Result<Reading, String>> {
        let segments = self.topic.captures(topic)?;
        if !self.presence {
            return Some(self.map(segments, payload, max_depth).map(Reading::Event));
        }
        Some((|| {
            let app = self.app_of(&segments)?;
            let device = segments["device"].clone();
            check_segment("device", &device)?;
            let online = read_status(payload)?;
            Ok(Reading::Status {
                app,
                device,
                online,
            })
        })())
    }

    fn app_of(&self, segments: &BTreeMap<String, String>) -> Result<String, String> {
        match &self.app {
            AppSource::Fixed(app) => Ok(app.clone()),
            AppSource::Segment(name) => {
                let uid = segments[name].clone();
                validate::uid(&uid).map_err(|why| format!("application uid `{uid}`: {why}"))?;
                Ok(uid)
            }
        }
    }

    /// The Kait message for a publish on `topic` with `payload`: `None` when the topic is not
    /// this route's (or the route is a presence route); `Err` when it is but cannot become a
    /// message (an event type or key that is not valid, a payload nested deeper than
    /// `max_depth`).
    pub fn message(
        &self,
        topic: &str,
        payload: &[u8],
        max_depth: usize,
    ) -> Option<Result<DeviceMessage, String>> {
        match self.read(topic, payload, max_depth)? {
            Ok(Reading::Event(message)) => Some(Ok(message)),
            Ok(Reading::Status { .. }) => None,
            Err(reason) => Some(Err(reason)),
        }
    }

    fn map(
        &self,
        segments: BTreeMap<String, String>,
        payload: &[u8],
        max_depth: usize,
    ) -> Result<DeviceMessage, String> {
        let event_type = self
            .event_type
            .as_ref()
            .map(|template| template.render(&segments))
            .unwrap_or_default();
        validate::event_type_name(&event_type)
            .map_err(|why| format!("event type `{event_type}`: {why}"))?;
        let app = self.app_of(&segments)?;
        let device = segments.get("device").cloned();
        if let Some(device) = &device {
            check_segment("device", device)?;
        }
        let ordering_key = self.ordering_key.as_ref().map(|key| key.render(&segments));
        if let Some(key) = &ordering_key {
            validate::ordering_key(key).map_err(|why| format!("ordering key: {why}"))?;
        }
        let text = std::str::from_utf8(payload).ok();
        let json = text
            .filter(|text| validate::json_depth(text) <= max_depth)
            .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        if text.is_some_and(|text| validate::json_depth(text) > max_depth) {
            return Err(format!("the payload nests deeper than {max_depth} levels"));
        }
        let event_id = match (&self.event_id_pointer, &json) {
            (Some(pointer), Some(value)) => match value.pointer(pointer) {
                Some(serde_json::Value::String(id)) => Some(id.clone()),
                Some(serde_json::Value::Number(id)) => Some(id.to_string()),
                _ => None,
            },
            _ => None,
        };
        if let Some(id) = &event_id {
            validate::key("eventId", id).map_err(|why| format!("event id: {why}"))?;
        }
        let body = match (json, text) {
            (Some(serde_json::Value::Object(_)), Some(text)) => Body::Json(text.to_owned()),
            (Some(_), _) => Body::Raw {
                content_type: "application/json",
                bytes: payload.to_vec(),
            },
            (None, _) => Body::Raw {
                content_type: "application/octet-stream",
                bytes: payload.to_vec(),
            },
        };
        Ok(DeviceMessage {
            app,
            event_type,
            ordering_key,
            event_id,
            body,
            segments,
            device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RouteSpec {
        RouteSpec {
            topic: "sites/{site}/devices/{device}/events/{event}".into(),
            app: None,
            app_segment: Some("site".into()),
            event_type: Some("device.{event}".into()),
            ordering_key: None,
            event_id_pointer: Some("/id".into()),
            presence: false,
            silence_timeout_secs: None,
            attachment_above_bytes: None,
        }
    }

    #[test]
    fn a_reading_becomes_a_message_keyed_by_its_device() {
        let route = Route::parse(&spec()).unwrap();
        let message = route
            .message(
                "sites/site-7/devices/th-1/events/reading",
                br#"{"id": "r-42", "celsius": 21.5}"#,
                64,
            )
            .unwrap()
            .unwrap();
        assert_eq!(message.app, "site-7");
        assert_eq!(message.event_type, "device.reading");
        assert_eq!(message.ordering_key.as_deref(), Some("th-1"));
        assert_eq!(message.event_id.as_deref(), Some("r-42"));
        assert_eq!(
            message.body,
            Body::Json(r#"{"id": "r-42", "celsius": 21.5}"#.into())
        );
        assert_eq!(route.message("other/topic", b"{}", 64), None);
    }

    #[test]
    fn anything_but_a_json_object_travels_raw() {
        let route = Route::parse(&spec()).unwrap();
        let at = "sites/s/devices/d/events/frame";
        let raw = route.message(at, &[0xFF, 0xD8, 0x00], 64).unwrap().unwrap();
        assert_eq!(
            raw.body,
            Body::Raw {
                content_type: "application/octet-stream",
                bytes: vec![0xFF, 0xD8, 0x00]
            }
        );
        assert_eq!(raw.event_id, None);
        let number = route.message(at, b"21.5", 64).unwrap().unwrap();
        assert!(matches!(
            number.body,
            Body::Raw {
                content_type: "application/json",
                ..
            }
        ));
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(route.message(at, deep.as_bytes(), 64).unwrap().is_err());
    }

    #[test]
    fn segments_that_make_bad_names_are_refused_per_message() {
        let route = Route::parse(&spec()).unwrap();
        // An application uid may not look like an id; an event type has its character rules.
        assert!(
            route
                .message("sites/app_x/devices/d/events/e", b"{}", 64)
                .unwrap()
                .is_err()
        );
        assert!(
            route
                .message("sites/s/devices/d/events/e vent", b"{}", 64)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_presence_route_reads_statuses_not_events() {
        let route = Route::parse(&RouteSpec {
            topic: "sites/{site}/devices/{device}/status".into(),
            event_type: None,
            event_id_pointer: None,
            presence: true,
            ..spec()
        })
        .unwrap();
        let at = "sites/s1/devices/th-1/status";
        for (payload, online) in [
            (&b"online"[..], true),
            (b"OFFLINE\n", false),
            (br#""offline""#, false),
            (br#"{"online": true}"#, true),
            (br#"{"status": "disconnected"}"#, false),
            (b"0", false),
        ] {
            assert_eq!(
                route.read(at, payload, 64),
                Some(Ok(Reading::Status {
                    app: "s1".into(),
                    device: "th-1".into(),
                    online
                })),
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
        for bad in [
            &b""[..],
            b"maybe",
            b"{\"online\": 1}",
            &[0xFF, 0xFE],
            &[b'x'; 5000],
        ] {
            assert!(matches!(route.read(at, bad, 64), Some(Err(_))));
        }
        assert_eq!(
            route.message(at, b"online", 64),
            None,
            "no event from a status"
        );
    }

    #[test]
    fn the_device_segment_names_the_device() {
        let route = Route::parse(&spec()).unwrap();
        let message = route
            .message("sites/s/devices/th-1/events/e", b"{}", 64)
            .unwrap()
            .unwrap();
        assert_eq!(message.device.as_deref(), Some("th-1"));
        assert!(check_segment("device", "a+b").is_err());
        assert!(check_segment("device", "").is_err());
        assert!(check_segment("device", &"d".repeat(129)).is_err());
        assert!(check_segment("device", "th-1").is_ok());
    }

    #[test]
    fn bad_routes_name_the_field() {
        let cases = [
            (
                RouteSpec {
                    topic: "a/#".into(),
                    ..spec()
                },
                "topic",
            ),
            (
                RouteSpec {
                    app: Some("a".into()),
                    ..spec()
                },
                "app",
            ),
            (
                RouteSpec {
                    app_segment: None,
                    ..spec()
                },
                "app",
            ),
            (
                RouteSpec {
                    app_segment: Some("nope".into()),
                    ..spec()
                },
                "appSegment",
            ),
            (
                RouteSpec {
                    event_type: Some("x.{nope}".into()),
                    ..spec()
                },
                "eventType",
            ),
            (
                RouteSpec {
                    event_type: None,
                    ..spec()
                },
                "eventType",
            ),
            (
                RouteSpec {
                    presence: true,
                    ..spec()
                },
                "eventType",
            ),
            (
                RouteSpec {
                    topic: "sites/{site}/status".into(),
                    event_type: None,
                    presence: true,
                    ..spec()
                },
                "presence",
            ),
            (
                RouteSpec {
                    silence_timeout_secs: Some(0),
                    ..spec()
                },
                "silenceTimeoutSecs",
            ),
            (
                RouteSpec {
                    attachment_above_bytes: Some(0),
                    ..spec()
                },
                "attachmentAboveBytes",
            ),
            (
                RouteSpec {
                    topic: "sites/{site}/{event}".into(),
                    silence_timeout_secs: Some(60),
                    ..spec()
                },
                "silenceTimeoutSecs",
            ),
            (
                RouteSpec {
                    ordering_key: Some("{nope}".into()),
                    ..spec()
                },
                "orderingKey",
            ),
            (
                RouteSpec {
                    event_id_pointer: Some("id".into()),
                    ..spec()
                },
                "eventIdPointer",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(Route::parse(&spec).unwrap_err().field, field, "{spec:?}");
        }
        // Without a device segment there is no default key.
        let fixed = Route::parse(&RouteSpec {
            topic: "plant/{line}/alarm".into(),
            app: Some("plant".into()),
            app_segment: None,
            event_type: Some("alarm.raised".into()),
            ordering_key: None,
            event_id_pointer: None,
            presence: false,
            silence_timeout_secs: None,
            attachment_above_bytes: None,
        })
        .unwrap();
        assert_eq!(fixed.ordering_key, None);
        assert_eq!(fixed.app, AppSource::Fixed("plant".into()));
    }
}
