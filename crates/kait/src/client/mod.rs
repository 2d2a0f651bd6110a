//! The everyday command line: `kait send`, `tail`, `replay`, `app|endpoint|source|pipe list`
//! and `portal`, each a thin client of a running server's API.
//!
//! Where the server and token come from is decided once ([`profile`]); every request goes
//! through one [`api::Api`], which turns a refusal into the server's `code` and `detail`, so
//! each command only says what it asks and how it prints the answer. Every failure ends in a
//! one-line message and a non-zero exit (`main.rs`).

pub mod api;
pub mod commands;
pub mod profile;
pub mod table;

pub use commands::{ListArgs, PortalArgs, ReplayArgs, SendArgs, TailArgs};
pub use profile::ConnectArgs;
