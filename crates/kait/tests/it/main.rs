//! Kait's integration tests: one binary, real server, real sockets, real SQLite.
//!
//! - `svix_client`: the official Svix Rust library drives every push-core route.
//! - `delivery`: fan-out, filters, signatures, retries, endpoint changes, the egress guard.
//! - `bad_input`: every kind of bad request gets its status and code, and harms nothing.
//! - `pagination`: iterators over applications, messages and attempts.
//! - `durability`: `kill -9` during a burst loses no acknowledged message.

mod support;

mod bad_input;
mod delivery;
mod durability;
mod pagination;
mod svix_client;
