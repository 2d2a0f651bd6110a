//! Incoming sources, the receiving half of the pipe: which kinds of sender Kait can receive
//! from ([`SourceKind`]), what each needs configured ([`SourceConfig`], parsed and checked
//! from Svix Ingest's `config` object, its secrets never echoed back), and how a request from
//! each is proven to come from it ([`verify::verify`]: provider signatures compared in
//! constant time, timestamps held to a tolerance so a captured request cannot be replayed).
//!
//! Pure logic with no I/O, like `kait-core`: the API reads the request, this crate decides,
//! the store keeps what was received.

pub mod body;
pub mod config;
pub mod event;
pub mod schedule;
pub mod verify;

pub use body::{BodyKind, ReadBody};
pub use config::{SourceConfig, SourceKind};
pub use event::event_type;
pub use schedule::{Schedule, due_tick};
pub use verify::{Refusal, Verified, verify};
