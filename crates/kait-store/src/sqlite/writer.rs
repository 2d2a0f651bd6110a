//! The single writer thread and its group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` each commit costs a sync of
//! the WAL. So every write in Kait is a job sent to this thread, which takes all jobs waiting
//! at that moment, runs them in one `BEGIN IMMEDIATE … COMMIT`, and answers them only after the
//! commit returned: one sync serves the whole batch, and a job that fails rolls back alone
//! without disturbing the others in its batch. Most jobs get a savepoint of their own for that;
//! the hot ones (new messages, attempt outcomes, claims) are written so that they cannot fail
//! half-way, and skip it ([`Isolation::Statement`]), because a savepoint makes SQLite copy
//! every page a job touches into a sub-journal first (a large share of the server's CPU on
//! the hot path; BENCHMARKS.md).
//!
//! The thread also owns a cache of each application's endpoints for fan-out. Every endpoint
//! change runs on this same thread, so the cache is invalidated in the same order as the
//! writes and can never serve a stale list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kait_core::{Endpoint, EndpointId};
use rusqlite::Connection;
use tokio::sync::mpsc::OwnedPermit;
use tokio::sync::{Notify, mpsc, oneshot};

use super::rows;
use crate::handoff::Handoff;
use crate::sealing::SecretKeys;
use crate::{ClaimedDelivery, StoreError, StoreResult};

/// Most jobs committed in one transaction; bounds the latency a large batch adds.
const MAX_JOBS_PER_COMMIT: usize = 4096;
/// Jobs that may wait for the writer before senders are made to wait (backpressure).
pub const JOB_QUEUE_CAPACITY: usize = 16 * 1024;

/// What a job's body can use: the open transaction and the writer's caches.
pub struct WriteContext<'conn> {
    pub connection: &'conn Connection,
    /// Seals and opens endpoint secrets and headers.
    pub keys: &'conn SecretKeys,
    endpoints_by_app: &'conn mut HashMap<String, Arc<Vec<Endpoint>>>,
    /// The dispatcher's hand-off queue, once it asked for one.
    handoff: &'conn Handoff,
    /// Deliveries to hand to the dispatcher after the commit, each with its reserved room.
    handed_off: Vec<(OwnedPermit<ClaimedDelivery>, ClaimedDelivery)>,
    /// Set by a job that made deliveries due, so the dispatcher is woken after the commit.
    pub deliveries_became_due: bool,
    /// Set by a job that changed an application or endpoint, so the config epoch moves after
    /// the commit.
    pub config_changed: bool,
    /// Applications a job added messages to, so their pollers are woken after the commit.
    pub apps_with_messages: Vec<kait_core::AppId>,
}

impl WriteContext<'_> {
    /// The application's endpoints, from the cache or the database; `NotFound` when the
    /// application does not exist (any more). Deleting an application drops its entry, so a
    /// cached entry also says the application exists: callers that write on behalf of an
    /// application (new messages) check it here, inside their transaction, and may therefore
    /// trust a cached application lookup made before it.
    pub fn endpoints_of(&mut self, app_id: &str) -> StoreResult<Arc<Vec<Endpoint>>> {
        if let Some(endpoints) = self.endpoints_by_app.get(app_id) {
            return Ok(endpoints.clone());
        }
        let exists: bool = self
            .connection
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM application WHERE id = ?1)")?
            .query_row([app_id], |row| row.get(0))?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        let mut statement = self.connection.prepare_cached(&format!(
            "SELECT {} FROM endpoint WHERE app_id = ?1",
            crate::columns::ENDPOINT
        ))?;
        let endpoints = statement
            .query_map([app_id], |row| rows::endpoint(row, self.keys))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let endpoints = Arc::new(endpoints);
        self.endpoints_by_app
            .insert(app_id.to_owned(), endpoints.clone());
        Ok(endpoints)
    }

    /// Reserves room to hand a new delivery straight to the dispatcher, if it takes
    /// hand-offs and has room; the caller then writes the delivery as `Sending` and passes it
    /// to [`WriteContext::hand_off`].
    pub fn reserve_handoff(
        &self,
        endpoint_id: &EndpointId,
    ) -> Option<OwnedPermit<ClaimedDelivery>> {
        self.handoff.reserve(endpoint_id)
    }

    /// Queues a delivery for the dispatcher; it is sent only if the transaction commits.
    pub fn hand_off(&mut self, permit: OwnedPermit<ClaimedDelivery>, delivery: ClaimedDelivery) {
        self.handed_off.push((permit, delivery));
    }

    /// Drops the cached endpoints of an application after a change to them.
    pub fn forget_endpoints_of(&mut self, app_id: &str) {
        self.endpoints_by_app.remove(app_id);
        self.config_changed = true;
    }
}

/// Runs after the commit with its outcome, and answers the job's caller.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// Answers jobs of a batch that will not run because the batch ended early.
fn answer_unrun(
    jobs: impl Iterator<Item = (Isolation, Job)>,
    error: &StoreError,
    completions: &mut Vec<Completion>,
) {
    for (_, job) in jobs {
        let (_, completion) = job(Err(error));
        completions.push(completion);
    }
}

/// A job's body: runs inside the transaction and says whether it succeeded; or, handed the
/// error that kept the transaction from starting, only prepares that answer.
pub type Job =
    Box<dyn FnOnce(Result<&mut WriteContext<'_>, &StoreError>) -> (bool, Completion) + Send>;

/// The sending side, held by the store.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Queued>,
}

/// A job as queued for the writer.
struct Queued {
    durability: Durability,
    isolation: Isolation,
    job: Job,
}

/// How a job's failure is kept from the other jobs of its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In a savepoint of its own, rolled back alone if it fails.
    Savepoint,
    /// No savepoint, for jobs that fail only before their first completed write (SQLite
    /// undoes a failed statement by itself, e.g. a unique conflict) or in ways that end the
    /// transaction anyway (I/O errors). The writer checks that promise: if such a job fails
    /// having changed rows, the whole batch is rolled back and every job in it fails, rather
    /// than half a job being committed.
    Statement,
}

/// Whether a job's commit must reach the disk before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced (the store's configured `synchronous` level): anything acknowledged to a client.
    Synced,
    /// Written to the WAL without waiting for the sync: for the dispatcher's own bookkeeping
    /// (claims and attempt outcomes), which a power cut may undo without harm — a claim that
    /// is lost leaves the delivery pending, an outcome that is lost leaves it `Sending`, to be
    /// sent again at the next start (at-least-once either way). The next synced commit syncs
    /// these too; a process crash loses nothing (the OS still has the pages).
    Unsynced,
}

impl WriterHandle {
    /// Runs `body` in the next group commit and returns its result once durable.
    pub async fn write<T, F>(&self, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.write_with(Durability::Synced, body).await
    }

    /// Like [`WriterHandle::write`], choosing whether the commit waits for the disk.
    pub async fn write_with<T, F>(&self, durability: Durability, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(durability, Isolation::Savepoint, body).await
    }

    /// Runs a job without a savepoint of its own (see [`Isolation::Statement`]): only for
    /// bodies that cannot fail after a completed write except by I/O errors.
    pub async fn write_unisolated<T, F>(&self, durability: Durability, body: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.submit(durability, Isolation::Statement, body).await
    }

    async fn submit<T, F>(
        &self,
        durability: Durability,
        isolation: Isolation,
        body: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteContext<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |context| {
            let result = match context {
                Ok(context) => body(context),
                Err(error) => Err(error.clone()),
            };
            let succeeded = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let final_result = match commit_error {
                    Some(error) => Err(error.clone()),
                    None => result,
                };
                let _ = reply.send(final_result);
            });
            (succeeded, completion)
        });
        self.jobs
            .send(Queued {
                durability,
                isolation,
                job,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Shared signals the writer raises after a commit.
pub struct WriterSignals {
    pub due: Arc<Notify>,
    pub config_epoch: Arc<AtomicU64>,
    pub messages: Arc<crate::app_signals::AppSignals>,
}

/// Starts the writer thread on `connection`, whose synced commits use `synced_level`
/// (`FULL` or `NORMAL`). The thread ends when every handle is dropped.
pub fn spawn(
    connection: Connection,
    synced_level: &'static str,
    signals: WriterSignals,
    handoff: Arc<Handoff>,
    keys: Arc<SecretKeys>,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (sender, receiver) = mpsc::channel(JOB_QUEUE_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("kait-sqlite-writer".into())
        .spawn(move || run(connection, synced_level, receiver, signals, handoff, keys))?;
    Ok((WriterHandle { jobs: sender }, thread))
}

fn run(
    connection: Connection,
    synced_level: &'static str,
    mut receiver: mpsc::Receiver<Queued>,
    signals: WriterSignals,
    handoff: Arc<Handoff>,
    keys: Arc<SecretKeys>,
) {
    let mut endpoints_by_app = HashMap::new();
    let mut batch: Vec<(Isolation, Job)> = Vec::with_capacity(256);
    let mut completions: Vec<Completion> = Vec::with_capacity(256);
    let mut level = synced_level;
    while let Some(first) = receiver.blocking_recv() {
        let mut synced = first.durability == Durability::Synced;
        batch.push((first.isolation, first.job));
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(queued) => {
                    synced |= queued.durability == Durability::Synced;
                    batch.push((queued.isolation, queued.job));
                }
                Err(_) => break,
            }
        }
        // One batch, one level: synced if any job in it needs it. (`NORMAL` in WAL mode
        // syncs only at checkpoints, so the database stays consistent either way.)
        let wanted = if synced { synced_level } else { "NORMAL" };
        if wanted != level {
            match connection.pragma_update(None, "synchronous", wanted) {
                Ok(()) => level = wanted,
                Err(error) if synced => {
                    // Never answer a synced job from an unsynced commit.
                    let error = StoreError::from(error);
                    for (_, job) in batch.drain(..) {
                        let (_, completion) = job(Err(&error));
                        completion(Some(&error));
                    }
                    continue;
                }
                Err(error) => tracing::warn!(%error, "relaxing the sync level failed"),
            }
        }

        let mut context = WriteContext {
            connection: &connection,
            keys: &keys,
            endpoints_by_app: &mut endpoints_by_app,
            handoff: &handoff,
            handed_off: Vec::new(),
            deliveries_became_due: false,
            config_changed: false,
            apps_with_messages: Vec::new(),
        };
        let jobs = batch.len();
        let started = std::time::Instant::now();
        let commit_result = run_batch(&mut context, &mut batch, &mut completions);
        metrics::histogram!("kait_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("kait_store_commit_jobs").record(jobs as f64);
        let (became_due, config_changed) = (context.deliveries_became_due, context.config_changed);
        let apps_with_messages = std::mem::take(&mut context.apps_with_messages);

        let handed_off = std::mem::take(&mut context.handed_off);
        let commit_error = commit_result.err();
        if commit_error.is_none() {
            // Committed: the dispatcher may start on them (before the callers even hear back).
            for (permit, delivery) in handed_off {
                permit.send(delivery);
            }
        }
        if commit_error.is_some() {
            // The database state is unknown to the cache: start it afresh.
            endpoints_by_app.clear();
        } else {
            if config_changed {
                signals.config_epoch.fetch_add(1, Ordering::SeqCst);
            }
            if became_due {
                signals.due.notify_one();
            }
            if !apps_with_messages.is_empty() {
                signals.messages.notify(&apps_with_messages);
            }
        }
        for completion in completions.drain(..) {
            completion(commit_error.as_ref());
        }
    }
    tracing::debug!("sqlite writer stopped");
}

fn run_batch(
    context: &mut WriteContext<'_>,
    batch: &mut Vec<(Isolation, Job)>,
    completions: &mut Vec<Completion>,
) -> StoreResult<()> {
    if let Err(error) = context.connection.execute_batch("BEGIN IMMEDIATE") {
        // Every job of the batch is answered with the error, none ran.
        let error = StoreError::from(error);
        answer_unrun(batch.drain(..), &error, completions);
        return Err(error);
    }
    let mut jobs = batch.drain(..);
    while let Some((isolation, job)) = jobs.next() {
        let handed_off_before = context.handed_off.len();
        let changes_before = context.connection.total_changes();
        if isolation == Isolation::Savepoint {
            // Cached statements: `execute_batch` would parse the text again for every job.
            let savepoint = context
                .connection
                .prepare_cached("SAVEPOINT job")
                .and_then(|mut statement| statement.execute([]));
            if let Err(error) = savepoint {
                let error = StoreError::from(error);
                let _ = context.connection.execute_batch("ROLLBACK");
                answer_unrun(
                    std::iter::once((isolation, job)).chain(jobs),
                    &error,
                    completions,
                );
                return Err(error);
            }
        }
        let (succeeded, completion) = job(Ok(context));
        completions.push(completion);
        let end = match (isolation, succeeded) {
            (Isolation::Savepoint, true) => context
                .connection
                .prepare_cached("RELEASE job")
                .and_then(|mut statement| statement.execute([]))
                .map(drop)
                .map_err(StoreError::from),
            (Isolation::Savepoint, false) => context
                .connection
                .execute_batch("ROLLBACK TO job; RELEASE job")
                .map_err(StoreError::from),
            (Isolation::Statement, true) => Ok(()),
            // Failed before changing anything, with the transaction still open: as if it
            // had not run.
            (Isolation::Statement, false)
                if context.connection.total_changes() == changes_before
                    && !context.connection.is_autocommit() =>
            {
                Ok(())
            }
            (Isolation::Statement, false) => Err(StoreError::Database {
                kind: crate::DatabaseFailure::Other,
                context: "a write failed part-way through; its whole batch was rolled back".into(),
                source: None,
            }),
        };
        if !succeeded {
            // A failed job may have touched endpoints before rolling back, and what it meant
            // to hand off is rolled back with it.
            context.endpoints_by_app.clear();
            context.handed_off.truncate(handed_off_before);
        }
        if let Err(error) = end {
            let _ = context.connection.execute_batch("ROLLBACK");
            answer_unrun(jobs, &error, completions);
            return Err(error);
        }
    }
    context.connection.execute_batch("COMMIT").map_err(|error| {
        let _ = context.connection.execute_batch("ROLLBACK");
        StoreError::from(error)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A writer on a fresh database with one table `t(x UNIQUE)`.
    fn writer() -> (WriterHandle, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let connection = Connection::open(dir.path().join("writer.db")).unwrap();
        connection
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x TEXT UNIQUE)")
            .unwrap();
        let signals = WriterSignals {
            due: Default::default(),
            config_epoch: Default::default(),
            messages: Default::default(),
        };
        let (handle, _thread) = spawn(
            connection,
            "FULL",
            signals,
            Default::default(),
            Arc::new(SecretKeys::ephemeral()),
        )
        .unwrap();
        (handle, dir)
    }

    fn insert(context: &mut WriteContext<'_>, x: &str) -> StoreResult<()> {
        context
            .connection
            .execute("INSERT INTO t (x) VALUES (?1)", [x])?;
        Ok(())
    }

    async fn rows(writer: &WriterHandle) -> Vec<String> {
        writer
            .write(|context| {
                let mut statement = context.connection.prepare("SELECT x FROM t ORDER BY x")?;
                let rows = statement
                    .query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                Ok(rows)
            })
            .await
            .unwrap()
    }

    /// Runs `jobs` in one batch: a first job holds the writer until all of them are queued.
    async fn one_batch(
        writer: &WriterHandle,
        jobs: Vec<(Isolation, JobBody)>,
    ) -> Vec<StoreResult<()>> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let holder = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |_| {
                        let _ = started.send(());
                        held.recv().unwrap();
                        Ok(())
                    })
                    .await
            })
        };
        running.await.unwrap();
        let count = jobs.len();
        let mut tasks = Vec::new();
        for (isolation, body) in jobs {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                writer.submit(Durability::Synced, isolation, body).await
            }));
        }
        // The holder is running, so everything in the queue is ours.
        while JOB_QUEUE_CAPACITY - writer.jobs.capacity() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    type JobBody = fn(&mut WriteContext<'_>) -> StoreResult<()>;

    #[tokio::test]
    async fn an_unisolated_job_failing_on_its_statement_fails_alone() {
        let (writer, _dir) = writer();
        let results = one_batch(
            &writer,
            vec![
                (Isolation::Statement, |context| insert(context, "a")),
                // The same value: whichever of the two runs second fails on the unique
                // constraint, and SQLite undoes that statement by itself.
                (Isolation::Statement, |context| insert(context, "a")),
                (Isolation::Savepoint, |context| insert(context, "b")),
                (Isolation::Statement, |context| insert(context, "c")),
            ],
        )
        .await;
        assert_eq!(
            results[..2].iter().filter(|result| result.is_err()).count(),
            1,
            "{results:?}"
        );
        assert!(results[2].is_ok() && results[3].is_ok(), "{results:?}");
        assert_eq!(rows(&writer).await, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn an_unisolated_job_failing_after_a_write_rolls_back_its_whole_batch() {
        let (writer, _dir) = writer();
        let results = one_batch(
            &writer,
            vec![
                (Isolation::Statement, |context| insert(context, "a")),
                // Breaks the promise: a completed write, then an error.
                (Isolation::Statement, |context| {
                    insert(context, "half")?;
                    Err(StoreError::NotFound)
                }),
                (Isolation::Savepoint, |context| insert(context, "b")),
            ],
        )
        .await;
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert_eq!(rows(&writer).await, Vec::<String>::new());
        // The writer goes on with the next batch.
        writer
            .write_unisolated(Durability::Synced, |context| insert(context, "d"))
            .await
            .unwrap();
        assert_eq!(rows(&writer).await, ["d"]);
    }

    #[tokio::test]
    async fn a_savepoint_job_failing_after_a_write_fails_alone() {
        let (writer, _dir) = writer();
        let results = one_batch(
            &writer,
            vec![
                (Isolation::Statement, |context| insert(context, "a")),
                (Isolation::Savepoint, |context| {
                    insert(context, "half")?;
                    Err(StoreError::NotFound)
                }),
                (Isolation::Statement, |context| insert(context, "b")),
            ],
        )
        .await;
        assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
        assert!(
            matches!(results[1], Err(StoreError::NotFound)),
            "{results:?}"
        );
        assert_eq!(rows(&writer).await, ["a", "b"]);
    }
}
