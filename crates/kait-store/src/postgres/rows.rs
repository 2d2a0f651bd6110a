//! Mapping between PostgreSQL rows and the domain records, and the column lists that go with
//! them. Integers are `BIGINT`, times integer milliseconds, sets and maps JSON text (message
//! channels are `JSONB`, so filters can use its operators).

use std::collections::BTreeSet;

use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryOrder, DeliveryStatus, Endpoint, EndpointId,
    EndpointKind, EventType, Message, MessageId, PayloadFormat, TriggerType,
};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::sealing::SecretKeys;
use crate::{StoreError, StoreResult};

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) => StoreError::Database(format!("{}: {}", db.code().code(), db.message())),
            None => StoreError::Database(error.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::Database(format!("connection pool: {error}"))
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

/// Whether the error is one that running the same transaction again can cure.
pub fn is_transient(error: &StoreError) -> bool {
    matches!(error, StoreError::Database(text)
        if text.starts_with("40P01") || text.starts_with("40001"))
}

pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("maps and sets of strings serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|error| StoreError::Database(format!("column {column} holds bad JSON: {error}")))
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

pub fn optional_set_json(set: &Option<BTreeSet<String>>) -> Option<String> {
    set.as_ref().map(to_json)
}

fn small(value: Option<i64>) -> Option<u16> {
    value.and_then(|value| u16::try_from(value).ok())
}

pub const APPLICATION_COLUMNS: &str = "id, uid, name, rate_limit, metadata, created_at, updated_at";

pub fn application(row: &Row) -> StoreResult<Application> {
    Ok(Application {
        id: AppId::from_trusted(row.try_get(0)?),
        uid: row.try_get(1)?,
        name: row.try_get(2)?,
        rate_limit: small(row.try_get(3)?),
        metadata: from_json("metadata", row.try_get(4)?)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
    })
}

pub const EVENT_TYPE_COLUMNS: &str = "name, description, archived, deprecated, schemas, \
     feature_flag, group_name, created_at, updated_at";

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

pub const ENDPOINT_COLUMNS: &str = "id, app_id, uid, url, description, version, disabled, \
     event_types, channels, rate_limit, metadata, secret, headers, created_at, updated_at, ordering, \
     previous_secret, previous_secret_expires_at, format, kind";

/// The same columns qualified with the `e` alias, for joins.
pub const ENDPOINT_COLUMNS_E: &str = "e.id, e.app_id, e.uid, e.url, e.description, e.version, \
     e.disabled, e.event_types, e.channels, e.rate_limit, e.metadata, e.secret, e.headers, \
     e.created_at, e.updated_at, e.ordering, e.previous_secret, e.previous_secret_expires_at, e.format, e.kind";

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
    })
}

/// The parameters of an endpoint row in [`ENDPOINT_COLUMNS`] order, as owned values.
pub struct EndpointParams {
    pub event_types: Option<String>,
    pub channels: Option<String>,
    pub rate_limit: Option<i64>,
    pub metadata: String,
    pub secret: String,
    pub headers: String,
    pub version: i64,
    pub previous_secret: Option<String>,
    pub previous_expiry: Option<i64>,
}

impl EndpointParams {
    pub fn of(endpoint: &Endpoint, keys: &SecretKeys) -> Self {
        let sealed = keys.seal_endpoint(endpoint);
        Self {
            event_types: optional_set_json(&endpoint.event_types),
            channels: optional_set_json(&endpoint.channels),
            rate_limit: endpoint.rate_limit.map(i64::from),
            metadata: to_json(&endpoint.metadata),
            secret: sealed.secret,
            headers: sealed.headers,
            version: i64::from(endpoint.version),
            previous_secret: sealed.previous_secret,
            previous_expiry: endpoint
                .previous_secret
                .as_ref()
                .map(|(_, expires_at)| *expires_at),
        }
    }
}

pub const MESSAGE_COLUMNS: &str = "m.id, m.app_id, m.event_type, m.event_id, m.channels::text, \
     m.payload, m.created_at, m.ordering_key";

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
    })
}

pub const ATTEMPT_COLUMNS: &str = "a.id, a.msg_id, a.endpoint_id, a.app_id, a.url, a.status, \
     a.response_status_code, a.response, a.response_duration_ms, a.trigger_type, a.created_at";

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
    })
}

pub fn delivery_status(row: &Row, index: usize) -> StoreResult<DeliveryStatus> {
    let code: i64 = row.try_get(index)?;
    DeliveryStatus::from_code(code)
        .ok_or_else(|| StoreError::Database(format!("unknown delivery status {code}")))
}
