//! The PostgreSQL store: many `kait serve` nodes on one database.
//!
//! Reads and writes go through a connection pool. Messages are accepted through a group
//! commit ([`ingest`]), which also hands new deliveries straight to this node's dispatcher;
//! the group commit and outcome batches pipeline their statements (one or two round trips
//! per transaction); claims and everything else are plain transactions.
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

/// The SQL of two common table expressions that take ownership of endpoints for a node, as a
/// claim and a hand-off do: `alive` holds the node's row `FOR KEY SHARE` (a node that was
/// declared dead, its row deleted, takes nothing, and the reaper cannot delete it meanwhile),
/// and `taken` takes those of the endpoints (a `text[]` parameter, sorted) that no other live
/// node runs, locking their rows in id order so that two nodes taking the same ones cannot
/// deadlock, and returns every one this node runs now.
macro_rules! take_endpoints_sql {
    ($endpoints:literal, $node:literal) => {
        concat!(
            "alive AS (SELECT id FROM kait_node WHERE id = ",
            $node,
            " FOR KEY SHARE), ",
            "taken AS (INSERT INTO endpoint_owner (endpoint_id, node_id) ",
            "SELECT c, alive.id FROM unnest(",
            $endpoints,
            "::text[]) AS c, alive ORDER BY c ",
            "ON CONFLICT (endpoint_id) DO UPDATE SET node_id = EXCLUDED.node_id ",
            "WHERE endpoint_owner.node_id = EXCLUDED.node_id ",
            "OR NOT EXISTS (SELECT 1 FROM kait_node n WHERE n.id = endpoint_owner.node_id) ",
            "RETURNING endpoint_id)"
        )
    };
}

mod access;
mod attachments;
mod cluster;
mod config;
mod devices;
mod housekeeping;
mod ingest;
mod messages;
mod paging;
mod pipes;
mod plugins;
mod pull;
mod queue;
mod roles;
mod rows;
mod schema;
mod secrets;
mod sources;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::cluster::{IdleEndpoints, NodeIdentity, Signals};
use crate::sealing::SecretKeys;
use crate::{StoreError, StoreResult};

/// How often a claim or an outcome batch that hit a deadlock is tried again.
const TRANSIENT_RETRIES: usize = 5;

/// The store's defaults (`kait serve` shows them in `--help`).
pub mod defaults {
    use std::time::Duration;

    pub const SCHEMA: &str = "public";
    pub const POOL_SIZE: usize = 16;
    pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
    pub const LEASE: Duration = Duration::from_secs(30);
}

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
            .map_err(|error| StoreError::InvalidConfig(format!("bad database URL: {error}")))?;
        Ok(Self {
            config,
            schema: defaults::SCHEMA.to_owned(),
            pool_size: defaults::POOL_SIZE,
            statement_timeout: defaults::STATEMENT_TIMEOUT,
            lease: defaults::LEASE,
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
    /// New deliveries the group commit hands straight to this node's dispatcher.
    handoff: crate::handoff::Handoff,
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
        return Err(StoreError::InvalidConfig(format!(
            "schema name {:?} must be lowercase letters, digits and underscores",
            options.schema
        )));
    }
    let (mut client, connection) = options.config.connect(tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    let applied = schema::migrate(&mut client, &options.schema).await?;
    secrets::reseal(&client, &options.schema, &options.secret_keys).await?;
    warn_without_autovacuum(&client).await;
    drop(client);
    let _ = driver.await;
    Ok(applied)
}

/// Kait's delivery and attempt tables churn (a status update per attempt) and grow from
/// empty: without autovacuum they bloat and the planner keeps the statistics of an empty
/// table, so keyset reads turn into scans of the whole log (seen: 0.5 s for a page of
/// attempts at a million). Said once at start; Kait works either way.
async fn warn_without_autovacuum(client: &tokio_postgres::Client) {
    if let Ok(row) = client.query_one("SHOW autovacuum", &[]).await
        && row.get::<_, String>(0) == "off"
    {
        tracing::warn!(
            "PostgreSQL runs with autovacuum off: Kait's tables will bloat and its queries \
             plan on stale statistics; turn it on, or VACUUM ANALYZE regularly"
        );
    }
}

/// Drops the schema with everything in it (benchmarks and tests clean up with this).
pub async fn drop_schema(options: &PgOptions) -> StoreResult<()> {
    if !valid_schema_name(&options.schema) || options.schema == "public" {
        return Err(StoreError::InvalidConfig(format!(
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
            .map_err(|error| StoreError::InvalidConfig(format!("connection pool: {error}")))?;
        let shared = Arc::new(Shared {
            pool,
            options,
            signals: Signals::new(),
            node: NodeIdentity::new(),
            idle: IdleEndpoints::default(),
            handoff: Default::default(),
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
}

#[cfg(test)]
mod tests;
