//! `kait serve`: the store, the dispatcher and the API in one process.
//!
//! [`run`] takes an already bound listener and a cancellation token (mini-redis style), so the
//! binary and the tests start the same server the same way.

use std::sync::Arc;

use anyhow::Context;
use kait_api::ApiState;
use kait_deliver::{EgressPolicy, Sender, SenderConfig};
use kait_dispatch::{CircuitStates, DispatcherConfig};
use kait_store::operational::OperationalEvents;
use kait_store::{SqliteOptions, SqliteStore, Store};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;

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
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|builder| {
                builder
                    .set_buckets_for_metric(Matcher::Full("kait_store_commit_jobs".into()), &jobs)
            });
        match builder.and_then(|builder| builder.install_recorder()) {
            Ok(handle) => Some(handle),
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

/// Deletes expired rows every [`PURGE_INTERVAL`] until shutdown, so they do not pile up.
async fn purge_expired(store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PURGE_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
        match store
            .purge_expired(kait_core::time::now_millis(), IDEMPOTENCY_LIFETIME_MS)
            .await
        {
            Ok(purged) => tracing::debug!(purged, "expired rows deleted"),
            Err(error) => tracing::warn!(%error, "deleting expired rows failed"),
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
    let data_dir = config.data_dir.clone();
    let store =
        tokio::task::spawn_blocking(move || SqliteStore::open(SqliteOptions::new(data_dir)))
            .await?
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let store: Arc<dyn Store> = Arc::new(store);

    let sender = Sender::new(
        SenderConfig {
            request_timeout: config.request_timeout,
            connect_timeout: config.connect_timeout,
            max_response_body: config.max_response_bytes,
            ..SenderConfig::default()
        },
        EgressPolicy::new(config.allow_networks.clone()),
    )
    .context("building the HTTP client")?;

    let ops = match &config.operational_webhook {
        Some((url, secret)) => OperationalEvents::setup(store.clone(), url, secret.clone())
            .await
            .context("setting up operational webhooks")?,
        None => OperationalEvents::off(),
    };
    let purger = tokio::spawn(purge_expired(store.clone(), shutdown.clone()));
    let circuit_states = CircuitStates::default();
    let dispatcher = tokio::spawn(kait_dispatch::run(
        store.clone(),
        sender.clone(),
        DispatcherConfig {
            max_in_flight: config.max_in_flight,
            endpoint_in_flight: config.endpoint_in_flight,
            retry_schedule: config.retry_schedule.clone(),
            breaker: config.breaker,
            disable_after: Some(config.disable_after),
            ..DispatcherConfig::default()
        },
        circuit_states.clone(),
        ops.clone(),
        shutdown.child_token(),
    ));

    let url_check_sender = sender.clone();
    let state = ApiState {
        store,
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
    };
    let router = kait_api::router(state);
    let app = kait_api::trim_trailing_slash(router);
    let serve_result = axum::serve(
        listener,
        axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .await;
    shutdown.cancel();
    dispatcher.await.context("dispatcher task")?;
    purger.await.context("purge task")?;
    serve_result.context("serving the API")
}
