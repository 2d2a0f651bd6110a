//! The JSON ↔ XML mapping for endpoints that take XML.
//!
//! Deterministic and lossless, so an XML receiver gets exactly the event a JSON receiver gets:
//!
//! - The document is an envelope `<webhook id="msg_…" type="camera.motion" timestamp="…">`
//!   holding `<payload>`, whose children are the payload object's members.
//! - An object member becomes an element named after its key; an object value becomes child
//!   elements, a string value text. Keys are written in sorted order.
//! - An array becomes one element per item, each marked `j:array="true"` (so a one-item
//!   array differs from a single value); items that are themselves arrays are `<j:item>`
//!   elements inside; an empty array is one element marked `j:type="array"`.
//! - Numbers and booleans are text marked `j:type="number"` / `j:type="boolean"`; `null` is an
//!   empty element marked `j:null="true"`; an empty object is marked `j:type="object"`.
//! - A key that is not a valid XML name becomes `<j:key name="…">` with the key as attribute.
//! - A string XML cannot carry verbatim (control characters, carriage returns) is written as
//!   its JSON escape, marked `j:escaped="json"`.
//!
//! The `j` prefix is bound to [`NAMESPACE`]. quick-xml's serde support loses structure for
//! arbitrary JSON (nested arrays flatten, invalid names fail), hence this mapping on its event
//! writer; reading uses roxmltree, which reports line and column for malformed input.

use std::io::Cursor;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use serde_json::{Map, Value};

/// The namespace of Kait's mapping attributes and elements.
pub const NAMESPACE: &str = "urn:kait:json";
const ARRAY_ITEM: &str = "j:item";
const ODD_KEY: &str = "j:key";

/// Why XML could not be turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("malformed XML at line {line}, column {column}: {reason}")]
    Malformed {
        line: u32,
        column: u32,
        reason: String,
    },
    #[error("{0}")]
    Shape(String),
    /// The payload nests elements deeper than the caller allows; found while walking, so a
    /// hostile document is refused before it can exhaust the stack.
    #[error("the payload nests arrays and objects deeper than {0} levels")]
    TooDeep(usize),
}

/// What the envelope says about the event.
pub struct Envelope<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    /// RFC 3339.
    pub timestamp: &'a str,
}

/// Whether `name` is used as the element name as it is: an ASCII name (`[A-Za-z_][A-Za-z0-9._-]*`)
/// not starting with `xml`. Unicode allows more, but the exact XML name classes differ from
/// Rust's; other keys take the `<j:key>` form, which every key can.
fn is_plain_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.to_ascii_lowercase().starts_with("xml")
}

/// A string's JSON escape without the quotes: attribute values cannot carry control characters
/// and have their whitespace normalised, so odd keys are stored in this form.
fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).expect("strings serialize");
    quoted[1..quoted.len() - 1].to_owned()
}

fn json_unescape(escaped: &str) -> Option<String> {
    serde_json::from_str(&format!("\"{escaped}\"")).ok()
}

/// Whether XML 1.0 text can carry `text` verbatim (carriage returns would be normalised away).
fn is_plain_text(text: &str) -> bool {
    text.chars().all(|c| match c {
        '\t' | '\n' => true,
        '\u{FFFE}' | '\u{FFFF}' => false,
        c => c >= ' ',
    })
}

type XmlWriter = Writer<Cursor<Vec<u8>>>;

fn write(writer: &mut XmlWriter, event: Event<'_>) {
    writer
        .write_event(event)
        .expect("writing to memory cannot fail");
}

/// Renders the event as an XML document (UTF-8).
pub fn render(envelope: &Envelope<'_>, payload: &Map<String, Value>) -> Vec<u8> {
    let mut writer = Writer::new(Cursor::new(Vec::with_capacity(256)));
    write(
        &mut writer,
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
    );
    let mut root = BytesStart::new("webhook");
    root.push_attribute(("xmlns:j", NAMESPACE));
    root.push_attribute(("id", envelope.id));
    root.push_attribute(("type", envelope.event_type));
    root.push_attribute(("timestamp", envelope.timestamp));
    write(&mut writer, Event::Start(root));
    write(&mut writer, Event::Start(BytesStart::new("payload")));
    write_members(&mut writer, payload);
    write(&mut writer, Event::End(BytesEnd::new("payload")));
    write(&mut writer, Event::End(BytesEnd::new("webhook")));
    writer.into_inner().into_inner()
}

fn write_members(writer: &mut XmlWriter, object: &Map<String, Value>) {
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    for key in keys {
        let value = &object[key];
        let element = |extra: &[(&str, &str)]| {
            let mut start = if is_plain_name(key) {
                BytesStart::new(key.as_str())
            } else {
                let mut start = BytesStart::new(ODD_KEY);
                start.push_attribute(("name", json_escape(key).as_str()));
                start
            };
            for attribute in extra {
                start.push_attribute(*attribute);
            }
            start
        };
        match value {
            Value::Array(items) if items.is_empty() => {
                write(writer, Event::Empty(element(&[("j:type", "array")])));
            }
            Value::Array(items) => {
                for item in items {
                    write_value(writer, element(&[("j:array", "true")]), item);
                }
            }
            other => write_value(writer, element(&[]), other),
        }
    }
}

/// Writes `value` as the content of the element `start`.
fn write_value(writer: &mut XmlWriter, mut start: BytesStart<'_>, value: &Value) {
    let name = String::from_utf8(start.name().as_ref().to_vec()).expect("names are UTF-8");
    let text = match value {
        Value::Null => {
            start.push_attribute(("j:null", "true"));
            write(writer, Event::Empty(start));
            return;
        }
        Value::Object(members) if members.is_empty() => {
            start.push_attribute(("j:type", "object"));
            write(writer, Event::Empty(start));
            return;
        }
        Value::Object(members) => {
            write(writer, Event::Start(start));
            write_members(writer, members);
            write(writer, Event::End(BytesEnd::new(name)));
            return;
        }
        Value::Array(items) => {
            // An array inside an array: its items are <j:item> children.
            if items.is_empty() {
                start.push_attribute(("j:type", "array"));
                write(writer, Event::Empty(start));
                return;
            }
            write(writer, Event::Start(start));
            for item in items {
                let mut child = BytesStart::new(ARRAY_ITEM);
                child.push_attribute(("j:array", "true"));
                write_value(writer, child, item);
            }
            write(writer, Event::End(BytesEnd::new(name)));
            return;
        }
        Value::Bool(flag) => {
            start.push_attribute(("j:type", "boolean"));
            flag.to_string()
        }
        Value::Number(number) => {
            start.push_attribute(("j:type", "number"));
            number.to_string()
        }
        Value::String(text) if is_plain_text(text) => text.clone(),
        Value::String(text) => {
            start.push_attribute(("j:escaped", "json"));
            json_escape(text)
        }
    };
    if text.is_empty() {
        write(writer, Event::Empty(start));
        return;
    }
    write(writer, Event::Start(start));
    write(writer, Event::Text(BytesText::new(&text)));
    write(writer, Event::End(BytesEnd::new(name)));
}

/// A parsed document: the root element's own attributes, and the payload object.
#[derive(Debug)]
pub struct ParsedDocument {
    pub attributes: Vec<(String, String)>,
    pub payload: Map<String, Value>,
}

/// Reads a document written by [`render`] (or composed by hand the same way) back into the
/// root's attributes and the payload object. The root may be any element whose `<payload>`
/// child holds the members.
///
/// `max_depth` bounds the nesting of the resulting JSON (the payload object is level 1, as
/// `validate::json_depth` counts). The walk below recurses once per level, so the bound is
/// checked on the way down: a document of thousands of nested elements is an error, not a
/// stack overflow.
pub fn parse(xml: &str, max_depth: usize) -> Result<ParsedDocument, XmlError> {
    let document = read_document(xml)?;
    let root = document.root_element();
    let attributes = root
        .attributes()
        .filter(|attribute| attribute.namespace().is_none())
        .map(|attribute| (attribute.name().to_owned(), attribute.value().to_owned()))
        .collect();
    let payload = root
        .children()
        .find(|node| node.is_element() && node.tag_name().name() == "payload")
        .ok_or_else(|| XmlError::Shape("the root element has no <payload> child".into()))?;
    Ok(ParsedDocument {
        attributes,
        payload: read_members(payload, Level::root(max_depth)?)?,
    })
}

fn read_document(xml: &str) -> Result<roxmltree::Document<'_>, XmlError> {
    roxmltree::Document::parse(xml).map_err(|error| {
        let position = error.pos();
        XmlError::Malformed {
            line: position.row,
            column: position.col,
            reason: error.to_string(),
        }
    })
}

/// Reads any XML document (a received request's body, not Kait's envelope) into JSON by the
/// same mapping: `{ "<root>": value }`. Documents the mapping cannot express (an element
/// repeated without `j:array`, say) are an error; the caller keeps the raw text regardless.
pub fn parse_any(xml: &str, max_depth: usize) -> Result<Map<String, Value>, XmlError> {
    let document = read_document(xml)?;
    let root = document.root_element();
    let level = Level::root(max_depth)?;
    let mut object = Map::new();
    object.insert(root.tag_name().name().to_owned(), read_value(root, level)?);
    Ok(object)
}

fn mapping_attribute<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attribute((NAMESPACE, name))
}

fn key_of(node: roxmltree::Node<'_, '_>) -> Result<String, XmlError> {
    if node.tag_name().namespace() == Some(NAMESPACE) && node.tag_name().name() == "key" {
        return node
            .attribute("name")
            .and_then(json_unescape)
            .ok_or_else(|| XmlError::Shape("<j:key> needs a name in JSON string form".into()));
    }
    Ok(node.tag_name().name().to_owned())
}

/// The nesting level of the JSON value being read, checked against the caller's bound.
#[derive(Clone, Copy)]
struct Level {
    depth: usize,
    max: usize,
}

impl Level {
    fn root(max: usize) -> Result<Self, XmlError> {
        Self { depth: 0, max }.deeper()
    }

    /// The level of a container's items; an error past the bound.
    fn deeper(self) -> Result<Self, XmlError> {
        let depth = self.depth + 1;
        if depth > self.max {
            return Err(XmlError::TooDeep(self.max));
        }
        Ok(Self { depth, ..self })
    }
}

/// Reads the members of an object at `level` (the object's own level).
fn read_members(
    parent: roxmltree::Node<'_, '_>,
    level: Level,
) -> Result<Map<String, Value>, XmlError> {
    let mut members = Map::new();
    for child in parent.children().filter(roxmltree::Node::is_element) {
        let key = key_of(child)?;
        let in_array = mapping_attribute(child, "array") == Some("true");
        let empty_array = mapping_attribute(child, "type") == Some("array") && !in_array;
        if empty_array {
            members.insert(key, Value::Array(Vec::new()));
            continue;
        }
        // A member's value sits one level below its object, and an array item one more.
        let value = if in_array {
            read_value(child, level.deeper()?)?
        } else {
            read_value(child, level)?
        };
        if in_array {
            match members
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                _ => {
                    return Err(XmlError::Shape(
                        "an array item repeats a plain member".into(),
                    ));
                }
            }
        } else if members.insert(key.clone(), value).is_some() {
            return Err(XmlError::Shape(format!(
                "<{key}> appears twice without j:array"
            )));
        }
    }
    Ok(members)
}

/// Reads one value held in `node`, a member or item of a container at `parent`.
fn read_value(node: roxmltree::Node<'_, '_>, parent: Level) -> Result<Value, XmlError> {
    if mapping_attribute(node, "null") == Some("true") {
        return Ok(Value::Null);
    }
    let text = || node.text().unwrap_or_default();
    let has_children = node.children().any(|child| child.is_element());
    match mapping_attribute(node, "type") {
        Some("object") => return Ok(Value::Object(Map::new())),
        Some("array") if !has_children => return Ok(Value::Array(Vec::new())),
        Some("boolean") => {
            return match text().trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                other => Err(XmlError::Shape(format!("`{other}` is not a boolean"))),
            };
        }
        Some("number") => {
            return serde_json::from_str::<serde_json::Number>(text().trim())
                .map(Value::Number)
                .map_err(|_| XmlError::Shape(format!("`{}` is not a number", text())));
        }
        _ => {}
    }
    let items: Vec<_> = node
        .children()
        .filter(|child| {
            child.is_element()
                && child.tag_name().namespace() == Some(NAMESPACE)
                && child.tag_name().name() == "item"
        })
        .collect();
    if !items.is_empty() {
        let array = parent.deeper()?;
        return items
            .into_iter()
            .map(|item| read_value(item, array))
            .collect::<Result<_, _>>()
            .map(Value::Array);
    }
    if has_children {
        return read_members(node, parent.deeper()?).map(Value::Object);
    }
    let text: String = node
        .children()
        .filter(|child| child.is_text())
        .filter_map(|child| child.text())
        .collect();
    if mapping_attribute(node, "escaped") == Some("json") {
        return json_unescape(&text)
            .map(Value::String)
            .ok_or_else(|| XmlError::Shape("a j:escaped string is not a JSON string body".into()));
    }
    Ok(Value::String(text))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn any_document_reads_as_its_root_element() {
        let parsed = parse_any(
            "<?xml version=\"1.0\"?><order><id>7</id><item><sku>a</sku></item></order>",
            8,
        )
        .unwrap();
        assert_eq!(
            Value::Object(parsed),
            json!({ "order": { "id": "7", "item": { "sku": "a" } } })
        );
        assert!(matches!(
            parse_any("<a><b/><b/></a>", 8),
            Err(XmlError::Shape(_))
        ));
        let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
        assert_eq!(parse_any(&deep, 16).unwrap_err(), XmlError::TooDeep(16));
    }

    fn envelope() -> Envelope<'static> {
        Envelope {
            id: "msg_1",
            event_type: "camera.motion",
            timestamp: "2026-11-27T12:00:00Z",
        }
    }

    fn round_trip(payload: Value) -> Value {
        let Value::Object(members) = payload else {
            panic!("payloads are objects")
        };
        let xml = String::from_utf8(render(&envelope(), &members)).unwrap();
        let parsed = parse(&xml, 64).unwrap_or_else(|error| panic!("{error}: {xml}"));
        Value::Object(parsed.payload)
    }

    #[test]
    fn renders_the_documented_shape() {
        let payload = json!({
            "camera": "gate",
            "confidence": 0.93,
            "zones": ["north"],
            "night": false,
            "operator": null,
            "2nd key": {"a < b": "x & y"},
        });
        let Value::Object(members) = payload else {
            unreachable!()
        };
        let xml = String::from_utf8(render(&envelope(), &members)).unwrap();
        assert_eq!(
            xml,
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<webhook xmlns:j="urn:kait:json" id="msg_1" type="camera.motion" timestamp="2026-11-27T12:00:00Z"><payload>"#,
                r#"<j:key name="2nd key"><j:key name="a &lt; b">x &amp; y</j:key></j:key>"#,
                r#"<camera>gate</camera>"#,
                r#"<confidence j:type="number">0.93</confidence>"#,
                r#"<night j:type="boolean">false</night>"#,
                r#"<operator j:null="true"/>"#,
                r#"<zones j:array="true">north</zones>"#,
                r#"</payload></webhook>"#
            )
        );
    }

    #[test]
    fn round_trips_awkward_values() {
        for payload in [
            json!({}),
            json!({"a": [], "b": {}, "c": "", "d": [[]], "e": [[1, 2], [3]], "f": [{}, null]}),
            json!({"xml": 1, "": 2, "a:b": 3, "1": [true], "x y": {"z": [[["deep"]]]}}),
            json!({"text": "line\r\nbreak\u{1}\ttab  ", "quote": "\"'<>&", "emoji": "📷"}),
            json!({"n": [-0.0, 1e300, -12, 18446744073709551615u64]}),
        ] {
            assert_eq!(round_trip(payload.clone()), payload);
        }
    }

    #[test]
    fn reports_where_xml_is_malformed() {
        let error = parse("<message>\n  <payload><a></payload>\n</message>", 64).unwrap_err();
        match error {
            XmlError::Malformed { line, column, .. } => assert_eq!((line, column), (2, 15)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("<message/>", 64), Err(XmlError::Shape(_))));
    }

    /// Issue 11: ~3,500 nested elements overflowed a worker's stack. Far deeper than that
    /// must be refused by the depth bound, in any of the nesting forms.
    #[test]
    fn deep_nesting_is_refused_while_walking() {
        let levels = 100_000;
        let objects = format!(
            "<m><payload>{}x{}</payload></m>",
            "<a>".repeat(levels),
            "</a>".repeat(levels)
        );
        let items = format!(
            r#"<m xmlns:j="urn:kait:json"><payload><a j:array="true">{}x{}</a></payload></m>"#,
            r#"<j:item j:array="true">"#.repeat(levels),
            "</j:item>".repeat(levels)
        );
        for document in [objects, items] {
            assert_eq!(parse(&document, 64).unwrap_err(), XmlError::TooDeep(64));
        }
    }

    #[test]
    fn the_bound_counts_levels_as_json_depth_does() {
        // {"a": {"b": [ {"c": 1} ]}} is four levels deep.
        let xml = r#"<m xmlns:j="urn:kait:json"><payload><a><b j:array="true"><c j:type="number">1</c></b></a></payload></m>"#;
        let parsed = parse(xml, 4).unwrap();
        let json = serde_json::to_string(&parsed.payload).unwrap();
        assert_eq!(crate::validate::json_depth(&json), 4);
        assert_eq!(parse(xml, 3).unwrap_err(), XmlError::TooDeep(3));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_object_round_trips(members in prop::collection::btree_map(any::<String>(), json_value(), 0..6)) {
            let payload = Value::Object(members.into_iter().collect());
            prop_assert_eq!(round_trip(payload.clone()), payload);
        }
    }
}
