//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! Writes go through the writer thread's group commit ([`writer`]); reads use a small pool of
//! read-only connections on blocking threads, which WAL lets run beside the writer. A lock file
//! keeps a second process off the same data directory: the embedded mode is one node by
//! design, which is also why deliveries left `Sending` by a crash are simply made due again
//! when the store opens.

mod paging;
mod rows;
mod schema;
mod secrets;
mod writer;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kait_core::access::Capabilities;
use kait_core::time::{Millis, now_millis};
use kait_core::{
    AppId, Application, Attempt, AttemptId, DeliveryState, DeliveryStatus, Endpoint, EndpointId,
    EventType, MessageId, TriggerType,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::Notify;

use self::paging::{Keyset, query_keyed};
use self::writer::{Durability, Handoff, WriteContext, WriterHandle, WriterSignals};
use crate::sealing::SecretKeys;
use crate::{
    AcceptedMessage, AppTokenGrant, AttemptFilter, Claim, ClaimedDelivery, DisabledEndpoint,
    EndpointMessage, IdempotentResponse, MessageFilter, NewAppToken, NewMessage, NextStep, Outcome,
    Page, PageRequest, QueueDepth, Store, StoreError, StoreResult,
};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "kait.db";
const LOCK_FILE: &str = "kait.lock";
/// New deliveries that may wait in the hand-off queue; past that they go through the claim.
const HANDOFF_CAPACITY: usize = 2048;
/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;
/// Reads running at once (each on a blocking thread with its own connection); twice the
/// connections kept idle, so a burst opens a few more and then queues.
const MAX_READERS: usize = 2 * IDLE_READERS;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub data_dir: PathBuf,
    /// Seal endpoint secrets and headers at rest (see [`crate::sealing`]).
    pub secret_keys: SecretKeys,
    /// `FULL` syncs the WAL on every commit (survives power loss); `NORMAL` only survives a
    /// process crash. Kait uses `FULL`; tests of unrelated behaviour may relax it.
    pub synchronous_full: bool,
}

impl SqliteOptions {
    pub fn new(data_dir: impl Into<PathBuf>, secret_keys: SecretKeys) -> Self {
        Self {
            data_dir: data_dir.into(),
            secret_keys,
            synchronous_full: true,
        }
    }
}

pub struct SqliteStore {
    writer: WriterHandle,
    handoff: Arc<Handoff>,
    readers: Arc<ReaderPool>,
    keys: Arc<SecretKeys>,
    due: Arc<Notify>,
    config_epoch: Arc<AtomicU64>,
    messages: Arc<crate::app_signals::AppSignals>,
    /// Held for the store's lifetime: the OS lock that keeps other processes out.
    _lock: File,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Reads running at once. Each read holds a blocking thread and a connection; without
    /// a bound, a thousand woken streams started a thousand threads (tokio allows 512) and
    /// starved everything else. Waiting readers queue here, on the async side, for free.
    running: Arc<tokio::sync::Semaphore>,
}

impl ReaderPool {
    fn open_connection(&self) -> StoreResult<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(connection)
    }

    fn with_connection<T>(
        &self,
        body: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let pooled = self.idle.lock().expect("reader pool lock").pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => self.open_connection()?,
        };
        let result = body(&connection);
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < IDLE_READERS {
            idle.push(connection);
        }
        result
    }
}

fn configure(connection: &Connection, synchronous_full: bool) -> rusqlite::Result<()> {
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(
        None,
        "synchronous",
        if synchronous_full { "FULL" } else { "NORMAL" },
    )?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // 2 MB of page cache per connection (SQLite's default), not more: when a transaction ends
    // SQLite may walk the cache's whole hash table (`pcache1TruncateUnsafe`, which this write
    // pattern hit at every commit, its cost growing with the cache), so a 16 MB cache cost
    // 2.9 % of the server's CPU in push-1 (0.4 % at 2 MB), and 13-15 MiB of resident memory
    // under load, for no gain in throughput or backlog drain (BENCHMARKS.md): the hot pages
    // are the right edges of a few B-trees, and the rest sits in the OS page cache anyway.
    connection.pragma_update(None, "cache_size", -2_000)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `options.data_dir`, migrates it, and makes
    /// deliveries that a previous process left in flight due again.
    pub fn open(options: SqliteOptions) -> StoreResult<Self> {
        secrets::make_private(&options.data_dir).map_err(io_error)?;
        let lock = File::create(options.data_dir.join(LOCK_FILE)).map_err(io_error)?;
        lock.try_lock().map_err(|_| {
            StoreError::Database(format!(
                "data directory {} is in use by another Kait process",
                options.data_dir.display()
            ))
        })?;

        let path = options.data_dir.join(DATABASE_FILE);
        let mut connection = Connection::open(&path)?;
        configure(&connection, options.synchronous_full)?;
        schema::migrate(&mut connection)?;
        secrets::reseal(&mut connection, &options.secret_keys)?;
        let orphans = connection.execute(
            "UPDATE delivery SET status = 1, due_at = ?1, updated_at = ?1 WHERE status = 3",
            [now_millis()],
        )?;
        if orphans > 0 {
            tracing::info!(
                orphans,
                "deliveries left in flight by the last run are due again"
            );
        }

        let due = Arc::new(Notify::new());
        let config_epoch = Arc::new(AtomicU64::new(0));
        let messages = Arc::new(crate::app_signals::AppSignals::default());
        let handoff = Arc::new(Handoff::default());
        let keys = Arc::new(options.secret_keys);
        let (writer, _thread) = writer::spawn(
            connection,
            if options.synchronous_full {
                "FULL"
            } else {
                "NORMAL"
            },
            WriterSignals {
                due: due.clone(),
                config_epoch: config_epoch.clone(),
                messages: messages.clone(),
            },
            handoff.clone(),
            keys.clone(),
        )
        .map_err(io_error)?;
        Ok(Self {
            writer,
            handoff,
            keys,
            readers: Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
                running: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            }),
            due,
            config_epoch,
            messages,
            _lock: lock,
        })
    }

    pub fn database_path(data_dir: &Path) -> PathBuf {
        data_dir.join(DATABASE_FILE)
    }

    async fn read<T, F>(&self, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let permit = readers
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            readers.with_connection(body)
        })
        .await
        .map_err(|error| StoreError::Database(format!("reader task failed: {error}")))?
    }
}

fn io_error(error: std::io::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

fn application_by_key(connection: &Connection, key: &str) -> StoreResult<Option<Application>> {
    let column = if AppId::has_prefix(key) { "id" } else { "uid" };
    let sql = format!(
        "SELECT {} FROM application WHERE {column} = ?1",
        rows::APPLICATION_COLUMNS
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([key], rows::application)
        .optional()?)
}

fn endpoint_by_key(
    connection: &Connection,
    keys: &SecretKeys,
    app_id: &str,
    key: &str,
) -> StoreResult<Option<Endpoint>> {
    let column = if EndpointId::has_prefix(key) {
        "id"
    } else {
        "uid"
    };
    let sql = format!(
        "SELECT {} FROM endpoint WHERE app_id = ?1 AND {column} = ?2",
        rows::ENDPOINT_COLUMNS
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([app_id, key], |row| rows::endpoint(row, keys))
        .optional()?)
}

fn message_by_seq(connection: &Connection, seq: i64) -> StoreResult<kait_core::Message> {
    let sql = format!(
        "SELECT {} FROM message m WHERE m.seq = ?1",
        rows::MESSAGE_COLUMNS
    );
    Ok(connection
        .prepare_cached(&sql)?
        .query_row([seq], rows::message)?)
}

fn message_seq(connection: &Connection, app_id: &str, msg_id: &str) -> StoreResult<Option<i64>> {
    Ok(connection
        .prepare_cached("SELECT seq FROM message WHERE id = ?1 AND app_id = ?2")?
        .query_row([msg_id, app_id], |row| row.get(0))
        .optional()?)
}

fn insert_endpoint(context: &mut WriteContext<'_>, endpoint: &Endpoint) -> StoreResult<()> {
    let sealed = context.keys.seal_endpoint(endpoint);
    context
        .connection
        .prepare_cached(&format!(
            "INSERT INTO endpoint ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            rows::ENDPOINT_COLUMNS
        ))?
        .execute(params![
            endpoint.id.as_str(),
            endpoint.app_id.as_str(),
            endpoint.uid,
            endpoint.url,
            endpoint.description,
            endpoint.version,
            endpoint.disabled,
            rows::optional_set_json(&endpoint.event_types),
            rows::optional_set_json(&endpoint.channels),
            endpoint.rate_limit,
            rows::to_json(&endpoint.metadata),
            sealed.secret,
            sealed.headers,
            endpoint.created_at,
            endpoint.updated_at,
            endpoint.ordering.as_str(),
            sealed.previous_secret,
            endpoint.previous_secret.as_ref().map(|(_, expires_at)| *expires_at),
            endpoint.format.as_str(),
            endpoint.kind.as_str(),
        ])
        .map_err(|error| rows::conflict_on_unique(error, "an endpoint with this uid already exists"))?;
    context.forget_endpoints_of(endpoint.app_id.as_str());
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_application(&self, application: Application) -> StoreResult<Application> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO application ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        rows::APPLICATION_COLUMNS
                    ))?
                    .execute(params![
                        application.id.as_str(),
                        application.uid,
                        application.name,
                        application.rate_limit,
                        rows::to_json(&application.metadata),
                        application.created_at,
                        application.updated_at,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(
                            error,
                            "an application with this uid already exists",
                        )
                    })?;
                Ok(application)
            })
            .await
    }

    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>> {
        let key = id_or_uid.to_owned();
        self.read(move |connection| application_by_key(connection, &key))
            .await
    }

    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>> {
        self.read(move |connection| {
            let keyset = Keyset {
                key_column: "id",
                iterator_key: "?",
                newest_first: false,
            };
            let select = format!("SELECT {} FROM application", rows::APPLICATION_COLUMNS);
            query_keyed(
                connection,
                &select,
                Vec::new(),
                Vec::new(),
                &keyset,
                &page,
                rows::application,
            )
        })
        .await
    }

    async fn update_application(&self, application: Application) -> StoreResult<Application> {
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE application SET uid = ?2, name = ?3, rate_limit = ?4, metadata = ?5, \
                         updated_at = ?6 WHERE id = ?1",
                    )?
                    .execute(params![
                        application.id.as_str(),
                        application.uid,
                        application.name,
                        application.rate_limit,
                        rows::to_json(&application.metadata),
                        application.updated_at,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "an application with this uid already exists")
                    })?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context.config_changed = true;
                application_by_key(context.connection, application.id.as_str())?
                    .ok_or(StoreError::NotFound)
            })
            .await
    }

    async fn delete_application(&self, id: &AppId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let changed = connection.execute("DELETE FROM application WHERE id = ?1", [id.as_str()])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                connection.execute(
                    "DELETE FROM delivery WHERE endpoint_id IN (SELECT id FROM endpoint WHERE app_id = ?1)",
                    [id.as_str()],
                )?;
                connection.execute("DELETE FROM attempt WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM idempotency_key WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM message WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM endpoint WHERE app_id = ?1", [id.as_str()])?;
                connection.execute("DELETE FROM app_token WHERE app_id = ?1", [id.as_str()])?;
                connection.execute(
                    "DELETE FROM idempotent_response WHERE app_id = ?1",
                    [id.as_str()],
                )?;
                context.forget_endpoints_of(id.as_str());
                Ok(())
            })
            .await
    }

    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO event_type ({}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        rows::EVENT_TYPE_COLUMNS
                    ))?
                    .execute(params![
                        event_type.name,
                        event_type.description,
                        event_type.archived,
                        event_type.deprecated,
                        event_type.schemas.as_ref().map(rows::to_json),
                        event_type.feature_flag,
                        event_type.group_name,
                        event_type.created_at,
                        event_type.updated_at,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(
                            error,
                            "an event type with this name already exists",
                        )
                    })?;
                Ok(event_type)
            })
            .await
    }

    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>> {
        let name = name.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM event_type WHERE name = ?1",
                    rows::EVENT_TYPE_COLUMNS
                ))?
                .query_row([name], rows::event_type)
                .optional()?)
        })
        .await
    }

    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>> {
        self.read(move |connection| {
            let keyset = Keyset {
                key_column: "name",
                iterator_key: "?",
                newest_first: false,
            };
            let conditions = if include_archived {
                Vec::new()
            } else {
                vec!["archived = 0".to_owned()]
            };
            let select = format!("SELECT {} FROM event_type", rows::EVENT_TYPE_COLUMNS);
            query_keyed(
                connection,
                &select,
                conditions,
                Vec::new(),
                &keyset,
                &page,
                rows::event_type,
            )
        })
        .await
    }

    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType> {
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE event_type SET description = ?2, archived = ?3, deprecated = ?4, \
                         schemas = ?5, feature_flag = ?6, group_name = ?7, updated_at = ?8 WHERE name = ?1",
                    )?
                    .execute(params![
                        event_type.name,
                        event_type.description,
                        event_type.archived,
                        event_type.deprecated,
                        event_type.schemas.as_ref().map(rows::to_json),
                        event_type.feature_flag,
                        event_type.group_name,
                        event_type.updated_at,
                    ])?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(event_type)
            })
            .await
    }

    async fn expunge_event_type(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .execute("DELETE FROM event_type WHERE name = ?1", [name])?;
                if changed == 0 {
                    Err(StoreError::NotFound)
                } else {
                    Ok(())
                }
            })
            .await
    }

    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint> {
        self.writer
            .write(move |context| {
                // Counted on the writer thread, so concurrent creates cannot overshoot.
                if context.endpoints_of(endpoint.app_id.as_str())?.len() >= max_per_app {
                    return Err(StoreError::LimitReached(format!(
                        "the application already has the maximum of {max_per_app} endpoints"
                    )));
                }
                insert_endpoint(context, &endpoint)?;
                Ok(endpoint)
            })
            .await
    }

    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        let (app_id, key) = (app_id.clone(), id_or_uid.to_owned());
        let keys = self.keys.clone();
        self.read(move |connection| endpoint_by_key(connection, &keys, app_id.as_str(), &key))
            .await
    }

    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>> {
        let (id, keys) = (id.clone(), self.keys.clone());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {} FROM endpoint WHERE id = ?1",
                    rows::ENDPOINT_COLUMNS
                ))?
                .query_row([id.as_str()], |row| rows::endpoint(row, &keys))
                .optional()?)
        })
        .await
    }

    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>> {
        let (app_id, keys) = (app_id.clone(), self.keys.clone());
        self.read(move |connection| {
            let keyset = Keyset {
                key_column: "id",
                iterator_key: "?",
                newest_first: false,
            };
            let select = format!("SELECT {} FROM endpoint", rows::ENDPOINT_COLUMNS);
            query_keyed(
                connection,
                &select,
                vec!["app_id = ?".to_owned()],
                vec![Value::Text(app_id.into_string())],
                &keyset,
                &page,
                |row| rows::endpoint(row, &keys),
            )
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint> {
        self.writer
            .write(move |context| {
                let sealed = context.keys.seal_endpoint(&endpoint);
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE endpoint SET uid = ?3, url = ?4, description = ?5, version = ?6, \
                         disabled = ?7, event_types = ?8, channels = ?9, rate_limit = ?10, metadata = ?11, \
                         secret = ?12, headers = ?13, updated_at = ?14, ordering = ?15, \
                         previous_secret = ?16, previous_secret_expires_at = ?17, \
                         format = ?18, kind = ?19 WHERE id = ?1 AND app_id = ?2",
                    )?
                    .execute(params![
                        endpoint.id.as_str(),
                        endpoint.app_id.as_str(),
                        endpoint.uid,
                        endpoint.url,
                        endpoint.description,
                        endpoint.version,
                        endpoint.disabled,
                        rows::optional_set_json(&endpoint.event_types),
                        rows::optional_set_json(&endpoint.channels),
                        endpoint.rate_limit,
                        rows::to_json(&endpoint.metadata),
                        sealed.secret,
                        sealed.headers,
                        endpoint.updated_at,
                        endpoint.ordering.as_str(),
                        sealed.previous_secret,
                        endpoint.previous_secret.as_ref().map(|(_, expires_at)| *expires_at),
                        endpoint.format.as_str(),
                        endpoint.kind.as_str(),
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "an endpoint with this uid already exists")
                    })?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context.forget_endpoints_of(endpoint.app_id.as_str());
                Ok(endpoint)
            })
            .await
    }

    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()> {
        let (app_id, id) = (app_id.clone(), id.clone());
        self.writer
            .write(move |context| {
                let changed = context.connection.execute(
                    "DELETE FROM endpoint WHERE id = ?1 AND app_id = ?2",
                    [id.as_str(), app_id.as_str()],
                )?;
                if changed == 0 {
                    return Err(StoreError::NotFound);
                }
                context
                    .connection
                    .execute("DELETE FROM delivery WHERE endpoint_id = ?1", [id.as_str()])?;
                context.connection.execute(
                    "DELETE FROM poller_consumer WHERE endpoint_id = ?1",
                    [id.as_str()],
                )?;
                context.forget_endpoints_of(app_id.as_str());
                Ok(())
            })
            .await
    }

    fn config_epoch(&self) -> u64 {
        self.config_epoch.load(Ordering::SeqCst)
    }

    async fn create_message(&self, new_message: NewMessage) -> StoreResult<AcceptedMessage> {
        // No savepoint (`Isolation::Statement`): every check (application, idempotency key)
        // comes before the first write, and the message insert's one possible conflict
        // (`eventId`) undoes itself; after it only I/O errors can fail the job.
        self.writer
            .write_unisolated(Durability::Synced, move |context| {
                let NewMessage {
                    message,
                    idempotency_key,
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
                        return Ok(AcceptedMessage {
                            message: message_by_seq(context.connection, seq)?,
                            created: false,
                            deliveries: 0,
                        });
                    }
                }
                // `seq` is the rowid: read back with `last_insert_rowid`, not `RETURNING`,
                // which SQLite runs through a temporary table opened and closed per statement
                // (the message write's share of push-1's server CPU went from 12.0 to 9.3 % with
                // this and the delivery insert below).
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO message (id, app_id, event_type, event_id, channels, payload, created_at, \
                         ordering_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )?
                    .execute(params![
                        message.id.as_str(),
                        app_id,
                        message.event_type,
                        message.event_id,
                        rows::optional_set_json(&message.channels),
                        message.payload,
                        message.created_at,
                        message.ordering_key,
                    ])
                    .map_err(|error| {
                        rows::conflict_on_unique(error, "a message with this eventId already exists")
                    })?;
                let seq = context.connection.last_insert_rowid();
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
                     VALUES (?1, ?2, 1, ?3, ?3)",
                )?;
                let mut insert_sending = context.connection.prepare_cached(
                    "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, updated_at) \
                     VALUES (?1, ?2, 3, ?3, ?3)",
                )?;
                let mut deliveries = 0;
                let mut shared: Option<(Arc<str>, Arc<str>, Option<Arc<str>>)> = None;
                let mut handed_off = Vec::new();
                for endpoint in endpoints.iter().filter(|endpoint| {
                    kait_core::filter::endpoint_matches(
                        endpoint,
                        &message.event_type,
                        message.channels.as_ref(),
                    )
                }) {
                    deliveries += 1;
                    // Unordered endpoints take new deliveries straight from this commit;
                    // ordered ones go through the claim, which keeps their queue order.
                    let permit = (endpoint.ordering == kait_core::DeliveryOrder::Concurrent)
                        .then(|| context.reserve_handoff(&endpoint.id))
                        .flatten();
                    let Some(permit) = permit else {
                        insert.execute(params![seq, endpoint.id.as_str(), message.created_at])?;
                        context.deliveries_became_due = true;
                        continue;
                    };
                    insert_sending.execute(params![
                        seq,
                        endpoint.id.as_str(),
                        message.created_at
                    ])?;
                    let delivery_id = context.connection.last_insert_rowid();
                    let (event_type, payload, ordering_key) = shared
                        .get_or_insert_with(|| {
                            (
                                Arc::from(message.event_type.as_str()),
                                Arc::from(message.payload.as_str()),
                                message.ordering_key.as_deref().map(Arc::from),
                            )
                        })
                        .clone();
                    handed_off.push((
                        permit,
                        ClaimedDelivery {
                            delivery_id,
                            endpoint_id: endpoint.id.clone(),
                            app_id: message.app_id.clone(),
                            msg_id: message.id.clone(),
                            event_type,
                            payload,
                            ordering_key,
                            created_at: message.created_at,
                            attempts_made: 0,
                            trigger_type: TriggerType::Scheduled,
                        },
                    ));
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
        let app_id = app_id.clone();
        self.read(move |connection| {
            let mut parameters = vec![Value::Text(app_id.into_string())];
            let mut conditions = vec!["m.app_id = ?".to_owned()];
            message_conditions(&filter, "m", &mut conditions, &mut parameters);
            let keyset = Keyset {
                key_column: "m.seq",
                iterator_key: "(SELECT seq FROM message WHERE id = ?)",
                newest_first: true,
            };
            let select = format!("SELECT {} FROM message m", rows::MESSAGE_COLUMNS);
            query_keyed(
                connection,
                &select,
                conditions,
                parameters,
                &keyset,
                &page,
                rows::message,
            )
        })
        .await
    }

    async fn claim_due(
        &self,
        now: Millis,
        limit: usize,
        skip_endpoints: Vec<EndpointId>,
    ) -> StoreResult<Claim> {
        // No savepoint: an update and reads, which only I/O errors can fail.
        self.writer
            .write_unisolated(Durability::Unsynced, move |context| {
                let connection = context.connection;
                let claimed_row = |row: &rusqlite::Row<'_>| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, u32>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, Millis>(5)?,
                    ))
                };
                let (mut claimed, next_due_at) = if skip_endpoints.is_empty() {
                    // The common case: the oldest due deliveries, whoever they are for.
                    let claimed = connection
                        .prepare_cached(
                            "UPDATE delivery SET status = 3, updated_at = ?1 WHERE id IN \
                             (SELECT id FROM delivery WHERE status = 1 AND due_at <= ?1 \
                              ORDER BY due_at, id LIMIT ?2) \
                             RETURNING id, msg_seq, endpoint_id, attempts, trigger_type, due_at",
                        )?
                        .query_map(params![now, limit as i64], claimed_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let next_due_at: Option<Millis> = connection
                        .prepare_cached("SELECT MIN(due_at) FROM delivery WHERE status = 1")?
                        .query_row([], |row| row.get(0))?;
                    (claimed, next_due_at)
                } else {
                    claim_around(connection, now, limit, &skip_endpoints, claimed_row)?
                };
                // RETURNING has no defined order; ordered endpoints need claim order.
                claimed.sort_unstable_by_key(|row| (row.5, row.0));

                let mut message_lookup = connection.prepare_cached(
                    "SELECT id, app_id, event_type, payload, ordering_key, created_at FROM message WHERE seq = ?1",
                )?;
                // One message fans out to many endpoints: load each payload once per claim.
                let mut messages: HashMap<i64, ClaimedMessage> = HashMap::new();
                let mut deliveries = Vec::with_capacity(claimed.len());
                for (delivery_id, msg_seq, endpoint_id, attempts_made, trigger_type, _) in claimed {
                    let message = match messages.entry(msg_seq) {
                        Entry::Occupied(entry) => entry.into_mut(),
                        Entry::Vacant(entry) => entry.insert(message_lookup.query_row([msg_seq], |row| {
                            Ok(ClaimedMessage {
                                msg_id: MessageId::from_trusted(row.get(0)?),
                                app_id: AppId::from_trusted(row.get(1)?),
                                event_type: Arc::<str>::from(row.get::<_, String>(2)?),
                                payload: Arc::<str>::from(row.get::<_, String>(3)?),
                                ordering_key: row.get::<_, Option<String>>(4)?.map(Arc::<str>::from),
                                created_at: row.get(5)?,
                            })
                        })?),
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
                        attempts_made,
                        trigger_type: TriggerType::from_code(trigger_type),
                    });
                }
                Ok(Claim {
                    deliveries,
                    next_due_at,
                })
            })
            .await
    }

    async fn record_outcomes(
        &self,
        outcomes: Arc<[Outcome]>,
        disable_after: Option<Millis>,
    ) -> StoreResult<Vec<DisabledEndpoint>> {
        // No savepoint: updates and inserts with fresh keys, which only I/O errors can fail.
        self.writer
            .write_unisolated(Durability::Unsynced, move |context| {
                let connection = context.connection;
                let mut advance = connection.prepare_cached(
                    "UPDATE delivery SET status = ?2, attempts = attempts + 1, due_at = ?3, updated_at = ?4 \
                     WHERE id = ?1 AND status = 3 RETURNING msg_seq",
                )?;
                let mut insert_attempt = connection.prepare_cached(
                    "INSERT INTO attempt (id, msg_seq, msg_id, endpoint_id, app_id, url, status, \
                     response_status_code, response, response_duration_ms, trigger_type, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                let mut retried = false;
                for outcome in outcomes.iter() {
                    let (status, due_at) = match outcome.next {
                        NextStep::Succeeded => (DeliveryStatus::Success, None),
                        NextStep::RetryAt(due_at) => {
                            retried = true;
                            (DeliveryStatus::Pending, Some(due_at))
                        }
                        NextStep::GiveUp => (DeliveryStatus::Fail, None),
                        // Still owned by the dispatcher, which retries it in place.
                        NextStep::RetryHeld(due_at) => (DeliveryStatus::Sending, Some(due_at)),
                    };
                    let attempt = &outcome.attempt;
                    let msg_seq: Option<i64> = advance
                        .query_row(
                            params![outcome.delivery_id, status.code(), due_at, attempt.created_at],
                            |row| row.get(0),
                        )
                        .optional()?;
                    // No row: the endpoint was deleted while the attempt ran; nothing to log.
                    let Some(msg_seq) = msg_seq else { continue };
                    insert_attempt.execute(params![
                        attempt.id.as_str(),
                        msg_seq,
                        attempt.msg_id.as_str(),
                        attempt.endpoint_id.as_str(),
                        attempt.app_id.as_str(),
                        attempt.url,
                        attempt.status.code(),
                        attempt.response_status_code,
                        attempt.response,
                        attempt.response_duration_ms,
                        attempt.trigger_type.code(),
                        attempt.created_at,
                    ])?;
                }
                if retried {
                    context.deliveries_became_due = true;
                }
                // Endpoint health: the last counted outcome per endpoint in this batch decides.
                let mut last_by_endpoint: HashMap<&EndpointId, (bool, Millis)> = HashMap::new();
                for outcome in outcomes.iter().filter(|outcome| outcome.reached_endpoint) {
                    let attempt = &outcome.attempt;
                    last_by_endpoint.insert(
                        &attempt.endpoint_id,
                        (attempt.status == DeliveryStatus::Success, attempt.created_at),
                    );
                }
                let mut healthy = context.connection.prepare_cached(
                    "UPDATE endpoint SET failing_since = NULL WHERE id = ?1 AND failing_since IS NOT NULL",
                )?;
                let mut failing = context.connection.prepare_cached(
                    "UPDATE endpoint SET failing_since = COALESCE(failing_since, ?2) WHERE id = ?1",
                )?;
                let mut disable = context.connection.prepare_cached(
                    "UPDATE endpoint SET disabled = 1, updated_at = ?2 WHERE id = ?1 AND disabled = 0 \
                     AND failing_since <= ?3 RETURNING app_id, failing_since",
                )?;
                let now = now_millis();
                let mut disabled = Vec::new();
                for (endpoint_id, (succeeded, at)) in last_by_endpoint {
                    if succeeded {
                        healthy.execute([endpoint_id.as_str()])?;
                        continue;
                    }
                    failing.execute(params![endpoint_id.as_str(), at])?;
                    let Some(after) = disable_after else { continue };
                    let switched_off: Option<(String, Millis)> = disable
                        .query_row(params![endpoint_id.as_str(), now, now - after], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                        .optional()?;
                    if let Some((app_id, failing_since)) = switched_off {
                        disabled.push(DisabledEndpoint {
                            endpoint_id: endpoint_id.clone(),
                            app_id: AppId::from_trusted(app_id),
                            failing_since,
                        });
                    }
                }
                drop((healthy, failing, disable));
                for endpoint in &disabled {
                    context.forget_endpoints_of(endpoint.app_id.as_str());
                }
                Ok(disabled)
            })
            .await
    }

    async fn resend(
        &self,
        app_id: &AppId,
        msg_id: &MessageId,
        endpoint_id: &EndpointId,
    ) -> StoreResult<()> {
        let (app_id, msg_id, endpoint_id) = (app_id.clone(), msg_id.clone(), endpoint_id.clone());
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let seq = message_seq(connection, app_id.as_str(), msg_id.as_str())?
                    .ok_or(StoreError::NotFound)?;
                let now = now_millis();
                // A delivery already in flight is left alone: it is being sent right now.
                connection
                    .prepare_cached(
                        "INSERT INTO delivery (msg_seq, endpoint_id, status, attempts, due_at, trigger_type, updated_at) \
                         VALUES (?1, ?2, 1, 0, ?3, 1, ?3) \
                         ON CONFLICT (msg_seq, endpoint_id) DO UPDATE SET status = 1, attempts = 0, \
                         due_at = ?3, trigger_type = 1, updated_at = ?3 WHERE status <> 3",
                    )?
                    .execute(params![seq, endpoint_id.as_str(), now])?;
                context.deliveries_became_due = true;
                Ok(())
            })
            .await
    }

    async fn recover(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let (app_id, endpoint_id) = (app_id.clone(), endpoint_id.clone());
        self.writer
            .write(move |context| {
                let now = now_millis();
                let recovered = context
                    .connection
                    .prepare_cached(
                        "UPDATE delivery SET status = 1, attempts = 0, due_at = ?1, trigger_type = 1, \
                         updated_at = ?1 WHERE endpoint_id = ?2 AND status = 2 AND msg_seq IN \
                         (SELECT seq FROM message WHERE app_id = ?3 AND created_at >= ?4 AND created_at < ?5)",
                    )?
                    .execute(params![
                        now,
                        endpoint_id.as_str(),
                        app_id.as_str(),
                        since,
                        until.unwrap_or(Millis::MAX)
                    ])?;
                if recovered > 0 {
                    context.deliveries_became_due = true;
                }
                Ok(recovered as u64)
            })
            .await
    }

    async fn replay_missing(
        &self,
        app_id: &AppId,
        endpoint_id: &EndpointId,
        since: Millis,
        until: Option<Millis>,
    ) -> StoreResult<u64> {
        let (app_id, endpoint_id) = (app_id.clone(), endpoint_id.clone());
        self.writer
            .write(move |context| {
                let endpoints = context.endpoints_of(app_id.as_str())?;
                let endpoint = endpoints
                    .iter()
                    .find(|endpoint| endpoint.id == endpoint_id)
                    .ok_or(StoreError::NotFound)?
                    .clone();
                let connection = context.connection;
                let missing = connection
                    .prepare_cached(
                        "SELECT m.seq, m.event_type, m.channels FROM message m WHERE m.app_id = ?1 \
                         AND m.created_at >= ?2 AND m.created_at < ?3 AND NOT EXISTS \
                         (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.endpoint_id = ?4) \
                         ORDER BY m.seq",
                    )?
                    .query_map(
                        params![app_id.as_str(), since, until.unwrap_or(Millis::MAX), endpoint_id.as_str()],
                        |row| {
                            let channels: Option<String> = row.get(2)?;
                            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, channels))
                        },
                    )?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let now = now_millis();
                let mut insert = connection.prepare_cached(
                    "INSERT INTO delivery (msg_seq, endpoint_id, status, due_at, trigger_type, updated_at) \
                     VALUES (?1, ?2, 1, ?3, 1, ?3)",
                )?;
                let mut replayed = 0u64;
                for (seq, event_type, channels) in missing {
                    let channels: Option<std::collections::BTreeSet<String>> =
                        channels.and_then(|text| serde_json::from_str(&text).ok());
                    // Disabled or not, the filters decide what the endpoint should have had.
                    let enabled = Endpoint { disabled: false, ..endpoint.clone() };
                    if kait_core::filter::endpoint_matches(&enabled, &event_type, channels.as_ref()) {
                        insert.execute(params![seq, endpoint_id.as_str(), now])?;
                        replayed += 1;
                    }
                }
                if replayed > 0 {
                    context.deliveries_became_due = true;
                }
                Ok(replayed)
            })
            .await
    }

    fn due_signal(&self) -> Arc<Notify> {
        self.due.clone()
    }

    fn handoff(
        &self,
        accepts: crate::HandoffFilter,
    ) -> Option<tokio::sync::mpsc::Receiver<ClaimedDelivery>> {
        let (sender, receiver) = tokio::sync::mpsc::channel(HANDOFF_CAPACITY);
        *self.handoff.queue.lock().expect("hand-off lock") = Some((sender, accepts));
        Some(receiver)
    }

    async fn list_attempts(
        &self,
        app_id: &AppId,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let app_id = app_id.clone();
        self.read(move |connection| {
            let mut parameters = vec![Value::Text(app_id.into_string())];
            let mut conditions = vec!["a.app_id = ?".to_owned()];
            if let Some(endpoint_id) = filter.endpoint_id {
                conditions.push("a.endpoint_id = ?".to_owned());
                parameters.push(Value::Text(endpoint_id.into_string()));
            }
            if let Some(msg_id) = filter.msg_id {
                conditions.push("a.msg_id = ?".to_owned());
                parameters.push(Value::Text(msg_id.into_string()));
            }
            if let Some(status) = filter.status {
                conditions.push("a.status = ?".to_owned());
                parameters.push(Value::Integer(status.code()));
            }
            // Times filter the attempt; event types and channel filter its message.
            if let Some(before) = filter.message.before {
                conditions.push("a.created_at < ?".to_owned());
                parameters.push(Value::Integer(before));
            }
            if let Some(after) = filter.message.after {
                conditions.push("a.created_at > ?".to_owned());
                parameters.push(Value::Integer(after));
            }
            let message_filter = MessageFilter {
                before: None,
                after: None,
                ..filter.message
            };
            let needs_message =
                message_filter.event_types.is_some() || message_filter.channel.is_some();
            message_conditions(&message_filter, "m", &mut conditions, &mut parameters);
            let keyset = Keyset {
                key_column: "a.seq",
                iterator_key: "(SELECT seq FROM attempt WHERE id = ?)",
                newest_first: true,
            };
            let join = if needs_message {
                "JOIN message m ON m.seq = a.msg_seq"
            } else {
                ""
            };
            let select = format!("SELECT {} FROM attempt a {join}", rows::ATTEMPT_COLUMNS);
            query_keyed(
                connection,
                &select,
                conditions,
                parameters,
                &keyset,
                &page,
                rows::attempt,
            )
        })
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
                    rows::ATTEMPT_COLUMNS
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
                rows::ENDPOINT_COLUMNS_E
            );
            let states = connection
                .prepare_cached(&sql)?
                .query_map([seq], |row| {
                    let status = rows::delivery_status(row, 0)?;
                    Ok(DeliveryState {
                        status,
                        next_attempt_at: if matches!(status, DeliveryStatus::Pending | DeliveryStatus::Sending) {
                            row.get(1)?
                        } else {
                            None
                        },
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
        let (app_id, endpoint_id) = (app_id.clone(), endpoint_id.clone());
        self.read(move |connection| {
            let mut parameters = vec![
                Value::Text(endpoint_id.into_string()),
                Value::Text(app_id.into_string()),
            ];
            let mut conditions = vec!["d.endpoint_id = ?".to_owned(), "m.app_id = ?".to_owned()];
            if let Some(status) = status {
                conditions.push("d.status = ?".to_owned());
                parameters.push(Value::Integer(status.code()));
            }
            let keyset = Keyset {
                key_column: "d.msg_seq",
                iterator_key: "(SELECT seq FROM message WHERE id = ?)",
                newest_first: true,
            };
            let select = format!(
                "SELECT {}, d.status, d.due_at FROM delivery d JOIN message m ON m.seq = d.msg_seq",
                rows::MESSAGE_COLUMNS
            );
            query_keyed(
                connection,
                &select,
                conditions,
                parameters,
                &keyset,
                &page,
                |row| {
                    let status = rows::delivery_status(row, 8)?;
                    Ok(EndpointMessage {
                        message: rows::message(row)?,
                        status,
                        next_attempt_at: if status == DeliveryStatus::Pending {
                            row.get(9)?
                        } else {
                            None
                        },
                    })
                },
            )
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

    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let (key, request) = (key.to_owned(), request.to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT app_id, fingerprint, status, body FROM idempotent_response \
                     WHERE key = ?1 AND request = ?2 AND created_at >= ?3",
                )?
                .query_row(params![key, request, not_before], |row| {
                    Ok(IdempotentResponse {
                        app_id: row.get::<_, Option<String>>(0)?.map(AppId::from_trusted),
                        fingerprint: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        status: row.get(2)?,
                        body: row.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()> {
        let (key, request) = (key.to_owned(), request.to_owned());
        self.writer
            .write(move |context| {
                // An expired entry is replaced; a live one is kept (the first response wins).
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO idempotent_response \
                         (key, request, app_id, fingerprint, status, body, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key, request) DO UPDATE SET \
                         app_id = excluded.app_id, fingerprint = excluded.fingerprint, \
                         status = excluded.status, body = excluded.body, created_at = excluded.created_at \
                         WHERE created_at < ?7 - 86400000",
                    )?
                    .execute(params![
                        key,
                        request,
                        response.app_id.as_ref().map(AppId::as_str),
                        response.fingerprint,
                        response.status,
                        response.body,
                        now_millis()
                    ])?;
                Ok(())
            })
            .await
    }

    async fn poll_messages(
        &self,
        endpoint: &Endpoint,
        after: i64,
        filter: MessageFilter,
        limit: usize,
    ) -> StoreResult<Vec<(i64, kait_core::Message)>> {
        let endpoint = endpoint.clone();
        self.read(move |connection| {
            let mut parameters = vec![
                Value::Text(endpoint.app_id.as_str().to_owned()),
                Value::Integer(after),
            ];
            let mut conditions = vec!["m.app_id = ?".to_owned(), "m.seq > ?".to_owned()];
            if let Some(event_types) = endpoint
                .event_types
                .as_ref()
                .filter(|types| !types.is_empty())
            {
                conditions.push(format!(
                    "m.event_type IN ({})",
                    vec!["?"; event_types.len()].join(", ")
                ));
                parameters.extend(event_types.iter().cloned().map(Value::Text));
            }
            if let Some(channels) = endpoint
                .channels
                .as_ref()
                .filter(|channels| !channels.is_empty())
            {
                conditions.push(format!(
                    "EXISTS (SELECT 1 FROM json_each(m.channels) WHERE json_each.value IN ({}))",
                    vec!["?"; channels.len()].join(", ")
                ));
                parameters.extend(channels.iter().cloned().map(Value::Text));
            }
            message_conditions(&filter, "m", &mut conditions, &mut parameters);
            let sql = format!(
                "SELECT {}, m.seq FROM message m {} ORDER BY m.seq LIMIT {}",
                rows::MESSAGE_COLUMNS,
                paging::where_clause(&conditions),
                limit
            );
            let mut statement = connection.prepare_cached(&sql)?;
            let messages = statement
                .query_map(rusqlite::params_from_iter(parameters), |row| {
                    Ok((row.get::<_, i64>(8)?, rows::message(row)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(messages)
        })
        .await
    }

    async fn position_at(&self, app_id: &AppId, at: Millis) -> StoreResult<i64> {
        let app_id = app_id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq), 0) FROM message WHERE app_id = ?1 AND created_at <= ?2",
                )?
                .query_row(params![app_id.as_str(), at], |row| row.get(0))?)
        })
        .await
    }

    async fn consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
    ) -> StoreResult<i64> {
        let (endpoint_id, consumer_id) = (endpoint_id.clone(), consumer_id.to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT position FROM poller_consumer WHERE endpoint_id = ?1 AND consumer_id = ?2",
                )?
                .query_row(params![endpoint_id.as_str(), consumer_id], |row| row.get(0))
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn set_consumer_position(
        &self,
        endpoint_id: &EndpointId,
        consumer_id: &str,
        position: i64,
        max_consumers: usize,
    ) -> StoreResult<()> {
        let (endpoint_id, consumer_id) = (endpoint_id.clone(), consumer_id.to_owned());
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached(
                        "INSERT INTO poller_consumer (endpoint_id, consumer_id, position, updated_at) \
                         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS \
                         (SELECT 1 FROM poller_consumer WHERE endpoint_id = ?1 AND consumer_id = ?2) \
                         OR (SELECT COUNT(*) FROM poller_consumer WHERE endpoint_id = ?1) < ?5 \
                         ON CONFLICT (endpoint_id, consumer_id) DO UPDATE SET \
                         position = excluded.position, updated_at = excluded.updated_at",
                    )?
                    .execute(params![
                        endpoint_id.as_str(),
                        consumer_id,
                        position,
                        now_millis(),
                        max_consumers as i64
                    ])?;
                if changed == 0 {
                    return Err(StoreError::LimitReached(format!(
                        "a polling endpoint has at most {max_consumers} consumers"
                    )));
                }
                Ok(())
            })
            .await
    }

    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO app_token \
                         (token_hash, app_id, created_at, expires_at, capabilities, session_id) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        token.token_hash,
                        token.app_id.as_str(),
                        now_millis(),
                        token.expires_at,
                        token.capabilities.bits(),
                        token.session_id
                    ])?;
                Ok(())
            })
            .await
    }

    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>> {
        let token_hash = token_hash.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT app_id, capabilities FROM app_token \
                     WHERE token_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![token_hash, now], |row| {
                    Ok(AppTokenGrant {
                        app_id: AppId::from_trusted(row.get(0)?),
                        capabilities: Capabilities::from_bits(row.get(1)?),
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64> {
        let app_id = app_id.clone();
        self.writer
            .write(move |context| {
                let sessions = session_ids
                    .map(|ids| serde_json::to_string(&ids))
                    .transpose()
                    .map_err(|error| StoreError::Database(error.to_string()))?;
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE app_token SET expires_at = ?2 \
                         WHERE app_id = ?1 AND expires_at > ?2 \
                         AND (?3 IS NULL OR session_id IN (SELECT value FROM json_each(?3)))",
                    )?
                    .execute(params![app_id.as_str(), expires_at, sessions])?;
                Ok(changed as u64)
            })
            .await
    }

    fn message_signal(&self, app_id: &AppId) -> tokio::sync::watch::Receiver<u64> {
        self.messages.subscribe(app_id)
    }

    async fn purge_expired(&self, now: Millis, idempotency_lifetime: Millis) -> StoreResult<u64> {
        self.writer
            .write(move |context| {
                let responses = context
                    .connection
                    .prepare_cached("DELETE FROM idempotent_response WHERE created_at < ?1")?
                    .execute([now - idempotency_lifetime])?;
                let tokens = context
                    .connection
                    .prepare_cached("DELETE FROM app_token WHERE expires_at <= ?1")?
                    .execute([now])?;
                Ok((responses + tokens) as u64)
            })
            .await
    }

    async fn purge_history(
        &self,
        messages_before: Option<Millis>,
        attempts_before: Option<Millis>,
        batch: usize,
    ) -> StoreResult<u64> {
        self.writer
            .write(move |context| {
                let connection = context.connection;
                let mut purged = 0;
                if let Some(before) = attempts_before {
                    purged += connection
                        .prepare_cached(
                            "DELETE FROM attempt WHERE seq IN \
                             (SELECT seq FROM attempt WHERE created_at < ?1 ORDER BY seq LIMIT ?2)",
                        )?
                        .execute(params![before, batch as i64])?;
                }
                if let Some(before) = messages_before {
                    // A message goes with its finished deliveries and its Idempotency-Key; one
                    // still being delivered stays until it is done.
                    connection.execute_batch(
                        "CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY); DELETE FROM doomed",
                    )?;
                    connection
                        .prepare_cached(
                            "INSERT INTO doomed (seq) SELECT m.seq FROM message m WHERE m.created_at < ?1 \
                             AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.msg_seq = m.seq AND d.status IN (1, 3)) \
                             ORDER BY m.seq LIMIT ?2",
                        )?
                        .execute(params![before, batch as i64])?;
                    for sql in [
                        "DELETE FROM delivery WHERE msg_seq IN (SELECT seq FROM doomed)",
                        "DELETE FROM idempotency_key WHERE msg_seq IN (SELECT seq FROM doomed)",
                    ] {
                        connection.prepare_cached(sql)?.execute([])?;
                    }
                    purged += connection
                        .prepare_cached("DELETE FROM message WHERE seq IN (SELECT seq FROM doomed)")?
                        .execute([])?;
                }
                Ok(purged as u64)
            })
            .await
    }

    async fn delivery_counts(&self) -> StoreResult<Vec<(DeliveryStatus, u64)>> {
        self.read(|connection| {
            let counts = connection
                .prepare_cached(
                    "SELECT status, COUNT(*) FROM delivery GROUP BY status ORDER BY status",
                )?
                .query_map([], |row| {
                    Ok((rows::delivery_status(row, 0)?, row.get::<_, i64>(1)? as u64))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(counts)
        })
        .await
    }

    async fn queue_depth(&self, now: Millis) -> StoreResult<QueueDepth> {
        self.read(move |connection| {
            let (due, scheduled): (i64, i64) = connection
                .prepare_cached(
                    "SELECT COALESCE(SUM(due_at <= ?1), 0), COALESCE(SUM(due_at > ?1), 0) \
                     FROM delivery INDEXED BY delivery_due WHERE status = 1",
                )?
                .query_row([now], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(QueueDepth {
                due: due as u64,
                scheduled: scheduled as u64,
            })
        })
        .await
    }
}

/// One claimed delivery row: id, message seq, endpoint, attempts made, trigger, due time.
type ClaimedRow = (i64, i64, String, u32, i64, Millis);

/// A claim that must leave some endpoints alone (their lanes are full). Walking the due index
/// past their rows would cost as much as their backlog is long, so this visits endpoints
/// instead: the endpoints with pending deliveries come from a skip scan of
/// `delivery_endpoint_due` (one seek per endpoint), and each one not skipped gives up its
/// oldest due rows, earliest endpoint first, until `limit` is reached.
fn claim_around(
    connection: &Connection,
    now: Millis,
    limit: usize,
    skip: &[EndpointId],
    claimed_row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> + Copy,
) -> StoreResult<(Vec<ClaimedRow>, Option<Millis>)> {
    let skip: std::collections::HashSet<&str> = skip.iter().map(EndpointId::as_str).collect();
    let mut heads: Vec<(String, Millis)> = connection
        .prepare_cached(
            "WITH RECURSIVE e(id) AS ( \
               SELECT (SELECT endpoint_id FROM delivery WHERE status = 1 ORDER BY endpoint_id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT endpoint_id FROM delivery WHERE status = 1 AND endpoint_id > e.id \
                       ORDER BY endpoint_id LIMIT 1) FROM e WHERE e.id IS NOT NULL) \
             SELECT e.id, (SELECT due_at FROM delivery WHERE status = 1 AND endpoint_id = e.id \
                           ORDER BY due_at LIMIT 1) FROM e WHERE e.id IS NOT NULL",
        )?
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Millis>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    heads.retain(|(endpoint_id, _)| !skip.contains(endpoint_id.as_str()));
    heads.sort_unstable_by_key(|(_, due_at)| *due_at);
    let mut take = connection.prepare_cached(
        "UPDATE delivery SET status = 3, updated_at = ?1 WHERE id IN \
         (SELECT id FROM delivery WHERE status = 1 AND endpoint_id = ?3 AND due_at <= ?1 \
          ORDER BY due_at, id LIMIT ?2) \
         RETURNING id, msg_seq, endpoint_id, attempts, trigger_type, due_at",
    )?;
    let mut head_after = connection.prepare_cached(
        "SELECT due_at FROM delivery WHERE status = 1 AND endpoint_id = ?1 ORDER BY due_at LIMIT 1",
    )?;
    let mut claimed = Vec::new();
    let mut next_due_at: Option<Millis> = None;
    for (endpoint_id, due_at) in heads {
        let room = limit - claimed.len();
        let head = if room == 0 || due_at > now {
            Some(due_at)
        } else {
            let rows = take
                .query_map(params![now, room as i64, endpoint_id], claimed_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            claimed.extend(rows);
            head_after
                .query_row([&endpoint_id], |row| row.get(0))
                .optional()?
        };
        next_due_at = match (next_due_at, head) {
            (Some(earliest), Some(head)) => Some(earliest.min(head)),
            (earliest, head) => earliest.or(head),
        };
    }
    Ok((claimed, next_due_at))
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
    parameters: &mut Vec<Value>,
) {
    if let Some(event_types) = &filter.event_types
        && !event_types.is_empty()
    {
        let placeholders = vec!["?"; event_types.len()].join(", ");
        conditions.push(format!("{alias}.event_type IN ({placeholders})"));
        parameters.extend(event_types.iter().cloned().map(Value::Text));
    }
    if let Some(channel) = &filter.channel {
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM json_each({alias}.channels) WHERE json_each.value = ?)"
        ));
        parameters.push(Value::Text(channel.clone()));
    }
    if let Some(before) = filter.before {
        conditions.push(format!("{alias}.created_at < ?"));
        parameters.push(Value::Integer(before));
    }
    if let Some(after) = filter.after {
        conditions.push(format!("{alias}.created_at > ?"));
        parameters.push(Value::Integer(after));
    }
}

#[cfg(test)]
mod tests;
