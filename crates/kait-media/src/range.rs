//! The `Range` request header (RFC 9110 §14), for the single byte range a player or a
//! resumable download asks for.

/// What to send for a `Range` header against a blob of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with the whole blob: no header, an unreadable one, another unit, or several ranges
    /// (which the RFC lets a server answer in full rather than as multipart).
    Full,
    /// 206 with bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416: the range starts past the end (or asks for the last zero bytes).
    Unsatisfiable,
}

/// Longer headers are not ranges any client sends: answered in full, not parsed.
const MAX_HEADER_BYTES: usize = 256;

pub fn answer(header: Option<&str>, size: u64) -> Answer {
    let Some(header) = header else {
        return Answer::Full;
    };
    if header.len() > MAX_HEADER_BYTES {
        return Answer::Full;
    }
    let Some((unit, set)) = header.split_once('=') else {
        return Answer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Answer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Answer::Full;
    };
    let number = |text: &str| -> Option<u64> {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
            .then(|| text.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `bytes=-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => Answer::Unsatisfiable,
            Some(_) if size == 0 => Answer::Unsatisfiable,
            Some(suffix) => Answer::Partial {
                start: size.saturating_sub(suffix),
                end: size - 1,
            },
            None => Answer::Full,
        },
        // `bytes=A-`: from A to the end.
        (false, true) => match number(first) {
            Some(start) if start >= size => Answer::Unsatisfiable,
            Some(start) => Answer::Partial {
                start,
                end: size - 1,
            },
            None => Answer::Full,
        },
        // `bytes=A-B`: B past the end means the end.
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(end)) if start > end => Answer::Full,
            (Some(start), Some(_)) if start >= size => Answer::Unsatisfiable,
            (Some(start), Some(end)) => Answer::Partial {
                start,
                end: end.min(size - 1),
            },
            _ => Answer::Full,
        },
        (true, true) => Answer::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges_are_answered_in_part() {
        let partial = |start, end| Answer::Partial { start, end };
        assert_eq!(answer(Some("bytes=0-99"), 1000), partial(0, 99));
        assert_eq!(answer(Some("bytes=500-"), 1000), partial(500, 999));
        assert_eq!(answer(Some("bytes=-100"), 1000), partial(900, 999));
        assert_eq!(answer(Some("bytes=-5000"), 1000), partial(0, 999));
        assert_eq!(answer(Some("bytes=990-5000"), 1000), partial(990, 999));
        assert_eq!(answer(Some("Bytes = 1-1"), 1000), partial(1, 1));
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(answer(Some("bytes=1000-"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=1000-2000"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=-0"), 1000), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=0-"), 0), Answer::Unsatisfiable);
        assert_eq!(answer(Some("bytes=-1"), 0), Answer::Unsatisfiable);
    }

    #[test]
    fn anything_else_is_answered_in_full() {
        for header in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=-",
            "bytes 0-1",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(answer(Some(header), 1000), Answer::Full, "{header}");
        }
        assert_eq!(answer(None, 1000), Answer::Full);
        let long = format!("bytes=0-{}", "1".repeat(300));
        assert_eq!(answer(Some(&long), 1000), Answer::Full);
    }
}
