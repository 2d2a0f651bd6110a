//! OpenTelemetry traces over OTLP/HTTP (`--otlp-endpoint`): each message's accepting span
//! and its attempts, one trace per message (`kait_core::trace`).
//!
//! Kait's spans are records it already has when they end (a message accepted, an attempt
//! answered), with ids derived from the message rather than drawn at random, so they are
//! written as finished `SpanData` straight into the SDK's batch processor, which exports them
//! from its own thread with the OTLP exporter. The SDK's `Tracer` is not used: it draws every
//! id itself, and a message's trace id must be the same on every node and at every retry.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use kait_core::time::Millis;
use kait_core::trace::{AttemptSpan, MessageSpan, SpanContext, TraceExport};
use opentelemetry::trace::{
    Link, SpanContext as OtelContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};

/// The wire format of OTLP/HTTP.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// application/x-protobuf (what collectors expect by default)
    #[default]
    Protobuf,
    /// application/json
    Json,
}

/// Exports Kait's spans to an OTLP/HTTP collector.
pub struct OtlpTraces {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl OtlpTraces {
    /// Spans go to `{endpoint}/v1/traces` (the collector's OTLP/HTTP base URL, e.g.
    /// http://127.0.0.1:4318), batched.
    pub fn start(endpoint: &str, protocol: OtlpProtocol) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(match protocol {
                OtlpProtocol::Protobuf => Protocol::HttpBinary,
                OtlpProtocol::Json => Protocol::HttpJson,
            })
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(Duration::from_secs(10))
            .build()
            .context("building the OTLP exporter")?;
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(
            &Resource::builder()
                .with_service_name("kait")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        Ok(Self {
            processor,
            scope: InstrumentationScope::builder("kait")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// Sends what is batched (at shutdown).
    pub fn flush(&self) {
        if let Err(error) = self.processor.force_flush() {
            tracing::warn!(%error, "exporting the last spans failed");
        }
    }

    /// A finished span without attributes, links or status (the callers set those).
    fn span(
        &self,
        context: SpanContext,
        parent: Option<[u8; 8]>,
        (name, kind): (&'static str, SpanKind),
        (started_at, ended_at): (Millis, Millis),
    ) -> SpanData {
        SpanData {
            span_context: otel_context(context, false),
            parent_span_id: parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: parent.is_some(),
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: system_time(started_at),
            end_time: system_time(ended_at.max(started_at)),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

fn otel_context(context: SpanContext, remote: bool) -> OtelContext {
    OtelContext::new(
        TraceId::from_bytes(context.trace_id),
        SpanId::from_bytes(context.span_id),
        TraceFlags::SAMPLED,
        remote,
        TraceState::default(),
    )
}

fn system_time(millis: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

impl TraceExport for OtlpTraces {
    fn message(&self, span: MessageSpan) {
        let context = SpanContext::of_message(&span.msg_id);
        let mut data = self.span(
            context,
            None,
            ("kait.message.accept", SpanKind::Server),
            (span.started_at, span.ended_at),
        );
        data.attributes = vec![
            KeyValue::new("kait.msg_id", span.msg_id),
            KeyValue::new("kait.app_id", span.app_id),
            KeyValue::new("kait.event_type", span.event_type),
        ];
        if let Some(producer) = span.link {
            data.links
                .links
                .push(Link::with_context(otel_context(producer, true)));
        }
        self.processor.on_end(data);
    }

    fn attempt(&self, span: AttemptSpan) {
        let message = SpanContext::of_message(&span.msg_id);
        let status = if span.succeeded {
            Status::Ok
        } else {
            Status::error(if span.status_code == 0 {
                "no response".to_owned()
            } else {
                format!("HTTP {}", span.status_code)
            })
        };
        let mut data = self.span(
            message.child(span.span_id),
            Some(message.span_id),
            ("kait.attempt", SpanKind::Client),
            (span.started_at, span.ended_at),
        );
        data.attributes = vec![
            KeyValue::new("kait.msg_id", span.msg_id),
            KeyValue::new("kait.attempt_id", span.attempt_id),
            KeyValue::new("kait.endpoint_id", span.endpoint_id),
            KeyValue::new("kait.attempt", i64::from(span.attempt)),
            KeyValue::new("url.full", span.url),
            KeyValue::new("http.response.status_code", i64::from(span.status_code)),
        ];
        data.status = status;
        self.processor.on_end(data);
    }
}
