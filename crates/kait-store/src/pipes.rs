//! Pipes (issue 14): rules that act on an application's events, the record of their runs,
//! and their durable timers.
//!
//! A pipe is configuration like an endpoint (a change names the revision it read). Its
//! definition (trigger, transform, actions) is JSON the store keeps but does not read: the
//! `kait-pipe` crate owns its meaning. The pipe subscribes to the events of each application
//! its trigger names (one app, or each source's own application) through an endpoint of kind
//! `pipe` there (all with the pipe's URL; `app_id`/`endpoint_id` hold the first), so the
//! events reach it through the delivery queue, durably, retried, in order per key.
//!
//! Timers (`delay`, `expect`) live here, not in memory: each is a row with the time it is
//! due and the state to continue from. A runner claims due timers under a lease (so one node
//! fires each, and a node that dies mid-fire leaves it to be claimed again when the lease
//! ends), fires them, and finishes them. A timer's id is chosen by the pipe so that the same
//! wait (a pipe, an action, a key) is one row: scheduling it again restarts or keeps it.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, PipeId, PipeRunId};

use crate::{Page, PageRequest, StoreResult};

/// A pipe as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    pub id: PipeId,
    pub uid: Option<String>,
    pub name: String,
    /// The (first) application whose events trigger it (a source's own application for a
    /// source).
    pub app_id: AppId,
    /// Its subscription there: an endpoint of kind `pipe` in `app_id`.
    pub endpoint_id: EndpointId,
    /// Trigger, transform and actions, as `kait-pipe` reads them.
    pub definition: serde_json::Value,
    pub enabled: bool,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub revision: u64,
}

/// One run of a pipe, as its log shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeRun {
    pub id: PipeRunId,
    pub pipe_id: PipeId,
    /// What started it: the message id, or the timer id.
    pub origin: String,
    pub at: Millis,
    /// `done`, `filtered`, `failed` (retried by the delivery queue or the timer runner).
    pub outcome: String,
    /// What happened, step by step (filter result, transform output or error, each action).
    pub detail: serde_json::Value,
}

/// A timer of a pipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    /// Chosen by the pipe: the same wait is the same id.
    pub id: String,
    pub pipe_id: PipeId,
    pub due_at: Millis,
    /// What to do when it fires, as `kait-pipe` reads it.
    pub state: serde_json::Value,
}

/// What scheduling a timer whose id exists does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfScheduled {
    /// Keep the existing timer (its time and state): a wait is not extended.
    Keep,
    /// Replace its time and state: the wait starts again.
    Restart,
}

#[async_trait]
pub trait Pipes: Send + Sync + 'static {
    /// Creates a pipe; a taken `uid` is a `Conflict`.
    async fn create_pipe(&self, pipe: Pipe) -> StoreResult<Pipe>;
    /// By id, or by `uid` when the key is not a `pipe_` id.
    async fn get_pipe(&self, id_or_uid: &str) -> StoreResult<Option<Pipe>>;
    async fn list_pipes(&self, page: PageRequest) -> StoreResult<Page<Pipe>>;
    /// Writes every field but id and `created_at` if the stored revision is still
    /// `pipe.revision` (else `Stale`).
    async fn update_pipe(&self, pipe: Pipe) -> StoreResult<Pipe>;
    /// Deletes the pipe with its timers and runs (its endpoints are the caller's to delete).
    async fn delete_pipe(&self, id: &PipeId) -> StoreResult<()>;
    /// The endpoints of kind `pipe` with this URL, in any application: one pipe's
    /// subscriptions (few; read when the pipe is changed, not per event).
    async fn pipe_endpoints(&self, url: &str) -> StoreResult<Vec<kait_core::Endpoint>>;

    async fn record_pipe_run(&self, run: PipeRun) -> StoreResult<()>;
    /// A pipe's runs, newest first.
    async fn list_pipe_runs(
        &self,
        pipe_id: &PipeId,
        page: PageRequest,
    ) -> StoreResult<Page<PipeRun>>;

    /// Schedules a timer; returns whether it was written (false: one with its id was kept).
    async fn schedule_timer(&self, timer: Timer, if_scheduled: IfScheduled) -> StoreResult<bool>;
    /// Removes a timer before it fires; returns whether there was one.
    async fn cancel_timer(&self, id: &str) -> StoreResult<bool>;
    /// Claims up to `limit` timers due at `now` that no live claim holds, until `lease_until`.
    async fn claim_timers(
        &self,
        now: Millis,
        limit: usize,
        lease_until: Millis,
    ) -> StoreResult<Vec<Timer>>;
    /// Removes fired timers, each unless it was scheduled again meanwhile (its `due_at`
    /// moved); one write for the batch.
    async fn finish_timers(&self, timers: &[Timer]) -> StoreResult<()>;
    /// When the earliest timer is due (claimed ones included: their lease may end).
    async fn next_timer_at(&self) -> StoreResult<Option<Millis>>;
    /// How many timers wait, of one pipe or of all (for the pipe's stats and `kait bench`).
    async fn count_timers(&self, pipe_id: Option<&PipeId>) -> StoreResult<u64>;
}
