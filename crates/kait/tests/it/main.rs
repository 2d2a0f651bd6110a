//! Kait's integration tests: real servers, real sockets, real SQLite and PostgreSQL.
//!
//! - `svix_client`: the official Svix Rust library drives every push-core route.
//! - `delivery`: fan-out, filters, signatures, retries, endpoint changes, the egress guard.
//! - `cli`: `kait verify` and `kait listen` (push, pull, forward) as the binary.
//! - `bad_input`: every kind of bad request gets its status and code, and harms nothing.
//! - `openapi`: the OpenAPI document matches the routes the server has, both ways.
//! - `pagination`: iterators over applications, messages and attempts.
//! - `pull`: polling endpoints, iterator, long-poll, consumers, concurrent writers.
//! - `python_sdk`: the Svix Python SDK, current and older, drives the same routes.
//! - `hardening`: the attacks of issue 11 (nesting, idle sockets, streams, secrets, tokens).
//! - `faults`: isolation, rate limit, ordering, Retry-After, 410, circuit breaker.
//! - `xml`: XML endpoints and XML input, read back with an independent parser.
//! - `durability`: `kill -9` during a burst loses no acknowledged message.
//! - `cluster`: three nodes on one PostgreSQL share the work and survive a `kill -9`.
//!
//! The suite is built twice: `it` runs on SQLite, `it_postgres` on PostgreSQL
//! (`support/storage.rs`).

mod support;

mod bad_input;
mod cli;
mod cluster;
mod delivery;
mod durability;
mod faults;
mod hardening;
mod openapi;
mod pagination;
mod pull;
mod python_sdk;
mod svix_client;
mod xml;
