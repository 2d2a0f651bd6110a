//! Where a test server keeps its state. This suite is compiled twice: as `it`, every server
//! runs on SQLite in a temporary data directory; as `it_postgres`, on the PostgreSQL this
//! machine runs, each server (or group of nodes) in a schema of its own that is dropped when
//! the test stops it. Leftovers of runs that crashed are swept when the next run starts.
//! Without PostgreSQL the `it_postgres` tests fail with how to start one.

use std::time::Duration;

use kait::config::{PostgresConfig, ServeConfig};
use tokio::sync::OnceCell;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Test schemas are named `kait_it_<pid>_<random>`, so a sweep can tell whose they are.
const SCHEMA_PREFIX: &str = "kait_it_";
/// Short, so that tests that kill a node see its work taken over quickly.
pub const TEST_LEASE: &str = "2s";

/// Whether this build of the suite runs on PostgreSQL.
pub fn wants_postgres() -> bool {
    env!("CARGO_CRATE_NAME") == "it_postgres"
}

fn database_url() -> String {
    std::env::var("KAIT_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn connect() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = database_url()
        .parse::<tokio_postgres::Config>()
        .expect("KAIT_TEST_DATABASE_URL parses")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Checks once per run that PostgreSQL answers, and sweeps schemas left by dead runs.
/// Without a server the PostgreSQL build fails, saying how to get one: it never passes by
/// running on SQLite instead.
async fn ensure_postgres() {
    static CHECKED: OnceCell<()> = OnceCell::const_new();
    CHECKED
        .get_or_init(|| async {
            match connect().await {
                Ok(client) => sweep(&client).await,
                Err(error) => panic!(
                    "PostgreSQL at {} is not reachable ({error}). The it_postgres suite needs one: \
                     start it (e.g. `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust \
                     postgres:16`) or set KAIT_TEST_DATABASE_URL; `cargo test -p kait --test it` \
                     runs the suite on SQLite only",
                    database_url()
                ),
            }
        })
        .await;
}

/// Drops test schemas whose process is gone.
async fn sweep(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
            &[&format!("{SCHEMA_PREFIX}%")],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let schema: String = row.get(0);
        let pid = schema
            .trim_start_matches(SCHEMA_PREFIX)
            .split('_')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }
}

/// One test's state: a data directory (the admin token, and SQLite's database) and, on
/// PostgreSQL, a schema.
pub struct Storage {
    pub data_dir: tempfile::TempDir,
    pub schema: Option<String>,
    /// On PostgreSQL, the attachments' directory every server of the test shares
    /// (`--blob-url file://…`); SQLite servers keep them in their data dir.
    pub blobs_dir: Option<tempfile::TempDir>,
}

impl Storage {
    pub async fn new() -> Self {
        let schema = if wants_postgres() {
            ensure_postgres().await;
            Some(format!(
                "{SCHEMA_PREFIX}{}_{:012x}",
                std::process::id(),
                rand::random::<u64>() >> 16
            ))
        } else {
            None
        };
        Self {
            data_dir: tempfile::tempdir().expect("temporary data dir"),
            blobs_dir: schema
                .as_ref()
                .map(|_| tempfile::tempdir().expect("temporary blobs dir")),
            schema,
        }
    }

    /// Points a server's settings at this storage.
    pub fn apply(&self, config: &mut ServeConfig) {
        config.data_dir = self.data_dir.path().to_owned();
        config.blob_url = self.blob_url();
        config.postgres = self.schema.as_ref().map(|schema| {
            let mut postgres = PostgresConfig::new(database_url());
            postgres.schema = schema.clone();
            postgres.pool_size = 8;
            postgres.lease = humantime::parse_duration(TEST_LEASE).unwrap();
            postgres.statement_timeout = Duration::from_secs(30);
            postgres
        });
    }

    /// The same as `kait serve` flags.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--data-dir".to_owned(),
            self.data_dir.path().display().to_string(),
        ];
        if let Some(blob_url) = self.blob_url() {
            flags.extend(["--blob-url".to_owned(), blob_url]);
        }
        if let Some(schema) = &self.schema {
            flags.extend([
                "--database-url".to_owned(),
                database_url(),
                "--database-schema".to_owned(),
                schema.clone(),
                "--database-pool-size".to_owned(),
                "8".to_owned(),
                "--lease".to_owned(),
                TEST_LEASE.to_owned(),
            ]);
        }
        flags
    }

    /// `file://` and the shared blobs dir, on PostgreSQL.
    pub fn blob_url(&self) -> Option<String> {
        self.blobs_dir
            .as_ref()
            .map(|dir| format!("file://{}", dir.path().display()))
    }

    /// A direct connection to this storage's schema, for tests that look at the database
    /// itself (PostgreSQL only).
    pub async fn sql(&self) -> tokio_postgres::Client {
        let schema = self.schema.as_ref().expect("a PostgreSQL storage");
        let client = connect().await.expect("PostgreSQL reachable");
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .await
            .unwrap();
        client
    }

    /// Drops the schema (after every server using it stopped).
    pub async fn remove(self) {
        if let Some(schema) = &self.schema {
            let client = connect().await.expect("PostgreSQL still reachable");
            client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
                .unwrap_or_else(|error| panic!("dropping test schema {schema}: {error}"));
        }
    }
}
