//! Kait's domain: the types every stage agrees on and the rules that need no I/O.
//!
//! Ids, the message / endpoint / attempt model, Standard Webhooks signing, the retry schedule,
//! endpoint matching and input validation live here as plain synchronous code, so that they are
//! unit-tested without a runtime, a database or a socket. Storage, HTTP and scheduling are the
//! business of the crates that depend on this one.

pub mod access;
pub mod filter;
pub mod id;
pub mod model;
pub mod retry;
pub mod scope;
pub mod signing;
pub mod sse;
pub mod time;
pub mod trace;
pub mod validate;
pub mod xml;

pub use id::{
    AppId, AttachmentId, AttemptId, DeviceCommandId, EndpointId, InstallationId, MessageId,
    MqttRouteId, PipeId, PipeRunId, PluginId, ReceivedId, SourceId,
};
pub use model::*;
