//! Column lists and the endpoint row's values, the same on both backends, so that a column
//! added to a table is added here once (with its migration on each backend and its mapping in
//! each `rows.rs`). Indexes used by the row mappers follow the order here.

use std::collections::BTreeSet;

use kait_core::time::Millis;
use kait_core::{Endpoint, MessageId, RawPayload, ReceivedId, Source, SourceId};

use crate::{ReceivedOutcome, ReceivedRequest};

use crate::sealing::SecretKeys;

pub const APPLICATION: &str =
    "id, uid, name, rate_limit, metadata, created_at, updated_at, revision";

pub const EVENT_TYPE: &str = "name, description, archived, deprecated, schemas, \
     feature_flag, group_name, created_at, updated_at";

pub const ENDPOINT: &str = "id, app_id, uid, url, description, version, disabled, \
     event_types, channels, rate_limit, metadata, secret, headers, created_at, updated_at, ordering, \
     previous_secret, previous_secret_expires_at, format, kind, revision, transformation_code, \
     transformation_enabled, transformation_updated_at, media, ownership_required, verified_url";

/// The same columns qualified with the `e` alias, for joins.
pub const ENDPOINT_E: &str = "e.id, e.app_id, e.uid, e.url, e.description, e.version, \
     e.disabled, e.event_types, e.channels, e.rate_limit, e.metadata, e.secret, e.headers, \
     e.created_at, e.updated_at, e.ordering, e.previous_secret, e.previous_secret_expires_at, \
     e.format, e.kind, e.revision, e.transformation_code, e.transformation_enabled, \
     e.transformation_updated_at, e.media, e.ownership_required, e.verified_url";

pub const SOURCE: &str = "id, uid, name, kind, config, metadata, token, previous_token, \
     previous_token_expires_at, created_at, updated_at, revision";

pub const ATTACHMENT: &str = "id, app_id, content_type, size, sha256, filename, created_at";

pub const PIPE: &str =
    "id, uid, name, app_id, endpoint_id, definition, enabled, created_at, updated_at, revision";

pub const PIPE_RUN: &str = "id, pipe_id, origin, at, outcome, detail";

pub const TIMER: &str = "id, pipe_id, due_at, state";

/// What inserting a timer whose id exists does, the same on both backends: keep the wait,
/// or start it again (a new time and state, and any claim on the old firing dropped).
pub fn timer_on_conflict(if_scheduled: crate::IfScheduled) -> &'static str {
    match if_scheduled {
        crate::IfScheduled::Keep => "DO NOTHING",
        crate::IfScheduled::Restart => {
            "DO UPDATE SET due_at = excluded.due_at, state = excluded.state, claimed_until = NULL"
        }
    }
}

pub const RECEIVED: &str =
    "id, source_id, received_at, outcome, reason, content_type, size, event_id, msg_id";

/// A received request's values in [`RECEIVED`] order (text columns, then the two numbers).
pub struct ReceivedRow<'a> {
    pub id: &'a str,
    pub source_id: &'a str,
    pub received_at: Millis,
    pub outcome: &'static str,
    pub reason: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub size: i64,
    pub event_id: Option<&'a str>,
    pub msg_id: Option<&'a str>,
}

impl<'a> ReceivedRow<'a> {
    pub fn of(request: &'a ReceivedRequest) -> Self {
        Self {
            id: request.id.as_str(),
            source_id: request.source_id.as_str(),
            received_at: request.received_at,
            outcome: request.outcome.as_str(),
            reason: request.reason.as_deref(),
            content_type: request.content_type.as_deref(),
            size: i64::try_from(request.size).unwrap_or(i64::MAX),
            event_id: request.event_id.as_deref(),
            msg_id: request.msg_id.as_ref().map(|id| id.as_str()),
        }
    }
}

/// A received request back from its [`RECEIVED`] columns.
#[allow(clippy::too_many_arguments)]
pub fn received_request(
    id: String,
    source_id: String,
    received_at: Millis,
    outcome: &str,
    reason: Option<String>,
    content_type: Option<String>,
    size: i64,
    event_id: Option<String>,
    msg_id: Option<String>,
) -> Result<ReceivedRequest, String> {
    Ok(ReceivedRequest {
        id: ReceivedId::from_trusted(id),
        source_id: SourceId::from_trusted(source_id),
        received_at,
        outcome: ReceivedOutcome::parse(outcome)
            .ok_or_else(|| format!("unknown received outcome {outcome:?}"))?,
        reason,
        content_type,
        size: u64::try_from(size).unwrap_or(0),
        event_id,
        msg_id: msg_id.map(MessageId::from_trusted),
    })
}

pub const ATTEMPT: &str = "a.id, a.msg_id, a.endpoint_id, a.app_id, a.url, a.status, \
     a.response_status_code, a.response, a.response_duration_ms, a.trigger_type, a.created_at, a.sent";

pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and sets of strings serialize")
}

/// A message's raw body as stored: `raw_content_type`, `raw_body`, `raw_headers` (JSON pairs),
/// all null for a JSON message.
pub struct RawColumns {
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
    pub headers: Option<String>,
}

impl RawColumns {
    pub fn of(raw: Option<&RawPayload>) -> Self {
        match raw {
            None => Self {
                content_type: None,
                body: None,
                headers: None,
            },
            Some(raw) => Self {
                content_type: Some(raw.content_type.clone()),
                body: Some(raw.body.clone()),
                headers: (!raw.headers.is_empty()).then(|| to_json(&raw.headers)),
            },
        }
    }

    /// The raw payload back from its columns; `Err` names what could not be read.
    pub fn read(self) -> Result<Option<RawPayload>, String> {
        let Some(content_type) = self.content_type else {
            return Ok(None);
        };
        let headers = match self.headers {
            Some(text) => serde_json::from_str(&text).map_err(|error| error.to_string())?,
            None => Vec::new(),
        };
        Ok(Some(RawPayload {
            content_type,
            body: self.body.unwrap_or_default(),
            headers,
        }))
    }
}

/// A message's attachment records as stored (`attachments`, JSON), `None` when it has none.
pub fn attachments_json(attachments: &[kait_core::Attachment]) -> Option<String> {
    (!attachments.is_empty()).then(|| to_json(attachments))
}

/// A message's attachment records back from their column.
pub fn read_attachments(text: Option<String>) -> Result<Vec<kait_core::Attachment>, String> {
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|error| error.to_string()),
        None => Ok(Vec::new()),
    }
}

/// An endpoint's media settings back from their column.
pub fn read_media(text: Option<String>) -> Result<kait_core::MediaSettings, String> {
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|error| error.to_string()),
        None => Ok(kait_core::MediaSettings::default()),
    }
}

pub fn optional_set_json(set: &Option<BTreeSet<String>>) -> Option<String> {
    set.as_ref().map(to_json)
}

/// An endpoint's stored values, in [`ENDPOINT`] order, with its secrets and headers sealed:
/// what inserts and updates bind, built once for both backends.
pub struct EndpointRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub uid: Option<&'a str>,
    pub url: &'a str,
    pub description: &'a str,
    pub version: i64,
    pub disabled: bool,
    pub event_types: Option<String>,
    pub channels: Option<String>,
    pub rate_limit: Option<i64>,
    pub metadata: String,
    pub secret: String,
    pub headers: String,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub ordering: &'static str,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<Millis>,
    pub format: &'static str,
    pub kind: &'static str,
    pub revision: i64,
    pub transformation_code: Option<&'a str>,
    pub transformation_enabled: bool,
    pub transformation_updated_at: Option<Millis>,
    /// `None` for the default settings (most endpoints).
    pub media: Option<String>,
    pub ownership_required: bool,
    pub verified_url: Option<&'a str>,
}

impl<'a> EndpointRow<'a> {
    pub fn of(endpoint: &'a Endpoint, keys: &SecretKeys) -> Self {
        let sealed = keys.seal_endpoint(endpoint);
        Self {
            id: endpoint.id.as_str(),
            app_id: endpoint.app_id.as_str(),
            uid: endpoint.uid.as_deref(),
            url: &endpoint.url,
            description: &endpoint.description,
            version: i64::from(endpoint.version),
            disabled: endpoint.disabled,
            event_types: optional_set_json(&endpoint.event_types),
            channels: optional_set_json(&endpoint.channels),
            rate_limit: endpoint.rate_limit.map(i64::from),
            metadata: to_json(&endpoint.metadata),
            secret: sealed.secret,
            headers: sealed.headers,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
            ordering: endpoint.ordering.as_str(),
            previous_secret: sealed.previous_secret,
            previous_secret_expires_at: endpoint
                .previous_secret
                .as_ref()
                .map(|(_, expires_at)| *expires_at),
            format: endpoint.format.as_str(),
            kind: endpoint.kind.as_str(),
            revision: endpoint.revision as i64,
            transformation_code: endpoint.transformation.code.as_deref(),
            transformation_enabled: endpoint.transformation.enabled,
            transformation_updated_at: endpoint.transformation.updated_at,
            media: (!endpoint.media.is_default()).then(|| to_json(&endpoint.media)),
            ownership_required: endpoint.ownership.required,
            verified_url: endpoint.ownership.verified_url.as_deref(),
        }
    }
}

/// Where `created_at` sits in [`ENDPOINT`]: an update binds every value but that one (it
/// never changes, and PostgreSQL refuses a parameter it cannot type from its use).
pub const ENDPOINT_CREATED_AT: usize = 13;

/// The placeholder number of `revision` in an update's values.
pub const ENDPOINT_UPDATE_REVISION: usize = 20;

/// How many values an endpoint row binds (the columns of [`ENDPOINT`]).
pub const ENDPOINT_VALUES: usize = 27;

/// A source's stored values, in [`SOURCE`] order, its config and tokens sealed.
pub struct SourceRow<'a> {
    pub id: &'a str,
    pub uid: Option<&'a str>,
    pub name: &'a str,
    pub kind: &'a str,
    pub config: String,
    pub metadata: String,
    pub token: String,
    pub previous_token: Option<String>,
    pub previous_token_expires_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub revision: i64,
}

impl<'a> SourceRow<'a> {
    pub fn of(source: &'a Source, keys: &SecretKeys) -> Self {
        let sealed = keys.seal_source(source);
        Self {
            id: source.id.as_str(),
            uid: source.uid.as_deref(),
            name: &source.name,
            kind: &source.kind,
            config: sealed.config,
            metadata: to_json(&source.metadata),
            token: sealed.token,
            previous_token: sealed.previous_token,
            previous_token_expires_at: source.previous_token.as_ref().map(|(_, until)| *until),
            created_at: source.created_at,
            updated_at: source.updated_at,
            revision: source.revision as i64,
        }
    }
}

/// The `SET` list of an endpoint update: every column but id, app and `created_at`, with
/// placeholders numbered as the row's values without `created_at` (id is 1, app 2).
pub fn endpoint_update_set(placeholder: fn(usize) -> String) -> String {
    ENDPOINT
        .split(',')
        .map(str::trim)
        .filter(|column| *column != "created_at")
        .enumerate()
        .filter(|(_, column)| !matches!(*column, "id" | "app_id"))
        .map(|(index, column)| format!("{column} = {}", placeholder(index + 1)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of an update: the row's without `created_at`.
pub fn update_values<T>(values: impl IntoIterator<Item = T>) -> Vec<T> {
    values
        .into_iter()
        .enumerate()
        .filter(|(index, _)| *index != ENDPOINT_CREATED_AT)
        .map(|(_, value)| value)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_sets_every_changeable_column_by_its_position() {
        let set = endpoint_update_set(|n| format!("${n}"));
        assert!(set.starts_with("uid = $3, url = $4,"), "{set}");
        assert!(set.contains("updated_at = $14"));
        assert!(set.contains(&format!("revision = ${ENDPOINT_UPDATE_REVISION},")));
        let columns: Vec<&str> = ENDPOINT.split(',').map(str::trim).collect();
        assert_eq!(columns.len(), ENDPOINT_VALUES);
        assert_eq!(columns[ENDPOINT_CREATED_AT], "created_at");
        assert_eq!(
            update_values(columns)[ENDPOINT_UPDATE_REVISION - 1],
            "revision"
        );
        assert!(!set.contains("created_at"));
        assert_eq!(ENDPOINT.split(',').count(), ENDPOINT_E.split(',').count());
    }
}
