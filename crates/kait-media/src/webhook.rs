//! The `attachments` array a webhook carries: for each attachment its record, a link signed
//! for the receiving endpoint and when it expires, and, if small enough for that endpoint,
//! the bytes inline (base64). Made at each attempt, so a retry carries a fresh link.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use kait_core::{Attachment, MediaSettings};
use serde_json::{Value, json};

use crate::LinkKeys;

/// Which of `attachments` this endpoint receives inline.
pub fn inline_wanted<'a>(
    attachments: &'a [Attachment],
    settings: &MediaSettings,
) -> impl Iterator<Item = &'a Attachment> {
    let max = u64::from(settings.inline_max_bytes.unwrap_or(0));
    attachments
        .iter()
        .filter(move |attachment| attachment.size <= max)
}

/// The link to `attachment` for `endpoint_id`, valid until `expires_at` (Unix seconds).
pub fn link(
    links: &LinkKeys,
    public_url: &str,
    attachment: &str,
    endpoint_id: &str,
    expires_at: i64,
) -> String {
    format!(
        "{public_url}/media/{attachment}?{}",
        links.sign(attachment, endpoint_id, expires_at)
    )
}

/// The array's entries for `endpoint_id` at `now` (Unix seconds); `inline` has the bytes of
/// those sent inline.
pub fn entries(
    attachments: &[Attachment],
    endpoint_id: &str,
    settings: &MediaSettings,
    now: i64,
    links: &LinkKeys,
    public_url: &str,
    inline: &[(&str, Bytes)],
) -> Vec<Value> {
    let expires_at = now + i64::from(settings.link_ttl_secs());
    let expires = kait_core::time::to_datetime(expires_at * 1000)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    attachments
        .iter()
        .map(|attachment| {
            let id = attachment.id.as_str();
            let mut entry = json!({
                "id": id,
                "contentType": attachment.content_type,
                "size": attachment.size,
                "sha256": attachment.sha256,
                "url": link(links, public_url, id, endpoint_id, expires_at),
                "expiresAt": expires,
            });
            if let Some(filename) = &attachment.filename {
                entry["filename"] = json!(filename);
            }
            if let Some((_, bytes)) = inline.iter().find(|(inline_id, _)| *inline_id == id) {
                entry["data"] = json!(STANDARD.encode(bytes));
            }
            entry
        })
        .collect()
}

/// `payload` (a JSON object's text) with `"attachments": entries` added as its last member.
/// Spliced into the text rather than parsed and written again, so the sender's bytes (member
/// order, number forms) are kept; the API refuses a payload that has its own `attachments`.
pub fn with_attachments(payload: &str, entries: &[Value]) -> Result<String, &'static str> {
    let body = payload.trim_end();
    let Some(open) = body.strip_suffix('}') else {
        return Err("the payload is not a JSON object");
    };
    let empty = open.trim() == "{";
    let array = serde_json::to_string(entries).expect("JSON values serialize");
    let mut out = String::with_capacity(body.len() + array.len() + 20);
    out.push_str(open.trim_end());
    if !empty {
        out.push(',');
    }
    out.push_str("\"attachments\":");
    out.push_str(&array);
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kait_core::{AppId, AttachmentId};

    fn attachment(size: u64) -> Attachment {
        Attachment {
            id: AttachmentId::generate(),
            app_id: AppId::generate(),
            content_type: "image/jpeg".into(),
            size,
            sha256: "00".repeat(32),
            filename: Some("snap.jpg".into()),
            created_at: 0,
        }
    }

    #[test]
    fn each_entry_has_a_link_for_the_endpoint_and_small_ones_inline() {
        let keys = LinkKeys::new([1; 32], []);
        let small = attachment(3);
        let large = attachment(10_000);
        let settings = MediaSettings {
            link_ttl_secs: Some(600),
            inline_max_bytes: Some(100),
        };
        let attachments = [small.clone(), large.clone()];
        let wanted: Vec<_> = inline_wanted(&attachments, &settings).collect();
        assert_eq!(wanted, vec![&small]);
        let inline = [(small.id.as_str(), Bytes::from_static(b"abc"))];
        let entries = entries(
            &attachments,
            "ep_1",
            &settings,
            1_000_000,
            &keys,
            "https://kait.example",
            &inline,
        );
        assert_eq!(entries[0]["data"], "YWJj");
        assert!(entries[1].get("data").is_none());
        assert_eq!(entries[1]["size"], 10_000);
        assert_eq!(entries[1]["filename"], "snap.jpg");
        assert_eq!(entries[1]["expiresAt"], "1970-01-12T13:56:40Z");
        let url = entries[1]["url"].as_str().unwrap();
        let (path, query) = url.split_once('?').unwrap();
        assert_eq!(path, format!("https://kait.example/media/{}", large.id));
        let grant = keys.verify(large.id.as_str(), query, 1_000_000).unwrap();
        assert_eq!(grant.endpoint_id, "ep_1");
        assert_eq!(grant.expires_at, 1_000_600);
        // Without settings: links valid a day, nothing inline.
        assert_eq!(
            inline_wanted(&attachments, &MediaSettings::default()).count(),
            0
        );
    }

    #[test]
    fn the_array_is_spliced_into_the_payload_keeping_its_bytes() {
        let entries = [json!({"id": "att_1"})];
        assert_eq!(
            with_attachments("{\"z\":1.50,\"a\":2}", &entries).unwrap(),
            "{\"z\":1.50,\"a\":2,\"attachments\":[{\"id\":\"att_1\"}]}"
        );
        assert_eq!(
            with_attachments("{ }\n", &entries).unwrap(),
            "{\"attachments\":[{\"id\":\"att_1\"}]}"
        );
        let spliced = with_attachments("{\n  \"camera\": \"door\"\n}\n", &entries).unwrap();
        let value: Value = serde_json::from_str(&spliced).unwrap();
        assert_eq!(value["camera"], "door");
        assert_eq!(value["attachments"][0]["id"], "att_1");
        assert!(with_attachments("[1]", &entries).is_err());
    }
}
