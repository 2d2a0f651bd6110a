//! `kait serve`: the store, the dispatcher and the API in one process.
//!
//! [`run`] takes an already bound listener and a cancellation token (mini-redis style), so the
//! binary and the tests start the same server the same way.

use std::sync::Arc;

use anyhow::Context;
use kait_api::{ApiContext, ApiState};
use kait_deliver::{EgressPolicy, Sender, SenderConfig};
use kait_dispatch::{CircuitStates, DispatcherConfig};
use kait_store::operational::OperationalEvents;
use kait_store::{Housekeeping, PgStore, SqliteOptions, SqliteStore, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Retention, ServeConfig};

/// How often histogram samples are folded into their buckets when nobody scrapes.
const METRICS_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder, installed on first use (tests start many servers in
/// one process; they share it).
fn metrics_render() -> kait_api::MetricsRender {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    let handle = HANDLE.get_or_init(|| {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ];
        let jobs = [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
        ];
        // Per-endpoint gauges of endpoints that went quiet are dropped after a while, so the
        // exposition does not keep every endpoint that was ever busy.
        let builder = PrometheusBuilder::new()
            .idle_timeout(
                MetricKindMask::GAUGE,
                Some(std::time::Duration::from_secs(300)),
            )
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|builder| {
                builder
                    .set_buckets_for_metric(Matcher::Full("kait_store_commit_jobs".into()), &jobs)
            });
        match builder.and_then(|builder| builder.install_recorder()) {
            Ok(handle) => {
                // Histograms keep every sample until upkeep folds them into buckets; without
                // it a server nobody scrapes grows by 8 bytes per sample (megabytes per
                // million deliveries). Done on a thread of its own, once per process.
                let upkeep = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("kait-metrics".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(METRICS_UPKEEP_INTERVAL);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(error) = spawned {
                    tracing::warn!(%error, "metrics upkeep thread not started");
                }
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics are not available");
                None
            }
        }
    });
    match handle.clone() {
        Some(handle) => Arc::new(move || {
            handle.run_upkeep();
            handle.render()
        }),
        None => Arc::new(String::new),
    }
}

/// How often expired idempotency responses and app tokens are deleted.
const PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// How long an `Idempotency-Key` response is kept (the API honours keys for 24 h).
const IDEMPOTENCY_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Rows the retention job deletes per statement: small enough that delivery never waits long.
const PURGE_BATCH: usize = 1000;

/// Deletes expired rows every [`PURGE_INTERVAL`] until shutdown, so they do not pile up:
/// old `Idempotency-Key` responses and app tokens, and history past the retention settings
/// (in small batches with a pause between them, so the writer is never held for long).
async fn purge_expired(
    store: Arc<dyn Housekeeping>,
    retention: Retention,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = kait_core::time::now_millis();
        match store.purge_expired(now, IDEMPOTENCY_LIFETIME_MS).await {
            Ok(purged) => tracing::debug!(purged, "expired rows deleted"),
            Err(error) => tracing::warn!(%error, "deleting expired rows failed"),
        }
        let before = |keep: Option<std::time::Duration>| {
            keep.map(|keep| now - keep.as_millis() as kait_core::time::Millis)
        };
        let (messages, attempts) = (before(retention.messages), before(retention.attempts));
        if messages.is_none() && attempts.is_none() {
            continue;
        }
        let mut total = 0;
        loop {
            match store.purge_history(messages, attempts, PURGE_BATCH).await {
                Ok(purged) => {
                    total += purged;
                    if purged < PURGE_BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "deleting old history failed");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        if total > 0 {
            tracing::info!(rows = total, "history past its retention deleted");
        }
    }
}

/// How often the store's queue depth is counted for `/metrics`.
const QUEUE_DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Publishes the store's pending deliveries as `kait_queue_depth{state="due"|"scheduled"}`
/// every [`QUEUE_DEPTH_INTERVAL`] until shutdown. Counted apart from scrapes, so a scraper
/// can never make the server count a large backlog more often than this. With several
/// nodes on one database every node reports the same, database-wide numbers.
async fn publish_queue_depth(store: Arc<dyn Housekeeping>, shutdown: CancellationToken) {
    loop {
        match store.queue_depth(kait_core::time::now_millis()).await {
            Ok(depth) => {
                metrics::gauge!("kait_queue_depth", "state" => "due").set(depth.due as f64);
                metrics::gauge!("kait_queue_depth", "state" => "scheduled")
                    .set(depth.scheduled as f64);
            }
            Err(error) => tracing::warn!(%error, "counting the queue failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(QUEUE_DEPTH_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting, lets attempts in flight finish
/// (bounded), records their outcomes and returns.
pub async fn run(
    config: ServeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let admin_token = config
        .admin_token
        .clone()
        .context("an admin token must be set before serving")?;
    let store = open_store(&config).await?;
    let public_url = match &config.public_url {
        Some(url) => url.clone(),
        None => format!("http://{}", listener.local_addr()?),
    };
    let media = crate::media::open(&config, &public_url)?;

    let sender = Sender::new(
        SenderConfig {
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            max_response_body: config.max_response_bytes,
            // Every connection in use may go back to the pool: with fewer idle slots than
            // attempts in flight, endpoints sharing a host keep closing and reopening
            // connections (measured in BENCHMARKS.md).
            max_idle_per_host: config.max_in_flight,
            extra_root_certificates: config.extra_root_certificates.clone(),
        },
        EgressPolicy::new(config.allow_networks.clone()),
    )
    .context("building the HTTP client")?;

    let otlp = match &config.otlp {
        Some((endpoint, protocol)) => Some(std::sync::Arc::new(
            crate::telemetry::OtlpTraces::start(endpoint, *protocol)
                .context("setting up OTLP trace export")?,
        )),
        None => None,
    };
    let traces = otlp
        .clone()
        .map(|otlp| otlp as std::sync::Arc<dyn kait_core::trace::TraceExport>);
    let ops = OperationalEvents::start(
        store.clone(),
        config
            .operational_webhook
            .as_ref()
            .map(|(url, secret)| (url.as_str(), secret.clone())),
    )
    .await
    .context("setting up operational webhooks")?;
    let queue_depth = tokio::spawn(publish_queue_depth(store.clone(), shutdown.clone()));
    let purger = tokio::spawn(purge_expired(
        store.clone(),
        config.retention,
        shutdown.clone(),
    ));
    let sweeper = media.as_ref().map(|media| {
        tokio::spawn(crate::media::run_sweeps(
            store.clone(),
            media.blobs.clone(),
            config.attachment_sweep_interval,
            shutdown.clone(),
        ))
    });
    let mqtt_routes_changed = Arc::new(tokio::sync::Notify::new());
    let mut devices: Option<Arc<dyn kait_api::DeviceLink>> = None;
    let mut device_commands: Option<Arc<dyn kait_pipe::DeviceCommands>> = None;
    let mqtt = match config.mqtt.clone() {
        Some(mqtt) => {
            let (bridge, events) =
                crate::mqtt::Bridge::new(store.clone(), mqtt, media.clone(), shutdown.clone())?;
            devices = Some(bridge.clone());
            device_commands = Some(bridge.clone());
            Some(tokio::spawn(crate::mqtt::run(
                bridge,
                events,
                mqtt_routes_changed.clone(),
                // Other nodes may record deadlines earlier than this node's next one.
                config
                    .postgres
                    .as_ref()
                    .map(|_| std::time::Duration::from_secs(1)),
                shutdown.clone(),
            )))
        }
        None => None,
    };
    let sources_changed = Arc::new(tokio::sync::Notify::new());
    let cron = tokio::spawn(crate::cron::run(
        store.clone(),
        sources_changed.clone(),
        shutdown.clone(),
    ));
    let circuit_states = CircuitStates::default();
    let scripts = kait_script::ScriptPool::start(2, kait_script::Limits::default());
    let timers_changed = Arc::new(tokio::sync::Notify::new());
    let replies = Arc::new(kait_plugins::Replies::new(
        store.clone(),
        device_commands.clone(),
    ));
    let pipes = Arc::new(
        kait_pipe::Engine::new(store.clone(), scripts.clone(), timers_changed.clone())
            .with_devices(device_commands),
    );
    let timers = tokio::spawn(crate::timers::run(
        store.clone(),
        pipes.clone(),
        timers_changed,
        // Other nodes may write timers due before this node's next one.
        config
            .postgres
            .as_ref()
            .map(|_| std::time::Duration::from_secs(1)),
        shutdown.clone(),
    ));
    let dispatcher = tokio::spawn(kait_dispatch::run(
        store.clone(),
        store.clone(),
        DispatcherConfig {
            max_in_flight: config.max_in_flight,
            endpoint_in_flight: config.endpoint_in_flight,
            retry_schedule: config.retry_schedule.clone(),
            breaker: config.breaker,
            disable_after: Some(config.disable_after),
            poll_interval: config.dispatcher_poll_interval,
            ..DispatcherConfig::default()
        },
        circuit_states.clone(),
        ops.clone(),
        kait_dispatch::Runners {
            sender: sender.clone(),
            scripts: scripts.clone(),
            pipes: Some(pipes),
            media: media.clone(),
            replies: Some(replies),
            traces: traces.clone(),
            traceparent_to_receivers: config.traceparent_to_receivers,
        },
        shutdown.child_token(),
    ));

    let url_check_sender = sender.clone();
    let state = ApiState::from(ApiContext {
        store: store.clone(),
        admin_token: admin_token.into(),
        url_check: Arc::new(move |url: &str| {
            url_check_sender
                .check_url(url)
                .map_err(|error| error.to_string())
        }),
        circuit_state: Arc::new(move |endpoint_id| circuit_states.get(endpoint_id)),
        limits: config.limits,
        ops,
        shutdown: shutdown.clone(),
        metrics: metrics_render(),
        app_ids: Default::default(),
        streams: Default::default(),
        metrics_token: config.metrics_token.clone().map(Arc::from),
        public_url: public_url.into(),
        sources_changed,
        sources: Default::default(),
        source_slots: Default::default(),
        media,
        mqtt_routes_changed,
        devices,
        traces,
    });
    let router = kait_api::router(state);
    let app = kait_api::trim_trailing_slash(router);
    let open_files = crate::http_server::raise_open_files_limit();
    let mut connection_limits = config.connections;
    connection_limits.max_connections = crate::http_server::fit_connection_cap(
        connection_limits.max_connections,
        open_files,
        config.max_in_flight,
    );
    if connection_limits.max_connections < config.connections.max_connections {
        tracing::warn!(
            max_connections = connection_limits.max_connections,
            open_files_limit = open_files,
            "the open files limit lowers the connection cap"
        );
    }
    crate::http_server::serve(listener, app, connection_limits, shutdown.clone()).await;
    shutdown.cancel();
    dispatcher.await.context("dispatcher task")?;
    purger.await.context("purge task")?;
    queue_depth.await.context("queue depth task")?;
    cron.await.context("cron task")?;
    timers.await.context("timer task")?;
    if let Some(mqtt) = mqtt {
        mqtt.await.context("MQTT bridge task")?;
    }
    if let Some(sweeper) = sweeper {
        sweeper.await.context("attachment sweep task")?;
    }
    if let Err(error) = store.close().await {
        tracing::warn!(%error, "closing the store failed; other nodes take over after the lease");
    }
    if let Some(otlp) = otlp {
        // The batch processor's thread blocks while it sends: off the async workers.
        let _ = tokio::task::spawn_blocking(move || otlp.flush()).await;
    }
    Ok(())
}

/// Opens the configured store: PostgreSQL when a database URL is set, else SQLite in the
/// data directory. Both run their migrations first.
pub async fn open_store(config: &ServeConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(postgres) = &config.postgres {
        let store = PgStore::open(postgres.store_options(config.secret_keys()?)?)
            .await
            .with_context(|| {
                format!("opening the PostgreSQL store (schema {})", postgres.schema)
            })?;
        return Ok(Arc::new(store));
    }
    let data_dir = config.data_dir.clone();
    let keys = config.secret_keys()?;
    let store =
        tokio::task::spawn_blocking(move || SqliteStore::open(SqliteOptions::new(data_dir, keys)))
            .await?
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    Ok(Arc::new(store))
}

/// `kait migrate`: brings the configured database's schema up to date and returns how many
/// migrations ran (SQLite reports 0: it migrates whenever it opens, which this does).
pub async fn migrate(config: &ServeConfig) -> anyhow::Result<usize> {
    if let Some(postgres) = &config.postgres {
        return kait_store::postgres::migrate(&postgres.store_options(config.secret_keys()?)?)
            .await
            .with_context(|| format!("migrating the PostgreSQL schema {}", postgres.schema));
    }
    let data_dir = config.data_dir.clone();
    let keys = config.secret_keys()?;
    tokio::task::spawn_blocking(move || {
        SqliteStore::open(SqliteOptions::new(data_dir, keys)).map(drop)
    })
    .await?
    .with_context(|| format!("migrating the store in {}", config.data_dir.display()))?;
    Ok(0)
}
