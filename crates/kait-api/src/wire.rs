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

/// Strings with the rules the API enforces, for the OpenAPI document only: SDK generators,
/// the portal and API fuzzers read the rules from there, so they must be the server's own.
/// Each mirrors a check in `kait_core::validate`.
mod strings {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

    macro_rules! string_schema {
        ($(#[$doc:meta])* $name:ident, $pattern:expr, $max:expr) => {
            string_schema!($(#[$doc])* $name, $pattern, 1, $max);
        };
        ($(#[$doc:meta])* $name:ident, $pattern:expr, $min:expr, $max:expr) => {
            $(#[$doc])*
            pub struct $name;

            impl utoipa::PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some($pattern))
                        .min_length(Some($min))
                        .max_length(Some($max))
                        .into()
                }
            }

            impl utoipa::ToSchema for $name {}
        };
    }

    string_schema!(
        /// A caller-chosen id: letters, digits, `-`, `_`, `.`; not an id prefix.
        Uid,
        format!(
            r"^(?!{})[a-zA-Z0-9\-_.]+$",
            kait_core::id::ID_PREFIXES.join("|")
        ),
        256
    );
    string_schema!(
        /// An event type name: letters, digits, `-`, `_`, `.`.
        EventTypeName,
        r"^[a-zA-Z0-9\-_.]+$",
        256
    );
    string_schema!(
        /// A channel: letters, digits, `-`, `_`, `.`, `:`.
        Channel,
        r"^[a-zA-Z0-9\-_.:]+$",
        128
    );
    /// A source type: one of the kinds `kait-sources` verifies.
    pub struct SourceType;

    impl utoipa::PartialSchema for SourceType {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    kait_sources::SourceKind::ALL.map(kait_sources::SourceKind::as_str),
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for SourceType {}

    string_schema!(
        /// A human-readable name: anything but blank.
        Name,
        r"\S",
        1024
    );
    string_schema!(
        /// An `http` or `https` URL with a host.
        WebhookUrl,
        r"^[hH][tT][tT][pP][sS]?://[^/?#\s]+([/?#]\S*)?$",
        4096
    );
    string_schema!(
        /// An endpoint's URL: an `http` or `https` URL with a host, or nothing (a polling
        /// endpoint has none).
        EndpointUrl,
        r"^([hH][tT][tT][pP][sS]?://[^/?#\s]+([/?#]\S*)?)?$",
        0,
        4096
    );
    string_schema!(
        /// A plugin scope (`kait_core::scope`): `messages:write` and `devices:command` may be
        /// narrowed to a name or a `prefix*`, e.g. `messages:write:camera.*`.
        ScopeText,
        r"^(endpoints:(read|write)|messages:read|attempts:(read|write)|devices:read|attachments:read|pipes:read|(messages:write|devices:command)(:[^\s*\x00-\x1f\x7f-\x9f]{1,255}\*?)?)$",
        300
    );
    string_schema!(
        /// An ordering key or `eventId`.
        Key,
        r"^[\s\S]+$",
        256
    );

    /// One of Svix's app-portal capabilities (`kait_core::access::Capability`).
    pub struct CapabilityName;

    impl utoipa::PartialSchema for CapabilityName {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    kait_core::access::Capability::ALL.map(|capability| format!("{capability:?}")),
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for CapabilityName {}

    /// An endpoint's custom headers: HTTP token names that Kait does not set itself and that
    /// are not hop-by-hop, values HTTP can carry (no control characters, no white space at
    /// either end). Mirrors `kait_core::validate::custom_headers`; the combined size limit per
    /// header (4,096 bytes of name and value) is checked by the server alone.
    pub struct CustomHeaders;

    /// `[xX]` for every letter: the OpenAPI pattern dialect has no case-insensitive flag.
    fn any_case(word: &str) -> String {
        word.chars()
            .map(|character| {
                if character.is_ascii_alphabetic() {
                    format!(
                        "[{}{}]",
                        character.to_ascii_lowercase(),
                        character.to_ascii_uppercase()
                    )
                } else if character == '-' {
                    "\\-".to_owned()
                } else {
                    character.to_string()
                }
            })
            .collect()
    }

    impl utoipa::PartialSchema for CustomHeaders {
        fn schema() -> RefOr<Schema> {
            custom_headers(false)
        }
    }

    impl utoipa::ToSchema for CustomHeaders {}

    /// [`CustomHeaders`] in a patch: a `null` value removes the header.
    pub struct CustomHeadersPatch;

    impl utoipa::PartialSchema for CustomHeadersPatch {
        fn schema() -> RefOr<Schema> {
            custom_headers(true)
        }
    }

    impl utoipa::ToSchema for CustomHeadersPatch {}

    fn custom_headers(nullable_values: bool) -> RefOr<Schema> {
        {
            use kait_core::validate::{
                HOP_BY_HOP_HEADERS, RESERVED_HEADER_PREFIXES, RESERVED_HEADERS,
            };
            let exact = RESERVED_HEADERS
                .iter()
                .chain(HOP_BY_HOP_HEADERS)
                .map(|name| format!("{}$", any_case(name)));
            let prefixes = RESERVED_HEADER_PREFIXES
                .iter()
                .map(|prefix| any_case(prefix));
            let refused = exact.chain(prefixes).collect::<Vec<_>>().join("|");
            let name = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(format!(
                    "^(?!(?:{refused}))[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"
                )));
            let edge = r"[^ \t\x00-\x1f\x7f]";
            let value_type = if nullable_values {
                utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null])
            } else {
                utoipa::openapi::schema::SchemaType::new(Type::String)
            };
            let value = ObjectBuilder::new()
                .schema_type(value_type)
                .pattern(Some(format!(
                    r"^({edge}([^\x00-\x08\x0a-\x1f\x7f]*{edge})?)?$"
                )));
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(name))
                .additional_properties(Some(value))
                .max_properties(Some(20))
                .into()
        }
    }
}

pub use strings::{
    CapabilityName, Channel, CustomHeaders, CustomHeadersPatch, EndpointUrl, EventTypeName, Key,
    Name, ScopeText, SourceType, Uid, WebhookUrl,
};

/// Reads an optional whole number written `5` or `5.0`: JSON does not tell them apart, and
/// JSON Schema counts both as integers, so clients (and fuzzers) may send either.
pub fn whole<'de, T, D>(deserializer: D) -> Result<Option<T>, D::Error>
where
    T: TryFrom<i64>,
    D: Deserializer<'de>,
{
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| {
            let integer = number.as_i64().or_else(|| {
                number
                    .as_f64()
                    .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
                    .map(|float| float as i64)
            });
            integer
                .and_then(|integer| T::try_from(integer).ok())
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("{number} is not a whole number in range"))
                })
        })
        .transpose()
}

/// [`whole`] for PATCH fields, where `null` is a value.
pub fn double_whole<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: TryFrom<i64>,
    D: Deserializer<'de>,
{
    whole(deserializer).map(Some)
}

/// Reads an event type's `schemas`: a JSON object (of JSON Schemas by version), or `null`.
pub fn json_object<'de, D>(deserializer: D) -> Result<Option<serde_json::Value>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(
        Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?
            .map(serde_json::Value::Object),
    )
}

/// [`json_object`] for PATCH fields, where `null` is a value.
pub fn double_json_object<'de, D>(
    deserializer: D,
) -> Result<Option<Option<serde_json::Value>>, D::Error>
where
    D: Deserializer<'de>,
{
    json_object(deserializer).map(Some)
}

/// Reads a list of channels: at most [`kait_core::validate::MAX_CHANNELS`] entries as sent
/// (duplicates count, as the document's `maxItems` counts them), kept as a set.
pub fn channel_list<'de, D>(deserializer: D) -> Result<Option<BTreeSet<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    let Some(list) = Option::<Vec<String>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if list.len() > kait_core::validate::MAX_CHANNELS {
        return Err(serde::de::Error::custom(format!(
            "at most {} channels are allowed",
            kait_core::validate::MAX_CHANNELS
        )));
    }
    Ok(Some(list.into_iter().collect()))
}

/// [`channel_list`] for PATCH fields, where `null` is a value.
pub fn double_channel_list<'de, D>(
    deserializer: D,
) -> Result<Option<Option<BTreeSet<String>>>, D::Error>
where
    D: Deserializer<'de>,
{
    channel_list(deserializer).map(Some)
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

#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct ApplicationIn {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "whole"
    )]
    #[schema(maximum = 65535)]
    pub throttle_rate: Option<u16>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Deserialize, Default, utoipa::ToSchema)]
pub struct ApplicationPatch {
    #[schema(value_type = Option<Name>)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<Option<String>>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "double_whole"
    )]
    #[schema(maximum = 65535)]
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
    #[schema(value_type = EventTypeName)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub archived: Option<bool>,
    pub deprecated: Option<bool>,
    #[serde(default, deserialize_with = "json_object")]
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
    #[serde(default, deserialize_with = "json_object")]
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
    #[serde(default, deserialize_with = "double_json_object")]
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
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct EndpointIn {
    /// Required for webhook endpoints; absent (or empty) for polling ones.
    #[serde(default)]
    #[schema(value_type = EndpointUrl, required = false)]
    pub url: String,
    /// Kait extension: `webhook` (default) or `polling` (read through `/poller/{id}`; then
    /// without `url`).
    #[schema(pattern = "^(webhook|polling)$")]
    pub kind: Option<String>,
    #[serde(default)]
    pub description: String,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    #[serde(rename = "eventTypes", alias = "filterTypes")]
    #[schema(value_type = Option<Vec<EventTypeName>>)]
    pub event_types: Option<BTreeSet<String>>,
    #[serde(default, deserialize_with = "channel_list")]
    #[schema(value_type = Option<Vec<Channel>>, max_items = 10)]
    pub channels: Option<BTreeSet<String>>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<u16>,
    #[schema(pattern = "^(whsec_)?([A-Za-z0-9+/]{4}){8,18}$")]
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<CustomHeaders>)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "whole")]
    pub version: Option<i32>,
    /// Kait extension: `concurrent` (default), `fifo` or `key`.
    #[schema(pattern = "^(concurrent|fifo|key)$")]
    pub ordering: Option<String>,
    /// Kait extension: `hmac-sha256` (default, `v1`) or `ed25519` (`v1a`) when Kait generates
    /// the secret.
    #[serde(rename = "signatureScheme")]
    #[schema(pattern = "^(hmac-sha256|v1|ed25519|v1a)$")]
    pub signature_scheme: Option<String>,
    /// `json` (default) or `xml`: the body the endpoint receives.
    #[schema(pattern = "^(json|xml)$")]
    pub format: Option<String>,
    /// Kait extension: how long the attachment links in this endpoint's webhooks stay valid
    /// (seconds from each attempt; 24 hours by default).
    #[serde(
        rename = "attachmentLinkTtlSeconds",
        default,
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 604800)]
    pub attachment_link_ttl_seconds: Option<u32>,
    /// Kait extension: attachments up to this size also travel inline (base64 `data`), for
    /// receivers that cannot fetch (at most 1 MiB; none by default).
    #[serde(
        rename = "inlineAttachmentMaxBytes",
        default,
        deserialize_with = "whole"
    )]
    #[schema(minimum = 0, maximum = 1048576)]
    pub inline_attachment_max_bytes: Option<u32>,
    /// Kait extension: `challenge` proves the receiver owns the URL before the first delivery
    /// (and after the URL changes): Kait sends a signed `{"type": "endpoint.verification",
    /// "challenge": …}` that the receiver must echo (`{"challenge": …}` or the bare value);
    /// until it has, deliveries wait. `none` (default) for ordinary endpoints.
    #[schema(pattern = "^(none|challenge)$")]
    pub verification: Option<String>,
}

#[derive(Clone, Deserialize, Default, utoipa::ToSchema)]
pub struct EndpointPatch {
    #[schema(value_type = Option<WebhookUrl>)]
    pub url: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<Option<String>>,
    pub disabled: Option<bool>,
    #[serde(
        rename = "eventTypes",
        alias = "filterTypes",
        default,
        deserialize_with = "double_option"
    )]
    #[schema(value_type = Option<Vec<EventTypeName>>)]
    pub event_types: Option<Option<BTreeSet<String>>>,
    #[serde(default, deserialize_with = "double_channel_list")]
    #[schema(value_type = Option<Vec<Channel>>, max_items = 10)]
    pub channels: Option<Option<BTreeSet<String>>>,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "double_whole"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<Option<u16>>,
    #[schema(pattern = "^(whsec_)?([A-Za-z0-9+/]{4}){8,18}$")]
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "whole")]
    pub version: Option<i32>,
    #[schema(pattern = "^(concurrent|fifo|key)$")]
    pub ordering: Option<String>,
    #[schema(pattern = "^(json|xml)$")]
    pub format: Option<String>,
    /// `null` returns to the default (24 hours).
    #[serde(
        rename = "attachmentLinkTtlSeconds",
        default,
        deserialize_with = "double_whole"
    )]
    #[schema(minimum = 1, maximum = 604800)]
    pub attachment_link_ttl_seconds: Option<Option<u32>>,
    /// `null` returns to the default (none inline).
    #[serde(
        rename = "inlineAttachmentMaxBytes",
        default,
        deserialize_with = "double_whole"
    )]
    #[schema(minimum = 0, maximum = 1048576)]
    pub inline_attachment_max_bytes: Option<Option<u32>>,
    /// Kait extension: `challenge` proves the receiver owns the URL before the first delivery
    /// (and after the URL changes): Kait sends a signed `{"type": "endpoint.verification",
    /// "challenge": …}` that the receiver must echo (`{"challenge": …}` or the bare value);
    /// until it has, deliveries wait. `none` (default) for ordinary endpoints.
    #[schema(pattern = "^(none|challenge)$")]
    pub verification: Option<String>,
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
    #[serde(
        rename = "attachmentLinkTtlSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub attachment_link_ttl_seconds: Option<u32>,
    #[serde(
        rename = "inlineAttachmentMaxBytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_attachment_max_bytes: Option<u32>,
    /// Kait extension: `none` or `challenge` (the ownership check).
    pub verification: &'static str,
    /// Kait extension: with `challenge`, whether the receiver at `url` has echoed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
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
            attachment_link_ttl_seconds: endpoint.media.link_ttl_secs,
            inline_attachment_max_bytes: endpoint.media.inline_max_bytes,
            verification: if endpoint.ownership.required {
                "challenge"
            } else {
                "none"
            },
            verified: endpoint
                .ownership
                .required
                .then(|| !endpoint.ownership.pending(&endpoint.url)),
            created_at: to_datetime(endpoint.created_at),
            updated_at: to_datetime(endpoint.updated_at),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointSecretOut {
    pub key: String,
}

/// `POST …/endpoint/{id}/send-example` (Svix's `EventExampleIn`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventExampleIn {
    #[serde(rename = "eventType")]
    #[schema(value_type = EventTypeName)]
    pub event_type: String,
    /// Which of the event type's schema examples (default the first).
    #[serde(rename = "exampleIndex", default)]
    #[schema(minimum = 0, maximum = 1000)]
    pub example_index: Option<u64>,
    /// Sent instead of the schema's example, if given (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct EndpointSecretRotateIn {
    #[schema(pattern = "^(whsec_)?([A-Za-z0-9+/]{4}){8,18}$")]
    pub key: Option<String>,
    /// How long the old secret keeps signing alongside the new one (default 24 h).
    #[serde(rename = "gracePeriodSeconds", default, deserialize_with = "whole")]
    #[schema(maximum = 604800)]
    pub grace_period_seconds: Option<u32>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointHeadersIn {
    #[schema(value_type = CustomHeaders)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct EndpointHeadersPatchIn {
    /// A `null` value removes the header (older clients' way).
    #[schema(value_type = CustomHeadersPatch)]
    pub headers: BTreeMap<String, Option<String>>,
    #[serde(rename = "deleteHeaders", default)]
    pub delete_headers: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointHeadersOut {
    pub headers: BTreeMap<String, String>,
    pub sensitive: BTreeSet<String>,
}

// Transformations.

/// Svix's `EndpointTransformationPatch` (and the older `EndpointTransformationIn`).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct EndpointTransformationPatch {
    /// JavaScript declaring `function handler(webhook) { …; return webhook; }`; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 65536)]
    pub code: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// Svix's transformation variables: not supported by Kait, so a non-empty map is refused.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<Option<BTreeMap<String, String>>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EndpointTransformationOut {
    pub code: Option<String>,
    pub enabled: bool,
    #[serde(rename = "updatedAt")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Kait extension: run transformation code on a sample, as a delivery would.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TransformationTestIn {
    /// The code to try; the endpoint's saved code when absent.
    #[schema(max_length = 65536)]
    pub code: Option<String>,
    /// The sample payload (a JSON object).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[serde(rename = "eventType", default)]
    #[schema(value_type = Option<EventTypeName>)]
    pub event_type: Option<String>,
}

/// What the handler returned, or why it did not.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TransformationTestOut {
    pub result: Option<TransformationResultOut>,
    pub error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TransformationResultOut {
    pub method: String,
    pub url: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub cancel: bool,
}

// Pipes (Kait extension).

/// What starts a pipe: event types of an application's messages (`app`), or of the received
/// requests of one or more incoming sources (`source`, `sources`), with an optional filter.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipeTrigger {
    /// The application's id or uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Or the incoming source's id or uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Or several incoming sources' ids or uids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(max_items = 32)]
    pub sources: Vec<String>,
    #[serde(rename = "eventTypes")]
    #[schema(value_type = Vec<EventTypeName>, min_items = 1, max_items = 32)]
    pub event_types: BTreeSet<String>,
    /// `e => boolean`, JavaScript over the event (`e.eventType`, `e.payload`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 65536)]
    pub filter: Option<String>,
}

#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct PipeIn {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    /// Off keeps the pipe and its waits but runs nothing on new events.
    pub enabled: Option<bool>,
    pub trigger: PipeTrigger,
    /// `e => newPayload`: what the actions see as `e.payload`.
    #[schema(max_length = 65536)]
    pub transform: Option<String>,
    /// Each `{"type": "emit" | "forward" | "delay" | "expect", …}`: `emit {app, eventType,
    /// payload?, orderingKey?, eventId?}`, `forward {url}` or `forward {source, endpoint}`,
    /// `delay {ms}`, `expect {key, eventTypes, filter?, withinMs, restart, onMatch,
    /// onTimeout}`. `publish` is reserved for devices.
    #[schema(value_type = Vec<Object>, max_items = 32)]
    pub actions: Vec<serde_json::Value>,
}

#[derive(Clone, Deserialize, Default, utoipa::ToSchema)]
pub struct PipePatch {
    #[schema(value_type = Option<Name>)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// The same app as before (or other sources), with new event types or filter.
    pub trigger: Option<PipeTrigger>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 65536)]
    pub transform: Option<Option<String>>,
    #[schema(value_type = Option<Vec<Object>>, max_items = 32)]
    pub actions: Option<Vec<serde_json::Value>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PipeOut {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    /// The application whose events reach the pipe (the first source's own application for
    /// sources).
    #[serde(rename = "appId")]
    pub app_id: String,
    pub enabled: bool,
    pub trigger: PipeTrigger,
    pub transform: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub actions: Vec<serde_json::Value>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

/// A pipe's state now.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PipeStatsOut {
    /// Waits (`delay`, `expect`) not yet fired or ended.
    pub waiting: u64,
}

/// One run of a pipe: on an event (`origin` is its message id) or when a timer fired.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PipeRunOut {
    pub id: String,
    pub origin: String,
    pub timestamp: DateTime<Utc>,
    /// `done`, `filtered`, `failed` (tried again) or `dropped`.
    pub outcome: String,
    /// Each step: the filter's result, the transform, each action's outcome or error.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

// Messages.

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageIn {
    #[serde(rename = "eventType")]
    #[schema(value_type = EventTypeName)]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub payload: Box<RawValue>,
    #[serde(rename = "eventId")]
    #[schema(value_type = Option<Key>)]
    pub event_id: Option<String>,
    #[serde(default, deserialize_with = "channel_list")]
    #[schema(value_type = Option<Vec<Channel>>, max_items = 10)]
    pub channels: Option<BTreeSet<String>>,
    /// Kait extension: messages with one key stay in order at `ordering: key` endpoints.
    #[serde(rename = "orderingKey")]
    #[schema(value_type = Option<Key>)]
    pub ordering_key: Option<String>,
    /// No delivery before this time (at most 24 hours ahead; a past time delivers now).
    #[serde(rename = "deliverAt")]
    #[schema(schema_with = nullable_date_time, required = false)]
    pub deliver_at: Option<DateTime<Utc>>,
    /// Svix's way to send a body that is not JSON (`message_in_raw` in the SDKs): the text in
    /// `rawPayload`, sent byte for byte, its type in `headers["content-type"]`; `payload` is
    /// then `{}`.
    #[serde(rename = "transformationsParams", default)]
    pub transformations_params: Option<TransformationsParams>,
    /// Creates the application with the message when the path's id or uid names none (its
    /// `uid`, if given, must be the path's); ignored when the application exists.
    #[serde(default)]
    pub application: Option<ApplicationIn>,
    /// Svix's message tags: Kait does not keep them, so a non-empty list is refused (422)
    /// rather than dropped.
    #[serde(default)]
    #[schema(max_items = 0)]
    pub tags: Option<Vec<String>>,
    /// Days to keep the payload (Svix). Kait keeps every message for the server's
    /// `--retain-messages` (90 days by default): a period at least that long is accepted,
    /// a shorter one is refused (422) rather than not honoured.
    #[serde(rename = "payloadRetentionPeriod", default)]
    #[schema(minimum = 1)]
    pub payload_retention_period: Option<i64>,
    /// Hours to keep the payload (Svix; not with `payloadRetentionPeriod`): as above.
    #[serde(rename = "payloadRetentionHours", default)]
    #[schema(minimum = 1)]
    pub payload_retention_hours: Option<i64>,
    /// Kait extension: ids of attachments uploaded to this application
    /// (`POST …/attachment`). Each webhook's payload then carries `attachments`: for each,
    /// its record and a link signed for the receiving endpoint (see `AttachmentOut`).
    #[serde(default)]
    #[schema(max_items = 16)]
    pub attachments: Option<Vec<String>>,
}

/// A raw (non-JSON) message body, as Svix's SDKs send it.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformationsParams {
    /// The body, sent as it is (not minified or re-encoded).
    #[serde(rename = "rawPayload")]
    pub raw_payload: Option<String>,
    /// Only `content-type` (the webhook's `Content-Type`; `application/json` by default).
    pub headers: Option<BTreeMap<String, String>>,
}

/// `null` or a date-time, as `oneOf`: schema fuzzers ignore `format` on a type list
/// (`["string", "null"]`) and would send `""` as a valid date-time.
fn nullable_date_time() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .description(Some(
            "No delivery before this time (at most 24 hours ahead; a past time delivers now).",
        ))
        .build()
        .into()
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
    #[serde(rename = "deliverAt", skip_serializing_if = "Option::is_none")]
    pub deliver_at: Option<DateTime<Utc>>,
    /// Kait: the raw body webhooks carry instead of `payload` (which is then its JSON reading).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawPayloadOut>,
    /// Kait: the attachments the message references (with links for a polling endpoint).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentOut>,
}

/// An attachment: a blob stored once, referenced by messages.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttachmentOut {
    pub id: String,
    #[serde(rename = "contentType")]
    pub content_type: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    /// Where a receiver fetches it (`GET /media/{id}?…`, with `Range`): a link signed for one
    /// endpoint, in webhooks and polling reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(rename = "expiresAt", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl AttachmentOut {
    pub fn new(attachment: kait_core::Attachment) -> Self {
        Self {
            id: attachment.id.into_string(),
            content_type: attachment.content_type,
            size: attachment.size,
            sha256: attachment.sha256,
            filename: attachment.filename,
            created_at: to_datetime(attachment.created_at),
            url: None,
            expires_at: None,
        }
    }
}

/// A raw message body: as text when it is UTF-8, else in base64.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RawPayloadOut {
    #[serde(rename = "contentType")]
    pub content_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl RawPayloadOut {
    fn new(raw: kait_core::model::RawPayload) -> Self {
        use base64::Engine;
        let (text, base64) = match String::from_utf8(raw.body) {
            Ok(text) => (Some(text), None),
            Err(error) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(error.as_bytes())),
            ),
        };
        Self {
            content_type: raw.content_type,
            text,
            base64,
        }
    }
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
            deliver_at: message.deliver_at.map(to_datetime),
            raw: message.raw.filter(|_| with_content).map(RawPayloadOut::new),
            attachments: message
                .attachments
                .into_iter()
                .map(AttachmentOut::new)
                .collect(),
        }
    }

    /// The message as `endpoint_id` reads it by polling: its attachments with links signed
    /// for that endpoint, valid for the endpoint's link lifetime from `now`.
    pub fn for_endpoint(
        message: Message,
        media: Option<&kait_media::Media>,
        endpoint: &kait_core::Endpoint,
        now: kait_core::time::Millis,
    ) -> Self {
        let mut out = Self::new(message, true);
        if let Some(media) = media {
            let expires_at = now / 1000 + i64::from(endpoint.media.link_ttl_secs());
            for attachment in &mut out.attachments {
                attachment.url = Some(kait_media::webhook::link(
                    &media.links,
                    &media.public_url,
                    &attachment.id,
                    endpoint.id.as_str(),
                    expires_at,
                ));
                attachment.expires_at = Some(to_datetime(expires_at * 1000));
            }
        }
        out
    }
}

// Attempts and delivery states.

/// The request an attempt sent (`GET …/attempt/{attempt_id}/request`, Kait's own).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRequestOut {
    pub method: String,
    pub url: String,
    /// In the order sent. Custom header values are not shown (they often carry the
    /// receiver's credentials), and the signature is not kept: it is HMAC-SHA256 of
    /// `{webhook-id}.{webhook-timestamp}.{body}` under the endpoint's secret at the time.
    pub headers: Vec<HeaderOut>,
    pub body: String,
    /// `true`: the body was kept with the attempt as sent (a transformation ran, the endpoint
    /// takes XML, or attachment links were added); `false`: it was the message's own body,
    /// shown from the message (empty once the message's content is erased).
    pub body_kept: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HeaderOut {
    pub name: String,
    pub value: String,
}

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
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub expiry: Option<u64>,
    /// Svix's capabilities; absent: all of them, or only `ViewBase` when `readOnly`.
    #[schema(value_type = Option<Vec<CapabilityName>>)]
    pub capabilities: Option<Vec<kait_core::access::Capability>>,
    /// Only reading capabilities (Svix's deprecated flag, honoured).
    pub read_only: Option<bool>,
    /// Tags the token, so `expire-all` can name it. (Svix's `featureFlags` are accepted and
    /// ignored: Kait's portal has none.)
    #[schema(value_type = Option<Uid>)]
    pub session_id: Option<String>,
}

/// `ApplicationTokenExpireIn`: when the application's tokens stop working.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationTokenExpireIn {
    /// Seconds from now until the tokens expire (0 to 259200; default 0: at once).
    #[serde(default, deserialize_with = "whole")]
    #[schema(maximum = 259200)]
    pub expiry: Option<u64>,
    /// Only the tokens issued with one of these `sessionId`s.
    pub session_ids: Option<Vec<String>>,
}

/// `AppPortalAccessOut`: `url` opens Kait's consumer portal for the application, with the
/// token in the fragment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AppPortalAccessOut {
    pub url: String,
    pub token: String,
}

/// What a token may do (`GET /api/v1/auth/token`, Kait's own).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAccessOut {
    /// `admin`, `app` (an app-scoped token) or `plugin`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    /// The one application an app-scoped token is confined to.
    pub app_id: Option<String>,
    /// Every capability the token's requests are allowed.
    #[schema(value_type = Vec<CapabilityName>)]
    pub capabilities: Vec<kait_core::access::Capability>,
}

/// Every error: a machine-readable `code` and a `detail` for people (a list of problems,
/// each with `loc`, `msg` and `type`, for validation errors).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorOut {
    pub code: String,
    #[schema(value_type = ErrorDetail)]
    pub detail: serde_json::Value,
}

/// An error's `detail`: a sentence, or for `validation_error` every problem found.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ErrorDetail {
    Text(String),
    Problems(Vec<ValidationProblem>),
}

/// One invalid field: where (`["body", "url"]`), what is wrong, and its kind.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ValidationProblem {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Numbers {
        #[serde(default, deserialize_with = "whole")]
        small: Option<u16>,
        #[serde(default, deserialize_with = "channel_list")]
        channels: Option<BTreeSet<String>>,
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let parse = |json: &str| serde_json::from_str::<Numbers>(json).map(|n| n.small);
        assert_eq!(parse(r#"{"small": 7}"#).unwrap(), Some(7));
        assert_eq!(parse(r#"{"small": 7.0}"#).unwrap(), Some(7));
        assert_eq!(parse(r#"{"small": null}"#).unwrap(), None);
        assert!(parse(r#"{"small": 7.5}"#).is_err());
        assert!(parse(r#"{"small": 70000}"#).is_err());
        assert!(parse(r#"{"small": -1}"#).is_err());
    }

    #[test]
    fn channel_lists_count_duplicates_against_the_bound() {
        let eleven = format!(r#"{{"channels": [{}]}}"#, ["\"a\""; 11].join(","));
        assert!(serde_json::from_str::<Numbers>(&eleven).is_err());
        let two = serde_json::from_str::<Numbers>(r#"{"channels": ["a", "a"]}"#).unwrap();
        assert_eq!(two.channels.unwrap().len(), 1);
    }
}

// Ingest sources (Svix Ingest).

/// `IngestSourceIn`: a sender Kait receives webhooks from.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct IngestSourceIn {
    #[schema(value_type = Name)]
    pub name: String,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// `generic-webhook`, `cron`, `svix`, `standard-webhooks`, `github`, `stripe`, `shopify`
    /// or `slack`.
    #[serde(rename = "type")]
    #[schema(value_type = SourceType)]
    pub kind: String,
    /// The type's settings, e.g. `{"secret": "…"}` (`{}` when left out); secrets are never
    /// shown again.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// `IngestSourceOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestSourceOut {
    pub id: String,
    pub uid: Option<String>,
    pub name: String,
    /// Where the sender posts its webhooks (it holds the source's token).
    #[serde(rename = "ingestUrl")]
    pub ingest_url: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The type's settings without their secrets.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl IngestSourceOut {
    /// The source as the API shows it, its receiving URL under `public_url`.
    pub fn new(source: &kait_core::Source, public_url: &str) -> Self {
        let public_config = kait_sources::SourceKind::parse(&source.kind)
            .and_then(|kind| kait_sources::SourceConfig::parse(kind, &source.config).ok())
            .map_or_else(|| serde_json::json!({}), |config| config.public());
        Self {
            id: source.id.to_string(),
            uid: source.uid.clone(),
            name: source.name.clone(),
            ingest_url: ingest_url(public_url, source),
            kind: source.kind.clone(),
            config: public_config,
            metadata: source.metadata.clone(),
            created_at: to_datetime(source.created_at),
            updated_at: to_datetime(source.updated_at),
        }
    }
}

/// `{public_url}/ingest/api/v1/source/{id}/in/{token}`: Svix's shape.
pub fn ingest_url(public_url: &str, source: &kait_core::Source) -> String {
    format!(
        "{}/ingest/api/v1/source/{}/in/{}",
        public_url.trim_end_matches('/'),
        source.id,
        source.token
    )
}

/// `RotateTokenOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RotateTokenOut {
    #[serde(rename = "ingestUrl")]
    pub ingest_url: String,
}

// Ingest source endpoints: where a source's received requests are forwarded. They are
// endpoints of the source's own application, so the shapes map onto the endpoint ones.

/// `IngestEndpointIn` (POST) and `IngestEndpointUpsertIn` (PUT, which ignores `secret`).
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct IngestEndpointIn {
    #[schema(value_type = WebhookUrl)]
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "throttleRate", default, deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<u16>,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    #[schema(pattern = "^(whsec_)?([A-Za-z0-9+/]{4}){8,18}$")]
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<CustomHeaders>)]
    pub headers: Option<BTreeMap<String, String>>,
    /// Kait extension: only these event types are forwarded (a received request's event type
    /// is the provider's name for it, e.g. GitHub's `push`).
    #[serde(rename = "filterTypes", alias = "eventTypes")]
    #[schema(value_type = Option<Vec<EventTypeName>>)]
    pub filter_types: Option<BTreeSet<String>>,
}

impl From<IngestEndpointIn> for EndpointIn {
    fn from(input: IngestEndpointIn) -> Self {
        Self {
            url: input.url,
            kind: None,
            description: input.description,
            uid: input.uid,
            disabled: input.disabled,
            event_types: input.filter_types,
            channels: None,
            throttle_rate: input.throttle_rate,
            secret: input.secret,
            metadata: input.metadata,
            headers: input.headers,
            version: None,
            ordering: None,
            signature_scheme: None,
            format: None,
            attachment_link_ttl_seconds: None,
            inline_attachment_max_bytes: None,
            verification: None,
        }
    }
}

/// `IngestEndpointOut`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestEndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    #[serde(rename = "throttleRate")]
    pub throttle_rate: Option<u16>,
    pub uid: Option<String>,
    pub disabled: bool,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "filterTypes")]
    pub filter_types: Option<BTreeSet<String>>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl From<EndpointOut> for IngestEndpointOut {
    fn from(endpoint: EndpointOut) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            description: endpoint.description,
            throttle_rate: endpoint.throttle_rate,
            uid: endpoint.uid,
            disabled: endpoint.disabled,
            metadata: endpoint.metadata,
            filter_types: endpoint.filter_types,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

/// One entry of a source's log of received requests (Kait extension).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReceivedOut {
    pub id: String,
    #[serde(rename = "receivedAt")]
    pub received_at: DateTime<Utc>,
    /// `accepted`, `duplicate` (the sender's event id was seen before), `refused` (the
    /// verification failed: see `reason`) or `answered` (a handshake such as Slack's).
    #[schema(pattern = "^(accepted|duplicate|refused|answered)$")]
    pub outcome: &'static str,
    pub reason: Option<String>,
    #[serde(rename = "contentType")]
    pub content_type: Option<String>,
    /// The body's size in bytes.
    pub size: u64,
    /// The sender's own id of the event, when it sends one.
    #[serde(rename = "eventId")]
    pub event_id: Option<String>,
    /// The message it became (or, for a duplicate, the earlier one), in the source's
    /// application `appId`.
    #[serde(rename = "msgId")]
    pub msg_id: Option<String>,
    #[serde(rename = "appId")]
    pub app_uid: String,
}

impl ReceivedOut {
    pub fn new(request: &kait_store::ReceivedRequest, app_uid: String) -> Self {
        Self {
            id: request.id.to_string(),
            received_at: to_datetime(request.received_at),
            outcome: request.outcome.as_str(),
            reason: request.reason.clone(),
            content_type: request.content_type.clone(),
            size: request.size,
            event_id: request.event_id.clone(),
            msg_id: request.msg_id.as_ref().map(ToString::to_string),
            app_uid,
        }
    }
}

/// What the receiving URL answers a sender whose request was kept.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReceivedAck {
    /// The log entry (`rcv_…`).
    pub id: String,
    #[serde(rename = "msgId")]
    pub msg_id: String,
    /// The sender's event id was seen before: nothing new was forwarded.
    pub duplicate: bool,
}

// Operational webhook endpoints: where events about Kait itself go. They are endpoints of
// the reserved application `kait-operational`, so these shapes map onto the endpoint ones.

/// `OperationalWebhookEndpointIn` (POST and PUT; Svix's old `filterTypes`/`rateLimit` too).
#[derive(Clone, Deserialize, utoipa::ToSchema)]
pub struct OperationalWebhookEndpointIn {
    #[schema(value_type = WebhookUrl)]
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(
        rename = "throttleRate",
        alias = "rateLimit",
        default,
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 65535)]
    pub throttle_rate: Option<u16>,
    #[schema(value_type = Option<Uid>)]
    pub uid: Option<String>,
    pub disabled: Option<bool>,
    /// The operational events sent to this endpoint (`endpoint.disabled`,
    /// `message.attempt.exhausted`, …); all of them when absent.
    #[serde(rename = "eventTypes", alias = "filterTypes")]
    #[schema(value_type = Option<Vec<EventTypeName>>)]
    pub event_types: Option<BTreeSet<String>>,
    #[schema(pattern = "^(whsec_)?([A-Za-z0-9+/]{4}){8,18}$")]
    pub secret: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(value_type = Option<CustomHeaders>)]
    pub headers: Option<BTreeMap<String, String>>,
}

impl From<OperationalWebhookEndpointIn> for EndpointIn {
    fn from(input: OperationalWebhookEndpointIn) -> Self {
        Self {
            url: input.url,
            kind: None,
            description: input.description,
            uid: input.uid,
            disabled: input.disabled,
            event_types: input.event_types,
            channels: None,
            throttle_rate: input.throttle_rate,
            secret: input.secret,
            metadata: input.metadata,
            headers: input.headers,
            version: None,
            ordering: None,
            signature_scheme: None,
            format: None,
            attachment_link_ttl_seconds: None,
            inline_attachment_max_bytes: None,
            verification: None,
        }
    }
}

/// `OperationalWebhookEndpointOut`, with the old and new field names as for endpoints.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OperationalWebhookEndpointOut {
    pub id: String,
    pub url: String,
    pub description: String,
    #[serde(rename = "throttleRate")]
    pub throttle_rate: Option<u16>,
    #[serde(rename = "rateLimit")]
    pub rate_limit: Option<u16>,
    pub uid: Option<String>,
    pub disabled: bool,
    #[serde(rename = "eventTypes")]
    pub event_types: Option<BTreeSet<String>>,
    #[serde(rename = "filterTypes")]
    pub filter_types: Option<BTreeSet<String>>,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

impl From<EndpointOut> for OperationalWebhookEndpointOut {
    fn from(endpoint: EndpointOut) -> Self {
        Self {
            id: endpoint.id,
            url: endpoint.url,
            description: endpoint.description,
            throttle_rate: endpoint.throttle_rate,
            rate_limit: endpoint.rate_limit,
            uid: endpoint.uid,
            disabled: endpoint.disabled,
            event_types: endpoint.event_types,
            filter_types: endpoint.filter_types,
            metadata: endpoint.metadata,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}
