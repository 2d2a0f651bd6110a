//! The PostgreSQL store: many `kait serve` nodes on one database.
//!
//! Reads and writes go through a connection pool. Messages are accepted through a group
//! commit ([`ingest`]); claims, outcomes and everything else are plain transactions.
//! [`cluster`] holds what ties the nodes together: leases, wake-ups and endpoint hand-back.
//!
//! **Claiming** (see [`PgStore::claim_once`]) is where many nodes meet. Each endpoint's lane
//! runs on one node at a time (`endpoint_owner`): a claim first takes ownership of the
//! endpoints with due work that no live node owns (locking their owner rows), then marks
//! only those endpoints' due deliveries `Sending`, `claimed_by` itself. Because one node runs
//! an endpoint, its rate limit, ordering and circuit breaker hold across the cluster, exactly
//! as they do inside one process; because ownership is handed back when the lane goes idle,
//! endpoints spread over the nodes that have capacity. A claim holds its node row
//! `FOR SHARE`, so a node that was declared dead cannot slip a claim past the reaper.

mod cluster;
mod ingest;
mod paging;
mod rows;
mod schema;
mod secrets;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use kait_core::access::Capabilities;
use kait_core::time::{Millis, now_millis};
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryState, DeliveryStatus, Endpoint, EndpointId,
    EventType, MessageId, TriggerType,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::cluster::{IdleEndpoints, NodeIdentity, Signals};
use self::paging::{Keyset, Params, finish, keyed_sql, where_clause};
use self::rows::EndpointParams;
use crate::sealing::SecretKeys;
use crate::{
    AcceptedMessage, AppTokenGrant, AttemptFilter, Claim, ClaimedDelivery, DisabledEndpoint,
    EndpointMessage, IdempotentResponse, MessageFilter, NewAppToken, NewMessage, NextStep, Outcome,
    Page, PageRequest, QueueDepth, Store, StoreError, StoreResult,
};

/// How often a claim or an outcome batch that hit a deadlock is tried again.
const TRANSIENT_RETRIES: usize = 5;

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Parsed from the `postgres://` URL.
    pub config: tokio_postgres::Config,
    /// The schema Kait's tables live in (created if missing).
    pub schema: String,
    /// Connections in the pool (the listener has one more of its own).
    pub pool_size: usize,
    /// Longest a single statement may run before the server cancels it.
    pub statement_timeout: Duration,
    /// How long a node's claims stay valid without a heartbeat; after that, other nodes
    /// take its deliveries over.
    pub lease: Duration,
    /// Seal endpoint secrets and headers at rest (see [`crate::sealing`]); every node of a
    /// cluster needs the same keys.
    pub secret_keys: SecretKeys,
}

impl PgOptions {
    pub fn new(url: &str, secret_keys: SecretKeys) -> StoreResult<Self> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|error| StoreError::Database(format!("bad database URL: {error}")))?;
        Ok(Self {
            config,
            schema: "public".to_owned(),
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            secret_keys,
        })
    }
}

/// Whether `schema` is a plain identifier Kait can put into SQL unquoted.
pub fn valid_schema_name(schema: &str) -> bool {
    let mut characters = schema.chars();
    schema.len() <= 48
        && characters
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && characters.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// State shared by the store and its background tasks.
pub struct Shared {
    pool: Pool,
    options: PgOptions,
    signals: Signals,
    node: NodeIdentity,
    idle: IdleEndpoints,
}

pub struct PgStore {
    shared: Arc<Shared>,
    ingest: mpsc::Sender<ingest::Job>,
    stop: CancellationToken,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs the migrations and returns how many were applied (`kait migrate`).
pub async fn migrate(options: &PgOptions) -> StoreResult<usize> {
    if !valid_schema_name(&options.schema) {
        return Err(StoreError::Database(format!(
            "schema name {:?} must be lowercase letters, digits and underscores",
            options.schema
        )));
    }
    let (mut client, connection) = options.config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let applied = schema::migrate(&mut client, &options.schema).await?;
    secrets::reseal(&client, &options.schema, &options.secret_keys).await?;
    drop(client);
    let _ = driver.await;
    Ok(applied)
}

/// Drops the schema with everything in it (benchmarks and tests clean up with this).
pub async fn drop_schema(options: &PgOptions) -> StoreResult<()> {
    if !valid_schema_name(&options.schema) || options.schema == "public" {
        return Err(StoreError::Database(format!(
            "refusing to drop schema {:?}",
            options.schema
        )));
    }
    let (client, connection) = options.config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", options.schema))
        .await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

impl PgStore {
    /// Connects, migrates, registers this node and starts its background tasks.
    pub async fn open(options: PgOptions) -> StoreResult<Self> {
        migrate(&options).await?;
        let manager = Manager::from_config(
            options.connection_config(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .build()
            .map_err(|error| StoreError::Database(format!("connection pool: {error}")))?;
        let shared = Arc::new(Shared {
            pool,
            options,
            signals: Signals::new(),
            node: NodeIdentity::new(),
            idle: IdleEndpoints::default(),
        });
        cluster::register(&shared, &shared.node.get()).await?;
        tracing::info!(node = &*shared.node.get(), schema = %shared.options.schema, "joined the cluster");

        let stop = CancellationToken::new();
        let (ingest, jobs) = mpsc::channel(ingest::QUEUE_CAPACITY);
        tokio::spawn(ingest::run(shared.clone(), jobs));
        tokio::spawn(cluster::notify(shared.clone(), stop.clone()));
        tokio::spawn(cluster::listen(shared.clone(), stop.clone()));
        tokio::spawn(cluster::maintain(shared.clone(), stop.clone()));
        Ok(Self {
            shared,
            ingest,
            stop,
        })
    }

    /// This node's id in `kait_node` (for logs and tests).
    pub fn node_id(&self) -> String {
        self.shared.node.get().to_string()
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.shared.pool.get().await?)
    }

    fn config_changed(&self) {
        self.shared.signals.config_changed();
    }

    /// One claim transaction; see the module documentation.
    async fn claim_once(&self, now: Millis, limit: usize, skip: &[String]) -> StoreResult<Claim> {
        let node = self.shared.node.get();
        let node: &str = &node;
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let alive = transaction
            .query_opt("SELECT 1 FROM kait_node WHERE id = $1 FOR SHARE", &[&node])
            .await?;
        if alive.is_none() {
            return Err(StoreError::Database(
                "this node's lease expired; it claims again once it has rejoined".to_owned(),
            ));
        }
        // The endpoints with pending deliveries, found with a skip scan of
        // `delivery_endpoint_due` (one index seek per endpoint, however long each backlog
        // is), with the due time of each one's head; minus those this node's lanes are too
        // full for and those another live node runs.
        let heads = transaction
            .prepare_cached(
                "WITH RECURSIVE e AS ( \
                   (SELECT endpoint_id FROM delivery WHERE status = 1 ORDER BY endpoint_id LIMIT 1) \
                   UNION ALL \
                   SELECT (SELECT d.endpoint_id FROM delivery d WHERE d.status = 1 \
                           AND d.endpoint_id > e.endpoint_id ORDER BY d.endpoint_id LIMIT 1) \
                   FROM e WHERE e.endpoint_id IS NOT NULL) \
                 SELECT e.endpoint_id, (SELECT d.due_at FROM delivery d WHERE d.status = 1 \
                   AND d.endpoint_id = e.endpoint_id ORDER BY d.due_at LIMIT 1) AS head \
                 FROM e WHERE e.endpoint_id IS NOT NULL AND e.endpoint_id <> ALL($1) \
                 AND NOT EXISTS (SELECT 1 FROM endpoint_owner o JOIN kait_node n ON n.id = o.node_id \
                                 WHERE o.endpoint_id = e.endpoint_id AND o.node_id <> $2)",
            )
            .await?;
        let mut heads: Vec<(String, Millis)> = transaction
            .query(&heads, &[&skip, &node])
            .await?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<StoreResult<_>>()?;
        heads.sort_unstable_by_key(|(_, head)| *head);
        let eligible: Vec<String> = heads.iter().map(|(id, _)| id.clone()).collect();
        let candidates: Vec<String> = heads
            .iter()
            .filter(|(_, head)| *head <= now)
            .take(limit)
            .map(|(id, _)| id.clone())
            .collect();
        // Take ownership of those no live node (but maybe this one) owns, in id order so
        // that two nodes taking the same ones cannot deadlock.
        let take = transaction
            .prepare_cached(
                "INSERT INTO endpoint_owner (endpoint_id, node_id) \
                 SELECT c, $2 FROM unnest($1::text[]) AS c ORDER BY c \
                 ON CONFLICT (endpoint_id) DO UPDATE SET node_id = EXCLUDED.node_id \
                 WHERE endpoint_owner.node_id = EXCLUDED.node_id \
                    OR NOT EXISTS (SELECT 1 FROM kait_node n WHERE n.id = endpoint_owner.node_id) \
                 RETURNING endpoint_id",
            )
            .await?;
        let owned: Vec<String> = if candidates.is_empty() {
            Vec::new()
        } else {
            transaction
                .query(&take, &[&candidates, &node])
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()?
        };
        let mut deliveries = Vec::new();
        if !owned.is_empty() {
            self.shared.idle.remove_all(&owned);
            let mark = transaction
                .prepare_cached(
                    // Each owned endpoint's oldest due rows through the per-endpoint index,
                    // then the oldest of those overall.
                    "UPDATE delivery d SET status = 3, claimed_by = $3, updated_at = $1 \
                     FROM (SELECT c.id FROM unnest($2::text[]) AS o(endpoint_id) \
                           CROSS JOIN LATERAL (SELECT id, due_at FROM delivery \
                             WHERE status = 1 AND endpoint_id = o.endpoint_id AND due_at <= $1 \
                             ORDER BY due_at, id LIMIT $4 FOR UPDATE) c \
                           ORDER BY c.due_at, c.id LIMIT $4) c \
                     WHERE d.id = c.id \
                     RETURNING d.id, d.msg_seq, d.endpoint_id, d.attempts, d.trigger_type, d.due_at",
                )
                .await?;
            let mut claimed = transaction
                .query(&mark, &[&now, &owned, &node, &(limit as i64)])
                .await?
                .iter()
                .map(|row| {
                    Ok((
                        row.try_get::<_, i64>(0)?,
                        row.try_get::<_, i64>(1)?,
                        row.try_get::<_, String>(2)?,
                        row.try_get::<_, i64>(3)?,
                        row.try_get::<_, i64>(4)?,
                        row.try_get::<_, Option<i64>>(5)?.unwrap_or(now),
                    ))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            // RETURNING has no defined order; ordered endpoints need claim order.
            claimed.sort_unstable_by_key(|row| (row.5, row.0));
            let mut seqs: Vec<i64> = claimed.iter().map(|row| row.1).collect();
            seqs.sort_unstable();
            seqs.dedup();
            let load = transaction
                .prepare_cached(
                    "SELECT seq, id, app_id, event_type, payload, ordering_key, created_at \
                     FROM message WHERE seq = ANY($1)",
                )
                .await?;
            // One message fans out to many endpoints: each payload is loaded once per claim.
            let mut messages: HashMap<i64, ClaimedMessage> = HashMap::with_capacity(seqs.len());
            for row in transaction.query(&load, &[&seqs]).await? {
                messages.insert(
                    row.try_get(0)?,
                    ClaimedMessage {
                        msg_id: MessageId::from_trusted(row.try_get(1)?),
                        app_id: AppId::from_trusted(row.try_get(2)?),
                        event_type: Arc::from(row.try_get::<_, &str>(3)?),
                        payload: Arc::from(row.try_get::<_, &str>(4)?),
                        ordering_key: row.try_get::<_, Option<&str>>(5)?.map(Arc::from),
                        created_at: row.try_get(6)?,
                    },
                );
            }
            for (delivery_id, msg_seq, endpoint_id, attempts_made, trigger_type, _) in claimed {
                let Some(message) = messages.get(&msg_seq) else {
                    continue;
                };
                deliveries.push(ClaimedDelivery {
                    delivery_id,
                    endpoint_id: EndpointId::from_trusted(endpoint_id),
                    app_id: message.app_id.clone(),
                    msg_id: message.msg_id.clone(),
                    event_type: message.event_type.clone(),
                    payload: message.payload.clone(),
                    ordering_key: message.ordering_key.clone(),
                    created_at: message.created_at,
                    attempts_made: attempts_made as u32,
                    trigger_type: TriggerType::from_code(trigger_type),
                });
            }
        }
        let next = transaction
            .prepare_cached(
                "SELECT MIN(h.due_at) FROM unnest($1::text[]) AS e(endpoint_id) \
                 CROSS JOIN LATERAL (SELECT due_at FROM delivery \
                   WHERE status = 1 AND endpoint_id = e.endpoint_id ORDER BY due_at LIMIT 1) h",
            )
            .await?;
        let next_due_at: Option<Millis> = transaction
            .query_one(&next, &[&eligible])
            .await?
            .try_get(0)?;
        transaction.commit().await?;
        Ok(Claim {
            deliveries,
            next_due_at,
        })
    }

    async fn record_once(
        &self,
        outcomes: &[Outcome],
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        let node = self.shared.node.get();
        let node: &str = &node;
        let mut ids = Vec::with_capacity(outcomes.len());
        let mut statuses = Vec::with_capacity(outcomes.len());
        let mut due = Vec::with_capacity(outcomes.len());
        let mut at = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (status, due_at) = match outcome.next {
                NextStep::Succeeded => (DeliveryStatus::Success, None),
                NextStep::RetryAt(due_at) => (DeliveryStatus::Pending, Some(due_at)),
                NextStep::GiveUp => (DeliveryStatus::Fail, None),
                // Still owned by the dispatcher, which retries it in place.
                NextStep::RetryHeld(due_at) => (DeliveryStatus::Sending, Some(due_at)),
            };
            ids.push(outcome.delivery_id);
            statuses.push(status.code());
            due.push(due_at);
            at.push(outcome.attempt.created_at);
        }
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        // Only this node's own claims move on: if its lease expired meanwhile, the delivery
        // belongs to the cluster again and this attempt is not logged (it will be resent).
        let advance = transaction
            .prepare_cached(
                "UPDATE delivery d SET status = o.status, attempts = d.attempts + 1, due_at = o.due_at, \
                 updated_at = o.at, claimed_by = CASE WHEN o.status = 3 THEN d.claimed_by END \
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS o(id, status, due_at, at) \
                 WHERE d.id = o.id AND d.status = 3 AND d.claimed_by = $5 RETURNING d.id, d.msg_seq",
            )
            .await?;
        let mut msg_seq_of: HashMap<i64, i64> = HashMap::with_capacity(outcomes.len());
        for row in transaction
            .query(&advance, &[&ids, &statuses, &due, &at, &node])
            .await?
        {
            msg_seq_of.insert(row.try_get(0)?, row.try_get(1)?);
        }
        let mut columns: AttemptColumns = AttemptColumns::default();
        let mut retried = false;
        for outcome in outcomes {
            let Some(msg_seq) = msg_seq_of.get(&outcome.delivery_id) else {
                continue;
            };
            retried |= matches!(outcome.next, NextStep::RetryAt(_));
            columns.push(*msg_seq, &outcome.attempt);
        }
        if !columns.id.is_empty() {
            let insert = transaction
                .prepare_cached(
                    "INSERT INTO attempt (id, msg_seq, msg_id, endpoint_id, app_id, url, status, \
                     response_status_code, response, response_duration_ms, trigger_type, created_at) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                     $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[])",
                )
                .await?;
            transaction
                .execute(
                    &insert,
                    &[
                        &columns.id,
                        &columns.msg_seq,
                        &columns.msg_id,
                        &columns.endpoint_id,
                        &columns.app_id,
                        &columns.url,
                        &columns.status,
                        &columns.response_status_code,
                        &columns.response,
                        &columns.response_duration_ms,
                        &columns.trigger_type,
                        &columns.created_at,
                    ],
                )
                .await?;
        }

        // Endpoint health: the last counted outcome per endpoint in this batch decides.
        let mut last_by_endpoint: HashMap<&EndpointId, (bool, Millis)> = HashMap::new();
        for outcome in outcomes.iter().filter(|outcome| outcome.reached_endpoint) {
            let attempt = &outcome.attempt;
            last_by_endpoint.insert(
                &attempt.endpoint_id,
                (
                    attempt.status == DeliveryStatus::Success,
                    attempt.created_at,
                ),
            );
        }
        let mut endpoints: Vec<&EndpointId> = last_by_endpoint.keys().copied().collect();
        endpoints.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        let now = now_millis();
        let mut disabled = Vec::new();
        for endpoint_id in endpoints {
            let (succeeded, at) = last_by_endpoint[endpoint_id];
            if succeeded {
                transaction
                    .execute(
                        "UPDATE endpoint SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
                        &[&endpoint_id.as_str()],
                    )
                    .await?;
                continue;
            }
            transaction
                .execute(
                    "UPDATE endpoint SET failing_since = COALESCE(failing_since, $2) WHERE id = $1",
                    &[&endpoint_id.as_str(), &at],
                )
                .await?;
            let Some(after) = disable_after else { continue };
            let switched_off = transaction
                .query_opt(
                    "UPDATE endpoint SET disabled = TRUE, updated_at = $2 WHERE id = $1 AND NOT disabled \
                     AND failing_since <= $3 RETURNING app_id, failing_since",
                    &[&endpoint_id.as_str(), &now, &(now - after)],
                )
                .await?;
            if let Some(row) = switched_off {
                disabled.push(DisabledEndpoint {
                    endpoint_id: endpoint_id.clone(),
                    app_id: AppId::from_trusted(row.try_get(0)?),
                    failing_since: row.try_get(1)?,
                });
            }
        }
        transaction.commit().await?;
        if retried {
            self.shared.signals.deliveries_due();
        }
        if !disabled.is_empty() {
            self.config_changed();
        }
        Ok(disabled)
    }

    async fn query_page<T>(
        &self,
        select: &str,
        conditions: Vec<String>,
        mut params: Params,
        keyset: &Keyset,
        page: &PageRequest,
        map: impl Fn(&tokio_postgres::Row) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let (sql, reversed) = keyed_sql(select, conditions, &mut params, keyset, page);
        let rows = self.client().await?.query(&sql, &params.as_refs()).await?;
        let items = rows.iter().map(map).collect::<StoreResult<Vec<_>>>()?;
        Ok(finish(items, page, reversed))
    }

    async fn message_seq(&self, app_id: &AppId, msg_id: &MessageId) -> StoreResult<Option<i64>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT seq FROM message WHERE id = $1 AND app_id = $2",
                &[&msg_id.as_str(), &app_id.as_str()],
            )
            .await?
            .map(|row| row.get(0)))
    }
}

/// The columns of attempts to insert, one vector per column (for `unnest`).
#[derive(Default)]
struct AttemptColumns {
    id: Vec<String>,
    msg_seq: Vec<i64>,
    msg_id: Vec<String>,
    endpoint_id: Vec<String>,
    app_id: Vec<String>,
    url: Vec<String>,
    status: Vec<i64>,
    response_status_code: Vec<i64>,
    response: Vec<String>,
    response_duration_ms: Vec<i64>,
    trigger_type: Vec<i64>,
    created_at: Vec<i64>,
}

impl AttemptColumns {
    fn push(&mut self, msg_seq: i64, attempt: &Attempt) {
        self.id.push(attempt.id.as_str().to_owned());
        self.msg_seq.push(msg_seq);
        self.msg_id.push(attempt.msg_id.as_str().to_owned());
        self.endpoint_id
            .push(attempt.endpoint_id.as_str().to_owned());
        self.app_id.push(attempt.app_id.as_str().to_owned());
        self.url.push(attempt.url.clone());
        self.status.push(attempt.status.code());
        self.response_status_code
            .push(i64::from(attempt.response_status_code));
        self.response.push(attempt.response.clone());
        self.response_duration_ms.push(attempt.response_duration_ms);
        self.trigger_type.push(attempt.trigger_type.code());
        self.created_at.push(attempt.created_at);
    }
}

/// The message fields every delivery of one message shares in a claim.
struct ClaimedMessage {
    msg_id: MessageId,
    app_id: AppId,
    event_type: Arc<str>,
    payload: Arc<str>,
    ordering_key: Option<Arc<str>>,
    created_at: Millis,
}

/// Conditions on the message table (alias `alias`) for event types, channel and time.
fn message_conditions(
    filter: &MessageFilter,
    alias: &str,
    conditions: &mut Vec<String>,
    params: &mut Params,
) {
    if let Some(event_types) = &filter.event_types
        && !event_types.is_empty()
    {
        let placeholder = params.push(event_types.clone());
        conditions.push(format!("{alias}.event_type = ANY({placeholder})"));
    }
    if let Some(channel) = &filter.channel {
        let placeholder = params.push(channel.clone());
        conditions.push(format!("{alias}.channels ? {placeholder}"));
    }
    if let Some(before) = filter.before {
        let placeholder = params.push(before);
        conditions.push(format!("{alias}.created_at < {placeholder}"));
    }
    if let Some(after) = filter.after {
        let placeholder = params.push(after);
        conditions.push(format!("{alias}.created_at > {placeholder}"));
    }
}

fn is_transient(error: &StoreError) -> bool {
    rows::is_transient(error)
}

#[async_trait]
impl Store for PgStore {
    async fn create_application(&self, application: Application) -> StoreResult<Application> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO application ({}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    rows::APPLICATION_COLUMNS
                ),
                &[
                    &application.id.as_str(),
                    &application.uid,
                    &application.name,
                    &application.rate_limit.map(i64::from),
                    &rows::to_json(&application.metadata),
                    &application.created_at,
                    &application.updated_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an application with this uid already exists")
            })?;
        Ok(application)
    }

    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        let column = if AppId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM application WHERE {column} = $1",
                    rows::APPLICATION_COLUMNS
                ),
                &[&id_or_uid],
            )
            .await?;
        row.as_ref().map(rows::application).transpose()
    }

    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>> {
        let keyset = Keyset {
            key_column: "id",
            iterator_key: "{}",
            newest_first: false,
        };
        let select = format!("SELECT {} FROM application", rows::APPLICATION_COLUMNS);
        self.query_page(
            &select,
            Vec::new(),
            Params::default(),
            &keyset,
            &page,
            rows::application,
        )
        .await
    }

    async fn update_application(&self, application: Application) -> StoreResult<Application> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE application SET uid = $2, name = $3, rate_limit = $4, metadata = $5, \
                 updated_at = $6 WHERE id = $1",
                &[
                    &application.id.as_str(),
                    &application.uid,
                    &application.name,
                    &application.rate_limit.map(i64::from),
                    &rows::to_json(&application.metadata),
                    &application.updated_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an application with this uid already exists")
            })?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        self.config_changed();
        self.get_application(application.id.as_str())
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn delete_application(&self, id: &AppId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let id = id.as_str();
        let changed = transaction
            .execute("DELETE FROM application WHERE id = $1", &[&id])
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        transaction
            .batch_execute("SET LOCAL statement_timeout = 0")
            .await?;
        // Owner rows before deliveries: the order claims take their locks in, so the two
        // cannot deadlock.
        for sql in [
            "DELETE FROM endpoint_owner WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM delivery WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM poller_consumer WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = $1)",
            "DELETE FROM attempt WHERE app_id = $1",
            "DELETE FROM idempotency_key WHERE app_id = $1",
            "DELETE FROM message WHERE app_id = $1",
            "DELETE FROM endpoint WHERE app_id = $1",
            "DELETE FROM app_token WHERE app_id = $1",
            "DELETE FROM idempotent_response WHERE app_id = $1",
            "DELETE FROM app_position WHERE app_id = $1",
        ] {
            transaction.execute(sql, &[&id]).await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }

    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO event_type ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    rows::EVENT_TYPE_COLUMNS
                ),
                &[
                    &event_type.name,
                    &event_type.description,
                    &event_type.archived,
                    &event_type.deprecated,
                    &event_type.schemas.as_ref().map(rows::to_json),
                    &event_type.feature_flag,
                    &event_type.group_name,
                    &event_type.created_at,
                    &event_type.updated_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an event type with this name already exists")
            })?;
        Ok(event_type)
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM event_type WHERE name = $1",
                    rows::EVENT_TYPE_COLUMNS
                ),
                &[&name],
            )
            .await?;
        row.as_ref().map(rows::event_type).transpose()
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>> {
        let keyset = Keyset {
            key_column: "name",
            iterator_key: "{}",
            newest_first: false,
        };
        let conditions = if include_archived {
            Vec::new()
        } else {
            vec!["NOT archived".to_owned()]
        };
        let select = format!("SELECT {} FROM event_type", rows::EVENT_TYPE_COLUMNS);
        self.query_page(
            &select,
            conditions,
            Params::default(),
            &keyset,
            &page,
            rows::event_type,
        )
        .await
    }

    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE event_type SET description = $2, archived = $3, deprecated = $4, \
                 schemas = $5, feature_flag = $6, group_name = $7, updated_at = $8 WHERE name = $1",
                &[
                    &event_type.name,
                    &event_type.description,
                    &event_type.archived,
                    &event_type.deprecated,
                    &event_type.schemas.as_ref().map(rows::to_json),
                    &event_type.feature_flag,
                    &event_type.group_name,
                    &event_type.updated_at,
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(event_type)
    }

    async fn expunge_event_type(&self, name: &str) -> StoreResult<()> {
        let changed = self
            .client()
            .await?
            .execute("DELETE FROM event_type WHERE name = $1", &[&name])
            .await?;
        if changed == 0 {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        // The application's position row doubles as its lock, so concurrent creates on any
        // node cannot overshoot the limit.
        transaction
            .execute(
                "INSERT INTO app_position (app_id, last) VALUES ($1, 0) \
                 ON CONFLICT (app_id) DO UPDATE SET last = app_position.last",
                &[&endpoint.app_id.as_str()],
            )
            .await?;
        let count: i64 = transaction
            .query_one(
                "SELECT count(*) FROM endpoint WHERE app_id = $1",
                &[&endpoint.app_id.as_str()],
            )
            .await?
            .get(0);
        if count as usize >= max_per_app {
            return Err(StoreError::LimitReached(format!(
                "the application already has the maximum of {max_per_app} endpoints"
            )));
        }
        let p = EndpointParams::of(&endpoint, &self.shared.options.secret_keys);
        transaction
            .execute(
                &format!(
                    "INSERT INTO endpoint ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                     $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
                    rows::ENDPOINT_COLUMNS
                ),
                &[
                    &endpoint.id.as_str(),
                    &endpoint.app_id.as_str(),
                    &endpoint.uid,
                    &endpoint.url,
                    &endpoint.description,
                    &p.version,
                    &endpoint.disabled,
                    &p.event_types,
                    &p.channels,
                    &p.rate_limit,
                    &p.metadata,
                    &p.secret,
                    &p.headers,
                    &endpoint.created_at,
                    &endpoint.updated_at,
                    &endpoint.ordering.as_str(),
                    &p.previous_secret,
                    &p.previous_expiry,
                    &endpoint.format.as_str(),
                    &endpoint.kind.as_str(),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an endpoint with this uid already exists")
            })?;
        transaction.commit().await?;
        self.config_changed();
        Ok(endpoint)
    }

    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let column = if EndpointId::has_prefix(id_or_uid) {
            "id"
        } else {
            "uid"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM endpoint WHERE app_id = $1 AND {column} = $2",
                    rows::ENDPOINT_COLUMNS
                ),
                &[&app_id.as_str(), &id_or_uid],
            )
            .await?;
        let keys = &self.shared.options.secret_keys;
        row.as_ref()
            .map(|row| rows::endpoint(row, keys))
            .transpose()
    }

    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {} FROM endpoint WHERE id = $1",
                rows::ENDPOINT_COLUMNS
            ))
            .await?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await?;
        let keys = &self.shared.options.secret_keys;
        row.as_ref()
            .map(|row| rows::endpoint(row, keys))
            .transpose()
    }

    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let keyset = Keyset {
            key_column: "id",
            iterator_key: "{}",
            newest_first: false,
        };
        let mut params = Params::default();
        let condition = format!("app_id = {}", params.push(app_id.as_str().to_owned()));
        let select = format!("SELECT {} FROM endpoint", rows::ENDPOINT_COLUMNS);
        self.query_page(&select, vec![condition], params, &keyset, &page, |row| {
            rows::endpoint(row, &self.shared.options.secret_keys)
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint> {
        let p = EndpointParams::of(&endpoint, &self.shared.options.secret_keys);
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE endpoint SET uid = $3, url = $4, description = $5, version = $6, \
                 disabled = $7, event_types = $8, channels = $9, rate_limit = $10, metadata = $11, \
                 secret = $12, headers = $13, updated_at = $14, ordering = $15, \
                 previous_secret = $16, previous_secret_expires_at = $17, \
                 format = $18, kind = $19 WHERE id = $1 AND app_id = $2",
                &[
                    &endpoint.id.as_str(),
                    &endpoint.app_id.as_str(),
                    &endpoint.uid,
                    &endpoint.url,
                    &endpoint.description,
                    &p.version,
                    &endpoint.disabled,
                    &p.event_types,
                    &p.channels,
                    &p.rate_limit,
                    &p.metadata,
                    &p.secret,
                    &p.headers,
                    &endpoint.updated_at,
                    &endpoint.ordering.as_str(),
                    &p.previous_secret,
                    &p.previous_expiry,
                    &endpoint.format.as_str(),
                    &endpoint.kind.as_str(),
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "an endpoint with this uid already exists")
            })?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        self.config_changed();
        Ok(endpoint)
    }

    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let changed = transaction
            .execute(
                "DELETE FROM endpoint WHERE id = $1 AND app_id = $2",
                &[&id.as_str(), &app_id.as_str()],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        // Owner row before deliveries: the order claims take their locks in.
        for sql in [
            "DELETE FROM endpoint_owner WHERE endpoint_id = $1",
            "DELETE FROM delivery WHERE endpoint_id = $1",
            "DELETE FROM poller_consumer WHERE endpoint_id = $1",
        ] {
            transaction.execute(sql, &[&id.as_str()]).await?;
        }
        transaction.commit().await?;
        self.config_changed();
        Ok(())
    }

    fn config_epoch(&self) -> u64 {
        self.shared.signals.config_epoch.load(Ordering::SeqCst)
    }

    async fn create_message(&self, new_message: NewMessage) -> StoreResult<AcceptedMessage> {
        let (reply, answer) = oneshot::channel();
        self.ingest
            .send(ingest::Job {
                message: new_message,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_message(
        &self,
        app_id: &AppId,
        id_or_event_id: &str,
    ) -> StoreResult<Option<kait_core::Message>> {
        let column = if MessageId::has_prefix(id_or_event_id) {
            "id"
        } else {
            "event_id"
        };
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM message m WHERE m.app_id = $1 AND m.{column} = $2",
                    rows::MESSAGE_COLUMNS
                ),
                &[&app_id.as_str(), &id_or_event_id],
            )
            .await?;
        row.as_ref().map(rows::message).transpose()
    }

    async fn list_messages(
        &self,
        app_id: &AppId,
        filter: MessageFilter,
        page: PageRequest,
    ) -> StoreResult<Page<kait_core::Message>> {
        let mut params = Params::default();
        let mut conditions = vec![format!(
            "m.app_id = {}",
            params.push(app_id.as_str().to_owned())
        )];
        message_conditions(&filter, "m", &mut conditions, &mut params);
        let keyset = Keyset {
            key_column: "m.seq",
            iterator_key: "(SELECT seq FROM message WHERE id = {})",
            newest_first: true,
        };
        let select = format!("SELECT {} FROM message m", rows::MESSAGE_COLUMNS);
        self.query_page(&select, conditions, params, &keyset, &page, rows::message)
            .await
    }

    async fn claim_due(
        &self,
        now: Millis,
        limit: usize,
        skip_endpoints: Vec<EndpointId>,
    ) -> StoreResult<Claim> {
        let skip: Vec<String> = skip_endpoints
            .into_iter()
            .map(EndpointId::into_string)
            .collect();
        let mut tries = 0;
        loop {
            match self.claim_once(now, limit, &skip).await {
                Err(error) if is_transient(&error) && tries < TRANSIENT_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn record_outcomes(
        &self,
        outcomes: Arc<[Outcome]>,
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        let mut tries = 0;
        loop {
            match self.record_once(&outcomes, disable_after).await {
                Err(error) if is_transient(&error) && tries < TRANSIENT_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn resend(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        endpoint_id: &EndpointId,
    ) -> StoreResult<()> {
        let seq = self
            .message_seq(app_id, msg_id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let now = now_millis();
        // A delivery already in flight is left alone: it is being sent right now.
        self.client()
            .await?
            .execute(
                "INSERT INTO delivery (msg_seq, endpoint_id, status, attempts, due_at, trigger_type, updated_at) \
                 VALUES ($1, $2, 1, 0, $3, 1, $3) \
                 ON CONFLICT (msg_seq, endpoint_id) DO UPDATE SET status = 1, attempts = 0, \
                 due_at = $3, trigger_type = 1, updated_at = $3, claimed_by = NULL WHERE delivery.status <> 3",
                &[&seq, &endpoint_id.as_str(), &now],
            )
            .await?;
        self.shared.signals.deliveries_due();
        Ok(())
    }

    async fn recover(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let now = now_millis();
        let recovered = self
            .client()
            .await?
            .execute(
                "UPDATE delivery SET status = 1, attempts = 0, due_at = $1, trigger_type = 1, \
                 updated_at = $1 WHERE endpoint_id = $2 AND status = 2 AND msg_seq IN \
                 (SELECT seq FROM message WHERE app_id = $3 AND created_at >= $4 AND created_at < $5)",
                &[
                    &now,
                    &endpoint_id.as_str(),
                    &app_id.as_str(),
                    &since,
                    &until.unwrap_or(Millis::MAX),
                ],
            )
            .await?;
        if recovered > 0 {
            self.shared.signals.deliveries_due();
        }
        Ok(recovered)
    }

    async fn replay_missing(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let endpoint = self
            .get_endpoint(app_id, endpoint_id.as_str())
            .await?
            .ok_or(StoreError::NotFound)?;
        let client = self.client().await?;
        let missing = client
            .query(
                "SELECT m.seq, m.event_type, m.channels::text FROM message m WHERE m.app_id = $1 \
                 AND m.created_at >= $2 AND m.created_at < $3 AND NOT EXISTS \
                 (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.endpoint_id = $4) \
                 ORDER BY m.seq",
                &[
                    &app_id.as_str(),
                    &since,
                    &until.unwrap_or(Millis::MAX),
                    &endpoint_id.as_str(),
                ],
            )
            .await?;
        // Disabled or not, the filters decide what the endpoint should have had.
        let enabled = Endpoint {
            disabled: false,
            ..endpoint
        };
        let mut seqs = Vec::new();
        for row in missing {
            let event_type: &str = row.try_get(1)?;
            let channels: Option<std::collections::BTreeSet<String>> = row
                .try_get::<_, Option<&str>>(2)?
                .and_then(|text| serde_json::from_str(text).ok());
            if kait_core::filter::endpoint_matches(&enabled, event_type, channels.as_ref()) {
                seqs.push(row.try_get::<_, i64>(0)?);
            }
        }
        if seqs.is_empty() {
            return Ok(0);
        }
        let now = now_millis();
        let replayed = client
            .execute(
                "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, trigger_type, updated_at) \
                 SELECT s, $2, 1, $3, 1, $3 FROM unnest($1::bigint[]) AS s ON CONFLICT DO NOTHING",
                &[&seqs, &endpoint_id.as_str(), &now],
            )
            .await?;
        if replayed > 0 {
            self.shared.signals.deliveries_due();
        }
        Ok(replayed)
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.shared.signals.due.clone()
    }

    fn endpoint_idle(&self, endpoint_id: &EndpointId) {
        self.shared.idle.add(endpoint_id.as_str());
    }

    async fn list_attempts(
        &self,
        app_id: &AppId,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let mut params = Params::default();
        let mut conditions = vec![format!(
            "a.app_id = {}",
            params.push(app_id.as_str().to_owned())
        )];
        if let Some(endpoint_id) = filter.endpoint_id {
            conditions.push(format!(
                "a.endpoint_id = {}",
                params.push(endpoint_id.into_string())
            ));
        }
        if let Some(msg_id) = filter.msg_id {
            conditions.push(format!("a.msg_id = {}", params.push(msg_id.into_string())));
        }
        if let Some(status) = filter.status {
            conditions.push(format!("a.status = {}", params.push(status.code())));
        }
        // Times filter the attempt; event types and channel filter its message.
        if let Some(before) = filter.message.before {
            conditions.push(format!("a.created_at < {}", params.push(before)));
        }
        if let Some(after) = filter.message.after {
            conditions.push(format!("a.created_at > {}", params.push(after)));
        }
        let message_filter = MessageFilter {
            before: None,
            after: None,
            ..filter.message
        };
        let needs_message =
            message_filter.event_types.is_some() || message_filter.channel.is_some();
        message_conditions(&message_filter, "m", &mut conditions, &mut params);
        let keyset = Keyset {
            key_column: "a.seq",
            iterator_key: "(SELECT seq FROM attempt WHERE id = {})",
            newest_first: true,
        };
        let join = if needs_message {
            "JOIN message m ON m.seq = a.msg_seq"
        } else {
            ""
        };
        let select = format!("SELECT {} FROM attempt a {join}", rows::ATTEMPT_COLUMNS);
        self.query_page(&select, conditions, params, &keyset, &page, rows::attempt)
            .await
    }

    async fn get_attempt(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        attempt_id: &AttemptId,
    ) -> StoreResult<Option<Attempt>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {} FROM attempt a WHERE a.id = $1 AND a.app_id = $2 AND a.msg_id = $3",
                    rows::ATTEMPT_COLUMNS
                ),
                &[&attempt_id.as_str(), &app_id.as_str(), &msg_id.as_str()],
            )
            .await?;
        row.as_ref().map(rows::attempt).transpose()
    }

    async fn list_delivery_states(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
    ) -> StoreResult<Vec<DeliveryState>> {
        let Some(seq) = self.message_seq(app_id, msg_id).await? else {
            return Err(StoreError::NotFound);
        };
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT d.status, d.due_at, {} FROM delivery d JOIN endpoint e ON e.id = d.endpoint_id \
                     WHERE d.msg_seq = $1 ORDER BY e.id",
                    rows::ENDPOINT_COLUMNS_E
                ),
                &[&seq],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let status = rows::delivery_status(row, 0)?;
                Ok(DeliveryState {
                    status,
                    next_attempt_at: if matches!(
                        status,
                        DeliveryStatus::Pending | DeliveryStatus::Sending
                    ) {
                        row.try_get(1)?
                    } else {
                        None
                    },
                    endpoint: rows::endpoint_at(row, 2, &self.shared.options.secret_keys)?,
                })
            })
            .collect()
    }

    async fn list_endpoint_messages(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> StoreResult<Page<EndpointMessage>> {
        let mut params = Params::default();
        let mut conditions = vec![
            format!(
                "d.endpoint_id = {}",
                params.push(endpoint_id.as_str().to_owned())
            ),
            format!("m.app_id = {}", params.push(app_id.as_str().to_owned())),
        ];
        if let Some(status) = status {
            conditions.push(format!("d.status = {}", params.push(status.code())));
        }
        let keyset = Keyset {
            key_column: "d.msg_seq",
            iterator_key: "(SELECT seq FROM message WHERE id = {})",
            newest_first: true,
        };
        let select = format!(
            "SELECT {}, d.status, d.due_at FROM delivery d JOIN message m ON m.seq = d.msg_seq",
            rows::MESSAGE_COLUMNS
        );
        self.query_page(&select, conditions, params, &keyset, &page, |row| {
            let status = rows::delivery_status(row, 8)?;
            Ok(EndpointMessage {
                message: rows::message(row)?,
                status,
                next_attempt_at: if status == DeliveryStatus::Pending {
                    row.try_get(9)?
                } else {
                    None
                },
            })
        })
        .await
    }

    async fn endpoint_delivery_counts(
        &self,
        endpoint_id: &EndpointId,
    ) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT status, COUNT(*) FROM delivery WHERE endpoint_id = $1 GROUP BY status ORDER BY status",
                &[&endpoint_id.as_str()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    rows::delivery_status(row, 0)?,
                    row.try_get::<_, i64>(1)? as u64,
                ))
            })
            .collect()
    }

    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT app_id, fingerprint, status, body FROM idempotent_response \
                 WHERE key = $1 AND request = $2 AND created_at >= $3",
                &[&key, &request, &not_before],
            )
            .await?;
        row.map(|row| {
            Ok(IdempotentResponse {
                app_id: row
                    .try_get::<_, Option<String>>(0)?
                    .map(AppId::from_trusted),
                fingerprint: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                status: row.try_get::<_, i64>(2)? as u16,
                body: row.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()> {
        // An expired entry is replaced; a live one is kept (the first response wins).
        self.client()
            .await?
            .execute(
                "INSERT INTO idempotent_response \
                 (key, request, app_id, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key, request) DO UPDATE SET \
                 app_id = EXCLUDED.app_id, fingerprint = EXCLUDED.fingerprint, \
                 status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at \
                 WHERE idempotent_response.created_at < $7 - 86400000",
                &[
                    &key,
                    &request,
                    &response.app_id.as_ref().map(AppId::as_str),
                    &response.fingerprint,
                    &i64::from(response.status),
                    &response.body,
                    &now_millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn poll_messages(
        &self,
        endpoint: &Endpoint,
        after: i64,
        filter: MessageFilter,
        limit: usize,
    ) -> StoreResult<Vec<(i64, kait_core::Message)>> {
        let mut params = Params::default();
        let mut conditions = vec![
            format!(
                "m.app_id = {}",
                params.push(endpoint.app_id.as_str().to_owned())
            ),
            format!("m.pos > {}", params.push(after)),
        ];
        if let Some(event_types) = endpoint
            .event_types
            .as_ref()
            .filter(|types| !types.is_empty())
        {
            let types: Vec<String> = event_types.iter().cloned().collect();
            conditions.push(format!("m.event_type = ANY({})", params.push(types)));
        }
        if let Some(channels) = endpoint
            .channels
            .as_ref()
            .filter(|channels| !channels.is_empty())
        {
            let channels: Vec<String> = channels.iter().cloned().collect();
            conditions.push(format!("m.channels ?| {}", params.push(channels)));
        }
        message_conditions(&filter, "m", &mut conditions, &mut params);
        let sql = format!(
            "SELECT {}, m.pos FROM message m {} ORDER BY m.pos LIMIT {}",
            rows::MESSAGE_COLUMNS,
            where_clause(&conditions),
            limit
        );
        let rows = self.client().await?.query(&sql, &params.as_refs()).await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<_, i64>(8)?, rows::message(row)?)))
            .collect()
    }

    async fn position_at(&self, app_id: &AppId, at: Millis) -> StoreResult<i64> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT COALESCE(MAX(pos), 0)::bigint FROM message WHERE app_id = $1 AND created_at <= $2",
                &[&app_id.as_str(), &at],
            )
            .await?
            .try_get(0)?)
    }

    async fn consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
    ) -> StoreResult<i64> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT position FROM poller_consumer WHERE endpoint_id = $1 AND consumer_id = $2",
                &[&endpoint_id.as_str(), &consumer_id],
            )
            .await?
            .map_or(0, |row| row.get(0)))
    }

    async fn set_consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
        position: i64,
        max_consumers: usize,
    ) -> StoreResult<()> {
        // Two new consumers created at the same instant may both pass the count: the bound
        // is against a flood, not exact.
        let changed = self
            .client()
            .await?
            .execute(
                "INSERT INTO poller_consumer (endpoint_id, consumer_id, position, updated_at) \
                 SELECT $1, $2, $3, $4 WHERE EXISTS \
                 (SELECT 1 FROM poller_consumer WHERE endpoint_id = $1 AND consumer_id = $2) \
                 OR (SELECT COUNT(*) FROM poller_consumer WHERE endpoint_id = $1) < $5 \
                 ON CONFLICT (endpoint_id, consumer_id) DO UPDATE SET \
                 position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                &[
                    &endpoint_id.as_str(),
                    &consumer_id,
                    &position,
                    &now_millis(),
                    &(max_consumers as i64),
                ],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::LimitReached(format!(
                "a polling endpoint has at most {max_consumers} consumers"
            )));
        }
        Ok(())
    }

    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO app_token \
                 (token_hash, app_id, created_at, expires_at, capabilities, session_id) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &token.token_hash,
                    &token.app_id.as_str(),
                    &now_millis(),
                    &token.expires_at,
                    &i64::from(token.capabilities.bits()),
                    &token.session_id,
                ],
            )
            .await?;
        Ok(())
    }

    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE app_token SET expires_at = $2 \
                 WHERE app_id = $1 AND expires_at > $2 \
                 AND ($3::text[] IS NULL OR session_id = ANY($3))",
                &[&app_id.as_str(), &expires_at, &session_ids],
            )
            .await?)
    }

    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>> {
        self.client()
            .await?
            .query_opt(
                "SELECT app_id, capabilities FROM app_token \
                 WHERE token_hash = $1 AND expires_at > $2",
                &[&token_hash, &now],
            )
            .await?
            .map(|row| {
                Ok(AppTokenGrant {
                    app_id: AppId::from_trusted(row.try_get(0)?),
                    capabilities: Capabilities::from_bits(row.try_get::<_, i64>(1)? as u32),
                })
            })
            .transpose()
    }

    fn message_signal(&self, app_id: &AppId) -> tokio::sync::watch::Receiver<u64> {
        self.shared.signals.messages.subscribe(app_id)
    }

    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64> {
        let client = self.client().await?;
        let responses = client
            .execute(
                "DELETE FROM idempotent_response WHERE created_at < $1",
                &[&(now - idempotency_lifetime)],
            )
            .await?;
        let tokens = client
            .execute("DELETE FROM app_token WHERE expires_at <= $1", &[&now])
            .await?;
        Ok(responses + tokens)
    }

    async fn purge_history(
        &self,
        messages_before: Option<Millis>,
        attempts_before: Option<Millis>,
        batch: usize,
    ) -> StoreResult<u64> {
        let client = self.client().await?;
        let mut purged = 0;
        if let Some(before) = attempts_before {
            purged += client
                .execute(
                    "DELETE FROM attempt WHERE seq IN \
                     (SELECT seq FROM attempt WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
                    &[&before, &(batch as i64)],
                )
                .await?;
        }
        if let Some(before) = messages_before {
            // A message goes with its finished deliveries and its Idempotency-Key; one still
            // being delivered stays until it is done.
            let rows = client
                .query(
                    "WITH doomed AS (SELECT m.seq FROM message m WHERE m.created_at < $1 \
                       AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.status IN (1, 3)) \
                       ORDER BY m.created_at LIMIT $2), \
                     deliveries AS (DELETE FROM delivery d USING doomed WHERE d.msg_seq = doomed.seq), \
                     keys AS (DELETE FROM idempotency_key i USING doomed WHERE i.msg_seq = doomed.seq) \
                     DELETE FROM message m USING doomed WHERE m.seq = doomed.seq RETURNING 1",
                    &[&before, &(batch as i64)],
                )
                .await?;
            purged += rows.len() as u64;
        }
        Ok(purged)
    }

    async fn delivery_counts(&self) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    rows::delivery_status(row, 0)?,
                    row.try_get::<_, i64>(1)? as u64,
                ))
            })
            .collect()
    }

    async fn queue_depth(&self, now: Millis) -> StoreResult<QueueDepth> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE due_at <= $1), count(*) FILTER (WHERE due_at > $1) \
                 FROM delivery WHERE status = 1",
                &[&now],
            )
            .await?;
        Ok(QueueDepth {
            due: row.try_get::<_, i64>(0)? as u64,
            scheduled: row.try_get::<_, i64>(1)? as u64,
        })
    }

    async fn close(&self) -> StoreResult<()> {
        self.stop.cancel();
        cluster::leave(&self.shared).await?;
        // The notifier has stopped: tell the others directly that work is theirs now.
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_notify($1, '')",
                &[&format!("kait_{}_due", self.shared.options.schema)],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
