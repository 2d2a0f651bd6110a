//! A route: which device messages (a topic pattern) become which Kait messages (the
//! application, fixed or named by a segment; the event type, a template; the ordering key,
//! by default the device; an event id read from the payload by JSON pointer).

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
    /// `device.{event}`.
    pub event_type: String,
    /// Default: `{device}` when the topic has that segment, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// A JSON pointer (`/id`) to the device's own id of the message in a JSON payload: the
    /// message's `eventId`, so a message the broker sends again is one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id_pointer: Option<String>,
}

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
    pub event_type: Template,
    pub ordering_key: Option<Template>,
    pub event_id_pointer: Option<String>,
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
        let event_type = Template::parse(&spec.event_type, &topic)
            .map_err(|reason| problem("eventType", reason))?;
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
        })
    }

    /// The Kait message for a publish on `topic` with `payload`: `None` when the topic is not
    /// this route's; `Err` when it is but cannot become a message (an event type or key that is
    /// not valid, a payload nested deeper than `max_depth`).
    pub fn message(
        &self,
        topic: &str,
        payload: &[u8],
        max_depth: usize,
    ) -> Option<Result<DeviceMessage, String>> {
        let segments = self.topic.captures(topic)?;
        Some(self.map(segments, payload, max_depth))
    }

    fn map(
        &self,
        segments: BTreeMap<String, String>,
        payload: &[u8],
        max_depth: usize,
    ) -> Result<DeviceMessage, String> {
        let event_type = self.event_type.render(&segments);
        validate::event_type_name(&event_type)
            .map_err(|why| format!("event type `{event_type}`: {why}"))?;
        let app = match &self.app {
            AppSource::Fixed(app) => app.clone(),
            AppSource::Segment(name) => {
                let uid = segments[name].clone();
                validate::uid(&uid).map_err(|why| format!("application uid `{uid}`: {why}"))?;
                uid
            }
        };
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
            event_type: "device.{event}".into(),
            ordering_key: None,
            event_id_pointer: Some("/id".into()),
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
                    event_type: "x.{nope}".into(),
                    ..spec()
                },
                "eventType",
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
            event_type: "alarm.raised".into(),
            ordering_key: None,
            event_id_pointer: None,
        })
        .unwrap();
        assert_eq!(fixed.ordering_key, None);
        assert_eq!(fixed.app, AppSource::Fixed("plant".into()));
    }
}
