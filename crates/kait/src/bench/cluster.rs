//! The servers of one scenario: `--nodes` `kait serve` processes (through the launcher the
//! integration tests use too), on temporary data dirs and, with `--database-url`, on a fresh
//! PostgreSQL schema that is dropped afterwards.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use serde_json::json;

use super::*;
use crate::launch::ServeProcess;

/// The PostgreSQL schema one scenario's nodes share; dropped when the scenario ends.
pub(super) struct BenchSchema {
    pub(super) options: kait_store::PgOptions,
    /// Holds the secrets key the nodes share (each has a data dir of its own).
    pub(super) key_dir: tempfile::TempDir,
}

impl BenchSchema {
    pub(super) fn new(url: &str) -> anyhow::Result<Self> {
        let (key, key_text) = kait_store::sealing::SealingKey::generate();
        let key_dir = tempfile::tempdir()?;
        std::fs::write(key_dir.path().join("secrets.key"), key_text)?;
        let mut options =
            kait_store::PgOptions::new(url, kait_store::sealing::SecretKeys::new(key, Vec::new()))
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        options.schema = format!("kait_bench_{:012x}", rand::random::<u64>() >> 16);
        Ok(Self { options, key_dir })
    }

    pub(super) fn flags(&self, url: &str) -> Vec<String> {
        vec![
            "--database-url".into(),
            url.into(),
            "--database-schema".into(),
            self.options.schema.clone(),
            "--secrets-key-file".into(),
            self.key_dir
                .path()
                .join("secrets.key")
                .display()
                .to_string(),
        ]
    }

    pub(super) async fn drop_schema(self) -> anyhow::Result<()> {
        kait_store::postgres::drop_schema(&self.options)
            .await
            .map_err(|error| anyhow::anyhow!("dropping {}: {error}", self.options.schema))
    }
}

/// A `kait serve` child process on a temporary data dir (and maybe a shared schema).
pub(super) struct ServerProcess {
    pub(super) process: ServeProcess,
    pub(super) _data_dir: tempfile::TempDir,
}

impl ServerProcess {
    pub(super) fn start(
        binary: Option<&std::path::Path>,
        extra: &[String],
    ) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let binary = match binary {
            Some(binary) => binary.to_owned(),
            None => std::env::current_exe()?,
        };
        let mut flags = vec![
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
            "--admin-token".to_owned(),
            BENCH_TOKEN.to_owned(),
        ];
        flags.extend_from_slice(extra);
        let process = ServeProcess::start(&binary, "127.0.0.1:0", &flags)?;
        Ok(Self {
            process,
            _data_dir: data_dir,
        })
    }
}

/// The largest of the nodes' resident sizes (now or peak, as `pick` chooses), in MiB.
pub(super) fn max_rss(
    servers: &[ServerProcess],
    pick: impl Fn((Option<f64>, Option<f64>)) -> Option<f64>,
) -> Option<f64> {
    servers
        .iter()
        .filter_map(|server| pick(server.process.rss_mib()))
        .reduce(f64::max)
}

/// The servers of one scenario (`--nodes` of them) and the schema they share, if any.
pub(super) struct Cluster {
    pub(super) servers: Vec<ServerProcess>,
    pub(super) schema: Option<BenchSchema>,
}

impl Cluster {
    pub(super) async fn start(args: &BenchArgs, extra: &[&str]) -> anyhow::Result<Self> {
        let schema = match &args.database_url {
            Some(url) => Some(BenchSchema::new(url)?),
            None => None,
        };
        let mut flags: Vec<String> = match (&schema, &args.database_url) {
            (Some(schema), Some(url)) => schema.flags(url),
            _ => Vec::new(),
        };
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let mut servers = Vec::with_capacity(args.nodes);
        for _ in 0..args.nodes {
            servers.push(ServerProcess::start(args.server_binary.as_deref(), &flags)?);
        }
        // Let the fresh processes settle before reading their idle size.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Self { servers, schema })
    }

    /// Stops the nodes and drops the schema (kept, and named, when `KAIT_BENCH_KEEP_SCHEMA`
    /// is set, to look at the data the scenario left, e.g. with `EXPLAIN`); returns the largest
    /// peak RSS and the CPU seconds of all nodes.
    pub(super) async fn stop(self) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let peak = max_rss(&self.servers, |(_, peak)| peak);
        let cpu = self
            .servers
            .iter()
            .map(|server| server.process.cpu_seconds())
            .sum::<Option<f64>>();
        drop(self.servers);
        if let Some(schema) = self.schema {
            if std::env::var_os("KAIT_BENCH_KEEP_SCHEMA").is_some() {
                eprintln!("bench: schema {} kept", schema.options.schema);
            } else {
                schema.drop_schema().await?;
            }
        }
        Ok((peak, cpu))
    }

    /// Creates the bench application with `endpoints` endpoints on the receiver; returns the
    /// load target: every node's address (the load goes round-robin over them) and the
    /// message path.
    pub(super) async fn app(
        &self,
        receiver: &BenchReceiver,
        endpoints: usize,
    ) -> anyhow::Result<load::Target> {
        self.app_for(receiver, endpoints, None).await
    }

    /// Like [`Self::app`], the endpoints subscribed to `event_types` only (all when `None`).
    pub(super) async fn app_for(
        &self,
        receiver: &BenchReceiver,
        endpoints: usize,
        event_types: Option<&[&str]>,
    ) -> anyhow::Result<load::Target> {
        let client = reqwest::Client::new();
        let base_url = &self.servers[0].process.base_url;
        let app = api_post(
            &client,
            format!("{base_url}/api/v1/app"),
            json!({ "name": "bench" }).to_string(),
        )
        .await?;
        let app_id = app["id"].as_str().context("app id")?.to_owned();
        for index in 0..endpoints {
            let body = json!({
                "url": receiver.url(&format!("e{index}")),
                "secret": BENCH_SECRET,
                "filterTypes": event_types,
            });
            api_post(
                &client,
                format!("{base_url}/api/v1/app/{app_id}/endpoint"),
                body.to_string(),
            )
            .await?;
        }
        Ok(load::Target {
            servers: self.addresses()?,
            path: format!("/api/v1/app/{app_id}/msg").into(),
            bearer: Some(axum::http::HeaderValue::from_str(&format!(
                "Bearer {BENCH_TOKEN}"
            ))?),
            expect: StatusCode::ACCEPTED,
        })
    }

    /// An incoming source (`generic-webhook`, checking a bearer token) with one endpoint at
    /// the receiver: the load target is its receiving URL.
    pub(super) async fn source(&self, receiver: &BenchReceiver) -> anyhow::Result<load::Target> {
        const SOURCE_TOKEN: &str = "bench-sender-token";
        let client = reqwest::Client::new();
        let base_url = &self.servers[0].process.base_url;
        let source = api_post(
            &client,
            format!("{base_url}/ingest/api/v1/source"),
            json!({
                "name": "bench",
                "type": "generic-webhook",
                "config": { "bearerToken": SOURCE_TOKEN }
            })
            .to_string(),
        )
        .await?;
        let source_id = source["id"].as_str().context("source id")?;
        let ingest_url = source["ingestUrl"].as_str().context("ingest url")?;
        let path = &ingest_url[ingest_url.find("/ingest/").context("ingest path")?..];
        api_post(
            &client,
            format!("{base_url}/ingest/api/v1/source/{source_id}/endpoint"),
            json!({ "url": receiver.url("ingest"), "secret": BENCH_SECRET }).to_string(),
        )
        .await?;
        Ok(load::Target {
            servers: self.addresses()?,
            path: path.into(),
            bearer: Some(axum::http::HeaderValue::from_str(&format!(
                "Bearer {SOURCE_TOKEN}"
            ))?),
            expect: StatusCode::OK,
        })
    }

    fn addresses(&self) -> anyhow::Result<Arc<[std::net::SocketAddr]>> {
        self.servers
            .iter()
            .map(|server| {
                server
                    .process
                    .base_url
                    .trim_start_matches("http://")
                    .parse::<std::net::SocketAddr>()
                    .context("server address")
            })
            .collect()
    }
}
