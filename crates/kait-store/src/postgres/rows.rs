//! Mapping between PostgreSQL rows and the domain records (column lists in
//! [`crate::columns`]). Integers are `BIGINT`, times integer milliseconds, sets and maps JSON text (message
//! channels are `JSONB`, so filters can use its operators).

use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryOrder, DeliveryStatus, Endpoint, EndpointId,
    EndpointKind, EventType, Message, MessageId, PayloadFormat, Source, SourceId, TriggerType,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::sealing::SecretKeys;
use crate::{DatabaseFailure, StoreError, StoreResult};

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        let kind = match error.code() {
            Some(code)
                if *code == SqlState::T_R_DEADLOCK_DETECTED
                    || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
            {
                DatabaseFailure::Retryable
            }
            // Class 08: connection exceptions; 57P01-57P03: the server is shutting down.
            Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
                DatabaseFailure::Unavailable
            }
            Some(_) => DatabaseFailure::Other,
            None if error.is_closed() => DatabaseFailure::Unavailable,
            None => DatabaseFailure::Other,
        };
        let context = match error.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => String::new(),
        };
        StoreError::database(kind, &context, error)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::database(DatabaseFailure::Unavailable, "connection pool", error)
    }
}

/// Turns a unique-constraint violation into a `Conflict` with the given text.
pub fn conflict_on_unique(error: tokio_postgres::Error, what: &str) -> StoreError {
    if error.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StoreError::Conflict(what.to_owned())
    } else {
        error.into()
    }
}

pub fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::corrupt(format!("column {column} holds bad JSON: {error}")))
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &Row,
    index: usize,
    column: &str,
) -> StoreResult<Option<T>> {
    match row.try_get::<_, Option<String>>(index)? {
        Some(text) => from_json(column, &text).map(Some),
        None => Ok(None),
    }
}

fn small(value: Option<i64>) -> Option<u16> {
    value.and_then(|value| u16::try_from(value).ok())
}

pub fn application(row: &Row) -> StoreResult<Application> {
    Ok(Application {
        id: AppId::from_trusted(row.try_get(0)?),
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        rate_limit: small(row.try_get(3)?),
        metadata: from_json("metadata", row.try_get(4)?)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
        revision: row.try_get::<_, i64>(7)? as u64,
    })
}

pub fn event_type(row: &Row) -> StoreResult<EventType> {
    Ok(EventType {
        name: row.try_get(0)?,
        description: row.try_get(1)?,
        archived: row.try_get(2)?,
        deprecated: row.try_get(3)?,
        schemas: optional_json(row, 4, "schemas")?,
        feature_flag: row.try_get(5)?,
        group_name: row.try_get(6)?,
        created_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

/// A source row ([`crate::columns::SOURCE`]); its sealed columns are opened with `keys`.
pub fn source(row: &Row, keys: &SecretKeys) -> StoreResult<Source> {
    let id: String = row.try_get(0)?;
    let previous_text: Option<String> = row.try_get(7)?;
    let previous_expiry: Option<i64> = row.try_get(8)?;
    let (config, token, previous_token) = keys.open_source(
        &id,
        row.try_get(4)?,
        row.try_get(6)?,
        previous_text
            .as_deref()
            .filter(|_| previous_expiry.is_some()),
    )?;
    Ok(Source {
        id: SourceId::from_trusted(id),
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        kind: row.try_get(3)?,
        config,
        metadata: from_json("metadata", row.try_get(5)?)?,
        token,
        previous_token: previous_token.zip(previous_expiry),
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        revision: row.try_get::<_, i64>(11)? as u64,
    })
}

pub fn endpoint(row: &Row, keys: &SecretKeys) -> StoreResult<Endpoint> {
    endpoint_at(row, 0, keys)
}

/// An endpoint row from `base` on; its sealed columns are opened with `keys`.
pub fn endpoint_at(row: &Row, base: usize, keys: &SecretKeys) -> StoreResult<Endpoint> {
    let id: String = row.try_get(base)?;
    let previous_text: Option<String> = row.try_get(base + 16)?;
    let previous_expiry: Option<i64> = row.try_get(base + 17)?;
    let opened = keys.open_endpoint(
        &id,
        row.try_get(base + 11)?,
        row.try_get(base + 12)?,
        previous_text
            .as_deref()
            .filter(|_| previous_expiry.is_some()),
    )?;
    Ok(Endpoint {
        id: EndpointId::from_trusted(id),
        app_id: AppId::from_trusted(row.try_get(base + 1)?),
        uid: row.try_get(base + 2)?,
        url: row.try_get(base + 3)?,
        description: row.try_get(base + 4)?,
        version: row.try_get::<_, i64>(base + 5)? as i32,
        disabled: row.try_get(base + 6)?,
        event_types: optional_json(row, base + 7, "event_types")?,
        channels: optional_json(row, base + 8, "channels")?,
        rate_limit: small(row.try_get(base + 9)?),
        metadata: from_json("metadata", row.try_get(base + 10)?)?,
        secret: opened.secret,
        headers: opened.headers,
        created_at: row.try_get(base + 13)?,
        updated_at: row.try_get(base + 14)?,
        ordering: DeliveryOrder::parse(row.try_get(base + 15)?).unwrap_or_default(),
        previous_secret: opened.previous_secret.zip(previous_expiry),
        format: PayloadFormat::parse(row.try_get(base + 18)?).unwrap_or_default(),
        kind: EndpointKind::parse(row.try_get(base + 19)?).unwrap_or_default(),
        revision: row.try_get::<_, i64>(base + 20)? as u64,
        transformation: kait_core::TransformationSetting {
            code: row.try_get(base + 21)?,
            enabled: row.try_get(base + 22)?,
            updated_at: row.try_get(base + 23)?,
        },
        media: crate::columns::read_media(row.try_get(base + 24)?)
            .map_err(|error| StoreError::corrupt(format!("endpoint media: {error}")))?,
        ownership: kait_core::OwnershipCheck {
            required: row.try_get(base + 25)?,
            verified_url: row.try_get(base + 26)?,
        },
    })
}

pub const MESSAGE_COLUMNS: &str = "m.id, m.app_id, m.event_type, m.event_id, m.channels::text, \
     m.payload, m.created_at, m.ordering_key, m.raw_content_type, m.raw_body, m.raw_headers, \
     m.deliver_at, m.attachments";
/// How many columns [`MESSAGE_COLUMNS`] has: a listing's own columns follow them.
pub const MESSAGE_COLUMN_COUNT: usize = 13;

/// The raw payload from columns `base..base + 3` (content type, body, headers).
pub fn raw_payload(row: &Row, base: usize) -> StoreResult<Option<kait_core::RawPayload>> {
    crate::columns::RawColumns {
        content_type: row.try_get(base)?,
        body: row.try_get(base + 1)?,
        headers: row.try_get(base + 2)?,
    }
    .read()
    .map_err(|error| StoreError::corrupt(format!("message raw_headers: {error}")))
}

/// A message's attachment records from their column.
pub fn attachments_at(row: &Row, index: usize) -> StoreResult<Vec<kait_core::Attachment>> {
    crate::columns::read_attachments(row.try_get(index)?)
        .map_err(|error| StoreError::corrupt(format!("message attachments: {error}")))
}

pub fn message(row: &Row) -> StoreResult<Message> {
    message_at(row, 0)
}

pub fn message_at(row: &Row, base: usize) -> StoreResult<Message> {
    Ok(Message {
        id: MessageId::from_trusted(row.try_get(base)?),
        app_id: AppId::from_trusted(row.try_get(base + 1)?),
        event_type: row.try_get(base + 2)?,
        event_id: row.try_get(base + 3)?,
        channels: optional_json(row, base + 4, "channels")?,
        payload: row.try_get(base + 5)?,
        created_at: row.try_get(base + 6)?,
        ordering_key: row.try_get(base + 7)?,
        raw: raw_payload(row, base + 8)?,
        deliver_at: row.try_get(base + 11)?,
        attachments: attachments_at(row, base + 12)?,
    })
}

pub fn attempt(row: &Row) -> StoreResult<Attempt> {
    Ok(Attempt {
        id: AttemptId::from_trusted(row.try_get(0)?),
        msg_id: MessageId::from_trusted(row.try_get(1)?),
        endpoint_id: EndpointId::from_trusted(row.try_get(2)?),
        app_id: AppId::from_trusted(row.try_get(3)?),
        url: row.try_get(4)?,
        status: delivery_status(row, 5)?,
        response_status_code: row.try_get::<_, i64>(6)? as i32,
        response: row.try_get(7)?,
        response_duration_ms: row.try_get(8)?,
        trigger_type: TriggerType::from_code(row.try_get(9)?),
        created_at: row.try_get(10)?,
        sent: optional_json(row, 11, "attempt.sent")?,
    })
}

pub fn delivery_status(row: &Row, index: usize) -> StoreResult<DeliveryStatus> {
    let code: i64 = row.try_get(index)?;
    DeliveryStatus::from_code(code)
        .ok_or_else(|| StoreError::corrupt(format!("unknown delivery status {code}")))
}
