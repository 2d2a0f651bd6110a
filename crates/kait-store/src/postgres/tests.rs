//! The PostgreSQL store's own behaviour, against the real server: group commit with conflicts,
//! commit-ordered positions with writers on two nodes, claims and leases across nodes,
//! endpoint hand-back, retention.
//!
//! Each test works in a schema of its own, dropped at the end. Without a reachable server the
//! tests fail and say how to start one: a test that did not run never reports a pass.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kait_core::time::now_millis;
use kait_core::{DeliveryStatus, EndpointId};

use super::{PgOptions, PgStore};
use crate::conformance::{application, endpoint, message, outcome};
use crate::prelude::*;
use crate::{MessageFilter, NextStep, StoreError};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

struct TestSchema {
    options: PgOptions,
}

impl TestSchema {
    /// A fresh schema on the test server; without one the test fails and says how to get
    /// one (a PostgreSQL test that did not run must not pass).
    async fn create() -> Self {
        let url = std::env::var("KAIT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let mut options = PgOptions::new(&url, crate::sealing::SecretKeys::ephemeral())
            .expect("test database URL parses");
        if let Err(error) = options.config.connect(tokio_postgres::NoTls).await {
            panic!(
                "PostgreSQL at {url} is not reachable ({error}). The PostgreSQL store tests need \
                 one: start it (e.g. `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust \
                 postgres:16`) or set KAIT_TEST_DATABASE_URL; `cargo test -p kait-store sqlite` runs \
                 only the SQLite ones"
            );
        }
        options.schema = format!("kait_t_{:016x}", rand::random::<u64>());
        options.pool_size = 4;
        options.lease = Duration::from_secs(1);
        Self { options }
    }

    async fn open(&self) -> PgStore {
        PgStore::open(self.options.clone())
            .await
            .expect("store opens")
    }

    async fn drop_schema(self) {
        let (client, connection) = self
            .options
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.options.schema))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_conflicts_commits_the_rest() {
    let schema = TestSchema::create().await;
    let store = Arc::new(schema.open().await);
    let app = store.create_application(application()).await.unwrap();
    store
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();

    let first = store
        .create_message(message(&app.id, "a.b", Some("evt-1")))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.deliveries, 1);

    // Sent at once, so that they share a batch: duplicates inside it and against the table.
    let mut keyed = message(&app.id, "a.b", None);
    keyed.idempotency_key = Some("key-1".into());
    let mut keyed_again = message(&app.id, "a.b", None);
    keyed_again.idempotency_key = Some("key-1".into());
    let jobs = vec![
        message(&app.id, "a.b", Some("evt-1")),
        message(&app.id, "a.b", Some("evt-2")),
        message(&app.id, "a.b", Some("evt-2")),
        keyed,
        keyed_again,
        message(&app.id, "a.b", None),
    ];
    let results = futures_util::future::join_all(
        jobs.into_iter()
            .map(|job| {
                let store = store.clone();
                async move { store.create_message(job).await }
            })
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(matches!(results[0], Err(StoreError::Conflict(_))));
    assert!(results[1].as_ref().unwrap().created);
    assert!(matches!(results[2], Err(StoreError::Conflict(_))));
    let keyed = results[3].as_ref().unwrap();
    let repeat = results[4].as_ref().unwrap();
    assert!(keyed.created && !repeat.created);
    assert_eq!(
        repeat.message.id, keyed.message.id,
        "the key returns the first message"
    );
    assert!(results[5].as_ref().unwrap().created);

    // Later, the key still returns the first message.
    let mut later = message(&app.id, "a.b", None);
    later.idempotency_key = Some("key-1".into());
    let later = store.create_message(later).await.unwrap();
    assert!(!later.created);
    assert_eq!(later.message.id, keyed.message.id);

    let counts = store.delivery_counts().await.unwrap();
    assert_eq!(
        counts,
        vec![(DeliveryStatus::Pending, 4)],
        "one per created message"
    );
    drop(store);
    schema.drop_schema().await;
}

/// Writers on two nodes, one reader following positions: every message seen once, positions
/// strictly increasing, none skipped although commits interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_follow_commit_order_across_nodes() {
    let schema = TestSchema::create().await;
    let nodes = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let app = nodes[0].create_application(application()).await.unwrap();
    let mut poller = endpoint(&app.id, None);
    poller.kind = kait_core::EndpointKind::Polling;
    let poller = nodes[0].create_endpoint(poller, 100).await.unwrap();

    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (store, app_id) = (nodes[writer % 2].clone(), app.id.clone());
        writers.push(tokio::spawn(async move {
            for _ in 0..PER_WRITER {
                store
                    .create_message(message(&app_id, "a.b", None))
                    .await
                    .unwrap();
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut position = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < WRITERS * PER_WRITER {
        assert!(tokio::time::Instant::now() < deadline, "saw {}", seen.len());
        let page = nodes[1]
            .poll_messages(&poller, position, MessageFilter::default(), 50)
            .await
            .unwrap();
        for (at, message) in page {
            assert!(at > position, "positions only grow");
            assert_eq!(at, position + 1, "no position is skipped");
            position = at;
            assert!(seen.insert(message.id.clone()), "seen once: {}", message.id);
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        nodes[0]
            .poll_messages(&poller, position, MessageFilter::default(), 50)
            .await
            .unwrap()
            .is_empty()
    );
    drop(nodes);
    schema.drop_schema().await;
}

/// One node claims; the other gets nothing of that endpoint while the first lives; when the
/// first dies (no heartbeat), its deliveries are claimed by the survivor after the lease, and
/// the dead node's late outcome is not recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_claims_pass_to_the_living_after_the_lease() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    let app = first.create_application(application()).await.unwrap();
    let target = first
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    for _ in 0..5 {
        first
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap();
    }
    let claim = first.claim_due(now_millis(), 3, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 3);
    let held = claim.deliveries.clone();

    // The endpoint runs on the first node: the second may not take its other two.
    let other = second
        .claim_due(now_millis(), 10, Vec::new())
        .await
        .unwrap();
    assert!(other.deliveries.is_empty(), "{:?}", other.deliveries);
    assert_eq!(
        other.next_due_at, None,
        "nothing due that this node may take"
    );

    // The first node dies: no shutdown code, its heartbeat stops.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut taken = Vec::new();
    while taken.len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "took {}",
            taken.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        taken.extend(
            second
                .claim_due(now_millis(), 10, Vec::new())
                .await
                .unwrap()
                .deliveries,
        );
    }
    let ids: HashSet<i64> = taken.iter().map(|delivery| delivery.delivery_id).collect();
    assert_eq!(ids.len(), 5, "each delivery once");
    assert!(
        held.iter()
            .all(|delivery| ids.contains(&delivery.delivery_id))
    );
    let order: Vec<i64> = taken.iter().map(|delivery| delivery.delivery_id).collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        order, sorted,
        "freed deliveries keep their place in the queue"
    );

    // A zombie's outcome for a delivery it no longer holds is ignored.
    let zombie = schema.open().await;
    zombie
        .record_outcomes(
            vec![outcome(held[0].delivery_id, &held[0], NextStep::Succeeded)].into(),
            None,
        )
        .await
        .unwrap();
    let counts = second.endpoint_delivery_counts(&target.id).await.unwrap();
    assert_eq!(counts, vec![(DeliveryStatus::Sending, 5)]);
    drop((second, zombie));
    schema.drop_schema().await;
}

/// A role has one holder among live nodes: the others are refused while it lives; when it
/// dies, the role passes after its lease; when a holder stops cleanly, it passes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_has_one_live_holder() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    assert!(first.hold_role("mqtt-ingest").await.unwrap());
    assert!(first.hold_role("mqtt-ingest").await.unwrap(), "kept");
    assert!(!second.hold_role("mqtt-ingest").await.unwrap());
    assert!(
        second.hold_role("another").await.unwrap(),
        "roles are apart"
    );

    // The holder dies (its heartbeat stops): the role passes once its lease expired.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !second.hold_role("mqtt-ingest").await.unwrap() {
        assert!(tokio::time::Instant::now() < deadline, "never passed on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = schema.open().await;
    assert!(!third.hold_role("mqtt-ingest").await.unwrap());

    // A clean stop hands it over at once.
    second.close().await.unwrap();
    assert!(third.hold_role("mqtt-ingest").await.unwrap());
    drop((second, third));
    schema.drop_schema().await;
}

/// When the owner's lane goes idle and its outcomes are recorded, the endpoint is handed back
/// and another node can run it; while a claim is outstanding, it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_endpoint_is_handed_back() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    let app = first.create_application(application()).await.unwrap();
    let target = first
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    first
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let claimed = first.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claimed.deliveries.len(), 1);

    // Idle too early (outcome not recorded yet): the hand-back waits.
    first.endpoint_idle(&target.id);
    tokio::time::sleep(Duration::from_millis(700)).await;
    second
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert!(
        second
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );

    let delivery = &claimed.deliveries[0];
    first
        .record_outcomes(
            vec![outcome(delivery.delivery_id, delivery, NextStep::Succeeded)].into(),
            None,
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let claim = second
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap();
        if claim.deliveries.len() == 1 {
            assert_eq!(claim.deliveries[0].endpoint_id, target.id);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never handed back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the first node cannot take it back while the second holds a claim.
    first
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert!(
        first
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .is_empty()
    );
    drop((first, second));
    schema.drop_schema().await;
}

/// Two nodes given one `Idempotency-Key` at the same moment accept one message between them:
/// a commit that loses the race on the unique index is written again and answers with the
/// earlier message, never with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_on_two_nodes_makes_one_message() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    let app = first.create_application(application()).await.unwrap();
    for round in 0..30 {
        let key = format!("key-{round}");
        let mut one = message(&app.id, "a.b", None);
        one.idempotency_key = Some(key.clone());
        let mut other = message(&app.id, "a.b", None);
        other.idempotency_key = Some(key);
        let (one, other) = tokio::join!(first.create_message(one), second.create_message(other));
        let (one, other) = (one.unwrap(), other.unwrap());
        assert_eq!(one.message.id, other.message.id, "round {round}");
        assert_ne!(
            one.created, other.created,
            "round {round}: one of them created it"
        );
    }
    drop((first, second));
    schema.drop_schema().await;
}

/// A node hands a new delivery to its own dispatcher only when it runs the endpoint (taking
/// it in the commit if no live node does): while another node runs it, the delivery waits
/// for that node's claim, so one endpoint is never sent to from two nodes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_endpoints_owner_takes_hand_offs() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    let app = first.create_application(application()).await.unwrap();
    let target = first
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let mut first_queue = first.handoff(std::sync::Arc::new(|_: &_| true)).unwrap();
    let mut second_queue = second.handoff(std::sync::Arc::new(|_: &_| true)).unwrap();

    // The first node's commit takes the endpoint and hands the delivery over.
    first
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    let handed = first_queue
        .try_recv()
        .expect("the owner's commit hands over");
    assert_eq!(handed.endpoint_id, target.id);

    // The second node's commit may not: its delivery is pending, and only the owner claims it.
    let accepted = second
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(accepted.deliveries, 1);
    assert!(second_queue.try_recv().is_err(), "not the owner");
    assert!(
        second
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .is_empty(),
        "another live node runs the endpoint"
    );
    let claim = first.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    assert_eq!(claim.deliveries[0].msg_id, accepted.message.id);

    // Once the owner has recorded everything and handed the idle endpoint back, the second
    // node's next commit takes it.
    let outcomes: Vec<_> = [&handed, &claim.deliveries[0]]
        .into_iter()
        .map(|delivery| outcome(delivery.delivery_id, delivery, NextStep::Succeeded))
        .collect();
    first.record_outcomes(outcomes.into(), None).await.unwrap();
    first.endpoint_idle(&target.id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        second
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap();
        if let Ok(handed) = second_queue.try_recv() {
            assert_eq!(handed.endpoint_id, target.id);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never handed back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(first_queue.try_recv().is_err());
    drop((first, second));
    schema.drop_schema().await;
}

/// Due work for an endpoint another node runs wakes that node alone: a message accepted by a
/// node that does not run its endpoint is pending, its owner is told, and the others sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_work_wakes_only_the_endpoints_owner() {
    let schema = TestSchema::create().await;
    let owner = schema.open().await;
    let other = schema.open().await;
    let third = schema.open().await;
    let app = owner.create_application(application()).await.unwrap();
    let mut fifo = endpoint(&app.id, None);
    fifo.ordering = kait_core::DeliveryOrder::Fifo;
    owner.create_endpoint(fifo, 100).await.unwrap();
    owner
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(
        owner
            .claim_due(now_millis(), 10, Vec::new())
            .await
            .unwrap()
            .deliveries
            .len(),
        1,
        "the owner runs the endpoint now"
    );
    // Wake-ups stored before this point (start-up, the first message) are used up.
    let quiet = Duration::from_millis(300);
    let (owner_due, third_due) = (owner.due_signal(), third.due_signal());
    let _ = tokio::time::timeout(quiet, owner_due.notified()).await;
    let _ = tokio::time::timeout(quiet, third_due.notified()).await;

    let accepted = other
        .create_message(message(&app.id, "a.b", None))
        .await
        .unwrap();
    assert_eq!(accepted.deliveries, 1);
    tokio::time::timeout(Duration::from_secs(5), owner_due.notified())
        .await
        .expect("the owner is told");
    assert!(
        tokio::time::timeout(quiet, third_due.notified())
            .await
            .is_err(),
        "a node that does not run the endpoint is not woken"
    );
    drop((owner, other, third));
    schema.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_on_one_node_move_the_epoch_on_another() {
    let schema = TestSchema::create().await;
    let first = schema.open().await;
    let second = schema.open().await;
    let app = first.create_application(application()).await.unwrap();
    let before = second.config_epoch();
    let created = first
        .create_endpoint(endpoint(&app.id, None), 100)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while second.config_epoch() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no notification arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let endpoint_id: EndpointId = created.id;
    assert!(
        second
            .get_endpoint_by_id(&endpoint_id)
            .await
            .unwrap()
            .is_some()
    );
    drop((first, second));
    schema.drop_schema().await;
}

/// Runs one of the conformance tests (`crate::conformance`) on a store in a
/// schema of its own, dropped afterwards.
async fn on_fresh_schema(test: impl AsyncFnOnce(&dyn Store)) {
    let schema = TestSchema::create().await;
    let store = schema.open().await;
    test(&store).await;
    drop(store);
    schema.drop_schema().await;
}

/// Issue 11: a `pg_dump` held every endpoint's signing secret and custom headers in plain
/// text. Now they are sealed; a rotation reseals them; a node with the wrong key refuses
/// to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_resealed_on_rotation() {
    use crate::sealing::{SealingKey, SecretKeys};
    let mut schema = TestSchema::create().await;
    let (old_key, new_key) = (SealingKey::generate().0, SealingKey::generate().0);
    schema.options.secret_keys = SecretKeys::new(old_key.clone(), Vec::new());
    let store = schema.open().await;
    let app = store.create_application(application()).await.unwrap();
    let mut with_headers = endpoint(&app.id, None);
    with_headers
        .headers
        .insert("X-Api-Key".into(), "receiver-credential-7f3a".into());
    let created = store.create_endpoint(with_headers, 10).await.unwrap();
    let secret = created.secret.to_wire();
    let mut github = crate::conformance::source(None);
    github.config = serde_json::json!({ "secret": "provider-secret-51de" });
    github.token = "ingest-token-e08c".into();
    let github = store.create_source(github).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let url = std::env::var("KAIT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let dump = std::process::Command::new("pg_dump")
        .args(["--data-only", "--schema", &schema.options.schema, &url])
        .output()
        .expect("pg_dump runs (Debian's postgresql-client)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains(created.id.as_str()),
        "the dump holds the endpoint row"
    );
    let secret_key = secret.trim_start_matches("whsec_");
    assert!(
        !dump.contains(secret_key),
        "the signing secret is in the dump"
    );
    assert!(
        !dump.contains("receiver-credential-7f3a"),
        "a header value is in the dump"
    );
    assert!(
        !dump.contains("provider-secret-51de"),
        "a source's config is in the dump"
    );
    assert!(
        !dump.contains("ingest-token-e08c"),
        "a source's token is in the dump"
    );

    // Rotation: the new key current, the old one still known; the row is sealed anew.
    schema.options.secret_keys = SecretKeys::new(new_key.clone(), vec![old_key]);
    let store = schema.open().await;
    let read = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.secret.to_wire(), secret);
    assert_eq!(read.headers, created.headers);
    store.close().await.unwrap();
    drop(store);
    schema.options.secret_keys = SecretKeys::new(new_key, Vec::new());
    let store = schema.open().await;
    assert_eq!(
        store
            .get_endpoint_by_id(&created.id)
            .await
            .unwrap()
            .unwrap()
            .secret
            .to_wire(),
        secret,
        "the old key is no longer needed"
    );
    let read = store.get_source(github.id.as_str()).await.unwrap().unwrap();
    assert_eq!(
        read.token, "ingest-token-e08c",
        "sources were sealed anew too"
    );
    store.close().await.unwrap();
    drop(store);
    schema.options.secret_keys = SecretKeys::ephemeral();
    match PgStore::open(schema.options.clone()).await {
        Err(StoreError::InvalidConfig(reason)) => {
            assert!(reason.contains("was not given"), "{reason}")
        }
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("a node with the wrong key started"),
    }
    schema.drop_schema().await;
}

/// The conformance suite (`crate::conformance`) on a store in a schema of its own per test.
mod conformance {
    macro_rules! on_postgres {
        ($($name:ident),*) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_fresh_schema(async |store| crate::conformance::$name(store).await).await;
                }
            )*
        };
    }
    crate::conformance::for_each_conformance_test!(on_postgres);
}
