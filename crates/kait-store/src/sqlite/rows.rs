//! Mapping between SQLite rows and the domain records (column lists in [`crate::columns`]).
//!
//! Sets and maps are stored as JSON text; ids as text; times as integer milliseconds.

use std::collections::BTreeMap;

use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryOrder, DeliveryStatus, Endpoint, EndpointId,
    EndpointKind, EventType, Message, MessageId, PayloadFormat, Source, SourceId, TriggerType,
};
use rusqlite::Row;

use crate::sealing::SecretKeys;
use crate::{DatabaseFailure, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match &error {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => DatabaseFailure::Corrupt,
            _ => match error.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    DatabaseFailure::Retryable
                }
                Some(
                    ErrorCode::CannotOpen
                    | ErrorCode::SystemIoFailure
                    | ErrorCode::DiskFull
                    | ErrorCode::ReadOnly
                    | ErrorCode::OutOfMemory,
                ) => DatabaseFailure::Unavailable,
                Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                    DatabaseFailure::Corrupt
                }
                _ => DatabaseFailure::Other,
            },
        };
        StoreError::database(kind, "", error)
    }
}

/// Turns a unique-constraint violation into a `Conflict` with the given text.
pub fn conflict_on_unique(error: rusqlite::Error, what: &str) -> StoreError {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Conflict(what.to_owned()),
        _ => error.into(),
    }
}

pub fn from_json<T: serde::de::DeserializeOwned>(index: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    })
}

fn optional_json<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(index)? {
        Some(text) => from_json(index, &text).map(Some),
        None => Ok(None),
    }
}

pub fn application(row: &Row<'_>) -> rusqlite::Result<Application> {
    Ok(Application {
        id: AppId::from_trusted(row.get(0)?),
        uid: row.get(1)?,
        name: row.get(2)?,
        rate_limit: row.get(3)?,
        metadata: from_json(4, &row.get::<_, String>(4)?)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        revision: row.get::<_, i64>(7)? as u64,
    })
}

pub fn event_type(row: &Row<'_>) -> rusqlite::Result<EventType> {
    Ok(EventType {
        name: row.get(0)?,
        description: row.get(1)?,
        archived: row.get(2)?,
        deprecated: row.get(3)?,
        schemas: optional_json(row, 4)?,
        feature_flag: row.get(5)?,
        group_name: row.get(6)?,
        created_at: row.get(7)?,
        updated_at: row.get(8)?,
    })
}

/// A source row ([`crate::columns::SOURCE`]); its sealed columns are opened with `keys`.
pub fn source(row: &Row<'_>, keys: &SecretKeys) -> rusqlite::Result<Source> {
    let id: String = row.get(0)?;
    let previous_expiry: Option<i64> = row.get(8)?;
    let previous_text: Option<String> = row.get(7)?;
    let (config, token, previous_token) = keys
        .open_source(
            &id,
            &row.get::<_, String>(4)?,
            &row.get::<_, String>(6)?,
            previous_text
                .as_deref()
                .filter(|_| previous_expiry.is_some()),
        )
        .map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, error.into())
        })?;
    Ok(Source {
        id: SourceId::from_trusted(id),
        uid: row.get(1)?,
        name: row.get(2)?,
        kind: row.get(3)?,
        config,
        metadata: from_json(5, &row.get::<_, String>(5)?)?,
        token,
        previous_token: previous_token.zip(previous_expiry),
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        revision: row.get::<_, i64>(11)? as u64,
    })
}

pub fn endpoint(row: &Row<'_>, keys: &SecretKeys) -> rusqlite::Result<Endpoint> {
    endpoint_at(row, 0, keys)
}

/// An endpoint row from `base` on; its sealed columns are opened with `keys`.
pub fn endpoint_at(row: &Row<'_>, base: usize, keys: &SecretKeys) -> rusqlite::Result<Endpoint> {
    let id: String = row.get(base)?;
    let previous_expiry: Option<i64> = row.get(base + 17)?;
    let previous_text: Option<String> = row.get(base + 16)?;
    let opened = keys
        .open_endpoint(
            &id,
            &row.get::<_, String>(base + 11)?,
            &row.get::<_, String>(base + 12)?,
            previous_text
                .as_deref()
                .filter(|_| previous_expiry.is_some()),
        )
        .map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                base + 11,
                rusqlite::types::Type::Text,
                error.into(),
            )
        })?;
    Ok(Endpoint {
        id: EndpointId::from_trusted(id),
        app_id: AppId::from_trusted(row.get(base + 1)?),
        uid: row.get(base + 2)?,
        url: row.get(base + 3)?,
        description: row.get(base + 4)?,
        version: row.get(base + 5)?,
        disabled: row.get(base + 6)?,
        event_types: optional_json(row, base + 7)?,
        channels: optional_json(row, base + 8)?,
        rate_limit: row.get(base + 9)?,
        metadata: from_json::<BTreeMap<String, String>>(
            base + 10,
            &row.get::<_, String>(base + 10)?,
        )?,
        secret: opened.secret,
        headers: opened.headers,
        created_at: row.get(base + 13)?,
        updated_at: row.get(base + 14)?,
        ordering: DeliveryOrder::parse(&row.get::<_, String>(base + 15)?).unwrap_or_default(),
        previous_secret: opened.previous_secret.zip(previous_expiry),
        format: PayloadFormat::parse(&row.get::<_, String>(base + 18)?).unwrap_or_default(),
        kind: EndpointKind::parse(&row.get::<_, String>(base + 19)?).unwrap_or_default(),
        revision: row.get::<_, i64>(base + 20)? as u64,
        transformation: kait_core::TransformationSetting {
            code: row.get(base + 21)?,
            enabled: row.get(base + 22)?,
            updated_at: row.get(base + 23)?,
        },
        media: crate::columns::read_media(row.get(base + 24)?).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                base + 24,
                rusqlite::types::Type::Text,
                error.into(),
            )
        })?,
        ownership: kait_core::OwnershipCheck {
            required: row.get(base + 25)?,
            verified_url: row.get(base + 26)?,
        },
    })
}

pub const MESSAGE_COLUMNS: &str = "m.id, m.app_id, m.event_type, m.event_id, m.channels, m.payload, \
     m.created_at, m.ordering_key, m.raw_content_type, m.raw_body, m.raw_headers, m.deliver_at, \
     m.attachments";
/// How many columns [`MESSAGE_COLUMNS`] has: a listing's own columns follow them.
pub const MESSAGE_COLUMN_COUNT: usize = 13;

/// The raw payload from columns `base..base + 3` (content type, body, headers).
pub fn raw_payload(row: &Row<'_>, base: usize) -> rusqlite::Result<Option<kait_core::RawPayload>> {
    crate::columns::RawColumns {
        content_type: row.get(base)?,
        body: row.get(base + 1)?,
        headers: row.get(base + 2)?,
    }
    .read()
    .map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(
            base + 2,
            rusqlite::types::Type::Text,
            error.into(),
        )
    })
}

/// A message's attachment records from their column.
pub fn attachments_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Vec<kait_core::Attachment>> {
    crate::columns::read_attachments(row.get(index)?).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    })
}

pub fn message(row: &Row<'_>) -> rusqlite::Result<Message> {
    Ok(Message {
        id: MessageId::from_trusted(row.get(0)?),
        app_id: AppId::from_trusted(row.get(1)?),
        event_type: row.get(2)?,
        event_id: row.get(3)?,
        channels: optional_json(row, 4)?,
        payload: row.get(5)?,
        created_at: row.get(6)?,
        ordering_key: row.get(7)?,
        raw: raw_payload(row, 8)?,
        deliver_at: row.get(11)?,
        attachments: attachments_at(row, 12)?,
    })
}

pub fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        id: AttemptId::from_trusted(row.get(0)?),
        msg_id: MessageId::from_trusted(row.get(1)?),
        endpoint_id: EndpointId::from_trusted(row.get(2)?),
        app_id: AppId::from_trusted(row.get(3)?),
        url: row.get(4)?,
        status: delivery_status(row, 5)?,
        response_status_code: row.get(6)?,
        response: row.get(7)?,
        response_duration_ms: row.get(8)?,
        trigger_type: TriggerType::from_code(row.get(9)?),
        created_at: row.get(10)?,
        sent: optional_json(row, 11)?,
    })
}

pub fn delivery_status(row: &Row<'_>, index: usize) -> rusqlite::Result<DeliveryStatus> {
    let code: i64 = row.get(index)?;
    DeliveryStatus::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(index, code))
}
