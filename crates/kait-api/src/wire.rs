//! The Svix v1 JSON shapes and their mapping to Kait's records.
//!
//! Field names follow the Svix OpenAPI models. Renamed fields are accepted under both names
//! (`serde(alias)`) and written under both, so current and older client libraries read them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use kait_core::time::to_datetime;
use kait_core::{Application, Attempt, DeliveryStatus, Endpoint, EventType, Message};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`) in PATCH.
pub fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `{data, iterator, prevIterator, done}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    #[serde(rename = "prevIterator")]
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    /// Builds the response; `key` gives the iterator value of an item.
    pub fn new(data: Vec<T>, done: bool, key: impl Fn(&T) -> String) -> Self {
        Self {
            iterator: data.last().map(&key),
            prev_iterator: data.first().map(|first| format!("-{}", key(first))),
            data,
            done,
        }
    }
}

// Applications.

#[derive(Deserialize, utoipa::ToSchema)]
pub struct ApplicationIn {
    pub name: String,
    pub uid: Option<String>,
    #[serde(rename = "throttleRate", alias = "rateLimit")]
    pub throttle_rate: Option<u16>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct ApplicationPatch {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub uid: Option<Option<String>>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "double_option"
    )]
    pub throttle_rate: Option<Option<u16>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ApplicationOut {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    #[serde(rename = "throttleRate")]
    pub throttle_rate: Option<u16>,
    #[serde(rename = "rateLimit")]
    pub rate_limit: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl From<Application> for ApplicationOut {
    fn from(application: Application) -> Self {
        Self {
            id: application.id.into_string(),
            uid: application.uid,
            name: application.name,
            throttle_rate: application.rate_limit,
            rate_limit: application.rate_limit,
            metadata: application.metadata,
            created_at: to_datetime(application.created_at),
            updated_at: to_datetime(application.updated_at),
        }
    }
}

// Event types.

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EventTypeIn {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
    #[serde(rename = "featureFlag")]
    pub feature_flag: Option<String>,
    #[serde(rename = "groupName")]
    pub group_name: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EventTypeUpdate {
    #[serde(default)]
    pub description: String,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
    #[serde(rename = "featureFlag")]
    pub feature_flag: Option<String>,
    #[serde(rename = "groupName")]
    pub group_name: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct EventTypePatch {
    pub description: Option<String>,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<Option<serde_json::Value>>,
    #[serde(rename = "featureFlag", default, deserialize_with = "double_option")]
    pub feature_flag: Option<Option<String>>,
    #[serde(rename = "groupName", default, deserialize_with = "double_option")]
    pub group_name: Option<Option<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventTypeOut {
    pub name: String,
    pub description: String,
    pub archived: bool,
    pub deprecated: bool,
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<serde_json::Value>,
    #[serde(rename = "featureFlag")]
    pub feature_flag: Option<String>,
    #[serde(rename = "groupName")]
    pub group_name: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl From<EventType> for EventTypeOut {
    fn from(event_type: EventType) -> Self {
        Self {
            name: event_type.name,
            description: event_type.description,
            archived: event_type.archived,
            deprecated: event_type.deprecated,
            schemas: event_type.schemas,
            feature_flag: event_type.feature_flag,
            group_name: event_type.group_name,
            created_at: to_datetime(event_type.created_at),
            updated_at: to_datetime(event_type.updated_at),
        }
    }
}

// Endpoints.

/// Create (POST) and replace (PUT) bodies; PUT ignores `secret`.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointIn {
    /// Required for webhook endpoints; absent for polling ones.
    #[serde(default)]
    pub url: String,
    /// Kait extension: `webhook` (default) or `polling` (read through `/poller/{id}`).
    pub kind: Option<String>,
    #[serde(default)]
    pub description: String,
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    #[serde(rename = "eventTypes", alias = "filterTypes")]
    pub event_types: Option<BTreeSet<String>>,
    pub channels: Option<BTreeSet<String>>,
    #[serde(rename = "throttleRate", alias = "rateLimit")]
    pub throttle_rate: Option<u16>,
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub version: Option<i32>,
    /// Kait extension: `concurrent` (default), `fifo` or `key`.
    pub ordering: Option<String>,
    /// Kait extension: `hmac-sha256` (default, `v1`) or `ed25519` (`v1a`) when Kait generates
    /// the secret.
    #[serde(rename = "signatureScheme")]
    pub signature_scheme: Option<String>,
    /// `json` (default) or `xml`: the body the endpoint receives.
    pub format: Option<String>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub uid: Option<Option<String>>,
    pub disabled: Option<bool>,
    #[serde(
        rename = "eventTypes",
        alias = "filterTypes",
        default,
        deserialize_with = "double_option"
    )]
    pub event_types: Option<Option<BTreeSet<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    pub channels: Option<Option<BTreeSet<String>>>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "double_option"
    )]
    pub throttle_rate: Option<Option<u16>>,
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    pub version: Option<i32>,
    pub ordering: Option<String>,
    pub format: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    pub uid: Option<String>,
    pub version: i32,
    pub disabled: bool,
    #[serde(rename = "eventTypes")]
    pub event_types: Option<BTreeSet<String>>,
    #[serde(rename = "filterTypes")]
    pub filter_types: Option<BTreeSet<String>>,
    pub channels: Option<BTreeSet<String>>,
    #[serde(rename = "throttleRate")]
    pub throttle_rate: Option<u16>,
    #[serde(rename = "rateLimit")]
    pub rate_limit: Option<u16>,
    pub metadata: BTreeMap<String, String>,
    pub ordering: &'static str,
    #[serde(rename = "signatureScheme")]
    pub signature_scheme: &'static str,
    pub format: &'static str,
    pub kind: &'static str,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl From<&Endpoint> for EndpointOut {
    fn from(endpoint: &Endpoint) -> Self {
        Self {
            id: endpoint.id.to_string(),
            url: endpoint.url.clone(),
            description: endpoint.description.clone(),
            uid: endpoint.uid.clone(),
            version: endpoint.version,
            disabled: endpoint.disabled,
            event_types: endpoint.event_types.clone(),
            filter_types: endpoint.event_types.clone(),
            channels: endpoint.channels.clone(),
            throttle_rate: endpoint.rate_limit,
            rate_limit: endpoint.rate_limit,
            metadata: endpoint.metadata.clone(),
            ordering: endpoint.ordering.as_str(),
            signature_scheme: endpoint.secret.scheme().as_str(),
            format: endpoint.format.as_str(),
            kind: endpoint.kind.as_str(),
            created_at: to_datetime(endpoint.created_at),
            updated_at: to_datetime(endpoint.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointSecretOut {
    pub key: String,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct EndpointSecretRotateIn {
    pub key: Option<String>,
    /// How long the old secret keeps signing alongside the new one (default 24 h).
    #[serde(rename = "gracePeriodSeconds")]
    pub grace_period_seconds: Option<u32>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointHeadersIn {
    pub headers: BTreeMap<String, String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointHeadersPatchIn {
    /// A `null` value removes the header (older clients' way).
    pub headers: BTreeMap<String, Option<String>>,
    #[serde(rename = "deleteHeaders", default)]
    pub delete_headers: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointHeadersOut {
    pub headers: BTreeMap<String, String>,
    pub sensitive: BTreeSet<String>,
}

// Messages.

#[derive(Deserialize, utoipa::ToSchema)]
pub struct MessageIn {
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    pub channels: Option<BTreeSet<String>>,
    /// Kait extension: messages with one key stay in order at `ordering: key` endpoints.
    #[serde(rename = "orderingKey")]
    pub ordering_key: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageOut {
    pub id: String,
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub channels: Option<BTreeSet<String>>,
    #[serde(rename = "orderingKey", skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// An empty object, for listings asked `with_content=false`.
fn empty_payload() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

fn raw_payload(payload: String) -> Box<RawValue> {
    // Stored payloads were validated as JSON on the way in.
    RawValue::from_string(payload).unwrap_or_else(|_| empty_payload())
}

impl MessageOut {
    pub fn new(message: Message, with_content: bool) -> Self {
        Self {
            id: message.id.into_string(),
            event_type: message.event_type,
            event_id: message.event_id,
            payload: if with_content {
                raw_payload(message.payload)
            } else {
                empty_payload()
            },
            channels: message.channels,
            ordering_key: message.ordering_key,
            timestamp: to_datetime(message.created_at),
        }
    }
}

// Attempts and delivery states.

#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageAttemptOut {
    pub id: String,
    #[serde(rename = "msgId")]
    pub msg_id: String,
    #[serde(rename = "endpointId")]
    pub endpoint_id: String,
    pub url: String,
    pub response: String,
    #[serde(rename = "responseStatusCode")]
    pub response_status_code: i32,
    #[serde(rename = "responseDurationMs")]
    pub response_duration_ms: i64,
    pub status: i64,
    #[serde(rename = "statusText")]
    pub status_text: &'static str,
    #[serde(rename = "triggerType")]
    pub trigger_type: i64,
    pub timestamp: DateTime<Utc>,
}

impl From<Attempt> for MessageAttemptOut {
    fn from(attempt: Attempt) -> Self {
        Self {
            id: attempt.id.into_string(),
            msg_id: attempt.msg_id.into_string(),
            endpoint_id: attempt.endpoint_id.into_string(),
            url: attempt.url,
            response: attempt.response,
            response_status_code: attempt.response_status_code,
            response_duration_ms: attempt.response_duration_ms,
            status: attempt.status.code(),
            status_text: attempt.status.text(),
            trigger_type: attempt.trigger_type.code(),
            timestamp: to_datetime(attempt.created_at),
        }
    }
}

/// An endpoint with the state of one message there (`/msg/{id}/endpoint`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct MessageEndpointOut {
    #[serde(flatten)]
    pub endpoint: EndpointOut,
    pub status: i64,
    #[serde(rename = "statusText")]
    pub status_text: &'static str,
    #[serde(rename = "nextAttempt")]
    pub next_attempt: Option<DateTime<Utc>>,
}

/// A message with its state at one endpoint (`/endpoint/{id}/msg`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointMessageOut {
    pub id: String,
    #[serde(rename = "eventType")]
    pub event_type: String,
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    pub channels: Option<BTreeSet<String>>,
    pub timestamp: DateTime<Utc>,
    pub status: i64,
    #[serde(rename = "statusText")]
    pub status_text: &'static str,
    #[serde(rename = "nextAttempt")]
    pub next_attempt: Option<DateTime<Utc>>,
}

impl EndpointMessageOut {
    pub fn new(
        message: Message,
        with_content: bool,
        status: DeliveryStatus,
        next_attempt_at: Option<i64>,
    ) -> Self {
        let message = MessageOut::new(message, with_content);
        Self {
            id: message.id,
            event_type: message.event_type,
            event_id: message.event_id,
            payload: message.payload,
            channels: message.channels,
            timestamp: message.timestamp,
            status: status.code(),
            status_text: status.text(),
            next_attempt: next_attempt_at.map(to_datetime),
        }
    }
}

/// Svix's `EndpointStats`, with Kait's circuit-breaker state.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointStatsOut {
    pub success: u64,
    pub pending: u64,
    pub sending: u64,
    pub fail: u64,
    pub canceled: u64,
    /// `closed` (sending), `open` (paused after repeated failures) or `half-open` (probing).
    #[serde(rename = "circuitState")]
    pub circuit_state: &'static str,
}

/// `RecoverIn` and `ReplayIn`: a time window.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct WindowIn {
    pub since: DateTime<Utc>,
    pub until: Option<DateTime<Utc>>,
}

/// Svix's `RecoverOut` / `ReplayOut`: the work is done when Kait answers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BackgroundTaskOut {
    pub id: String,
    pub status: &'static str,
    pub task: &'static str,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
    /// Kait extension: how many deliveries were made due.
    pub count: u64,
}

/// Svix's `PollingEndpointOut`: the iterator is where the next poll continues.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PollingOut {
    /// Svix's `PollingEndpointMessageOut` has the fields of `MessageOut`.
    pub data: Vec<MessageOut>,
    pub iterator: String,
    pub done: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SeekIn {
    pub after: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SeekOut {
    pub iterator: String,
}

/// `AppPortalAccessIn`: what the token may do and how long it lives (Svix's shape).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPortalAccessIn {
    /// Seconds the token lives (default 7 days).
    pub expiry: Option<u64>,
    /// Svix's capabilities; absent: all of them, or only `ViewBase` when `readOnly`.
    #[schema(value_type = Option<Vec<String>>)]
    pub capabilities: Option<Vec<kait_core::access::Capability>>,
    /// Only reading capabilities (Svix's deprecated flag, honoured).
    pub read_only: Option<bool>,
    /// Tags the token, so `expire-all` can name it. (Svix's `featureFlags` are accepted and
    /// ignored: Kait's portal has none.)
    pub session_id: Option<String>,
}

/// `ApplicationTokenExpireIn`: when the application's tokens stop working.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTokenExpireIn {
    /// Seconds from now until the tokens expire (0 to 259200; default 0: at once).
    pub expiry: Option<u64>,
    /// Only the tokens issued with one of these `sessionId`s.
    pub session_ids: Option<Vec<String>>,
}

/// `AppPortalAccessOut`: Kait has no hosted portal; `url` is the app's API base.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppPortalAccessOut {
    pub url: String,
    pub token: String,
}

/// Every error: a machine-readable `code` and a `detail` for people (a list of problems,
/// each with `loc`, `msg` and `type`, for validation errors).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorOut {
    pub code: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}
