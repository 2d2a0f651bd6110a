//! Kait's pipes: rules that act on events without a person. A pipe has a trigger (event types
//! of an application, or of an incoming source's application, with an optional filter), an
//! optional transform and a list of actions: `emit` a message, `forward` it, `publish` a command
//! to a device, `delay`, and `expect` an event with the same key within a time (then
//! `onMatch` or `onTimeout`).
//!
//! `definition.rs` reads and checks what a pipe says (pure, unit-tested); `engine.rs` runs it.
//! Events reach a pipe as deliveries to its endpoint (kind `pipe`), so they are durable,
//! retried and ordered like webhooks; waits are timers in the store, fired by the timer runner
//! (`kait/src/timers.rs`), so a kill -9 loses none.

pub mod definition;
mod devices;
mod engine;

pub use definition::{Action, Definition, DefinitionError};
pub use devices::DeviceCommands;
pub use engine::{Engine, endpoint_url};
