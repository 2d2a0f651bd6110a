//! What a received request's body becomes: the bytes are always kept as they came (the
//! webhook forwarded to the source's endpoints carries them unchanged), and beside them a JSON
//! reading for listings and for the rules of the pipe: a JSON object as it is, XML through
//! Kait's XML mapping, a form as an object of its fields, anything else `{}`.

use kait_core::validate;
use serde_json::{Map, Value};

/// A received body, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBody {
    /// A JSON object's text: the body itself when it is one, else its reading (or `{}`).
    pub payload: String,
    /// Whether the body must be sent as it came (`false` only for a JSON object body, whose
    /// text is `payload` byte for byte and goes out as `application/json`).
    pub raw: bool,
}

/// How a content type is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Xml,
    Form,
    Other,
}

impl BodyKind {
    /// From a `Content-Type` value (parameters and case ignored).
    pub fn of(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|value| value.split(';').next())
            .map(|value| value.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match essence.as_str() {
            "application/json" | "text/json" => Self::Json,
            "application/xml" | "text/xml" => Self::Xml,
            "application/x-www-form-urlencoded" => Self::Form,
            other if other.ends_with("+json") => Self::Json,
            other if other.ends_with("+xml") => Self::Xml,
            _ => Self::Other,
        }
    }
}

/// Reads `body` as its content type says, bounding nesting by `max_depth` (JSON is scanned
/// before it is parsed; XML is bounded while it is walked).
pub fn read(content_type: Option<&str>, body: &[u8], max_depth: usize) -> ReadBody {
    let empty = || ReadBody {
        payload: "{}".to_owned(),
        raw: true,
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return empty();
    };
    match BodyKind::of(content_type) {
        BodyKind::Json => {
            let is_object = text.trim_start().starts_with('{')
                && validate::json_depth(text) <= max_depth
                && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            if is_object {
                ReadBody {
                    payload: text.to_owned(),
                    raw: false,
                }
            } else {
                empty()
            }
        }
        BodyKind::Xml => match kait_core::xml::parse_any(text, max_depth) {
            Ok(object) => ReadBody {
                payload: Value::Object(object).to_string(),
                raw: true,
            },
            Err(_) => empty(),
        },
        BodyKind::Form => {
            let mut fields = Map::new();
            for (key, value) in url::form_urlencoded::parse(body) {
                // A repeated field keeps its last value, as most form readers do.
                fields.insert(key.into_owned(), Value::String(value.into_owned()));
            }
            ReadBody {
                payload: Value::Object(fields).to_string(),
                raw: true,
            }
        }
        BodyKind::Other => empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_object_is_kept_byte_for_byte_and_sent_as_json() {
        let body = br#"{ "zen": "Keep it logically awesome.",  "hook_id": 1 }"#;
        let read = read(Some("application/json; charset=utf-8"), body, 8);
        assert!(!read.raw);
        assert_eq!(read.payload.as_bytes(), body);
    }

    #[test]
    fn json_that_is_no_object_or_too_deep_is_sent_raw() {
        assert_eq!(read(Some("application/json"), b"[1,2]", 8).payload, "{}");
        assert!(read(Some("application/json"), b"[1,2]", 8).raw);
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(20), "]".repeat(20));
        assert!(read(Some("application/json"), deep.as_bytes(), 8).raw);
        assert!(read(Some("application/json"), b"{\"a\":", 8).raw);
    }

    #[test]
    fn forms_and_xml_get_a_json_reading_beside_their_raw_bytes() {
        let form = read(
            Some("application/x-www-form-urlencoded"),
            b"command=%2Fdeploy&text=api+v2&text=last",
            8,
        );
        assert!(form.raw);
        assert_eq!(form.payload, r#"{"command":"/deploy","text":"last"}"#);
        let xml = read(Some("text/xml"), b"<Response><Sid>SM1</Sid></Response>", 8);
        assert!(xml.raw);
        assert_eq!(xml.payload, r#"{"Response":{"Sid":"SM1"}}"#);
    }

    #[test]
    fn other_and_binary_bodies_read_as_an_empty_object() {
        assert_eq!(
            read(Some("image/jpeg"), &[0xff, 0xd8, 0xff], 8),
            ReadBody {
                payload: "{}".into(),
                raw: true
            }
        );
        assert!(read(None, b"hello", 8).raw);
        assert_eq!(
            BodyKind::of(Some("application/vnd.api+json")),
            BodyKind::Json
        );
        assert_eq!(BodyKind::of(Some("Application/XML")), BodyKind::Xml);
    }
}
