//! What makes many nodes on one database work together: wake-ups across nodes
//! (`LISTEN/NOTIFY`), node leases (heartbeat and reaper), and handing endpoints back when a
//! node's lane for them has gone idle.
//!
//! **Leases.** Each node has a row in `kait_node` that it renews every tick. A delivery a node
//! claimed carries its id (`claimed_by`), and an endpoint's lane belongs to one node
//! (`endpoint_owner`). A node whose heartbeat is older than the lease is dead: any node's
//! reaper deletes its row and makes its claimed deliveries pending again in one statement, and
//! from then on its endpoints can be taken by the next claim. Deliveries keep their due time
//! when freed, so an ordered endpoint's queue stays in order.
//!
//! **Wake-ups.** A commit that made deliveries due, added messages or changed endpoints wakes
//! this node directly and asks the notifier to `NOTIFY` the others. The notifier sends outside
//! any message transaction and coalesces what piled up while it was sending, so the hot path
//! never waits for the cluster and a burst costs one notification, not one per message. A
//! node that was alone at its last heartbeat tells nobody about new messages and due work
//! (its own commits woke it directly); a node that joins is seen within a tick, and wakes
//! itself once when it starts listening. Endpoint changes are always sent. Due work for
//! endpoints other nodes run names those nodes, and only they wake: no other node may claim
//! it, so waking the rest would only cost each of them an empty claim.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kait_core::AppId;
use kait_core::time::{Millis, now_millis};
use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;

use super::{PgOptions, Shared};
use crate::StoreResult;

const DUE: u8 = 1;
const MESSAGES: u8 = 2;
const CONFIG: u8 = 4;

/// This node's signals, fed by its own commits and by other nodes' notifications.
pub struct Signals {
    pub due: Arc<Notify>,
    pub config_epoch: AtomicU64,
    /// Long-polls and streams, woken per application.
    pub messages: Arc<crate::app_signals::AppSignals>,
    /// Kinds of change other nodes still have to hear about.
    pending: AtomicU8,
    /// Applications with new messages other nodes still have to hear about.
    pending_apps: std::sync::Mutex<std::collections::HashSet<AppId>>,
    /// Which nodes still have to hear about due work.
    pending_due: std::sync::Mutex<DueTargets>,
    notifier: Notify,
    /// No other node was alive at the last heartbeat.
    alone: std::sync::atomic::AtomicBool,
}

impl Signals {
    pub fn new() -> Self {
        Self {
            due: Arc::new(Notify::new()),
            config_epoch: AtomicU64::new(0),
            messages: Default::default(),
            pending: AtomicU8::new(0),
            pending_apps: Default::default(),
            pending_due: Default::default(),
            notifier: Notify::new(),
            alone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// New due work any node may take: wakes this node and every other.
    pub fn deliveries_due(&self) {
        self.due.notify_one();
        self.pending_due.lock().expect("pending due lock").everyone = true;
        self.tell_cluster(DUE);
    }

    /// New due work for endpoints these other nodes run: wakes them alone, since no other
    /// node may claim it (a claim skips endpoints another live node runs).
    pub fn deliveries_due_on(&self, nodes: impl IntoIterator<Item = String>) {
        self.pending_due
            .lock()
            .expect("pending due lock")
            .nodes
            .extend(nodes);
        self.tell_cluster(DUE);
    }

    /// The payload of the due notification: the nodes to wake, joined by commas, or empty
    /// for every node.
    fn take_due_payload(&self) -> String {
        let targets = std::mem::take(&mut *self.pending_due.lock().expect("pending due lock"));
        if targets.everyone || targets.nodes.len() > MAX_LISTED_NODES {
            return String::new();
        }
        targets.nodes.into_iter().collect::<Vec<_>>().join(",")
    }

    pub fn messages_added(&self, app_ids: &[AppId]) {
        if app_ids.is_empty() {
            return;
        }
        self.messages.notify(app_ids);
        self.pending_apps
            .lock()
            .expect("pending apps lock")
            .extend(app_ids.iter().cloned());
        self.tell_cluster(MESSAGES);
    }

    /// The notification payloads that tell other nodes which applications have news: ids
    /// joined by commas within PostgreSQL's payload limit, or [`EVERY_APP`] when there are
    /// too many to list.
    fn take_pending_apps(&self) -> Vec<String> {
        let apps = std::mem::take(&mut *self.pending_apps.lock().expect("pending apps lock"));
        if apps.len() > MAX_LISTED_APPS {
            return vec![EVERY_APP.to_owned()];
        }
        let ids: Vec<&str> = apps.iter().map(AppId::as_str).collect();
        ids.chunks(APPS_PER_NOTIFICATION)
            .map(|chunk| chunk.join(","))
            .collect()
    }

    /// What another node said about new messages.
    fn heard_messages(&self, payload: &str) {
        if payload.is_empty() || payload == EVERY_APP {
            self.messages.notify_all();
            return;
        }
        let apps: Vec<AppId> = payload
            .split(',')
            .filter(|id| AppId::has_prefix(id))
            .map(|id| AppId::from_trusted(id.to_owned()))
            .collect();
        self.messages.notify(&apps);
    }

    pub fn config_changed(&self) {
        self.config_epoch.fetch_add(1, Ordering::SeqCst);
        self.tell_cluster(CONFIG);
    }

    fn tell_cluster(&self, kind: u8) {
        if self.pending.fetch_or(kind, Ordering::SeqCst) == 0 {
            self.notifier.notify_one();
        }
    }

    /// What another node told us (or that we may have missed something).
    fn heard(&self, kind: u8) {
        if kind & DUE != 0 {
            self.due.notify_one();
        }
        if kind & MESSAGES != 0 {
            self.messages.notify_all();
        }
        if kind & CONFIG != 0 {
            self.config_epoch.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Who is owed a due notification.
#[derive(Default)]
struct DueTargets {
    everyone: bool,
    nodes: HashSet<String>,
}

/// Whether a due notification is for this node: it names no node (everyone) or names it.
fn due_for(payload: &str, node: &str) -> bool {
    payload.is_empty() || payload.split(',').any(|named| named == node)
}

/// Past this many nodes in one due notification, it wakes every node (node ids are about 21
/// bytes; PostgreSQL's payload limit is 8,000).
const MAX_LISTED_NODES: usize = 300;

/// The payload that wakes every application's streams.
const EVERY_APP: &str = "*";
/// Application ids per notification: about 3 KB, well within PostgreSQL's 8,000-byte payload.
const APPS_PER_NOTIFICATION: usize = 100;
/// Past this many applications in one notification round, a node just wakes every stream.
const MAX_LISTED_APPS: usize = 1000;

/// The notification channel for one kind of change; channels are per schema, so that
/// installations sharing a database do not wake each other.
fn channel(schema: &str, kind: u8) -> String {
    let suffix = match kind {
        DUE => "due",
        MESSAGES => "messages",
        _ => "endpoints",
    };
    format!("kait_{schema}_{suffix}")
}

/// Sends the notifications other nodes are owed, coalescing bursts.
pub async fn notify(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = shared.signals.notifier.notified() => {}
            _ = stop.cancelled() => return,
        }
        let mut kinds = shared.signals.pending.swap(0, Ordering::SeqCst);
        if shared.signals.alone.load(Ordering::SeqCst) {
            // Nobody to tell about messages and due work; endpoint changes still go out, in
            // case a node joined since the last heartbeat.
            shared.signals.take_pending_apps();
            shared.signals.take_due_payload();
            kinds &= CONFIG;
            if kinds == 0 {
                continue;
            }
        }
        let result: StoreResult<()> = async {
            let client = shared.pool.get().await?;
            let notify = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
            for kind in [DUE, MESSAGES, CONFIG] {
                if kinds & kind == 0 {
                    continue;
                }
                let payloads = match kind {
                    MESSAGES => shared.signals.take_pending_apps(),
                    DUE => vec![shared.signals.take_due_payload()],
                    _ => vec![String::new()],
                };
                for payload in payloads {
                    client
                        .execute(&notify, &[&channel(&shared.options.schema, kind), &payload])
                        .await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "notifying other nodes failed; their safety poll will catch up");
        }
    }
}

/// Listens for other nodes' notifications on a connection of its own, reconnecting when it
/// drops (and then assuming something was missed).
pub async fn listen(shared: Arc<Shared>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        if let Err(error) = listen_once(&shared, &stop).await {
            tracing::warn!(%error, "the notification listener lost its connection; reconnecting");
        }
        shared.signals.heard(DUE | MESSAGES | CONFIG);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn listen_once(shared: &Shared, stop: &CancellationToken) -> StoreResult<()> {
    let (client, mut connection) = shared
        .options
        .connection_config()
        .connect(tokio_postgres::NoTls)
        .await?;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages =
            futures_util::stream::poll_fn(move |context| connection.poll_message(context));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    let heard = (
                        notification.channel().to_owned(),
                        notification.payload().to_owned(),
                    );
                    if sender.send(heard).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let schema = &shared.options.schema;
    let kinds = [DUE, MESSAGES, CONFIG];
    let names: Vec<String> = kinds.iter().map(|kind| channel(schema, *kind)).collect();
    let listen: String = names
        .iter()
        .map(|name| format!("LISTEN \"{name}\";"))
        .collect();
    client.batch_execute(&listen).await?;
    // Anything that happened before LISTEN took effect is caught by this first wake-up.
    shared.signals.heard(DUE | MESSAGES | CONFIG);
    loop {
        tokio::select! {
            heard = receiver.recv() => {
                let Some((name, payload)) = heard else { break };
                match names.iter().position(|known| *known == name).map(|index| kinds[index]) {
                    Some(MESSAGES) => shared.signals.heard_messages(&payload),
                    Some(DUE) if !due_for(&payload, &shared.node.get()) => {}
                    Some(kind) => shared.signals.heard(kind),
                    None => {}
                }
            }
            _ = stop.cancelled() => break,
        }
    }
    drop(client);
    match driver.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.into()),
        Err(error) => Err(crate::StoreError::database(
            crate::DatabaseFailure::Unavailable,
            "connection task",
            error,
        )),
    }
}

/// This node's identity in `kait_node`. It changes only when the node finds that the others
/// declared it dead (its claims were freed), so that old claims cannot come back to life.
pub struct NodeIdentity {
    id: Mutex<Arc<str>>,
}

impl NodeIdentity {
    pub fn new() -> Self {
        Self {
            id: Mutex::new(fresh_node_id()),
        }
    }

    pub fn get(&self) -> Arc<str> {
        self.id.lock().expect("node id lock").clone()
    }

    fn renew(&self) -> Arc<str> {
        let id = fresh_node_id();
        *self.id.lock().expect("node id lock") = id.clone();
        id
    }
}

fn fresh_node_id() -> Arc<str> {
    format!("node_{:016x}", rand::random::<u64>()).into()
}

/// Registers this node (called at open and when it was declared dead).
pub async fn register(shared: &Shared, id: &str) -> StoreResult<()> {
    let now = now_millis();
    shared
        .pool
        .get()
        .await?
        .execute(
            "INSERT INTO kait_node (id, started_at, heartbeat_at) VALUES ($1, $2, $2)",
            &[&id, &now],
        )
        .await?;
    Ok(())
}

/// How often a node renews its lease, reaps dead nodes and hands back idle endpoints.
pub fn tick(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Heartbeat, reaper and endpoint hand-back, every [`tick`], until stopped.
pub async fn maintain(shared: Arc<Shared>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(tick(shared.options.lease));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(error) = heartbeat(&shared).await {
            tracing::warn!(%error, "renewing this node's lease failed");
        }
        match reap(&shared).await {
            Ok(0) => {}
            Ok(freed) => {
                tracing::warn!(
                    freed,
                    "a node's lease expired; its deliveries are due again"
                );
                shared.signals.deliveries_due();
            }
            Err(error) => tracing::warn!(%error, "reaping expired nodes failed"),
        }
        if let Err(error) = release_idle(&shared).await {
            tracing::warn!(%error, "handing back idle endpoints failed");
        }
    }
}

async fn heartbeat(shared: &Shared) -> StoreResult<()> {
    let id = shared.node.get();
    let nodes = shared
        .pool
        .get()
        .await?
        .query_opt(
            "UPDATE kait_node SET heartbeat_at = $2 WHERE id = $1 \
             RETURNING (SELECT count(*) FROM kait_node)",
            &[&&*id, &now_millis()],
        )
        .await?;
    let alone = nodes
        .as_ref()
        .is_some_and(|row| row.try_get::<_, i64>(0).is_ok_and(|count| count <= 1));
    shared.signals.alone.store(alone, Ordering::SeqCst);
    if nodes.is_none() {
        let id = shared.node.renew();
        tracing::warn!(
            node = &*id,
            "this node's lease had expired and its claims were freed; joining again as a new node"
        );
        register(shared, &id).await?;
    }
    Ok(())
}

/// Deletes nodes whose lease expired and frees their claims and endpoints. One transaction,
/// so that an endpoint cannot change hands while its deliveries are still marked as the dead
/// node's; the freeing statements run after the delete, with a fresh snapshot, so they also
/// see a claim the dead node committed just before (claims hold their node row `FOR SHARE`,
/// which the delete waits for). Returns how many deliveries were freed.
async fn reap(shared: &Shared) -> StoreResult<u64> {
    let expired_before: Millis = now_millis() - shared.options.lease.as_millis() as Millis;
    let mut client = shared.pool.get().await?;
    let transaction = client.transaction().await?;
    let dead = transaction
        .execute(
            "DELETE FROM kait_node WHERE heartbeat_at < $1",
            &[&expired_before],
        )
        .await?;
    if dead == 0 {
        transaction.commit().await?;
        return Ok(0);
    }
    let freed = transaction
        .execute(
            "UPDATE delivery SET status = 1, claimed_by = NULL, resend_requested = FALSE WHERE status = 3 \
             AND NOT EXISTS (SELECT 1 FROM kait_node n WHERE n.id = delivery.claimed_by)",
            &[],
        )
        .await?;
    transaction
        .execute(
            "DELETE FROM endpoint_owner o WHERE NOT EXISTS \
             (SELECT 1 FROM kait_node n WHERE n.id = o.node_id)",
            &[],
        )
        .await?;
    transaction.commit().await?;
    tracing::warn!(dead, "nodes stopped renewing their lease and were removed");
    Ok(freed)
}

/// Endpoints whose lane went idle on this node: candidates to hand back to the cluster.
#[derive(Default)]
pub struct IdleEndpoints {
    ids: Mutex<HashSet<String>>,
}

impl IdleEndpoints {
    pub fn add(&self, id: &str) {
        self.ids
            .lock()
            .expect("idle set lock")
            .insert(id.to_owned());
    }

    pub fn remove_all(&self, ids: &[String]) {
        let mut set = self.ids.lock().expect("idle set lock");
        for id in ids {
            set.remove(id);
        }
    }

    fn take(&self) -> Vec<String> {
        self.ids.lock().expect("idle set lock").drain().collect()
    }
}

/// Gives up ownership of endpoints whose lane went idle, unless this node still has one of
/// their deliveries claimed (an outcome not yet recorded, or a claim made since): those are
/// tried again next tick. The owner row is locked first, so a claim running at the same time
/// either finishes before the check (and is seen) or starts after the release.
async fn release_idle(shared: &Shared) -> StoreResult<()> {
    let idle = shared.idle.take();
    if idle.is_empty() {
        return Ok(());
    }
    let node = shared.node.get();
    let mut client = shared.pool.get().await?;
    let mut keep = Vec::new();
    for endpoint_id in idle {
        let transaction = client.transaction().await?;
        let owned = transaction
            .query_opt(
                "SELECT 1 FROM endpoint_owner WHERE endpoint_id = $1 AND node_id = $2 FOR UPDATE",
                &[&endpoint_id, &&*node],
            )
            .await?;
        if owned.is_none() {
            transaction.commit().await?;
            continue;
        }
        let busy = transaction
            .query_opt(
                "SELECT 1 FROM delivery WHERE claimed_by = $1 AND endpoint_id = $2 AND status = 3 LIMIT 1",
                &[&&*node, &endpoint_id],
            )
            .await?;
        if busy.is_some() {
            keep.push(endpoint_id);
        } else {
            transaction
                .execute(
                    "DELETE FROM endpoint_owner WHERE endpoint_id = $1",
                    &[&endpoint_id],
                )
                .await?;
        }
        transaction.commit().await?;
    }
    for endpoint_id in keep {
        shared.idle.add(&endpoint_id);
    }
    Ok(())
}

/// On a clean stop: frees what this node still has claimed, hands back its endpoints and
/// removes its row, so the others need not wait for the lease to expire.
pub async fn leave(shared: &Shared) -> StoreResult<()> {
    let node = shared.node.get();
    let mut client = shared.pool.get().await?;
    let transaction = client.transaction().await?;
    let freed = transaction
        .execute(
            "UPDATE delivery SET status = 1, claimed_by = NULL, resend_requested = FALSE \
             WHERE status = 3 AND claimed_by = $1",
            &[&&*node],
        )
        .await?;
    transaction
        .execute("DELETE FROM endpoint_owner WHERE node_id = $1", &[&&*node])
        .await?;
    transaction
        .execute("DELETE FROM kait_node WHERE id = $1", &[&&*node])
        .await?;
    transaction.commit().await?;
    if freed > 0 {
        shared.signals.deliveries_due();
    }
    Ok(())
}

impl PgOptions {
    /// The tokio-postgres settings for one connection: the URL, plus the schema as search
    /// path and the statement timeout.
    pub fn connection_config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        let mut options = config.get_options().unwrap_or("").to_owned();
        options.push_str(&format!(
            " -c search_path={} -c statement_timeout={}",
            self.schema,
            self.statement_timeout.as_millis()
        ));
        config.options(options.trim());
        if config.get_application_name().is_none() {
            config.application_name("kait");
        }
        config
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn due_work_goes_to_the_nodes_named_or_to_all() {
        let signals = Signals::new();
        signals.deliveries_due_on(["node_a".to_owned(), "node_b".to_owned()]);
        let payload = signals.take_due_payload();
        assert!(due_for(&payload, "node_a") && due_for(&payload, "node_b"));
        assert!(!due_for(&payload, "node_c"), "{payload}");
        assert!(!due_for(&payload, "node_"), "whole ids only");

        signals.deliveries_due_on(["node_a".to_owned()]);
        signals.deliveries_due();
        assert_eq!(signals.take_due_payload(), "", "any node may take it: all");
        assert!(due_for("", "node_c"));

        let many = (0..=MAX_LISTED_NODES).map(|index| format!("node_{index}"));
        signals.deliveries_due_on(many);
        assert_eq!(signals.take_due_payload(), "", "too many to list");
    }
}
