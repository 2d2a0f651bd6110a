//! The integration suite on PostgreSQL: the same test modules as `../it` (whose `main.rs`
//! lists what each covers), each server in a schema of its own (`support/storage.rs` tells
//! the two builds apart by crate name), plus `cluster`, which needs several nodes on one
//! database and so exists only here.

#[path = "../it/support/mod.rs"]
mod support;

#[path = "../it/attachments.rs"]
mod attachments;
#[path = "../it/bad_input.rs"]
mod bad_input;
#[path = "../it/cli.rs"]
mod cli;
#[path = "../it/cluster.rs"]
mod cluster;
#[path = "../it/delivery.rs"]
mod delivery;
#[path = "../it/devices.rs"]
mod devices;
#[path = "../it/durability.rs"]
mod durability;
#[path = "../it/everyday_cli.rs"]
mod everyday_cli;
#[path = "../it/faults.rs"]
mod faults;
#[path = "../it/hardening.rs"]
mod hardening;
#[path = "../it/ingest.rs"]
mod ingest;
#[path = "../it/openapi.rs"]
mod openapi;
#[path = "../it/otlp_traces.rs"]
mod otlp_traces;
#[path = "../it/pagination.rs"]
mod pagination;
#[path = "../it/pipes.rs"]
mod pipes;
#[path = "../it/plugins.rs"]
mod plugins;
#[path = "../it/pull.rs"]
mod pull;
#[path = "../it/python_sdk.rs"]
mod python_sdk;
#[path = "../it/races.rs"]
mod races;
#[path = "../it/raw_messages.rs"]
mod raw_messages;
#[path = "../it/receiving.rs"]
mod receiving;
#[path = "../it/svix_client.rs"]
mod svix_client;
#[path = "../it/svix_rest.rs"]
mod svix_rest;
#[path = "../it/transformations.rs"]
mod transformations;
#[path = "../it/ui.rs"]
mod ui;
#[path = "../it/xml.rs"]
mod xml;

/// Both builds run the same modules: one added to `it/main.rs` is added here too.
#[test]
fn runs_every_module_of_the_sqlite_build() {
    let modules = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
            .filter(|name| *name != "cluster")
            .map(str::to_owned)
            .collect()
    };
    let here = modules(include_str!("main.rs"));
    let sqlite = modules(include_str!("../it/main.rs"));
    assert_eq!(here, sqlite);
}
