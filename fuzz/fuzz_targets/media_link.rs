//! What a receiver or an uploader controls in the media path (issue 15): the `Range` header,
//! an attachment link's query string, an upload's declared type and first bytes, and a
//! payload the `attachments` array is spliced into.
#![no_main]

use kait_media::range::{self, Answer};
use kait_media::{LinkKeys, sniff, webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 4 {
        // Range: a partial answer always lies inside the blob.
        0 => {
            let size = u64::from(selector) * 1000 + rest.len() as u64;
            match range::answer(Some(&text), size) {
                Answer::Partial { start, end } => assert!(start <= end && end < size),
                Answer::Unsatisfiable | Answer::Full => {}
            }
        }
        // Links: nothing but a link signed for that attachment verifies, and what verifies
        // is exactly what was signed.
        1 => {
            let keys = LinkKeys::new([9; 32], [[4; 32]]);
            let (attachment, query) = text.split_once('?').unwrap_or(("att_1", &text));
            if let Ok(grant) = keys.verify(attachment, query, 0) {
                let signed = keys.sign(attachment, &grant.endpoint_id, grant.expires_at);
                assert!(keys.verify(attachment, &signed, 0).is_ok());
                assert!(grant.expires_at > 0);
            }
            let signed = keys.sign(attachment, "ep_1", 100);
            assert_eq!(
                keys.verify(attachment, &signed, 0).map(|grant| grant.endpoint_id),
                Ok("ep_1".to_owned())
            );
            assert!(keys.verify(&format!("{attachment}x"), &signed, 0).is_err());
        }
        // Sniffing: never a panic; octet-stream claims nothing and always passes.
        2 => {
            let (declared, head) = rest.split_at(rest.len().min(usize::from(selector) / 4));
            let declared = String::from_utf8_lossy(declared);
            let _ = sniff::check(&declared, head);
            assert!(sniff::check("application/octet-stream", head).is_ok());
        }
        // Splicing: a JSON object gains `attachments` and keeps every member it had.
        _ => {
            let entries = [serde_json::json!({ "id": "att_1", "size": 3 })];
            let Ok(object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
            else {
                return;
            };
            if object.contains_key("attachments") || kait_core::validate::json_depth(&text) > 64 {
                return;
            }
            let spliced = webhook::with_attachments(&text, &entries).expect("an object splices");
            let read: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&spliced).expect("the splice is JSON");
            assert_eq!(read["attachments"], serde_json::json!(entries));
            for (key, value) in &object {
                assert_eq!(&read[key], value);
            }
        }
    }
});
