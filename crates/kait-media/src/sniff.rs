//! Does a blob's first bytes agree with the content type its uploader declared?
//!
//! A receiver that trusts `contentType` (a player, an image decoder, a browser through the
//! link's `Content-Type`) must not be handed something else: an "image/jpeg" that is an HTML
//! page is how stored cross-site scripting and parser exploits travel. The signatures are the
//! `infer` crate's; this module only decides what counts as agreeing.

/// How many leading bytes the check reads (every signature `infer` knows lies within them).
pub const SNIFF_BYTES: usize = 8192;

/// The declared type and what the bytes look like, when they disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(declared, detected.as_deref()))]
pub struct Mismatch {
    pub declared: String,
    pub detected: Option<String>,
}

fn describe(declared: &str, detected: Option<&str>) -> String {
    match detected {
        Some(detected) => format!(
            "declared `{declared}` but the content is `{detected}`; declare it as such, or as application/octet-stream"
        ),
        None => format!(
            "declared `{declared}` but the content does not start like one; declare its real type, or application/octet-stream"
        ),
    }
}

/// Names that mean one type (the registered one and the ones in common use).
const ALIASES: &[&[&str]] = &[
    &["audio/x-wav", "audio/wav", "audio/wave", "audio/vnd.wave"],
    &["audio/x-flac", "audio/flac"],
    &["audio/aac", "audio/x-aac"],
    &["audio/mpeg", "audio/mp3"],
    &["audio/m4a", "audio/mp4", "audio/x-m4a"],
    &["text/xml", "application/xml"],
    &["image/jpeg", "image/jpg", "image/pjpeg"],
    &["video/x-msvideo", "video/avi"],
];

fn same_type(a: &str, b: &str) -> bool {
    a == b
        || ALIASES
            .iter()
            .any(|names| names.contains(&a) && names.contains(&b))
}

/// What the first bytes say a blob is (`infer`'s signatures), if they say anything.
pub fn detect(head: &[u8]) -> Option<&'static str> {
    infer::get(&head[..head.len().min(SNIFF_BYTES)]).map(|kind| kind.mime_type())
}

/// The media type without parameters, lower-cased (`Image/PNG; q=1` → `image/png`).
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// `Ok` when `head` (the first [`SNIFF_BYTES`] or all of a shorter blob) may be what
/// `declared` says: `application/octet-stream` claims nothing; a recognised signature must be
/// the declared type; a type with a known signature must show it.
pub fn check(declared: &str, head: &[u8]) -> Result<(), Mismatch> {
    let declared = essence(declared);
    if declared == "application/octet-stream" {
        return Ok(());
    }
    let mismatch = |detected: Option<&str>| Mismatch {
        declared: declared.clone(),
        detected: detected.map(str::to_owned),
    };
    match infer::get(head) {
        Some(kind) if same_type(kind.mime_type(), &declared) => Ok(()),
        Some(kind) => Err(mismatch(Some(kind.mime_type()))),
        None if ALIASES
            .iter()
            .find(|names| names.contains(&declared.as_str()))
            .map_or(infer::is_mime_supported(&declared), |names| {
                names.iter().any(|name| infer::is_mime_supported(name))
            }) =>
        {
            Err(mismatch(None))
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F', 0];
    const PNG: &[u8] = &[
        0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D,
    ];
    const MP4: &[u8] = &[
        0, 0, 0, 0x18, b'f', b't', b'y', b'p', b'i', b's', b'o', b'm', 0, 0, 2, 0,
    ];

    #[test]
    fn the_declared_type_must_match_a_recognised_signature() {
        assert!(check("image/jpeg", JPEG).is_ok());
        assert!(check("Image/JPEG; quality=high", JPEG).is_ok());
        assert!(check("image/jpg", JPEG).is_ok());
        assert!(check("video/mp4", MP4).is_ok());
        assert!(check("image/png", PNG).is_ok());
        let mismatch = check("image/jpeg", PNG).unwrap_err();
        assert_eq!(mismatch.detected.as_deref(), Some("image/png"));
        assert!(mismatch.to_string().contains("application/octet-stream"));
        // A text type over an image's bytes is refused too.
        assert!(check("text/plain", PNG).is_err());
    }

    #[test]
    fn a_type_with_a_signature_must_show_it() {
        // A page posing as an image: recognised as what it is.
        let mismatch = check("image/jpeg", b"<html><script>alert(1)</script>").unwrap_err();
        assert_eq!(mismatch.detected.as_deref(), Some("text/html"));
        let mismatch = check("image/jpeg", b"just some text").unwrap_err();
        assert_eq!(mismatch.detected, None);
        assert!(check("video/mp4", b"").is_err());
        assert!(check("audio/wav", b"not a riff").is_err());
    }

    #[test]
    fn types_without_signatures_and_octet_stream_pass() {
        assert!(check("text/plain", b"hello").is_ok());
        assert!(check("application/json", b"{\"a\":1}").is_ok());
        assert!(check("application/x-kait-custom", &[1, 2, 3]).is_ok());
        assert!(check("application/octet-stream", PNG).is_ok());
        assert!(check("application/octet-stream", b"").is_ok());
    }
}
