//! The `kait` binary's library half: configuration, wiring and the `serve` runtime.
//!
//! Only this crate knows about processes, signals, files and the command line; it assembles
//! the store, the dispatcher and the API and hands each what it needs as values. Keeping it a
//! library lets integration tests start a real server on a random port in-process.

pub mod bench;
pub mod client;
pub mod config;
pub mod cron;
pub mod http_server;
pub mod launch;
pub mod listen;
pub mod media;
pub mod mqtt;
pub mod serve;
pub mod telemetry;
pub mod timers;
pub mod verify;
