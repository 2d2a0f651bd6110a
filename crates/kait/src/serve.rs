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
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;

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
    serve_result.context("serving the API")
}
