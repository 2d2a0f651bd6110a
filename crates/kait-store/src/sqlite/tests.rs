//! The SQLite store's own behaviour: group commit, fan-out, claiming, outcomes, recovery.

use std::sync::Arc;

use kait_core::time::now_millis;

use super::{MAX_READERS, SqliteOptions, SqliteStore};
use crate::StoreError;
use crate::conformance::{application, endpoint, message};
use crate::prelude::*;

/// The same key at every open, so a test may reopen its store.
fn test_keys() -> crate::sealing::SecretKeys {
    crate::sealing::SecretKeys::new(crate::sealing::SealingKey::from_bytes(&[7; 32]), Vec::new())
}

fn open(dir: &std::path::Path) -> SqliteStore {
    SqliteStore::open(SqliteOptions::new(dir, test_keys())).expect("store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_commit_together_and_a_failure_stays_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let app = store.create_application(application()).await.unwrap();
    store
        .create_message(message(&app.id, "a.b", Some("dup")))
        .await
        .unwrap();

    // Many writers at once, one of which violates the eventId constraint.
    let mut tasks = Vec::new();
    for index in 0..200 {
        let (store, app_id) = (store.clone(), app.id.clone());
        tasks.push(tokio::spawn(async move {
            let event_id = if index == 100 {
                Some("dup".to_owned())
            } else {
                None
            };
            store
                .create_message(message(&app_id, "a.b", event_id.as_deref()))
                .await
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(error) => panic!("unexpected {error}"),
        }
    }
    assert_eq!(conflicts, 1);
    let listed = store
        .list_messages(
            &app.id,
            Default::default(),
            crate::PageRequest {
                limit: 250,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 200, "the failed job rolled back alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_at_a_crash_are_due_again_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let app_id = {
        let store = open(dir.path());
        let app = store.create_application(application()).await.unwrap();
        store
            .create_endpoint(endpoint(&app.id, None), 100)
            .await
            .unwrap();
        store
            .create_message(message(&app.id, "a.b", None))
            .await
            .unwrap();
        assert_eq!(
            store
                .claim_due(now_millis(), 10, Vec::new())
                .await
                .unwrap()
                .deliveries
                .len(),
            1
        );
        // Dropped without recording the outcome, as a crash would leave it.
        app.id
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let store = open(dir.path());
    let claim = store.claim_due(now_millis(), 10, Vec::new()).await.unwrap();
    assert_eq!(claim.deliveries.len(), 1);
    assert_eq!(claim.deliveries[0].app_id, app_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    match SqliteStore::open(SqliteOptions::new(dir.path(), test_keys())) {
        Err(StoreError::InvalidConfig(reason)) => assert!(reason.contains("in use"), "{reason}"),
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("two stores opened one data dir"),
    }
}

/// Every file of the data dir as one byte string, for looking for plain text.
fn data_dir_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Issue 11: the data dir was 0755 and `kait.db` 0644, holding every signing secret and
/// custom header in plain text. Now the directory and files are owner-only, and `strings`
/// on them finds no secret: not for new endpoints, and not for those an older version wrote
/// in plain text (sealed at open, their old cells zeroed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_and_the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = open(&data_dir);
    let app = store.create_application(application()).await.unwrap();
    let mut with_headers = endpoint(&app.id, None);
    with_headers
        .headers
        .insert("X-Api-Key".into(), "receiver-credential-7f3a".into());
    let created = store.create_endpoint(with_headers, 10).await.unwrap();
    let secret = created.secret.to_wire();
    let secret_key = secret.trim_start_matches("whsec_").to_owned();
    let mut github = crate::conformance::source(None);
    github.config = serde_json::json!({ "secret": "provider-secret-51de" });
    github.token = "ingest-token-e08c".into();
    let github = store.create_source(github).await.unwrap();

    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data_dir), 0o700);
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let bytes = data_dir_bytes(&data_dir);
    assert!(!holds(&bytes, &secret_key), "the signing secret is on disk");
    assert!(
        !holds(&bytes, "receiver-credential-7f3a"),
        "a header value is on disk"
    );
    assert!(
        !holds(&bytes, "provider-secret-51de"),
        "a source's config is on disk"
    );
    assert!(
        !holds(&bytes, "ingest-token-e08c"),
        "a source's token is on disk"
    );
    drop(store);

    // An endpoint as an older version wrote it: plain text.
    let legacy_secret = kait_core::signing::Secret::generate().to_wire();
    {
        let connection = rusqlite::Connection::open(data_dir.join("kait.db")).unwrap();
        connection
            .execute(
                "UPDATE endpoint SET secret = ?1, headers = '{\"X-Old\":\"legacy-credential-9c\"}' WHERE id = ?2",
                rusqlite::params![legacy_secret, created.id.as_str()],
            )
            .unwrap();
    }
    assert!(holds(&data_dir_bytes(&data_dir), "legacy-credential-9c"));
    let store = open(&data_dir);
    let read = store
        .get_endpoint_by_id(&created.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.secret.to_wire(), legacy_secret);
    assert_eq!(read.headers["X-Old"], "legacy-credential-9c");
    let bytes = data_dir_bytes(&data_dir);
    assert!(!holds(&bytes, legacy_secret.trim_start_matches("whsec_")));
    assert!(
        !holds(&bytes, "legacy-credential-9c"),
        "the old plain cell survived"
    );
    let read = store.get_source(github.id.as_str()).await.unwrap().unwrap();
    assert_eq!(read.config["secret"], "provider-secret-51de");
    drop(store);

    // Another key cannot open the store.
    let other = SqliteOptions::new(&data_dir, crate::sealing::SecretKeys::ephemeral());
    match SqliteStore::open(other) {
        Err(StoreError::InvalidConfig(reason)) => {
            assert!(reason.contains("was not given"), "{reason}")
        }
        Err(other) => panic!("unexpected {other}"),
        Ok(_) => panic!("opened with the wrong key"),
    }
}

/// Issue 11: every woken stream ran its own read on a blocking thread, with no bound (517
/// threads under 1,000 streams). Reads now queue for one of `MAX_READERS` slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_are_bounded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reads: Vec<_> = (0..MAX_READERS * 4)
        .map(|_| {
            let (store, running, most) = (store.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                store
                    .read(move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    for read in reads {
        read.await.unwrap().unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= MAX_READERS, "{most} reads ran at once");
    assert!(most > 1, "reads did not run concurrently at all");
}

/// The conformance suite (`crate::conformance`) on a fresh SQLite store per test.
mod conformance {
    macro_rules! on_sqlite {
        ($($name:ident),*) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    crate::conformance::$name(&super::open(dir.path())).await;
                }
            )*
        };
    }
    crate::conformance::for_each_conformance_test!(on_sqlite);
}
