//! Configuration: applications, event types and endpoints. Written by the API, read by the
//! API, the dispatcher's endpoint cache and fan-out.
//!
//! Changes are optimistic: a record carries the `revision` it was read at, an update names it,
//! and the store refuses the write with [`StoreError::Stale`] when another change came first
//! (a concurrent request, or the dispatcher disabling the endpoint). The caller reads again and
//! redoes its change, so no change is ever silently undone by a write of an older copy.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, Application, Endpoint, EndpointId, EventType};

#[allow(unused_imports)] // the doc links above
use crate::StoreError;
use crate::{Page, PageRequest, StoreResult};

#[async_trait]
pub trait Applications: Send + Sync + 'static {
    async fn create_application(&self, application: Application) -> StoreResult<Application>;
    /// Looks an application up by id, or by `uid` when the key is not an `app_` id.
    async fn get_application(&self, id_or_uid: &str) -> StoreResult<Option<Application>>;
    async fn list_applications(&self, page: PageRequest) -> StoreResult<Page<Application>>;
    /// Replaces every field but id and `created_at`, if the stored revision is still
    /// `application.revision` (else `Stale`); returns the stored record, revision moved on.
    async fn update_application(&self, application: Application) -> StoreResult<Application>;
    /// Deletes the application with its endpoints, messages, deliveries and attempts.
    async fn delete_application(&self, id: &AppId) -> StoreResult<()>;
}

#[async_trait]
pub trait EventTypes: Send + Sync + 'static {
    async fn create_event_type(&self, event_type: EventType) -> StoreResult<EventType>;
    async fn get_event_type(&self, name: &str) -> StoreResult<Option<EventType>>;
    async fn list_event_types(
        &self,
        include_archived: bool,
        page: PageRequest,
    ) -> StoreResult<Page<EventType>>;
    async fn update_event_type(&self, event_type: EventType) -> StoreResult<EventType>;
    /// Removes an event type for good (archiving is an update).
    async fn expunge_event_type(&self, name: &str) -> StoreResult<()>;
}

#[async_trait]
pub trait Endpoints: Send + Sync + 'static {
    /// Creates an endpoint unless its application already has `max_per_app`.
    async fn create_endpoint(
        &self,
        endpoint: Endpoint,
        max_per_app: usize,
    ) -> StoreResult<Endpoint>;
    async fn get_endpoint(&self, app_id: &AppId, id_or_uid: &str) -> StoreResult<Option<Endpoint>>;
    async fn get_endpoint_by_id(&self, id: &EndpointId) -> StoreResult<Option<Endpoint>>;
    async fn list_endpoints(
        &self,
        app_id: &AppId,
        page: PageRequest,
    ) -> StoreResult<Page<Endpoint>>;
    /// Writes the endpoint's settings if the stored revision is still `endpoint.revision`
    /// (else `Stale`); returns the stored record, revision moved on. Health (`failing_since`)
    /// is the store's own and is not touched.
    async fn update_endpoint(&self, endpoint: Endpoint) -> StoreResult<Endpoint>;
    /// Disables an enabled endpoint at `at` (the dispatcher's answer to `410 Gone`) in one
    /// statement, so it cannot undo a change made meanwhile. `None` if it was already
    /// disabled; `NotFound` if it is gone.
    async fn disable_endpoint(&self, id: &EndpointId, at: Millis) -> StoreResult<Option<Endpoint>>;
    /// Records that the receiver at `url` echoed the endpoint's ownership challenge, in one
    /// conditional statement (only while the endpoint still has that URL and the check), so a
    /// change made meanwhile is neither undone nor wrongly vouched for. Moves the revision and
    /// the config epoch like any change. Returns whether it was recorded.
    async fn verify_endpoint(&self, id: &EndpointId, url: &str, at: Millis) -> StoreResult<bool>;
    /// Deletes an endpoint and its pending deliveries; its attempts stay in the log.
    async fn delete_endpoint(&self, app_id: &AppId, id: &EndpointId) -> StoreResult<()>;
    /// A number that changes whenever any application or endpoint changes (on any node), so
    /// the dispatcher's endpoint cache and the API's application cache can tell that they are
    /// stale. It moves after the change commits and before the change is acknowledged.
    fn config_epoch(&self) -> u64;
}

/// Everything the API's configuration routes use.
pub trait ConfigStore: Applications + EventTypes + Endpoints {}
impl<T: Applications + EventTypes + Endpoints + ?Sized> ConfigStore for T {}
