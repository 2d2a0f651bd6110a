//! Kait's integration tests: real servers, real sockets, real SQLite and PostgreSQL.
//!
//! - `svix_client`: the official Svix Rust library drives every push-core route.
//! - `svix_rest`: the rest of Svix's routes: operational endpoints, send-example, erasing
//!   content, logout, ping.
//! - `delivery`: fan-out, filters, signatures, retries, endpoint changes, the egress guard.
//! - `cli`: `kait verify` and `kait listen` (push, pull, forward) as the binary.
//! - `everyday_cli`: `kait send`, `tail`, `replay`, `… list`, `portal` against a server.
//! - `bad_input`: every kind of bad request gets its status and code, and harms nothing.
//! - `openapi`: the OpenAPI document matches the routes the server has, both ways.
//! - `pagination`: iterators over applications, messages and attempts.
//! - `pull`: polling endpoints, iterator, long-poll, consumers, concurrent writers.
//! - `python_sdk`: the Svix Python SDK, current and older, drives the same routes.
//! - `hardening`: the attacks of issue 11 (nesting, idle sockets, streams, secrets, tokens).
//! - `ingest`: incoming sources, Svix Ingest's routes (issue 13, in progress).
//! - `pipes`: the abandoned cart, the silent sensor, filters, delays, sources (issue 14).
//! - `transformations`: endpoint transformations set by the Svix client; hostile code.
//! - `races`: concurrent changes of one endpoint or application (issue 12).
//! - `faults`: isolation, rate limit, ordering, Retry-After, 410, circuit breaker.
//! - `attachments`: a 50 MB clip uploaded, referenced, fetched by Range through signed links.
//! - `devices`: MQTT routes against the real Mosquitto: a device's reading becomes a webhook.
//! - `otlp_traces`: one OpenTelemetry trace per message, exported over OTLP to a collector here.
//! - `ui`: the portal and the dashboard: headers, the session cookie, and (ignored unless
//!   asked, CI does) the journeys in a real Chromium with screenshots.
//! - `xml`: XML endpoints and XML input, read back with an independent parser.
//! - `durability`: `kill -9` during a burst loses no acknowledged message.
//! - `cluster` (only in `it_postgres`): three nodes on one PostgreSQL share the work and
//!   survive a `kill -9`.
//!
//! The suite is built twice: `it` (this file) runs on SQLite, `it_postgres`
//! (`../it_postgres/main.rs`, the same modules plus `cluster`) on PostgreSQL
//! (`support/storage.rs`). Slow tests and those needing the Python SDK venvs are
//! `#[ignore]`d with their reason; CI runs them with `-- --ignored`.

mod support;

mod attachments;
mod bad_input;
mod cli;
mod delivery;
mod devices;
mod durability;
mod everyday_cli;
mod faults;
mod hardening;
mod ingest;
mod openapi;
mod otlp_traces;
mod pagination;
mod pipes;
mod plugins;
mod pull;
mod python_sdk;
mod races;
mod raw_messages;
mod receiving;
mod svix_client;
mod svix_rest;
mod transformations;
mod ui;
mod xml;
