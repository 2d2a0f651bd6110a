//! The message log on SQLite: accepting a message with its fan-out, and reading messages,
//! attempts and delivery states back. SQL and row mapping only.

use async_trait::async_trait;
use kait_core::{AppId, Attempt, AttemptId, DeliveryState, DeliveryStatus, EndpointId, MessageId};
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::paging::run_page;
use super::rows;
use super::sources::insert_received;
use super::writer::Durability;
use crate::columns;
use crate::handoff::{FreshDeliveries, may_hand_off};
use crate::logic::query::Dialect;
use crate::logic::{listings, transitions};
use crate::{
    AcceptedMessage, AttemptFilter, EndpointMessage, MessageFilter, MessageLog, NewMessage, Page,
    PageRequest, ReceivedOutcome, ReceivedRequest, StoreError, StoreResult,
};

pub(super) fn message_by_seq(connection: &Connection, seq: i64) -> StoreResult<kait_core::Message> {
    let sql = format!(
        "SELECT {} FROM message m WHERE m.seq = ?1",
        rows::MESSAGE_COLUMNS
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([seq], rows::message)?)
}

pub(super) fn message_seq(
    connection: &Connection,
    app_id: &str,
    msg_id: &str,
) -> StoreResult<Option<i64>> {
    Ok(connection
        .prepare_cached("SELECT seq FROM message WHERE id = ?1 AND app_id = ?2")?
        .query_row([msg_id, app_id], |row| row.get(0))
        .optional()?)
}

#[async_trait]
impl MessageLog for SqliteStore {
    async fn create_message(&self, new_message: NewMessage) -> StoreResult<AcceptedMessage> {
        // No savepoint (`Isolation::Statement`): every check (application, idempotency key)
        // comes before the first write, and the message insert's one possible conflict
        // (`eventId`) undoes itself; after it only I/O errors can fail the job.
        self.writer
            .write_unisolated(Durability::Synced, move |context| {
                let NewMessage {
                    message,
                    idempotency_key,
                    received,
                    only_endpoint,
                } = new_message;
                let app_id = message.app_id.as_str();
                // Also the check that the application still exists: the API may have found
                // it in its cache.
                let endpoints = context.endpoints_of(app_id)?;
                if let Some(key) = &idempotency_key {
                    let earlier: Option<i64> = context
                        .connection
                        .prepare_cached(
                            "SELECT msg_seq FROM idempotency_key WHERE app_id = ?1 AND key = ?2",
                        )?
                        .query_row([app_id, key.as_str()], |row| row.get(0))
                        .optional()?;
                    if let Some(seq) = earlier {
                        let earlier = message_by_seq(context.connection, seq)?;
                        if let Some(received) = received {
                            insert_received(
                                context.connection,
                                &ReceivedRequest {
                                    outcome: ReceivedOutcome::Duplicate,
                                    msg_id: Some(earlier.id.clone()),
                                    ..received
                                },
                            )?;
                        }
                        return Ok(AcceptedMessage {
                            message: earlier,
                            created: false,
                            deliveries: 0,
                        });
                    }
                }
                let raw = columns::RawColumns::of(message.raw.as_ref());
                // `seq` is the rowid: read back with `last_insert_rowid`, not `RETURNING`,
                // which SQLite runs through a temporary table opened and closed per statement
                // (the hottest write; the saving is in BENCHMARKS.md).
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO message (id, app_id, event_type, event_id, channels, payload, created_at, \
                         ordering_key, raw_content_type, raw_body, raw_headers, deliver_at, attachments) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    )?
                    .execute(params![
                        message.id.as_str(),
                        app_id,
                        message.event_type,
                        message.event_id,
                        columns::optional_set_json(&message.channels),
                        message.payload,
                        message.created_at,
                        message.ordering_key,
                        raw.content_type,
                        raw.body,
                        raw.headers,
                        message.deliver_at,
                        columns::attachments_json(&message.attachments),
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a message with this eventId already exists")
                    })?;
                let seq = context.connection.last_insert_rowid();
                for attachment in &message.attachments {
                    // The reference keeps the blob until its last message is purged.
                    context
                        .connection
                        .prepare_cached(
                            "INSERT OR IGNORE INTO message_attachment (attachment_id, msg_id) VALUES (?1, ?2)",
                        )?
                        .execute([attachment.id.as_str(), message.id.as_str()])?;
                    context
                        .connection
                        .prepare_cached("UPDATE attachment SET referenced = 1 WHERE id = ?1 AND referenced = 0")?
                        .execute([attachment.id.as_str()])?;
                }
                if let Some(received) = received {
                    insert_received(
                        context.connection,
                        &ReceivedRequest {
                            outcome: ReceivedOutcome::Accepted,
                            msg_id: Some(message.id.clone()),
                            ..received
                        },
                    )?;
                }
                if let Some(key) = &idempotency_key {
                    context
                        .connection
                        .prepare_cached(
                            "INSERT INTO idempotency_key (app_id, key, msg_seq, created_at) VALUES (?1, ?2, ?3, ?4)",
                        )?
                        .execute(params![app_id, key, seq, message.created_at])?;
                }
                let mut insert = context.connection.prepare_cached(
                    "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, updated_at) \
                     VALUES (?1, ?2, 1, ?3, ?4)",
                )?;
                let mut insert_sending = context.connection.prepare_cached(
                    "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, updated_at) \
                     VALUES (?1, ?2, 3, ?3, ?3)",
                )?;
                let mut deliveries = 0;
                // Held back by `deliverAt`: due then, through the claim (no hand-off now).
                let due_at = message.deliver_at.unwrap_or(message.created_at);
                let mut fresh = FreshDeliveries::of(&message);
                let mut handed_off = Vec::new();
                for endpoint in endpoints.iter().filter(|endpoint| {
                    crate::messages::goes_to(&message, only_endpoint.as_ref(), endpoint)
                }) {
                    deliveries += 1;
                    let permit = may_hand_off(&message, endpoint.ordering)
                        .then(|| context.reserve_handoff(&endpoint.id))
                        .flatten();
                    let Some(permit) = permit else {
                        insert.execute(params![
                            seq,
                            endpoint.id.as_str(),
                            due_at,
                            message.created_at
                        ])?;
                        context.deliveries_became_due = true;
                        continue;
                    };
                    insert_sending.execute(params![
                        seq,
                        endpoint.id.as_str(),
                        message.created_at
                    ])?;
                    let delivery_id = context.connection.last_insert_rowid();
                    handed_off.push((permit, fresh.delivery(delivery_id, endpoint.id.clone())));
                }
                drop((insert, insert_sending));
                for (permit, delivery) in handed_off {
                    context.hand_off(permit, delivery);
                }
                context.apps_with_messages.push(message.app_id.clone());
                Ok(AcceptedMessage {
                    message,
                    created: true,
                    deliveries,
                })
            })
            .await
    }

    async fn get_message(
        &self,
        app_id: &AppId,
        id_or_event_id: &str,
    ) -> StoreResult<Option<kait_core::Message>> {
        let (app_id, key) = (app_id.clone(), id_or_event_id.to_owned());
        self.read(move |connection| {
            let column = if MessageId::has_prefix(&key) {
                "id"
            } else {
                "event_id"
            };
            let sql = format!(
                "SELECT {} FROM message m WHERE m.app_id = ?1 AND m.{column} = ?2",
                rows::MESSAGE_COLUMNS
            );
            Ok(connection
                .prepare_cached(&sql)?
                .query_row([app_id.as_str(), key.as_str()], rows::message)
                .optional()?)
        })
        .await
    }

    async fn list_messages(
        &self,
        app_id: &AppId,
        filter: MessageFilter,
        page: PageRequest,
    ) -> StoreResult<Page<kait_core::Message>> {
        let query = listings::messages(
            Dialect::Sqlite,
            rows::MESSAGE_COLUMNS,
            app_id,
            &filter,
            &page,
        );
        self.read(move |connection| run_page(connection, query, rows::message))
            .await
    }

    async fn list_attempts(
        &self,
        app_id: &AppId,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let query = listings::attempts(Dialect::Sqlite, app_id, filter, &page);
        self.read(move |connection| run_page(connection, query, rows::attempt))
            .await
    }

    async fn get_attempt(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<Option<Attempt>> {
        let (app_id, msg_id, attempt_id) = (app_id.clone(), msg_id.clone(), attempt_id.clone());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM attempt a WHERE a.id = ?1 AND a.app_id = ?2 AND a.msg_id = ?3",
                    columns::ATTEMPT
                ))?
                .query_row(
                    [attempt_id.as_str(), app_id.as_str(), msg_id.as_str()],
                    rows::attempt,
                )
                .optional()?)
        })
        .await
    }

    async fn list_delivery_states(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
    ) -> StoreResult<Vec<DeliveryState>> {
        let (app_id, msg_id, keys) = (app_id.clone(), msg_id.clone(), self.keys.clone());
        self.read(move |connection| {
            let Some(seq) = message_seq(connection, app_id.as_str(), msg_id.as_str())? else {
                return Err(StoreError::NotFound);
            };
            let sql = format!(
                "SELECT d.status, d.due_at, {} FROM delivery d JOIN endpoint e ON e.id = d.endpoint_id \
                 WHERE d.msg_seq = ?1 ORDER BY e.id",
                columns::ENDPOINT_E
            );
            let states = connection
                .prepare_cached(&sql)?
                .query_map([seq], |row| {
                    let status = rows::delivery_status(row, 0)?;
                    Ok(DeliveryState {
                        status,
                        next_attempt_at: transitions::next_attempt_at(status, row.get(1)?),
                        endpoint: rows::endpoint_at(row, 2, &keys)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(states)
        })
        .await
    }

    async fn list_endpoint_messages(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<EndpointMessage>> {
        let query = listings::endpoint_messages(
            Dialect::Sqlite,
            rows::MESSAGE_COLUMNS,
            app_id,
            endpoint_id,
            status,
            &page,
        );
        self.read(move |connection| {
            run_page(connection, query, |row| {
                let status = rows::delivery_status(row, rows::MESSAGE_COLUMN_COUNT)?;
                Ok(EndpointMessage {
                    message: rows::message(row)?,
                    status,
                    next_attempt_at: transitions::queued_until(
                        status,
                        row.get(rows::MESSAGE_COLUMN_COUNT + 1)?,
                    ),
                })
            })
        })
        .await
    }

    async fn erase_message_content(&self, app_id: &AppId, msg_id: &MessageId) -> StoreResult<()> {
        let (app_id, msg_id) = (app_id.clone(), msg_id.clone());
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let seq = message_seq(connection, app_id.as_str(), msg_id.as_str())?
                    .ok_or(StoreError::NotFound)?;
                connection
                    .prepare_cached(
                        "UPDATE message SET payload = ?2, raw_content_type = NULL, raw_body = NULL, \
                         raw_headers = NULL, attachments = NULL WHERE seq = ?1",
                    )?
                    .execute(params![seq, kait_core::ERASED_PAYLOAD])?;
                connection
                    .prepare_cached("DELETE FROM message_attachment WHERE msg_id = ?1")?
                    .execute([msg_id.as_str()])?;
                // What attempts sent of it (transformed or rendered) goes too.
                connection
                    .prepare_cached(
                        "UPDATE attempt SET sent = NULL WHERE msg_seq = ?1 AND sent IS NOT NULL",
                    )?
                    .execute([seq])?;
                connection
                    .prepare_cached(
                        "UPDATE delivery SET status = ?2, updated_at = ?3 WHERE msg_seq = ?1 AND status = ?4",
                    )?
                    .execute(params![
                        seq,
                        DeliveryStatus::Canceled.code(),
                        kait_core::time::now_millis(),
                        DeliveryStatus::Pending.code()
                    ])?;
                // One being sent finishes, but a resend asked for meanwhile is not done.
                connection
                    .prepare_cached(
                        "UPDATE delivery SET resend_requested = 0 WHERE msg_seq = ?1 AND resend_requested = 1",
                    )?
                    .execute([seq])?;
                connection
                    .prepare_cached(
                        "DELETE FROM idempotent_response WHERE app_id = ?1 \
                         AND instr(body, CAST(?2 AS BLOB)) > 0",
                    )?
                    .execute([app_id.as_str(), msg_id.as_str()])?;
                Ok(())
            })
            .await
    }

    async fn erase_attempt_response(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<()> {
        let (app_id, msg_id, attempt_id) = (app_id.clone(), msg_id.clone(), attempt_id.clone());
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE attempt SET response = '', sent = NULL \
                         WHERE id = ?1 AND app_id = ?2 AND msg_id = ?3",
                    )?
                    .execute([attempt_id.as_str(), app_id.as_str(), msg_id.as_str()])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn endpoint_delivery_counts(
        &self,
        endpoint_id: &EndpointId,
    ) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        let endpoint_id = endpoint_id.clone();
        self.read(move |connection| {
            let counts = connection
                .prepare_cached(
                    "SELECT status, COUNT(*) FROM delivery WHERE endpoint_id = ?1 GROUP BY status ORDER BY status",
                )?
                .query_map([endpoint_id.as_str()], |row| {
                    Ok((rows::delivery_status(row, 0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(counts)
        })
        .await
    }
}
