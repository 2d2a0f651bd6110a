//! Accepting messages on PostgreSQL: a group commit, like the SQLite writer's.
//!
//! Every `create_message` call becomes a job on one queue; one task takes all jobs waiting at
//! that moment and writes them in one transaction with multi-row inserts, so one commit (one
//! WAL flush) serves the whole batch.
//!
//! The transaction first locks the `app_position` row of each application in the batch (in id
//! order, so nodes never deadlock). Every node takes the same locks before writing messages,
//! which gives two things at once: positions are handed out and become visible in commit
//! order (the pull API's guarantee), and the `Idempotency-Key` and `eventId` checks made under
//! the lock cannot race with another node. Because conflicts are found before the inserts, the
//! inserts themselves do not fail on them, and one job's conflict never aborts the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kait_core::Endpoint;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use super::rows;
use crate::{AcceptedMessage, NewMessage, ReceivedOutcome, StoreError, StoreResult};

/// Most messages written in one transaction.
const MAX_BATCH: usize = 512;
/// Messages that may wait for the ingest task before senders wait too (backpressure).
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// How often a batch that hit a deadlock or serialization failure is tried again.
const TRANSIENT_RETRIES: usize = 3;

pub struct Job {
    pub message: NewMessage,
    pub reply: oneshot::Sender<StoreResult<AcceptedMessage>>,
}

/// Takes jobs until every sender is gone.
pub async fn run(shared: Arc<Shared>, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let messages: Vec<&NewMessage> = batch.iter().map(|job| &job.message).collect();
        let started = std::time::Instant::now();
        let mut result = commit_with_retries(&shared, &messages).await;
        if result.is_err() && batch.len() > 1 {
            // Something unforeseen failed the whole batch: write each alone, so that only the
            // job at fault gets the error.
            let mut results = Vec::with_capacity(batch.len());
            for message in &messages {
                results.push(match commit_with_retries(&shared, &[message]).await {
                    Ok(mut one) => one.pop().expect("one result per message"),
                    Err(error) => Err(error),
                });
            }
            result = Ok(results);
        }
        metrics::histogram!("kait_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("kait_store_commit_jobs").record(batch.len() as f64);
        let mut became_due = false;
        match result {
            Ok(results) => {
                let mut apps_with_messages = Vec::new();
                for (job, result) in batch.drain(..).zip(results) {
                    if let Ok(accepted) = &result {
                        became_due |= accepted.deliveries > 0;
                        if accepted.created {
                            apps_with_messages.push(accepted.message.app_id.clone());
                        }
                    }
                    let _ = job.reply.send(result);
                }
                shared.signals.messages_added(&apps_with_messages);
            }
            Err(error) => {
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
        if became_due {
            shared.signals.deliveries_due();
        }
    }
}

async fn commit_with_retries(
    shared: &Shared,
    messages: &[&NewMessage],
) -> StoreResult<Vec<StoreResult<AcceptedMessage>>> {
    let mut tries = 0;
    loop {
        match commit(shared, messages).await {
            Err(error) if error.is_retryable() && tries < TRANSIENT_RETRIES => tries += 1,
            other => return other,
        }
    }
}

/// Columns of the messages to insert, one vector per column (for `unnest`).
#[derive(Default)]
struct MessageColumns {
    id: Vec<String>,
    app_id: Vec<String>,
    pos: Vec<i64>,
    event_type: Vec<String>,
    event_id: Vec<Option<String>>,
    channels: Vec<Option<String>>,
    payload: Vec<String>,
    created_at: Vec<i64>,
    ordering_key: Vec<Option<String>>,
    raw_content_type: Vec<Option<String>>,
    raw_body: Vec<Option<Vec<u8>>>,
    raw_headers: Vec<Option<String>>,
    deliver_at: Vec<Option<i64>>,
    attachments: Vec<Option<String>>,
    /// (attachment id, message id) for each reference.
    references: (Vec<String>, Vec<String>),
}

/// What the batch decided for one job before writing.
enum Decision {
    Insert { deliveries: usize },
    Earlier(Box<kait_core::Message>),
    EarlierInBatch(usize),
    Conflict,
    NoApplication,
}

async fn commit(
    shared: &Shared,
    messages: &[&NewMessage],
) -> StoreResult<Vec<StoreResult<AcceptedMessage>>> {
    let mut client = shared.pool.get().await?;
    let transaction = client.transaction().await?;

    let mut app_ids: Vec<String> = messages
        .iter()
        .map(|new| new.message.app_id.as_str().to_owned())
        .collect();
    app_ids.sort_unstable();
    app_ids.dedup();
    // Only applications that still exist get a row: the API may have found the application
    // in its cache, and its messages must not outlive a concurrent delete. The application
    // rows are share-locked first (the order `delete_application` takes them in), so a
    // delete either commits before this statement and hides the application, or waits.
    let lock = transaction
        .prepare_cached(
            "WITH live AS (SELECT id FROM application WHERE id = ANY($1) ORDER BY id FOR KEY SHARE) \
             INSERT INTO app_position (app_id, last) SELECT id, 0 FROM live ORDER BY id \
             ON CONFLICT (app_id) DO UPDATE SET last = app_position.last RETURNING app_id, last",
        )
        .await?;
    let mut last_position: HashMap<String, i64> = HashMap::new();
    for row in transaction.query(&lock, &[&app_ids]).await? {
        last_position.insert(row.try_get(0)?, row.try_get(1)?);
    }

    // Earlier messages with the same Idempotency-Key, and eventIds already taken.
    let (key_apps, keys): (Vec<String>, Vec<String>) = messages
        .iter()
        .filter_map(|new| {
            new.idempotency_key
                .as_ref()
                .map(|key| (new.message.app_id.as_str().to_owned(), key.clone()))
        })
        .unzip();
    let mut earlier: HashMap<(String, String), kait_core::Message> = HashMap::new();
    if !keys.is_empty() {
        let sql = format!(
            "SELECT i.app_id, i.key, {} FROM idempotency_key i JOIN message m ON m.seq = i.msg_seq \
             WHERE (i.app_id, i.key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            rows::MESSAGE_COLUMNS
        );
        for row in transaction.query(&sql, &[&key_apps, &keys]).await? {
            let message = rows::message_at(&row, 2)?;
            earlier.insert((row.try_get(0)?, row.try_get(1)?), message);
        }
    }
    let (event_apps, event_ids): (Vec<String>, Vec<String>) = messages
        .iter()
        .filter_map(|new| {
            new.message
                .event_id
                .as_ref()
                .map(|id| (new.message.app_id.as_str().to_owned(), id.clone()))
        })
        .unzip();
    let mut taken_event_ids: std::collections::HashSet<(String, String)> = Default::default();
    if !event_ids.is_empty() {
        let rows = transaction
            .query(
                "SELECT app_id, event_id FROM message \
                 WHERE (app_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                &[&event_apps, &event_ids],
            )
            .await?;
        for row in rows {
            taken_event_ids.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }

    let endpoints = endpoints_of(&transaction, &app_ids, &shared.options.secret_keys).await?;

    let mut columns = MessageColumns::default();
    let mut decisions = Vec::with_capacity(messages.len());
    let mut keys_in_batch: HashMap<(&str, &str), usize> = HashMap::new();
    let mut delivery_targets: Vec<(usize, Vec<String>)> = Vec::new();
    for (index, new) in messages.iter().enumerate() {
        let message = &new.message;
        let app_id = message.app_id.as_str();
        if !last_position.contains_key(app_id) {
            decisions.push(Decision::NoApplication);
            continue;
        }
        if let Some(key) = new.idempotency_key.as_deref() {
            if let Some(found) = earlier.get(&(app_id.to_owned(), key.to_owned())) {
                decisions.push(Decision::Earlier(Box::new(found.clone())));
                continue;
            }
            if let Some(first) = keys_in_batch.get(&(app_id, key)) {
                decisions.push(Decision::EarlierInBatch(*first));
                continue;
            }
        }
        if let Some(event_id) = &message.event_id
            && !taken_event_ids.insert((app_id.to_owned(), event_id.clone()))
        {
            decisions.push(Decision::Conflict);
            continue;
        }
        if let Some(key) = new.idempotency_key.as_deref() {
            keys_in_batch.insert((app_id, key), index);
        }
        let position = last_position.entry(app_id.to_owned()).or_insert(0);
        *position += 1;
        columns.id.push(message.id.as_str().to_owned());
        columns.app_id.push(app_id.to_owned());
        columns.pos.push(*position);
        columns.event_type.push(message.event_type.clone());
        columns.event_id.push(message.event_id.clone());
        columns
            .channels
            .push(crate::columns::optional_set_json(&message.channels));
        columns.payload.push(message.payload.clone());
        columns.created_at.push(message.created_at);
        columns.ordering_key.push(message.ordering_key.clone());
        let raw = crate::columns::RawColumns::of(message.raw.as_ref());
        columns.raw_content_type.push(raw.content_type);
        columns.raw_body.push(raw.body);
        columns.raw_headers.push(raw.headers);
        columns.deliver_at.push(message.deliver_at);
        columns
            .attachments
            .push(crate::columns::attachments_json(&message.attachments));
        for attachment in &message.attachments {
            columns.references.0.push(attachment.id.as_str().to_owned());
            columns.references.1.push(message.id.as_str().to_owned());
        }
        let targets: Vec<String> = endpoints
            .get(app_id)
            .map(|endpoints| {
                endpoints
                    .iter()
                    .filter(|endpoint| new.goes_to(endpoint))
                    .map(|endpoint| endpoint.id.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        decisions.push(Decision::Insert {
            deliveries: targets.len(),
        });
        delivery_targets.push((index, targets));
    }

    if !columns.id.is_empty() {
        let insert = transaction
            .prepare_cached(
                "INSERT INTO message (id, app_id, pos, event_type, event_id, channels, payload, created_at, ordering_key, \
                 raw_content_type, raw_body, raw_headers, deliver_at, attachments) \
                 SELECT id, app, pos, et, eid, CAST(ch AS jsonb), pl, ca, ok, rct, rb, rh, da, att FROM unnest($1::text[], $2::text[], \
                 $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[], \
                 $10::text[], $11::bytea[], $12::text[], $13::bigint[], $14::text[]) \
                 AS t(id, app, pos, et, eid, ch, pl, ca, ok, rct, rb, rh, da, att) RETURNING id, seq",
            )
            .await?;
        let inserted = transaction
            .query(
                &insert,
                &[
                    &columns.id,
                    &columns.app_id,
                    &columns.pos,
                    &columns.event_type,
                    &columns.event_id,
                    &columns.channels,
                    &columns.payload,
                    &columns.created_at,
                    &columns.ordering_key,
                    &columns.raw_content_type,
                    &columns.raw_body,
                    &columns.raw_headers,
                    &columns.deliver_at,
                    &columns.attachments,
                ],
            )
            .await?;
        if !columns.references.0.is_empty() {
            // The references keep the blobs until their last message is purged.
            transaction
                .execute(
                    "INSERT INTO message_attachment (attachment_id, msg_id) \
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                    &[&columns.references.0, &columns.references.1],
                )
                .await?;
            transaction
                .execute(
                    "UPDATE attachment SET referenced = 1 WHERE id = ANY($1) AND referenced = 0",
                    &[&columns.references.0],
                )
                .await?;
        }
        let mut seq_of: HashMap<String, i64> = HashMap::with_capacity(inserted.len());
        for row in inserted {
            seq_of.insert(row.try_get(0)?, row.try_get(1)?);
        }

        let (counter_apps, counter_values): (Vec<String>, Vec<i64>) = last_position
            .iter()
            .map(|(app, last)| (app.clone(), *last))
            .unzip();
        transaction
            .execute(
                "UPDATE app_position p SET last = u.last FROM unnest($1::text[], $2::bigint[]) AS u(app_id, last) \
                 WHERE p.app_id = u.app_id",
                &[&counter_apps, &counter_values],
            )
            .await?;

        let mut key_rows: (Vec<String>, Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
        // Sequence, endpoint, due (`deliverAt` or now), written.
        let mut delivery_rows: (Vec<i64>, Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
        for (index, targets) in delivery_targets {
            let new = messages[index];
            let seq = seq_of[new.message.id.as_str()];
            if let Some(key) = &new.idempotency_key {
                key_rows.0.push(new.message.app_id.as_str().to_owned());
                key_rows.1.push(key.clone());
                key_rows.2.push(seq);
                key_rows.3.push(new.message.created_at);
            }
            for endpoint_id in targets {
                delivery_rows.0.push(seq);
                delivery_rows.1.push(endpoint_id);
                delivery_rows
                    .2
                    .push(new.message.deliver_at.unwrap_or(new.message.created_at));
                delivery_rows.3.push(new.message.created_at);
            }
        }
        if !key_rows.0.is_empty() {
            transaction
                .execute(
                    "INSERT INTO idempotency_key (app_id, key, msg_seq, created_at) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])",
                    &[&key_rows.0, &key_rows.1, &key_rows.2, &key_rows.3],
                )
                .await?;
        }
        if !delivery_rows.0.is_empty() {
            let insert = transaction
                .prepare_cached(
                    "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, updated_at) \
                     SELECT s, e, 1, d, w FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) \
                     AS t(s, e, d, w)",
                )
                .await?;
            transaction
                .execute(
                    &insert,
                    &[
                        &delivery_rows.0,
                        &delivery_rows.1,
                        &delivery_rows.2,
                        &delivery_rows.3,
                    ],
                )
                .await?;
        }
    }
    insert_received(&transaction, messages, &decisions).await?;
    transaction.commit().await?;

    let mut results: Vec<StoreResult<AcceptedMessage>> = Vec::with_capacity(messages.len());
    for (index, decision) in decisions.into_iter().enumerate() {
        results.push(match decision {
            Decision::Insert { deliveries } => Ok(AcceptedMessage {
                message: messages[index].message.clone(),
                created: true,
                deliveries,
            }),
            Decision::Earlier(message) => Ok(AcceptedMessage {
                message: *message,
                created: false,
                deliveries: 0,
            }),
            Decision::EarlierInBatch(first) => Ok(AcceptedMessage {
                message: messages[first].message.clone(),
                created: false,
                deliveries: 0,
            }),
            Decision::Conflict => Err(StoreError::Conflict(
                "a message with this eventId already exists".to_owned(),
            )),
            Decision::NoApplication => Err(StoreError::NotFound),
        });
    }
    Ok(results)
}

/// The sources' log entries of the jobs that carry one: accepted as their own message, or a
/// duplicate of the earlier one; in the messages' transaction, one statement for the batch.
async fn insert_received(
    transaction: &deadpool_postgres::Transaction<'_>,
    messages: &[&NewMessage],
    decisions: &[Decision],
) -> StoreResult<()> {
    #[derive(Default)]
    struct Columns {
        id: Vec<String>,
        source_id: Vec<String>,
        received_at: Vec<i64>,
        outcome: Vec<&'static str>,
        reason: Vec<Option<String>>,
        content_type: Vec<Option<String>>,
        size: Vec<i64>,
        event_id: Vec<Option<String>>,
        msg_id: Vec<String>,
    }
    let mut columns = Columns::default();
    for (new, decision) in messages.iter().zip(decisions) {
        let Some(received) = &new.received else {
            continue;
        };
        let (outcome, msg_id) = match decision {
            Decision::Insert { .. } => (ReceivedOutcome::Accepted, &new.message.id),
            Decision::Earlier(earlier) => (ReceivedOutcome::Duplicate, &earlier.id),
            Decision::EarlierInBatch(first) => {
                (ReceivedOutcome::Duplicate, &messages[*first].message.id)
            }
            Decision::Conflict | Decision::NoApplication => continue,
        };
        let row = crate::columns::ReceivedRow::of(received);
        columns.id.push(row.id.to_owned());
        columns.source_id.push(row.source_id.to_owned());
        columns.received_at.push(row.received_at);
        columns.outcome.push(outcome.as_str());
        columns.reason.push(row.reason.map(str::to_owned));
        columns
            .content_type
            .push(row.content_type.map(str::to_owned));
        columns.size.push(row.size);
        columns.event_id.push(row.event_id.map(str::to_owned));
        columns.msg_id.push(msg_id.as_str().to_owned());
    }
    if columns.id.is_empty() {
        return Ok(());
    }
    let statement = transaction
        .prepare_cached(&format!(
            "INSERT INTO received_request ({}) SELECT * FROM unnest($1::text[], $2::text[], \
             $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])",
            crate::columns::RECEIVED
        ))
        .await?;
    transaction
        .execute(
            &statement,
            &[
                &columns.id,
                &columns.source_id,
                &columns.received_at,
                &columns.outcome,
                &columns.reason,
                &columns.content_type,
                &columns.size,
                &columns.event_id,
                &columns.msg_id,
            ],
        )
        .await?;
    Ok(())
}

/// The endpoints of each application, for fan-out.
async fn endpoints_of(
    transaction: &deadpool_postgres::Transaction<'_>,
    app_ids: &[String],
    keys: &crate::sealing::SecretKeys,
) -> StoreResult<BTreeMap<String, Vec<Endpoint>>> {
    let select = transaction
        .prepare_cached(&format!(
            "SELECT {} FROM endpoint WHERE app_id = ANY($1)",
            crate::columns::ENDPOINT
        ))
        .await?;
    let mut by_app: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    for row in transaction.query(&select, &[&app_ids]).await? {
        let endpoint = rows::endpoint(&row, keys)?;
        by_app
            .entry(endpoint.app_id.as_str().to_owned())
            .or_default()
            .push(endpoint);
    }
    Ok(by_app)
}
