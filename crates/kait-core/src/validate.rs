//! Input rules shared by every route, reporting all problems of a request at once.
//!
//! Each check returns a message for a [`Problems`] collector, which the API turns into Svix's
//! `422 {"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`.

/// One field's problem, Svix's `ValidationErrorItem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub loc: Vec<String>,
    pub msg: String,
    pub kind: &'static str,
}

/// Collects problems while a request is checked field by field.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the outcome of a check of body field `field`.
    pub fn check(&mut self, field: &str, outcome: Result<(), String>) {
        if let Err(msg) = outcome {
            self.items.push(Problem {
                loc: vec!["body".to_owned(), field.to_owned()],
                msg,
                kind: "value_error",
            });
        }
    }

    pub fn into_result(self) -> Result<(), Vec<Problem>> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(self.items)
        }
    }
}

/// Longest uid, event type name or channel Svix accepts.
const MAX_NAME_LEN: usize = 256;
const MAX_CHANNEL_LEN: usize = 128;
/// Most channels a message or endpoint may name.
pub const MAX_CHANNELS: usize = 10;
const MAX_URL_LEN: usize = 4096;

fn check_name(value: &str, max_len: usize, extra: &[u8], what: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > max_len {
        return Err(format!("{what} must be 1 to {max_len} characters long"));
    }
    let allowed =
        |byte: u8| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte) || extra.contains(&byte);
    if !value.bytes().all(allowed) {
        return Err(format!(
            "{what} may contain only letters, digits, `-`, `_` and `.`{}",
            if extra.is_empty() { "" } else { " and `:`" }
        ));
    }
    Ok(())
}

/// A caller-chosen `uid` of an application, endpoint or source. It must not look like a Kait
/// id, so that a path segment is never ambiguous.
pub fn uid(value: &str) -> Result<(), String> {
    check_name(value, MAX_NAME_LEN, b"", "uid")?;
    if crate::id::ID_PREFIXES
        .iter()
        .any(|prefix| value.starts_with(prefix))
    {
        return Err("uid must not start with an id prefix such as `app_` or `ep_`".to_owned());
    }
    Ok(())
}

/// An event type name such as `camera.motion.detected`.
pub fn event_type_name(value: &str) -> Result<(), String> {
    check_name(value, MAX_NAME_LEN, b"", "event type name")
}

/// A channel name such as `site-1` or `project:42`.
pub fn channel(value: &str) -> Result<(), String> {
    check_name(value, MAX_CHANNEL_LEN, b":", "channel")
}

pub fn channels<'a>(values: impl ExactSizeIterator<Item = &'a String>) -> Result<(), String> {
    if values.len() > MAX_CHANNELS {
        return Err(format!("at most {MAX_CHANNELS} channels are allowed"));
    }
    values.into_iter().try_for_each(|value| channel(value))
}

/// An endpoint URL: absolute `http` or `https` with a host.
pub fn endpoint_url(value: &str) -> Result<url::Url, String> {
    if value.len() > MAX_URL_LEN {
        return Err(format!("url must be at most {MAX_URL_LEN} characters"));
    }
    let parsed = url::Url::parse(value).map_err(|error| format!("url is not valid: {error}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("url scheme must be http or https".to_owned());
    }
    match parsed.host_str() {
        Some(host) if !host.is_empty() => Ok(parsed),
        _ => Err("url must have a host".to_owned()),
    }
}

/// A message's `orderingKey` (e.g. a device id).
pub fn ordering_key(value: &str) -> Result<(), String> {
    key("orderingKey", value)
}

/// A caller's key (`orderingKey`, `eventId`): 1 to 256 characters (counted as characters,
/// as the OpenAPI document's `maxLength` counts them).
pub fn key(field: &str, value: &str) -> Result<(), String> {
    let characters = value.chars().count();
    if characters == 0 || characters > MAX_NAME_LEN {
        Err(format!(
            "{field} must be 1 to {MAX_NAME_LEN} characters long"
        ))
    } else {
        Ok(())
    }
}

/// The deepest nesting of arrays and objects in a JSON text (0 for a scalar). Scans bytes,
/// skipping strings, so checking a payload costs no parse.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Longest human-readable name, in characters.
const MAX_DISPLAY_NAME_CHARS: usize = 1024;

/// A non-empty human-readable name.
pub fn name(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err("name must not be empty".to_owned())
    } else if value.chars().count() > MAX_DISPLAY_NAME_CHARS {
        Err(format!(
            "name must be at most {MAX_DISPLAY_NAME_CHARS} characters long"
        ))
    } else {
        Ok(())
    }
}

/// Headers Kait sets itself; an endpoint's custom headers may not override them.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// Prefixes of the headers Kait signs with; none may be set by an endpoint.
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["webhook-", "svix-"];

/// Hop-by-hop headers (RFC 9110 section 7.6.1 and their proxy kin): they describe one
/// connection, not the message, so forwarding them to a receiver would be wrong.
pub const HOP_BY_HOP_HEADERS: &[&str] = &[
    "te",
    "upgrade",
    "keep-alive",
    "trailer",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
];

/// A custom header name and value for an endpoint.
pub fn custom_header(name: &str, value: &str) -> Result<(), String> {
    let is_token = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte));
    if !is_token {
        return Err(format!("`{name}` is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|prefix| lower.starts_with(prefix))
    {
        return Err(format!("`{name}` is set by Kait and cannot be overridden"));
    }
    if HOP_BY_HOP_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "`{name}` is a hop-by-hop header and is not forwarded to receivers"
        ));
    }
    // What HTTP allows in a field value (RFC 9110 section 5.5): visible characters, spaces
    // and tabs, and bytes from 0x80 up; never other control characters. A value outside
    // that could never be sent, so it is refused here instead of silently dropped later.
    if value
        .bytes()
        .any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f)
    {
        return Err(format!(
            "the value of `{name}` contains a control character"
        ));
    }
    if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) {
        return Err(format!(
            "the value of `{name}` starts or ends with white space, which HTTP drops"
        ));
    }
    Ok(())
}

/// A set of custom headers: each valid, and no name twice in different case (HTTP names
/// are case-insensitive, so both could not be sent).
pub fn custom_headers<'a>(
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        custom_header(name, value)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!(
                "`{name}` is given twice (header names are case-insensitive)"
            ));
        }
    }
    Ok(())
}

/// An application's or endpoint's metadata: at most `max_bytes` as JSON.
pub fn metadata(
    metadata: &std::collections::BTreeMap<String, String>,
    max_bytes: usize,
) -> Result<(), String> {
    let size: usize = metadata
        .iter()
        .map(|(key, value)| key.len() + value.len() + 6)
        .sum::<usize>()
        + 2;
    if size > max_bytes {
        return Err(format!("must be at most {max_bytes} bytes as JSON"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(event_type_name("camera.motion-detected_v2").is_ok());
        assert!(event_type_name("").is_err());
        assert!(event_type_name("has space").is_err());
        assert!(event_type_name("slash/no").is_err());
        assert!(event_type_name(&"a".repeat(257)).is_err());
        assert!(channel("project:42").is_ok());
        assert!(uid("project:42").is_err());
        assert!(uid("app_lookalike").is_err());
        assert!(uid("customer-7").is_ok());
    }

    #[test]
    fn urls() {
        assert!(endpoint_url("https://example.com/hook").is_ok());
        assert!(endpoint_url("http://127.0.0.1:9000/").is_ok());
        assert!(endpoint_url("ftp://example.com/").is_err());
        assert!(endpoint_url("not a url").is_err());
        assert!(
            endpoint_url("http:///path-only").is_ok_and(|url| url.host_str() == Some("path-only"))
        );
        assert!(endpoint_url("file:///etc/passwd").is_err());
        assert!(endpoint_url("mailto:someone@example.com").is_err());
    }

    #[test]
    fn headers() {
        assert!(custom_header("X-Tenant", "7").is_ok());
        assert!(custom_header("webhook-id", "x").is_err());
        assert!(custom_header("Svix-Signature", "x").is_err());
        assert!(custom_header("Content-Type", "x").is_err());
        assert!(custom_header("bad header", "x").is_err());
        assert!(custom_header("X-Ok", "line\r\nInjected: 1").is_err());
        // Issue 11: values HTTP cannot carry, hop-by-hop names, case-variant duplicates.
        assert!(custom_header("X-Ok", "bell\u{7}").is_err());
        assert!(custom_header("X-Ok", "del\u{7f}").is_err());
        assert!(custom_header("X-Ok", " padded").is_err());
        assert!(custom_header("X-Ok", "tab\tinside and caf\u{e9}").is_ok());
        for hop in ["TE", "Upgrade", "keep-alive", "Proxy-Authorization"] {
            assert!(custom_header(hop, "x").is_err(), "{hop}");
        }
        let (a, b, c) = ("X-Key".to_owned(), "x-key".to_owned(), "1".to_owned());
        assert!(custom_headers([(&a, &c), (&b, &c)]).is_err());
        assert!(custom_headers([(&a, &c)]).is_ok());
        let mut map = std::collections::BTreeMap::new();
        map.insert("k".to_owned(), "v".repeat(100));
        assert!(metadata(&map, 1024).is_ok());
        assert!(metadata(&map, 100).is_err());
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(json_depth(r#"{"a": "[[[{{{", "b": "\\"}"#), 1);
        assert_eq!(json_depth(r#"{"a": "x\"[[["}"#), 1);
    }

    #[test]
    fn problems_collect_every_field() {
        let mut problems = Problems::new();
        problems.check("name", name(""));
        problems.check("uid", uid("bad uid"));
        problems.check("fine", Ok(()));
        let items = problems.into_result().unwrap_err();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].loc, vec!["body", "name"]);
    }
}
