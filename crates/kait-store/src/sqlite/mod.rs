//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! Writes go through the writer thread's group commit ([`writer`]); reads use a small pool of
//! read-only connections on blocking threads, which WAL lets run beside the writer. A lock file
//! keeps a second process off the same data directory: the embedded mode is one node by
//! design, which is also why deliveries left `Sending` by a crash are simply made due again
//! when the store opens.

mod access;
mod attachments;
mod config;
mod devices;
mod housekeeping;
mod messages;
mod paging;
mod pipes;
mod plugins;
mod pull;
mod queue;
mod rows;
mod schema;
mod secrets;
mod sources;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use kait_core::time::now_millis;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Notify;

use self::writer::{WriterHandle, WriterSignals};
use crate::handoff::Handoff;
use crate::sealing::SecretKeys;
use crate::{DatabaseFailure, StoreError, StoreResult};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "kait.db";
const LOCK_FILE: &str = "kait.lock";
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
    // pattern hits at every commit), so a larger cache costs CPU at every commit and memory
    // under load for no gain (BENCHMARKS.md): the hot pages are the right edges of a few
    // B-trees, and the rest sits in the OS page cache anyway.
    connection.pragma_update(None, "cache_size", -2_000)?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(())
}

/// One node: it holds every role.
impl crate::Roles for SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the store in `options.data_dir`, migrates it, and makes
    /// deliveries that a previous process left in flight due again.
    pub fn open(options: SqliteOptions) -> StoreResult<Self> {
        secrets::make_private(&options.data_dir)
            .map_err(|error| io_error("securing the data directory", error))?;
        let lock = File::create(options.data_dir.join(LOCK_FILE))
            .map_err(|error| io_error("creating the lock file", error))?;
        lock.try_lock().map_err(|_| {
            StoreError::InvalidConfig(format!(
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
            // Sent again anyway, so a resend asked for meanwhile is done by that.
            "UPDATE delivery SET status = 1, due_at = ?1, updated_at = ?1, resend_requested = 0 \
             WHERE status = 3",
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
        .map_err(|error| io_error("starting the writer thread", error))?;
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
        .map_err(|error| StoreError::database(DatabaseFailure::Unavailable, "reader task", error))?
    }
}

fn io_error(context: &str, error: std::io::Error) -> StoreError {
    StoreError::database(DatabaseFailure::Unavailable, context, error)
}

#[cfg(test)]
mod tests;
