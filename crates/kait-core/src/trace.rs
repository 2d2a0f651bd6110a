//! Traces of a message's life (issue 18): one trace per message, from the request that
//! accepted it through every attempt, whenever and on whichever node they run.
//!
//! Nothing about a trace is stored: the trace id and the accepting span's id are derived
//! from the message id, so an attempt hours later on another node is a child of the same
//! span. A producer's own `traceparent` is kept as a link of the accepting span (the
//! message's trace is its own, so every attempt can find it). What to do with finished spans
//! is the [`TraceExport`]'s business (`kait serve` exports them over OTLP).

use sha2::{Digest, Sha256};

use crate::time::Millis;

/// A W3C trace context: 16-byte trace id, 8-byte span id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanContext {
    /// The context of the span that accepted message `msg_id`.
    pub fn of_message(msg_id: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"kait trace\0")
            .chain_update(msg_id.as_bytes())
            .finalize();
        let mut trace_id = [0; 16];
        let mut span_id = [0; 8];
        trace_id.copy_from_slice(&digest[..16]);
        span_id.copy_from_slice(&digest[16..24]);
        // All-zero ids are invalid in W3C trace context; SHA-256 gives one never in practice,
        // but the rule costs nothing to keep.
        trace_id[0] |= u8::from(trace_id == [0; 16]);
        span_id[0] |= u8::from(span_id == [0; 8]);
        Self { trace_id, span_id }
    }

    /// A child span of this one's trace with `span_id`.
    pub fn child(&self, span_id: [u8; 8]) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id,
        }
    }

    /// The `traceparent` header value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }

    /// Reads a `traceparent` header (version 00); `None` if malformed or all-zero.
    pub fn parse_traceparent(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || flags.len() != 2 {
            return None;
        }
        let trace_id: [u8; 16] = unhex(trace)?.try_into().ok()?;
        let span_id: [u8; 8] = unhex(span)?.try_into().ok()?;
        (trace_id != [0; 16] && span_id != [0; 8]).then_some(Self { trace_id, span_id })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit() && !byte.is_ascii_uppercase())
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// The accepting of a message: the root of its trace.
#[derive(Debug, Clone)]
pub struct MessageSpan {
    pub msg_id: String,
    pub app_id: String,
    pub event_type: String,
    pub started_at: Millis,
    pub ended_at: Millis,
    /// The producer's trace, from its request's `traceparent`.
    pub link: Option<SpanContext>,
}

/// One attempt to deliver a message to an endpoint: a child of the message's span.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    pub msg_id: String,
    /// This attempt's span id (chosen before the request, so `traceparent` can carry it).
    pub span_id: [u8; 8],
    pub attempt_id: String,
    pub endpoint_id: String,
    pub url: String,
    /// The HTTP status, or 0 when no response came.
    pub status_code: i32,
    pub succeeded: bool,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: Millis,
    pub ended_at: Millis,
}

/// Where finished spans go. Called on the hot path: an implementation hands them off and
/// returns (the OTLP exporter batches on its own thread).
pub trait TraceExport: Send + Sync {
    fn message(&self, span: MessageSpan);
    fn attempt(&self, span: AttemptSpan);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_one_trace_everywhere() {
        let first = SpanContext::of_message("msg_1");
        assert_eq!(
            first,
            SpanContext::of_message("msg_1"),
            "derived, not stored"
        );
        assert_ne!(first.trace_id, SpanContext::of_message("msg_2").trace_id);
        let attempt = first.child([7; 8]);
        assert_eq!(attempt.trace_id, first.trace_id);
    }

    #[test]
    fn traceparent_round_trips_and_refuses_the_malformed() {
        let context = SpanContext::of_message("msg_1");
        let header = context.traceparent();
        assert_eq!(header.len(), 55);
        assert_eq!(SpanContext::parse_traceparent(&header), Some(context));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-zzf7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert_eq!(SpanContext::parse_traceparent(bad), None, "{bad}");
        }
        assert!(
            SpanContext::parse_traceparent(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            )
            .is_some()
        );
    }
}
