//! Kait's durable store: one small trait per concern, with the embedded SQLite implementation
//! and the PostgreSQL one (many nodes on one database) beside it.
//!
//! Everything above this crate (API, dispatcher) talks to trait objects and never sees SQL;
//! each consumer takes only the concerns it uses ([`DeliveryQueue`] and [`Endpoints`] for the
//! dispatcher, [`ConfigStore`] for the API's configuration routes, and so on), and [`Store`]
//! ties them together for `kait serve`. Only this crate writes SQL. A successful write returns
//! only after its transaction has been committed and synced, so "acknowledged" always means
//! "durable".
//!
//! Each backend keeps one file per concern, holding SQL and row mapping only; what does not
//! depend on SQL (status transitions, endpoint health, claim assembly, filters and the keyset
//! pager) lives once in [`logic`] and is unit-tested without a database.

pub mod access;
pub mod app_signals;
pub mod attachments;
mod columns;
pub mod config;
#[cfg(test)]
mod conformance;
pub mod devices;
mod error;
mod handoff;
pub mod housekeeping;
mod listing;
pub mod logic;
pub mod messages;
pub mod operational;
pub mod pipes;
pub mod plugins;
pub mod postgres;
pub mod pull;
pub mod queue;
pub mod roles;
pub mod sealing;
pub mod sources;
pub mod sqlite;

pub use access::{AccessStore, AppTokenGrant, IdempotentResponse, NewAppToken};
pub use attachments::Attachments;
pub use config::{Applications, ConfigStore, Endpoints, EventTypes};
pub use devices::{
    CommandStatus, Device, DeviceCommand, DeviceRegistry, DeviceSeen, Devices, MqttRoute,
};
pub use error::{DatabaseFailure, StoreError, StoreResult};
pub use housekeeping::{Housekeeping, QueueDepth};
pub use listing::{Order, Page, PageRequest};
pub use messages::{
    AcceptedMessage, AttemptFilter, EndpointMessage, MessageFilter, MessageLog, NewMessage,
};
pub use pipes::{IfScheduled, Pipe, PipeRun, Pipes, Timer};
pub use plugins::{
    AuditEntry, Installation, InstallationGrant, NewInstallationToken, Plugin, Plugins,
    TokenRefusal,
};
pub use postgres::{PgOptions, PgStore};
pub use pull::PullPositions;
pub use queue::{
    Claim, ClaimedDelivery, DeliveryQueue, DisabledEndpoint, HandoffFilter, NextStep, Outcome,
    Redelivery,
};
pub use roles::Roles;
pub use sources::{ReceivedOutcome, ReceivedRequest, Sources, source_app_uid, source_application};
pub use sqlite::{SqliteOptions, SqliteStore};

/// All of durable state, for `kait serve` (which hands each part to the consumer that uses
/// it). Implementations make every write durable before returning and are safe to call from
/// many tasks at once.
pub trait Store:
    ConfigStore
    + MessageLog
    + DeliveryQueue
    + PullPositions
    + AccessStore
    + Housekeeping
    + Sources
    + Pipes
    + Attachments
    + Devices
    + DeviceRegistry
    + Plugins
    + Roles
{
}
impl<T> Store for T where
    T: ConfigStore
        + MessageLog
        + DeliveryQueue
        + PullPositions
        + AccessStore
        + Housekeeping
        + Sources
        + Pipes
        + Attachments
        + Devices
        + DeviceRegistry
        + Plugins
        + Roles
        + ?Sized
{
}

/// Every store trait, for code that calls store methods on a concrete store (tests, tools).
pub mod prelude {
    pub use crate::{
        AccessStore, Applications, Attachments, DeliveryQueue, DeviceRegistry, Devices, Endpoints,
        EventTypes, Housekeeping, MessageLog, Pipes, Plugins, PullPositions, Roles, Sources, Store,
    };
}
