//! The records Kait keeps: applications, event types, endpoints, messages, deliveries, attempts.
//!
//! These are the store's and the dispatcher's vocabulary. The API crate maps them to and from
//! the Svix wire shapes; nothing here knows about JSON field names or HTTP.

use std::collections::{BTreeMap, BTreeSet};

use crate::id::{AppId, AttemptId, EndpointId, MessageId};
use crate::signing::Secret;
use crate::time::Millis;

/// A tenant: the consumer a set of endpoints and messages belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: AppId,
    pub uid: Option<String>,
    pub name: String,
    pub rate_limit: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Counts the changes written to this record. An update names the revision it read, and
    /// the store refuses it if another change came in between (optimistic concurrency).
    pub revision: u64,
}

/// A named kind of event, e.g. `camera.motion.detected`. Archiving hides it from lists but
/// keeps messages of that type flowing, as in Svix.
#[derive(Debug, Clone, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    pub schemas: Option<serde_json::Value>,
    pub feature_flag: Option<String>,
    pub group_name: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl EventType {
    /// The `index`th example of the event type's newest schema (Svix keeps schemas by version,
    /// `{"1": {…, "examples": [...]}}`), for `send-example`; an object only, since a webhook's
    /// payload is one.
    pub fn example(&self, index: usize) -> Option<&serde_json::Value> {
        let schemas = self.schemas.as_ref()?.as_object()?;
        let newest = schemas
            .iter()
            .filter_map(|(version, schema)| Some((version.parse::<u64>().ok()?, schema)))
            .max_by_key(|(version, _)| *version)?
            .1;
        newest
            .get("examples")?
            .as_array()?
            .get(index)
            .filter(|example| example.is_object())
    }
}

/// How an endpoint's deliveries may overtake each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryOrder {
    /// Many in flight at once, in any order (the default, and Svix's behaviour).
    #[default]
    Concurrent,
    /// One at a time in message order: the next starts only when the previous one succeeded
    /// or ran out of retries.
    Fifo,
    /// In order per message `orderingKey` (e.g. a device id), different keys in parallel, so
    /// one stuck device never blocks the others.
    Key,
}

impl DeliveryOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Concurrent => "concurrent",
            Self::Fifo => "fifo",
            Self::Key => "key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "concurrent" => Self::Concurrent,
            "fifo" => Self::Fifo,
            "key" => Self::Key,
            _ => return None,
        })
    }
}

/// Whether Kait calls the endpoint or the consumer reads from it (the pull API fallback for
/// consumers that cannot receive webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EndpointKind {
    #[default]
    Webhook,
    /// No URL: its messages are read through `/poller/{endpoint_id}`; no deliveries are made.
    Polling,
    /// A pipe's subscription to its application's events (made and kept by the pipe; hidden
    /// from the endpoint routes): each delivery runs the pipe instead of an HTTP request.
    Pipe,
    /// A plugin's endpoint, made by installing the plugin: a webhook whose successful
    /// answers may hold actions for Kait to run within the installation's scopes.
    Plugin,
}

impl EndpointKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Polling => "polling",
            Self::Pipe => "pipe",
            Self::Plugin => "plugin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "webhook" => Some(Self::Webhook),
            "polling" => Some(Self::Polling),
            "pipe" => Some(Self::Pipe),
            "plugin" => Some(Self::Plugin),
            _ => None,
        }
    }
}

/// The body an endpoint receives: the payload as JSON, or the documented XML mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadFormat {
    #[default]
    Json,
    Xml,
}

impl PayloadFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Xml => "xml",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Self::Json),
            "xml" => Some(Self::Xml),
            _ => None,
        }
    }
}

/// A subscriber's URL and how to call it.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub app_id: AppId,
    pub uid: Option<String>,
    pub url: String,
    pub description: String,
    pub version: i32,
    pub disabled: bool,
    /// `None` receives every event type.
    pub event_types: Option<BTreeSet<String>>,
    /// `None` receives messages of every channel (and those with none).
    pub channels: Option<BTreeSet<String>>,
    /// Messages per second; `None` is unlimited.
    pub rate_limit: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub secret: Secret,
    /// The secret before the last rotation and when it stops signing: during that grace
    /// period every webhook carries both signatures, so receivers can switch at their pace.
    pub previous_secret: Option<(Secret, Millis)>,
    /// Extra headers sent with every webhook to this endpoint.
    pub headers: BTreeMap<String, String>,
    pub ordering: DeliveryOrder,
    pub format: PayloadFormat,
    pub kind: EndpointKind,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Counts the changes written to this record (see [`Application::revision`]).
    pub revision: u64,
    /// Svix's endpoint transformation: JavaScript that may change each webhook in flight.
    pub transformation: TransformationSetting,
    /// How this endpoint receives a message's attachments.
    pub media: MediaSettings,
    /// Whether Kait first proves the receiver owns the URL (issue 17).
    pub ownership: OwnershipCheck,
}

/// The ownership check (`verification: "challenge"`): before the first delivery to a URL,
/// Kait sends a signed challenge that the receiver must echo; until it has, deliveries wait
/// (they neither fail nor use up retries). Plugins' endpoints always have it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnershipCheck {
    pub required: bool,
    /// The URL whose receiver echoed the challenge; a changed URL is checked again.
    pub verified_url: Option<String>,
}

impl OwnershipCheck {
    pub fn challenge() -> Self {
        Self {
            required: true,
            verified_url: None,
        }
    }

    /// Whether deliveries to `url` must wait for the check.
    pub fn pending(&self, url: &str) -> bool {
        self.required && self.verified_url.as_deref() != Some(url)
    }
}

impl Endpoint {
    /// A new endpoint of `app_id` at `url` with every other setting at its default: all event
    /// types, no channels, no rate limit, no headers, concurrent, JSON, a webhook. Callers
    /// change what they need with struct update syntax.
    pub fn new(app_id: AppId, url: String, secret: Secret, now: Millis) -> Self {
        Self {
            id: EndpointId::generate(),
            app_id,
            uid: None,
            url,
            description: String::new(),
            version: 1,
            disabled: false,
            event_types: None,
            channels: None,
            rate_limit: None,
            metadata: BTreeMap::new(),
            secret,
            previous_secret: None,
            headers: BTreeMap::new(),
            ordering: DeliveryOrder::default(),
            format: PayloadFormat::default(),
            kind: EndpointKind::default(),
            created_at: now,
            updated_at: now,
            revision: 0,
            transformation: TransformationSetting::default(),
            media: MediaSettings::default(),
            ownership: OwnershipCheck::default(),
        }
    }
}

/// How an endpoint receives attachments: each as a link signed for it (valid `link_ttl_secs`
/// from the attempt, default [`MediaSettings::DEFAULT_LINK_TTL_SECS`]), and the small ones
/// (up to `inline_max_bytes`) inline as base64, for receivers that cannot fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MediaSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ttl_secs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_max_bytes: Option<u32>,
}

impl MediaSettings {
    /// A day: a retry hours later still carries a working link, since each attempt signs anew.
    pub const DEFAULT_LINK_TTL_SECS: u32 = 24 * 3600;
    /// A week: the longest an S3 presigned URL may live, and long enough for any receiver.
    pub const MAX_LINK_TTL_SECS: u32 = 7 * 24 * 3600;
    /// Inline attachments travel in every webhook and retry: kept to what a payload may hold.
    pub const MAX_INLINE_BYTES: u32 = 1024 * 1024;

    pub fn link_ttl_secs(&self) -> u32 {
        self.link_ttl_secs.unwrap_or(Self::DEFAULT_LINK_TTL_SECS)
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// A blob stored once and referenced by messages (`MessageIn.attachments`): what is known of
/// it. The bytes live in the blob store under the id; they never change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub id: crate::AttachmentId,
    pub app_id: AppId,
    /// As declared at upload (checked against the bytes' signature).
    pub content_type: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes, computed while they were received.
    pub sha256: String,
    pub filename: Option<String>,
    pub created_at: Millis,
}

/// An endpoint's transformation as Svix shows it: the code may be kept while switched off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransformationSetting {
    pub code: Option<String>,
    pub enabled: bool,
    pub updated_at: Option<Millis>,
}

impl TransformationSetting {
    /// The code to run on each webhook, if any is switched on.
    pub fn active_code(&self) -> Option<&str> {
        self.code.as_deref().filter(|_| self.enabled)
    }
}

/// A body sent as it was given rather than as Svix's JSON payload: a request received from
/// another service (issue 13), Svix's `transformationsParams.rawPayload`, a binary event.
/// Webhooks carry these bytes unchanged, with this content type, signed over them, to JSON and
/// XML endpoints alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPayload {
    pub content_type: String,
    pub body: Vec<u8>,
    /// Extra headers every webhook of this message carries (e.g. an ingest source's
    /// `svix-ingest-query`); validated names and values.
    pub headers: Vec<(String, String)>,
}

/// One event sent to one application. The payload is kept as the JSON text received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub app_id: AppId,
    pub event_type: String,
    pub event_id: Option<String>,
    pub channels: Option<BTreeSet<String>>,
    /// Messages with the same key reach an endpoint in `DeliveryOrder::Key` mode in order.
    pub ordering_key: Option<String>,
    /// A JSON object: what is sent, unless `raw` is set; then what rules and listings see of it
    /// (`{}` when the raw body has no JSON reading).
    pub payload: String,
    pub raw: Option<RawPayload>,
    /// Blobs the message references: each webhook carries them as links signed for its
    /// endpoint (or inline), added to the payload's `attachments` when it is sent.
    pub attachments: Vec<Attachment>,
    pub created_at: Millis,
    /// Svix's `deliverAt`: no delivery is attempted before this time (the deliveries are
    /// written due then, so the wait is durable like any scheduled retry).
    pub deliver_at: Option<Millis>,
}

/// The stored payload of a message whose content was erased (`DELETE …/msg/{id}/content`):
/// not a JSON text, so it cannot be mistaken for a payload someone sent. Readers show `{}`;
/// the dispatcher cancels a delivery that finds it instead of sending anything.
pub const ERASED_PAYLOAD: &str = "";

impl Message {
    /// Whether the message's content was erased (privacy requests); its record stays.
    pub fn content_erased(&self) -> bool {
        self.payload == ERASED_PAYLOAD && self.raw.is_none()
    }
}

/// Where a delivery (a message bound for one endpoint) stands. The numbers are Svix's
/// `MessageStatus` and are stored as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Success = 0,
    Pending = 1,
    Fail = 2,
    Sending = 3,
    /// Dropped on purpose (an endpoint transformation set `cancel`); not a failure.
    Canceled = 4,
}

impl DeliveryStatus {
    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Success,
            1 => Self::Pending,
            2 => Self::Fail,
            3 => Self::Sending,
            4 => Self::Canceled,
            _ => return None,
        })
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    /// Svix's `statusText`.
    pub fn text(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Pending => "pending",
            Self::Fail => "fail",
            Self::Sending => "sending",
            Self::Canceled => "canceled",
        }
    }
}

/// Why an attempt was made (Svix's `MessageAttemptTriggerType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    Scheduled = 0,
    Manual = 1,
}

impl TriggerType {
    pub fn from_code(code: i64) -> Self {
        if code == 1 {
            Self::Manual
        } else {
            Self::Scheduled
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }
}

/// The record of one HTTP try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: AttemptId,
    pub msg_id: MessageId,
    pub endpoint_id: EndpointId,
    pub app_id: AppId,
    pub url: String,
    /// `Success` or `Fail` for a finished try.
    pub status: DeliveryStatus,
    /// The HTTP status, or 0 when no response came (timeout, refused, blocked).
    pub response_status_code: i32,
    /// The response body (capped), or the reason no response came.
    pub response: String,
    pub response_duration_ms: i64,
    pub trigger_type: TriggerType,
    pub created_at: Millis,
    /// The request as sent, kept only when it was not the message's own body: a
    /// transformation ran, or the endpoint takes XML. Otherwise the message's payload (or raw
    /// body) is exactly what went out, so nothing more is written on the hot path.
    pub sent: Option<SentRequest>,
}

/// What an attempt sent when it differs from the message (see [`Attempt::sent`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentRequest {
    pub method: String,
    pub content_type: String,
    /// The body as sent (lossily decoded as UTF-8; JSON and XML always are).
    pub body: String,
}

/// A message's state at one endpoint, as listed by `/msg/{id}/endpoint`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryState {
    pub endpoint: Endpoint,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<Millis>,
}

/// A sender Kait receives webhooks from (Svix Ingest's source): the token of its receiving
/// URL, and how its requests are verified (`kind` and `config`, read by `kait-sources`).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: crate::SourceId,
    pub uid: Option<String>,
    pub name: String,
    /// The source type, e.g. `github`.
    pub kind: String,
    /// The `config` object as given, secrets included: sealed at rest, never shown.
    pub config: serde_json::Value,
    pub metadata: BTreeMap<String, String>,
    /// The secret last segment of the receiving URL.
    pub token: String,
    /// The token before the last rotation, and until when it is still accepted.
    pub previous_token: Option<(String, Millis)>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// Counts the changes written to this record (see [`Application::revision`]).
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_type(schemas: serde_json::Value) -> EventType {
        EventType {
            name: "camera.motion".into(),
            description: String::new(),
            archived: false,
            deprecated: false,
            schemas: Some(schemas),
            feature_flag: None,
            group_name: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn examples_come_from_the_newest_schema_version() {
        let kind = event_type(serde_json::json!({
            "1": {"examples": [{"v": 1}]},
            "10": {"examples": [{"v": 10}, {"v": 11}]},
            "2": {"examples": [{"v": 2}]},
            "draft": {"examples": [{"v": 0}]},
        }));
        assert_eq!(kind.example(0), Some(&serde_json::json!({"v": 10})));
        assert_eq!(kind.example(1), Some(&serde_json::json!({"v": 11})));
        assert_eq!(kind.example(2), None);
    }

    #[test]
    fn no_example_without_an_object_to_send() {
        assert_eq!(
            event_type(serde_json::json!({"1": {"type": "object"}})).example(0),
            None
        );
        assert_eq!(
            event_type(serde_json::json!({"1": {"examples": [3]}})).example(0),
            None
        );
        assert_eq!(event_type(serde_json::json!([1])).example(0), None);
        let mut none = event_type(serde_json::json!({}));
        none.schemas = None;
        assert_eq!(none.example(0), None);
    }

    #[test]
    fn erased_content_is_told_apart_from_an_empty_object() {
        let mut message = Message {
            id: MessageId::generate(),
            app_id: AppId::generate(),
            event_type: "a".into(),
            event_id: None,
            channels: None,
            ordering_key: None,
            payload: "{}".into(),
            raw: None,
            attachments: Vec::new(),
            created_at: 0,
            deliver_at: None,
        };
        assert!(!message.content_erased());
        message.payload = ERASED_PAYLOAD.into();
        assert!(message.content_erased());
    }
}
