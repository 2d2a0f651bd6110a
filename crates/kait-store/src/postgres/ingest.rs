//! Accepting messages on PostgreSQL: a group commit, like the SQLite writer's.
//!
//! Every `create_message` call becomes a job on one queue; one task takes all jobs waiting at
//! that moment and writes them in one transaction with multi-row inserts, so one commit (one
//! WAL flush) serves the whole batch.
//!
//! Positions: the statement that writes the messages first advances each application's
//! `app_position` row by its messages in the batch (locking the rows in id order, so nodes
//! never deadlock) and numbers them from there; the row stays locked until the commit, so
//! positions are handed out and become visible in commit order (the pull API's guarantee).
//! It is the last statement before `COMMIT`, so that nodes writing to one application wait
//! for each other only as long as a commit takes, not for a round trip to the client.
//!
//! The `Idempotency-Key` and `eventId` checks are reads at the start of the transaction, so
//! conflicts found there do not fail the inserts, and one job's conflict never aborts the
//! batch. Two nodes can still race on the same key; the unique indexes then fail the later
//! batch, which is written again one message at a time and finds the earlier message.
//!
//! New deliveries to unordered endpoints skip the claim when this node's dispatcher has room
//! for them (see [`crate::handoff`]): the commit takes ownership of their endpoints as a claim
//! would (only if no other live node runs them) and writes them `Sending` for this node; the
//! rest are written pending, and the claim finds them. A message's latency on one node is
//! then this commit's two round trips, not a commit, a wake-up and a claim transaction.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use kait_core::{Endpoint, EndpointId};
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{mpsc, oneshot};

use super::{Shared, rows};
use crate::handoff::{FreshDeliveries, may_hand_off};
use crate::{
    AcceptedMessage, ClaimedDelivery, NewMessage, ReceivedOutcome, StoreError, StoreResult,
};

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
            let mut each = Committed::default();
            for message in &messages {
                match commit_with_retries(&shared, &[message]).await {
                    Ok(one) => each.absorb(one),
                    Err(error) => each.results.push(Err(error)),
                }
            }
            result = Ok(each);
        }
        metrics::histogram!("kait_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("kait_store_commit_jobs").record(batch.len() as f64);
        let mut became_due = false;
        let mut due_on = Vec::new();
        match result {
            Ok(committed) => {
                became_due = committed.became_due;
                due_on = committed.due_on.into_iter().collect();
                // Handed over before the callers hear back, as the SQLite writer does.
                for (permit, delivery) in committed.handed_off {
                    permit.send(delivery);
                }
                let mut apps_with_messages = Vec::new();
                for (job, result) in batch.drain(..).zip(committed.results) {
                    if let Ok(accepted) = &result
                        && accepted.created
                    {
                        apps_with_messages.push(accepted.message.app_id.clone());
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
        if !due_on.is_empty() {
            shared.signals.deliveries_due_on(due_on);
        }
    }
}

/// What one transaction wrote.
#[derive(Default)]
struct Committed {
    /// One per message, in order.
    results: Vec<StoreResult<AcceptedMessage>>,
    /// Deliveries written `Sending` for this node, each with its reserved room in the
    /// dispatcher's hand-off queue (see [`crate::handoff`]).
    handed_off: Vec<(OwnedPermit<ClaimedDelivery>, ClaimedDelivery)>,
    /// Whether pending deliveries were written that any node may claim.
    became_due: bool,
    /// The other nodes that run endpoints pending deliveries were written for: only they
    /// can claim them.
    due_on: std::collections::HashSet<String>,
}

impl Committed {
    fn absorb(&mut self, other: Committed) {
        self.results.extend(other.results);
        self.handed_off.extend(other.handed_off);
        self.became_due |= other.became_due;
        self.due_on.extend(other.due_on);
    }
}

async fn commit_with_retries(shared: &Shared, messages: &[&NewMessage]) -> StoreResult<Committed> {
    let mut tries = 0;
    loop {
        match commit(shared, messages).await {
            Err(error)
                if (error.is_retryable() || lost_a_race(&error)) && tries < TRANSIENT_RETRIES =>
            {
                tries += 1
            }
            other => return other,
        }
    }
}

/// Whether another node committed the same `Idempotency-Key` or `eventId` between this
/// batch's reads and its writes (a unique index refused the batch): written again, the
/// batch reads that message and answers with it, or with the conflict.
fn lost_a_race(error: &StoreError) -> bool {
    matches!(error, StoreError::Database { context, .. }
        if context.starts_with(tokio_postgres::error::SqlState::UNIQUE_VIOLATION.code()))
}

/// Columns of the messages to insert, one vector per column (for `unnest`).
#[derive(Default)]
struct MessageColumns {
    seq: Vec<i64>,
    id: Vec<String>,
    app_id: Vec<String>,
    /// How many messages of the same application come after this one in the batch: its
    /// position is the application's new last position minus this.
    behind: Vec<i64>,
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

impl MessageColumns {
    /// Adds a message, the `rank`th of its application in the batch (from 1); [`Self::number`]
    /// turns ranks into counts behind once the batch is complete.
    fn push(&mut self, seq: i64, rank: i64, message: &kait_core::Message) {
        self.seq.push(seq);
        self.id.push(message.id.as_str().to_owned());
        self.app_id.push(message.app_id.as_str().to_owned());
        self.behind.push(rank);
        self.event_type.push(message.event_type.clone());
        self.event_id.push(message.event_id.clone());
        self.channels
            .push(crate::columns::optional_set_json(&message.channels));
        self.payload.push(message.payload.clone());
        self.created_at.push(message.created_at);
        self.ordering_key.push(message.ordering_key.clone());
        let raw = crate::columns::RawColumns::of(message.raw.as_ref());
        self.raw_content_type.push(raw.content_type);
        self.raw_body.push(raw.body);
        self.raw_headers.push(raw.headers);
        self.deliver_at.push(message.deliver_at);
        self.attachments
            .push(crate::columns::attachments_json(&message.attachments));
        for attachment in &message.attachments {
            self.references.0.push(attachment.id.as_str().to_owned());
            self.references.1.push(message.id.as_str().to_owned());
        }
    }

    /// Turns each message's rank into how many of its application come after it, given each
    /// application's count in the batch.
    fn number(&mut self, counts: &HashMap<String, i64>) {
        for (behind, app_id) in self.behind.iter_mut().zip(&self.app_id) {
            *behind = counts[app_id] - *behind;
        }
    }

    /// `$1`–`$15` of [`INSERT_MESSAGES`].
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 15] {
        [
            &self.seq,
            &self.id,
            &self.app_id,
            &self.behind,
            &self.event_type,
            &self.event_id,
            &self.channels,
            &self.payload,
            &self.created_at,
            &self.ordering_key,
            &self.raw_content_type,
            &self.raw_body,
            &self.raw_headers,
            &self.deliver_at,
            &self.attachments,
        ]
    }
}

/// What the batch decided for one job before writing.
enum Decision {
    Insert { deliveries: usize },
    Earlier(Box<kait_core::Message>),
    EarlierInBatch(usize),
    Conflict,
    NoApplication,
}

async fn commit(shared: &Shared, messages: &[&NewMessage]) -> StoreResult<Committed> {
    let client = shared.pool.get().await?;
    let result = write(shared, &client, messages).await;
    if result.is_err() {
        // However it failed, the connection goes back to the pool outside any transaction
        // (after a failed statement the pipelined `COMMIT` has already rolled back, and this
        // only draws a warning; a broken connection is dropped by the pool).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

/// Statements of the group commit, prepared once per connection.
/// The batch's applications that still exist, share-locked (the order `delete_application`
/// takes them in) so that a delete waits for this commit: the API may have found an
/// application in its cache, and its messages must not outlive a concurrent delete.
const LIVE_APPS: &str = "SELECT id FROM application WHERE id = ANY($1) ORDER BY id FOR KEY SHARE";
/// The endpoints of the batch's applications (`$1`) that another live node (not `$2`) runs:
/// their new deliveries are written pending at once, without trying to take the endpoint
/// (which would wait on its owner row behind the owner's own commits).
const RUN_ELSEWHERE: &str = "SELECT o.endpoint_id, o.node_id FROM endpoint_owner o \
     JOIN endpoint e ON e.id = o.endpoint_id JOIN kait_node n ON n.id = o.node_id \
     WHERE e.app_id = ANY($1) AND o.node_id <> $2";
/// Earlier messages with the batch's `Idempotency-Key`s. The statements built from column
/// lists are built once, not on every batch.
static EARLIER_KEYS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT i.app_id, i.key, {} FROM idempotency_key i JOIN message m ON m.seq = i.msg_seq \
         WHERE (i.app_id, i.key) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        rows::MESSAGE_COLUMNS
    )
});
/// The endpoints of the batch's applications, for fan-out.
static SELECT_ENDPOINTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM endpoint WHERE app_id = ANY($1)",
        crate::columns::ENDPOINT
    )
});
/// The sources' log entries of the batch.
static INSERT_RECEIVED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO received_request ({}) SELECT * FROM unnest($1::text[], $2::text[], \
         $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[], $9::text[])",
        crate::columns::RECEIVED
    )
});
const TAKEN_EVENT_IDS: &str = "SELECT app_id, event_id FROM message \
     WHERE (app_id, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))";
const RESERVE_SEQS: &str =
    "SELECT nextval(pg_get_serial_sequence('message', 'seq')) FROM generate_series(1, $1::bigint)";
/// Advances each application's last position by its count in the batch (`$16`, `$17`,
/// sorted by application), locking its row to the end of the transaction, and writes the
/// messages numbered from there.
const INSERT_MESSAGES: &str = "WITH advanced AS (INSERT INTO app_position (app_id, last) \
       SELECT * FROM unnest($16::text[], $17::bigint[]) ORDER BY 1 \
       ON CONFLICT (app_id) DO UPDATE SET last = app_position.last + EXCLUDED.last \
       RETURNING app_id, last) \
     INSERT INTO message (seq, id, app_id, pos, event_type, event_id, channels, payload, \
     created_at, ordering_key, raw_content_type, raw_body, raw_headers, deliver_at, attachments) \
     SELECT seq, id, app, a.last - behind, et, eid, CAST(ch AS jsonb), pl, ca, ok, rct, rb, rh, da, att \
     FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], \
     $8::text[], $9::bigint[], $10::text[], $11::text[], $12::bytea[], $13::text[], $14::bigint[], $15::text[]) \
     AS t(seq, id, app, behind, et, eid, ch, pl, ca, ok, rct, rb, rh, da, att) \
     JOIN advanced a ON a.app_id = t.app";
/// The references keep the blobs until their last message is purged.
const REFERENCE_ATTACHMENTS: &str = "WITH referenced AS (INSERT INTO message_attachment (attachment_id, msg_id) \
     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING) \
     UPDATE attachment SET referenced = 1 WHERE id = ANY($1) AND referenced = 0";
const INSERT_KEYS: &str = "INSERT INTO idempotency_key (app_id, key, msg_seq, created_at) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])";
/// Takes the endpoints this node would hand deliveries over for (`$6`, sorted) as
/// a claim does (`take_endpoints_sql!`), then writes the deliveries: `Sending` for this node
/// where it may hand over (`$7`) and owns the endpoint now, pending otherwise. Returns the
/// ones written `Sending`.
const INSERT_DELIVERIES: &str = concat!(
    "WITH ",
    take_endpoints_sql!("$6", "$5"),
    ", rows AS (SELECT s, e, d, w, h AND e IN (SELECT endpoint_id FROM taken) AS sending \
       FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $7::bool[]) AS t(s, e, d, w, h)), \
     inserted AS (INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, updated_at, claimed_by) \
       SELECT s, e, CASE WHEN sending THEN 3 ELSE 1 END, d, w, CASE WHEN sending THEN $5::text END FROM rows \
       RETURNING id, msg_seq, endpoint_id, status) \
     SELECT id, msg_seq, endpoint_id FROM inserted WHERE status = 3"
);

/// One batch in one transaction, in two round trips. The statements are pipelined (each
/// sent without waiting for the answers before it; PostgreSQL runs them in order, and one
/// that fails makes the rest of the transaction fail with it): `BEGIN` goes out with the
/// reads, and `COMMIT` with the writes (the messages and their positions last). Every statement is
/// prepared before a round trip starts, so each one is sent when first polled and the
/// `biased` joins send them in the order written: nothing can reach the server after its
/// `COMMIT`.
async fn write(
    shared: &Shared,
    client: &deadpool_postgres::ClientWrapper,
    messages: &[&NewMessage],
) -> StoreResult<Committed> {
    let mut committed = Committed::default();
    let mut app_ids: Vec<String> = messages
        .iter()
        .map(|new| new.message.app_id.as_str().to_owned())
        .collect();
    app_ids.sort_unstable();
    app_ids.dedup();
    // Earlier messages with the same Idempotency-Key, and eventIds already taken.
    let (key_apps, keys): (Vec<String>, Vec<String>) = messages
        .iter()
        .filter_map(|new| {
            new.idempotency_key
                .as_ref()
                .map(|key| (new.message.app_id.as_str().to_owned(), key.clone()))
        })
        .unzip();
    let (event_apps, event_ids): (Vec<String>, Vec<String>) = messages
        .iter()
        .filter_map(|new| {
            new.message
                .event_id
                .as_ref()
                .map(|id| (new.message.app_id.as_str().to_owned(), id.clone()))
        })
        .unzip();

    let live_apps = client.prepare_cached(LIVE_APPS).await?;
    let run_elsewhere = client.prepare_cached(RUN_ELSEWHERE).await?;
    let earlier_keys = client.prepare_cached(&EARLIER_KEYS).await?;
    let taken_events = client.prepare_cached(TAKEN_EVENT_IDS).await?;
    let select_endpoints = client.prepare_cached(&SELECT_ENDPOINTS).await?;
    let reserve_seqs = client.prepare_cached(RESERVE_SEQS).await?;
    let batch_size = messages.len() as i64;
    let node = shared.node.get();
    let (_, live_rows, earlier_rows, taken_rows, endpoint_rows, seq_rows, elsewhere_rows) = tokio::try_join!(
        biased;
        client.batch_execute("BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"),
        async { client.query(&live_apps, &[&app_ids]).await },
        async {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&earlier_keys, &[&key_apps, &keys]).await
        },
        async {
            if event_ids.is_empty() {
                return Ok(Vec::new());
            }
            client.query(&taken_events, &[&event_apps, &event_ids]).await
        },
        async { client.query(&select_endpoints, &[&app_ids]).await },
        async { client.query(&reserve_seqs, &[&batch_size]).await },
        async { client.query(&run_elsewhere, &[&app_ids, &&*node]).await },
    )?;
    let mut live: std::collections::HashSet<String> = Default::default();
    for row in live_rows {
        live.insert(row.try_get(0)?);
    }
    // Endpoint → the other live node that runs it.
    let mut elsewhere: HashMap<String, String> = HashMap::new();
    for row in elsewhere_rows {
        elsewhere.insert(row.try_get(0)?, row.try_get(1)?);
    }
    let mut earlier: HashMap<(String, String), kait_core::Message> = HashMap::new();
    for row in earlier_rows {
        let message = rows::message_at(&row, 2)?;
        earlier.insert((row.try_get(0)?, row.try_get(1)?), message);
    }
    let mut taken_event_ids: std::collections::HashSet<(String, String)> = Default::default();
    for row in taken_rows {
        taken_event_ids.insert((row.try_get(0)?, row.try_get(1)?));
    }
    let mut endpoints: HashMap<String, Vec<Endpoint>> = HashMap::new();
    for row in endpoint_rows {
        let endpoint = rows::endpoint(&row, &shared.options.secret_keys)?;
        endpoints
            .entry(endpoint.app_id.as_str().to_owned())
            .or_default()
            .push(endpoint);
    }
    let mut seqs = Vec::with_capacity(seq_rows.len());
    for row in seq_rows {
        seqs.push(row.try_get::<_, i64>(0)?);
    }
    // In message order, so that each message's deliveries are found by binary search.
    seqs.sort_unstable();
    let mut seqs = seqs.into_iter();

    let mut columns = MessageColumns::default();
    let mut decisions = Vec::with_capacity(messages.len());
    let mut keys_in_batch: HashMap<(&str, &str), usize> = HashMap::new();
    // Each application's messages in the batch so far.
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut key_rows: (Vec<String>, Vec<String>, Vec<i64>, Vec<i64>) = Default::default();
    let mut deliveries = DeliveryRows::default();
    for (index, new) in messages.iter().enumerate() {
        let message = &new.message;
        let app_id = message.app_id.as_str();
        if !live.contains(app_id) {
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
        let seq = seqs.next().ok_or_else(|| StoreError::Database {
            kind: crate::DatabaseFailure::Other,
            context: "fewer sequence numbers than messages".to_owned(),
            source: None,
        })?;
        if let Some(key) = new.idempotency_key.as_deref() {
            keys_in_batch.insert((app_id, key), index);
            key_rows.0.push(app_id.to_owned());
            key_rows.1.push(key.to_owned());
            key_rows.2.push(seq);
            key_rows.3.push(message.created_at);
        }
        let rank = counts.entry(app_id.to_owned()).or_insert(0);
        *rank += 1;
        columns.push(seq, *rank, message);
        let mut count = 0;
        for endpoint in endpoints
            .get(app_id)
            .into_iter()
            .flatten()
            .filter(|endpoint| new.goes_to(endpoint))
        {
            count += 1;
            // Room first: without it the delivery is pending whatever else holds.
            let room = (may_hand_off(message, endpoint.ordering)
                && !elsewhere.contains_key(endpoint.id.as_str()))
            .then(|| shared.handoff.reserve(&endpoint.id))
            .flatten();
            deliveries.push(index, seq, &endpoint.id, message, room);
        }
        decisions.push(Decision::Insert { deliveries: count });
    }
    columns.number(&counts);
    // Pending at once: those another node runs wake that node; the rest, every node.
    for (row, room) in deliveries.room.iter().enumerate() {
        if room.is_some() {
            continue;
        }
        match elsewhere.get(&deliveries.endpoint_id[row]) {
            Some(node) => {
                committed.due_on.insert(node.clone());
            }
            None => committed.became_due = true,
        }
    }
    let received = ReceivedColumns::of(messages, &decisions);

    let insert_messages = client.prepare_cached(INSERT_MESSAGES).await?;
    let reference = client.prepare_cached(REFERENCE_ATTACHMENTS).await?;
    let insert_keys = client.prepare_cached(INSERT_KEYS).await?;
    let insert_deliveries = client.prepare_cached(INSERT_DELIVERIES).await?;
    let insert_received = client.prepare_cached(&INSERT_RECEIVED).await?;
    let wanted = deliveries.wanted();
    let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
    counts.sort_unstable();
    let (count_apps, count_values): (Vec<String>, Vec<i64>) = counts.into_iter().unzip();
    let written = !columns.id.is_empty();
    let mut message_params = columns.params().to_vec();
    message_params.push(&count_apps);
    message_params.push(&count_values);
    // The messages and their positions last: the position rows stay locked only from there
    // to the commit.
    let (_, _, sending, _, _, _) = tokio::try_join!(
        biased;
        async {
            if columns.references.0.is_empty() {
                return Ok(0);
            }
            let (attachments, msg_ids) = &columns.references;
            client.execute(&reference, &[attachments, msg_ids]).await
        },
        async {
            if key_rows.0.is_empty() {
                return Ok(0);
            }
            let (apps, keys, seqs, at) = &key_rows;
            client.execute(&insert_keys, &[apps, keys, seqs, at]).await
        },
        async {
            if deliveries.seq.is_empty() {
                return Ok(Vec::new());
            }
            client
                .query(
                    &insert_deliveries,
                    &[
                        &deliveries.seq,
                        &deliveries.endpoint_id,
                        &deliveries.due_at,
                        &deliveries.written_at,
                        &&*node,
                        &wanted,
                        &deliveries.may_hand_off,
                    ],
                )
                .await
        },
        async {
            let Some(received) = &received else {
                return Ok(0);
            };
            client.execute(&insert_received, &received.params()).await
        },
        async {
            if !written {
                return Ok(0);
            }
            client.execute(&insert_messages, &message_params).await
        },
        client.batch_execute("COMMIT"),
    )?;

    // Handed over: those written `Sending`; the room of the others goes back.
    let mut fresh: HashMap<usize, FreshDeliveries> = HashMap::new();
    let mut owned: Vec<String> = Vec::new();
    for row in sending {
        let (delivery_id, seq, endpoint_id): (i64, i64, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let Some((index, room)) = deliveries.hand_over(seq, &endpoint_id) else {
            continue;
        };
        let delivery = fresh
            .entry(index)
            .or_insert_with(|| FreshDeliveries::of(&messages[index].message))
            .delivery(delivery_id, EndpointId::from_trusted(endpoint_id.clone()));
        committed.handed_off.push((room, delivery));
        owned.push(endpoint_id);
    }
    // Rows that had room but were written pending (another node runs their endpoint).
    committed.became_due |= deliveries.room.iter().any(Option::is_some);
    if !owned.is_empty() {
        shared.idle.remove_all(&owned);
    }

    committed.results.reserve(messages.len());
    for (index, decision) in decisions.into_iter().enumerate() {
        committed.results.push(match decision {
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
    Ok(committed)
}

/// The deliveries of a batch, one vector per column (for `unnest`), and the room reserved
/// in the hand-off queue for those that may skip the claim.
#[derive(Default)]
struct DeliveryRows {
    seq: Vec<i64>,
    endpoint_id: Vec<String>,
    due_at: Vec<i64>,
    written_at: Vec<i64>,
    /// Per row: whether it has room in the hand-off queue (written `Sending` if this node
    /// owns the endpoint once the statement has taken it).
    may_hand_off: Vec<bool>,
    /// Per row: the message's index in the batch.
    message: Vec<usize>,
    /// Per row: the room in the hand-off queue, until handed over.
    room: Vec<Option<OwnedPermit<ClaimedDelivery>>>,
}

impl DeliveryRows {
    fn push(
        &mut self,
        index: usize,
        seq: i64,
        endpoint_id: &EndpointId,
        message: &kait_core::Message,
        room: Option<OwnedPermit<ClaimedDelivery>>,
    ) {
        self.seq.push(seq);
        self.endpoint_id.push(endpoint_id.as_str().to_owned());
        // Held back by `deliverAt`: due then.
        self.due_at
            .push(message.deliver_at.unwrap_or(message.created_at));
        self.written_at.push(message.created_at);
        self.may_hand_off.push(room.is_some());
        self.message.push(index);
        self.room.push(room);
    }

    /// The endpoints this node would take deliveries of straight from the commit, sorted.
    fn wanted(&self) -> Vec<String> {
        let mut wanted: Vec<String> = self
            .may_hand_off
            .iter()
            .zip(&self.endpoint_id)
            .filter(|(may, _)| **may)
            .map(|(_, endpoint_id)| endpoint_id.clone())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// A delivery written `Sending`, now that it has its id: the message's index in the
    /// batch and the room to hand it over with.
    fn hand_over(
        &mut self,
        seq: i64,
        endpoint_id: &str,
    ) -> Option<(usize, OwnedPermit<ClaimedDelivery>)> {
        // A message's deliveries are adjacent rows in sequence order: search, then scan.
        let first = self.seq.partition_point(|row_seq| *row_seq < seq);
        let row = (first..self.seq.len())
            .take_while(|row| self.seq[*row] == seq)
            .find(|row| self.endpoint_id[*row] == endpoint_id)?;
        Some((self.message[row], self.room[row].take()?))
    }
}

/// The sources' log entries of the jobs that carry one: accepted as their own message, or a
/// duplicate of the earlier one; in the messages' transaction, one statement for the batch.
#[derive(Default)]
struct ReceivedColumns {
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

impl ReceivedColumns {
    /// The batch's log entries; `None` when no job carries one.
    fn of(messages: &[&NewMessage], decisions: &[Decision]) -> Option<Self> {
        let mut columns = Self::default();
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
        (!columns.id.is_empty()).then_some(columns)
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 9] {
        [
            &self.id,
            &self.source_id,
            &self.received_at,
            &self.outcome,
            &self.reason,
            &self.content_type,
            &self.size,
            &self.event_id,
            &self.msg_id,
        ]
    }
}
