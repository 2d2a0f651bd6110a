//! A reader of server-sent events (what `kait tail` follows), bounded: a line longer than
//! [`MAX_LINE`] ends the stream with an error instead of growing without end. Pure: bytes in,
//! events out, so it is unit-tested and fuzzed without a connection.

/// Longest line accepted (a message with a large payload is one `data:` line).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// One event: its id, name and data (the `data:` lines joined by newlines).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A line past [`MAX_LINE`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server sent a line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Feeds bytes in, takes whole events out.
#[derive(Default)]
pub struct Reader {
    pending: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Reader {
    /// Adds `bytes` and returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                    self.has_data = false;
                } else {
                    self.current = Event::default();
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: the keep-alive
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        if self.pending.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks_and_keep_alives() {
        let mut reader = Reader::default();
        assert!(
            reader
                .feed(b": keep-alive\n\nid: 7\nevent: a.b\nda")
                .unwrap()
                .is_empty()
        );
        let events = reader
            .feed(b"ta: {\"x\":1}\r\n\r\nid: 8\ndata: 1\ndata: 2\n\n")
            .unwrap();
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some("7".into()),
                    event: Some("a.b".into()),
                    data: "{\"x\":1}".into()
                },
                Event {
                    id: Some("8".into()),
                    event: None,
                    data: "1\n2".into()
                }
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut reader = Reader::default();
        let chunk = vec![b'x'; 1024 * 1024];
        let mut result = Ok(Vec::new());
        for _ in 0..=8 {
            result = reader.feed(&chunk);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
