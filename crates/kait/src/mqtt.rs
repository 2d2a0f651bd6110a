//! The MQTT bridge (issue 16, first part): Kait as a client of an existing broker
//! (`--mqtt-url`), subscribed at QoS 1 with a persistent session to every route's filter. Each
//! publish becomes a message through its route (`kait-devices`), and is acknowledged (PUBACK)
//! only after the message is committed: a crash before then leaves it with the broker, which
//! sends it again. The poll loop hands publishes to one handler task, which takes what has
//! arrived (at most the broker's in-flight window) as a batch and hands its messages to the
//! store in arrival order, all at once, so they share group commits and one device's keep
//! their order; then the batch is acknowledged. One commit per message in
//! turn could not keep up with a broker that queues at most ~1,000 messages for a client.
//!
//! The broker being away never touches the HTTP API: the loop reconnects with backoff, and
//! `kait_mqtt_connected` says where it stands.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use kait_core::{Message, MessageId, MqttRouteId, RawPayload};
use kait_devices::{Body, Route, RouteSpec};
use kait_store::{NewMessage, Store, StoreError};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use tokio_util::sync::CancellationToken;

/// Where the broker is and who Kait is to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Stable across restarts: the broker keeps the session (subscriptions, unacknowledged
    /// messages) under it. Each node needs its own.
    pub client_id: String,
}

impl MqttConfig {
    /// Reads `mqtt://[user[:password]@]host[:port]` (1883) or `mqtts://…` (8883).
    pub fn parse(url: &str, client_id: Option<String>) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("`{url}`"))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => bail!("`{url}`: the scheme is {other}, not mqtt:// or mqtts://"),
        };
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .with_context(|| format!("`{url}` has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        if parsed.path() != "" && parsed.path() != "/" {
            bail!("`{url}`: no path is expected");
        }
        let decode = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes())
                .next()
                .map(|(_, value)| value.into_owned())
                .unwrap_or_default()
        };
        let username = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let password = parsed.password().map(decode);
        let client_id = client_id.unwrap_or_else(|| "kait".to_owned());
        if client_id.is_empty() || client_id.len() > 64 {
            bail!("--mqtt-client-id must be 1 to 64 characters");
        }
        Ok(Self {
            host,
            port: parsed.port().unwrap_or(default_port),
            tls,
            username,
            password,
            client_id,
        })
    }
}

/// Depth the payloads of device messages may nest to (as the API's `--max-payload-depth`).
const MAX_DEPTH: usize = 64;
/// How often routes are read again without being told (another node's change).
const ROUTES_REFRESH: Duration = Duration::from_secs(5);

/// The routes in force, in creation order, with the filters subscribed for them.
#[derive(Clone)]
struct Routes {
    routes: Vec<(MqttRouteId, Route)>,
}

impl Routes {
    async fn load(store: &dyn Store) -> anyhow::Result<Self> {
        let mut routes = Vec::new();
        for stored in store.list_mqtt_routes().await? {
            let spec: Result<RouteSpec, _> = serde_json::from_value(stored.spec);
            match spec
                .map_err(|error| error.to_string())
                .and_then(|spec| Route::parse(&spec).map_err(|error| error.to_string()))
            {
                Ok(route) => routes.push((stored.id, route)),
                Err(error) => {
                    tracing::warn!(route = %stored.id, %error, "an MQTT route that does not parse is skipped")
                }
            }
        }
        Ok(Self { routes })
    }

    fn filters(&self) -> std::collections::BTreeSet<String> {
        self.routes
            .iter()
            .map(|(_, route)| route.topic.filter())
            .collect()
    }
}

/// Runs the bridge until shutdown.
pub async fn run(
    store: Arc<dyn Store>,
    config: MqttConfig,
    routes_changed: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30));
    if let (Some(username), password) = (&config.username, &config.password) {
        options.set_credentials(username, password.clone().unwrap_or_default());
    }
    if config.tls {
        options.set_transport(Transport::tls_with_default_config());
    }
    let (client, mut events) = AsyncClient::new(options, 4096);
    let mut routes = match Routes::load(store.as_ref()).await {
        Ok(routes) => routes,
        Err(error) => {
            tracing::warn!(%error, "reading the MQTT routes failed; starting with none");
            Routes { routes: Vec::new() }
        }
    };
    let (routes_now, routes_seen) = tokio::sync::watch::channel(Arc::new(routes.clone()));
    // Holds at most the broker's in-flight window (it sends no more until acknowledged).
    let (publishes, arrived) = tokio::sync::mpsc::channel(1024);
    let handler = tokio::spawn(handle_batches(
        store.clone(),
        routes_seen,
        client.clone(),
        arrived,
        shutdown.clone(),
    ));
    let mut subscribed = std::collections::BTreeSet::new();
    let mut failures = 0u32;
    metrics::gauge!("kait_mqtt_connected").set(0.0);
    let mut refresh = tokio::time::interval(ROUTES_REFRESH);
    loop {
        tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    failures = 0;
                    metrics::gauge!("kait_mqtt_connected").set(1.0);
                    tracing::info!(host = %config.host, port = config.port, "connected to the MQTT broker");
                    // The session may have kept them; subscribing again is harmless.
                    subscribed.clear();
                    resubscribe(&client, &routes, &mut subscribed).await;
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publishes.send(publish).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    metrics::gauge!("kait_mqtt_connected").set(0.0);
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(7))).min(Duration::from_secs(10));
                    tracing::warn!(%error, retry_in = ?pause, "the MQTT broker is not reachable");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            },
            _ = routes_changed.notified() => {
                reload(store.as_ref(), &client, &mut routes, &mut subscribed).await;
                routes_now.send_replace(Arc::new(routes.clone()));
            }
            _ = refresh.tick() => {
                reload(store.as_ref(), &client, &mut routes, &mut subscribed).await;
                routes_now.send_replace(Arc::new(routes.clone()));
            }
            _ = shutdown.cancelled() => {
                drop(publishes);
                let _ = handler.await;
                let _ = client.try_disconnect();
                metrics::gauge!("kait_mqtt_connected").set(0.0);
                return;
            }
        }
    }
}

async fn reload(
    store: &dyn Store,
    client: &AsyncClient,
    routes: &mut Routes,
    subscribed: &mut std::collections::BTreeSet<String>,
) {
    match Routes::load(store).await {
        Ok(fresh) => {
            *routes = fresh;
            resubscribe(client, routes, subscribed).await;
        }
        Err(error) => tracing::warn!(%error, "reading the MQTT routes failed"),
    }
}

/// Subscribes to the filters routes need and unsubscribes from those none needs any more.
async fn resubscribe(
    client: &AsyncClient,
    routes: &Routes,
    subscribed: &mut std::collections::BTreeSet<String>,
) {
    let wanted = routes.filters();
    for filter in wanted.difference(subscribed) {
        if let Err(error) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
            tracing::warn!(%error, filter, "subscribing failed");
        }
    }
    for filter in subscribed.difference(&wanted) {
        if let Err(error) = client.unsubscribe(filter.clone()).await {
            tracing::warn!(%error, filter, "unsubscribing failed");
        }
    }
    *subscribed = wanted;
}

/// The most publishes stored together (more than any broker's usual in-flight window).
const BATCH: usize = 256;

fn outcome(outcome: &'static str) {
    metrics::counter!("kait_mqtt_messages_total", "outcome" => outcome).increment(1);
}

/// Takes the publishes that have arrived, stores them, and acknowledges them, until the poll
/// loop stops sending. Within a batch, messages with the same ordering key are stored in the
/// order they came, and the others concurrently (so they share the store's group commits).
async fn handle_batches(
    store: Arc<dyn Store>,
    routes: tokio::sync::watch::Receiver<Arc<Routes>>,
    client: AsyncClient,
    mut arrived: tokio::sync::mpsc::Receiver<rumqttc::Publish>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while arrived.recv_many(&mut batch, BATCH).await > 0 {
        let routes = routes.borrow().clone();
        let prepared: Vec<Option<(MqttRouteId, kait_devices::DeviceMessage)>> = batch
            .iter()
            .map(|publish| prepare(&routes, publish))
            .collect();
        // Each application once per batch, before any write, so that the writes below are
        // handed to the store in arrival order (each future sends its job when first polled,
        // and they are polled in order): one device's messages commit in the order they came,
        // and the batch shares the store's group commits.
        let mut apps: std::collections::HashMap<String, Option<kait_core::AppId>> =
            Default::default();
        for (_, mapped) in prepared.iter().flatten() {
            if !apps.contains_key(&mapped.app) {
                let Some(app) = find_app(store.as_ref(), &mapped.app, &shutdown).await else {
                    return;
                };
                apps.insert(mapped.app.clone(), app);
            }
        }
        let stored = join_in_order(
            prepared
                .iter()
                .flatten()
                .map(|(route_id, mapped)| {
                    store_one(
                        store.as_ref(),
                        route_id,
                        mapped,
                        apps[&mapped.app].clone(),
                        &shutdown,
                    )
                })
                .collect(),
        )
        .await;
        if stored.contains(&false) {
            // Stopping before all were stored: the broker keeps the batch for next time.
            return;
        }
        for publish in batch.drain(..) {
            if let Err(error) = client.ack(&publish).await {
                tracing::warn!(%error, "acknowledging an MQTT message failed; the broker sends it again");
            }
        }
    }
}

/// The message a publish becomes through the first route that matches its topic; `None` when
/// it becomes none (no route, or one that cannot map it: logged and counted, and acknowledged,
/// since sending it again would not help).
fn prepare(
    routes: &Routes,
    publish: &rumqttc::Publish,
) -> Option<(MqttRouteId, kait_devices::DeviceMessage)> {
    let Some((route_id, mapped)) = routes.routes.iter().find_map(|(id, route)| {
        route
            .message(&publish.topic, &publish.payload, MAX_DEPTH)
            .map(|mapped| (id, mapped))
    }) else {
        outcome("unrouted");
        tracing::debug!(topic = %publish.topic, "no MQTT route for this topic");
        return None;
    };
    match mapped {
        Ok(mapped) => Some((route_id.clone(), mapped)),
        Err(reason) => {
            outcome("refused");
            tracing::warn!(route = %route_id, topic = %publish.topic, %reason, "an MQTT message the route cannot map");
            None
        }
    }
}

/// Runs `futures` together, polling them in their order every time (so each takes its first
/// step, here handing its job to the store, in that order). `join_all` does not promise this:
/// past 30 futures it polls new ones in another order, which reversed a device's messages
/// (found by the ordering test in `tests/it/devices.rs`).
async fn join_in_order<F: std::future::Future<Output = bool>>(futures: Vec<F>) -> Vec<bool> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<bool>> = vec![None; futures.len()];
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, result) in futures.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(done) => *result = Some(done),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|result| result.unwrap_or(false))
        .collect()
}

/// Runs a store operation until it is done: its result, or a refusal retrying will not
/// change (a conflict, or something not found); any other failure (the database away, a
/// broken connection) is retried with backoff. `None` only when the server stops first.
async fn until_done<T, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut operation: impl FnMut() -> Fut,
) -> Option<Result<T, StoreError>>
where
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match operation().await {
            Err(error) if !matches!(error, StoreError::Conflict(_) | StoreError::NotFound) => {
                tracing::warn!(%error, retry_in = ?pause, "{what} failed");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return None,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            done => return Some(done),
        }
    }
}

/// The application a message names (id or uid), `Some(None)` when there is none; `None` only
/// when the server stops first.
async fn find_app(
    store: &dyn Store,
    key: &str,
    shutdown: &CancellationToken,
) -> Option<Option<kait_core::AppId>> {
    let found = until_done("reading an MQTT message's application", shutdown, || {
        store.get_application(key)
    })
    .await?;
    Some(found.ok().flatten().map(|app| app.id))
}

/// Stores one mapped message. `true` once it is committed or cannot be (no such application:
/// logged and counted); a store failure is retried until it succeeds (a retried message may
/// then commit after a later one of its device); `false` only when the server stops first.
async fn store_one(
    store: &dyn Store,
    route_id: &MqttRouteId,
    mapped: &kait_devices::DeviceMessage,
    app_id: Option<kait_core::AppId>,
    shutdown: &CancellationToken,
) -> bool {
    let no_application = || {
        outcome("no_application");
        tracing::warn!(route = %route_id, app = %mapped.app, "an MQTT message for an application that does not exist");
        true
    };
    let Some(app_id) = app_id else {
        return no_application();
    };
    let stored = until_done("storing an MQTT message", shutdown, || {
        accept(store, mapped, app_id.clone())
    })
    .await;
    match stored {
        None => false,
        Some(Ok(())) => {
            outcome("accepted");
            true
        }
        Some(Err(StoreError::Conflict(_))) => {
            outcome("duplicate");
            true
        }
        // Deleted since the batch looked it up (`until_done` retries every other failure).
        Some(Err(_)) => no_application(),
    }
}

async fn accept(
    store: &dyn Store,
    mapped: &kait_devices::DeviceMessage,
    app_id: kait_core::AppId,
) -> Result<(), StoreError> {
    let (payload, raw) = match &mapped.body {
        Body::Json(text) => (text.clone(), None),
        Body::Raw {
            content_type,
            bytes,
        } => (
            "{}".to_owned(),
            Some(RawPayload {
                content_type: (*content_type).to_owned(),
                body: bytes.clone(),
                headers: Vec::new(),
            }),
        ),
    };
    store
        .create_message(NewMessage::new(Message {
            id: MessageId::generate(),
            app_id,
            event_type: mapped.event_type.clone(),
            event_id: mapped.event_id.clone(),
            channels: None,
            ordering_key: mapped.ordering_key.clone(),
            payload,
            raw,
            attachments: Vec::new(),
            created_at: kait_core::time::now_millis(),
            deliver_at: None,
        }))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_read_with_their_defaults() {
        let plain = MqttConfig::parse("mqtt://127.0.0.1", None).unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.tls),
            ("127.0.0.1", 1883, false)
        );
        assert_eq!(plain.client_id, "kait");
        let secure = MqttConfig::parse(
            "mqtts://kait%40site:p%3Ass@broker.example:8884",
            Some("node-2".into()),
        )
        .unwrap();
        assert_eq!((secure.port, secure.tls), (8884, true));
        assert_eq!(secure.username.as_deref(), Some("kait@site"));
        assert_eq!(secure.password.as_deref(), Some("p:ss"));
        assert_eq!(secure.client_id, "node-2");
        for bad in [
            "http://broker",
            "mqtt://",
            "mqtt://broker/path",
            "not a url",
        ] {
            assert!(MqttConfig::parse(bad, None).is_err(), "{bad}");
        }
        assert!(MqttConfig::parse("mqtt://b", Some(String::new())).is_err());
    }
}
