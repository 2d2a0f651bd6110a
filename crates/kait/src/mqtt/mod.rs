//! The MQTT bridge (issue 16): Kait as an MQTT 5 client of an existing broker
//! (`--mqtt-url`), subscribed at QoS 1 with a persistent session.
//!
//! - **In** (`ingest.rs`): each publish on a route's topic becomes a message through its route
//!   (`kait-devices`), or a device's status on a presence route; the devices heard from are
//!   recorded (presence, `device.online`), and the publish is acknowledged (PUBACK) only after
//!   all that is committed: a crash before then leaves it with the broker, which sends it
//!   again. Who reads the route topics is [`Ingest`]: on PostgreSQL one node at a time, under
//!   the cluster's one session (`leader.rs`), so each device's order holds; or, opted in,
//!   every node through a shared subscription.
//! - **Connections** (`session.rs`): each is subscribed to what it reads, reconnects with
//!   backoff, and hands what arrives to its own batch handler, which acknowledges on it.
//! - **Out** (`link.rs`): commands to devices, published with a response topic and
//!   correlation data; replies come back on `{reply prefix}/{commandId}`, to which every node
//!   subscribes (not shared: the node whose request waits must see the reply).
//! - **Deadlines** (`sweep.rs`): devices gone silent, commands unanswered or expired.
//!
//! The broker being away never touches the HTTP API: the loop reconnects with backoff, and
//! `kait_mqtt_connected` (and the health route) say where it stands.

mod events;
mod ingest;
mod leader;
mod link;
mod session;
mod sweep;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use kait_core::MqttRouteId;
use kait_devices::{CommandTopic, ReplyTopic, Route, RouteSpec};
use kait_store::{Store, StoreError};
use rumqttc::v5::{EventLoop, MqttOptions};
use tokio_util::sync::CancellationToken;

pub use link::Bridge;

/// Where the broker is, who Kait is to it, and where commands and replies travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The session the broker keeps subscriptions and unacknowledged messages under, so it
    /// must be stable across restarts: the cluster's one session in [`Ingest::Leader`] mode
    /// (each node adds a clean session of its own for commands and replies), each node's own
    /// otherwise.
    pub client_id: String,
    /// `--mqtt-command-topic`: where a command is published.
    pub command_topic: CommandTopic,
    /// `--mqtt-reply-topic`: the prefix of the topics replies come back on.
    pub reply_topic: ReplyTopic,
    /// Which nodes read the route topics.
    pub ingest: Ingest,
    /// Certificate authorities trusted for `mqtts://` beside the system's (`--ca-file`).
    pub extra_roots: Vec<kait_deliver::CertificateDer<'static>>,
}

/// Which nodes of a cluster read device messages (the route topics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingest {
    /// A node on its own (SQLite): its session reads everything.
    Alone,
    /// One node at a time, the holder of the store's `mqtt-ingest` role, reads under the
    /// cluster's one session (`client_id`): when it dies, the next holder resumes that
    /// session and the broker sends it what was not acknowledged. Each device's messages are
    /// stored in the order the broker sent them, so endpoints that ask for key ordering get
    /// them in that order. The default on PostgreSQL.
    Leader,
    /// Every node reads through the shared subscription `$share/{group}/…`, each message going
    /// to one node (`--mqtt-shared-group`): reading scales out, but a device's messages may be
    /// stored out of order unless the broker keeps each topic with one member of the group
    /// (Mosquitto and HiveMQ deal round-robin; EMQX can hash by topic).
    Shared(String),
}

/// The default `--mqtt-command-topic`.
pub const DEFAULT_COMMAND_TOPIC: &str = "devices/{device}/commands/{name}";
/// The default `--mqtt-reply-topic`.
pub const DEFAULT_REPLY_TOPIC: &str = "kait/replies";

impl MqttConfig {
    /// Reads `mqtt://[user[:password]@]host[:port]` (1883) or `mqtts://…` (8883), with the
    /// default command and reply topics, for a node on its own.
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
            command_topic: CommandTopic::parse(DEFAULT_COMMAND_TOPIC).expect("a valid default"),
            reply_topic: ReplyTopic::parse(DEFAULT_REPLY_TOPIC).expect("a valid default"),
            ingest: Ingest::Alone,
            extra_roots: Vec::new(),
        })
    }

    /// The subscription for a route's filter: shared across the group's nodes, if any.
    fn subscription(&self, filter: &str) -> String {
        match &self.ingest {
            Ingest::Shared(group) => format!("$share/{group}/{filter}"),
            Ingest::Alone | Ingest::Leader => filter.to_owned(),
        }
    }

    /// The node's own connection: the persistent session, or in [`Ingest::Leader`] mode a
    /// clean one of its own (commands and replies need no memory across restarts: a waiting
    /// request lives in this process).
    fn own_options(&self) -> anyhow::Result<MqttOptions> {
        match self.ingest {
            Ingest::Leader => {
                let id = format!("{}-{:08x}", self.client_id, rand::random::<u32>());
                self.options(&id, false)
            }
            Ingest::Alone | Ingest::Shared(_) => self.options(&self.client_id, true),
        }
    }

    /// The connection of the node that reads for the cluster ([`Ingest::Leader`]).
    fn ingest_options(&self) -> anyhow::Result<MqttOptions> {
        self.options(&self.client_id, true)
    }

    fn options(&self, client_id: &str, persistent: bool) -> anyhow::Result<MqttOptions> {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_clean_start(!persistent)
            // MQTT 5 ends a session at disconnect unless told otherwise: keep it a week, so
            // what devices publish while Kait restarts waits for it.
            .set_session_expiry_interval(persistent.then_some(7 * 24 * 3600))
            .set_manual_acks(true)
            .set_keep_alive(Duration::from_secs(30))
            // The broker drops a larger publish for this client instead of sending it.
            .set_max_packet_size(Some(MAX_PACKET_BYTES));
        if let (Some(username), password) = (&self.username, &self.password) {
            options.set_credentials(username, password.clone().unwrap_or_default());
        }
        if self.tls {
            // The same verifier as HTTPS endpoints: the platform's roots and `--ca-file`.
            let tls = kait_deliver::tls_client_config(&self.extra_roots)
                .map_err(|reason| anyhow::anyhow!("TLS for the MQTT broker: {reason}"))?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(tls)),
            ));
        }
        Ok(options)
    }
}

/// The largest publish Kait takes from the broker (as the API's default body limit).
const MAX_PACKET_BYTES: u32 = 1024 * 1024 + 1024;
/// Depth the payloads of device messages may nest to (as the API's `--max-payload-depth`).
const MAX_DEPTH: usize = 64;
/// How often routes are read again without being told (another node's change).
const ROUTES_REFRESH: Duration = Duration::from_secs(5);

/// The routes in force, in creation order.
#[derive(Clone, Default)]
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
}

/// Whether the bridge is connected to its broker now (for the health route).
#[derive(Clone, Default)]
pub struct Connected(Arc<AtomicBool>);

impl Connected {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
        metrics::gauge!("kait_mqtt_connected").set(if connected { 1.0 } else { 0.0 });
    }
}

/// Runs the bridge until shutdown: the node's own connection here (see `session.rs`), the
/// routes followed in `follow_routes`, the cluster's reading of device messages in
/// `leader.rs` (in [`Ingest::Leader`] mode), the deadlines in `sweep::run`.
pub async fn run(
    bridge: Arc<Bridge>,
    events: EventLoop,
    routes_changed: Arc<tokio::sync::Notify>,
    other_nodes_check: Option<Duration>,
    shutdown: CancellationToken,
) {
    let routes = match Routes::load(bridge.store.as_ref()).await {
        Ok(routes) => routes,
        Err(error) => {
            tracing::warn!(%error, "reading the MQTT routes failed; starting with none");
            Routes::default()
        }
    };
    let (routes_now, routes_seen) = tokio::sync::watch::channel(Arc::new(routes));
    let follower = tokio::spawn(follow_routes(
        bridge.store.clone(),
        routes_now,
        routes_changed,
        shutdown.clone(),
    ));
    let sweeper = tokio::spawn(sweep::run(
        bridge.clone(),
        other_nodes_check,
        shutdown.clone(),
    ));
    let leader = (bridge.config.ingest == Ingest::Leader).then(|| {
        tokio::spawn(leader::lead(
            bridge.clone(),
            routes_seen.clone(),
            shutdown.clone(),
        ))
    });
    let reads = session::Reads {
        routes: bridge.config.ingest != Ingest::Leader,
        replies: true,
    };
    let connected = bridge.connected.clone();
    session::drive(
        bridge.clone(),
        bridge.client.clone(),
        events,
        reads,
        routes_seen,
        session::Reconnect::Always,
        move |up| connected.set(up),
        shutdown.clone(),
    )
    .await;
    let _ = bridge.client.try_disconnect();
    bridge.connected.set(false);
    let _ = follower.await;
    let _ = sweeper.await;
    if let Some(leader) = leader {
        let _ = leader.await;
    }
}

/// Reads the routes again when this node changed them, and every [`ROUTES_REFRESH`] (another
/// node's change), for the connections to subscribe to.
async fn follow_routes(
    store: Arc<dyn Store>,
    routes_now: tokio::sync::watch::Sender<Arc<Routes>>,
    routes_changed: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    let mut refresh = tokio::time::interval(ROUTES_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = routes_changed.notified() => {}
            _ = refresh.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match Routes::load(store.as_ref()).await {
            Ok(fresh) => {
                routes_now.send_replace(Arc::new(fresh));
            }
            Err(error) => tracing::warn!(%error, "reading the MQTT routes failed"),
        }
    }
}

fn outcome(outcome: &'static str) {
    metrics::counter!("kait_mqtt_messages_total", "outcome" => outcome).increment(1);
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
