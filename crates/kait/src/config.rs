//! Configuration: defaults, then a TOML file, then `KAIT_*` environment, then flags.
//!
//! Each setting is declared once, as a field of [`ServeArgs`]: its flag (the field in kebab
//! case), its variable (`env`), its key in the `--config` file (the field's name: the same
//! struct reads the file) and its help text. Its default belongs to the crate that uses it
//! (`SenderConfig`, `DispatcherConfig`, `Limits`, `PgOptions`, …), gathered in
//! [`ServeConfig::defaults`] and shown in `--help` by [`with_defaults`]; the README's settings
//! table is generated from that help ([`settings_table`], checked by a test).
//! [`ServeConfig::resolve`] merges flags over the file, parses durations and sizes, and
//! validates once, so the rest of the program only sees checked values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ipnet::IpNet;
use kait_api::Limits;
use kait_core::retry::RetrySchedule;
use kait_core::signing::Secret;
use kait_deliver::{CertificateDer, SenderConfig, read_pem_certificates};
use kait_dispatch::{BreakerConfig, DispatcherConfig};
use kait_store::sealing::{SealingKey, SecretKeys};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The file inside the data directory that keeps a generated admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The file inside the data directory that keeps a generated secrets key.
pub const SECRETS_KEY_FILE: &str = "secrets.key";
const DEFAULT_LISTEN: &str = "127.0.0.1:8071";
const DEFAULT_DATA_DIR: &str = "./kait-data";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `kait serve`'s settings: flags, each also read from a `KAIT_*` variable and, under its
/// field name, from the `--config` file.
#[derive(Debug, Default, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (snake_case names).
    #[arg(long, env = "KAIT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to serve the API on
    #[arg(long, env = "KAIT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite database and the generated admin token
    #[arg(long, env = "KAIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bearer token for the API; generated, printed once and kept in the data dir if unset.
    /// A flag's value is visible to other local users in `ps`: prefer KAIT_ADMIN_TOKEN or
    /// --admin-token-file.
    #[arg(long, env = "KAIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (read at start; kept out of `ps` and the environment).
    #[arg(long, env = "KAIT_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// A file holding the key that seals endpoint secrets and headers in the database
    /// (32 random bytes, base64). Generated into the data dir if unset; every node sharing a
    /// PostgreSQL database needs the same one.
    #[arg(long, env = "KAIT_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// Keys that sealed secrets before a rotation (repeatable): values sealed with them are
    /// read and sealed again with the current key at start-up.
    #[arg(
        long = "previous-secrets-key-file",
        env = "KAIT_PREVIOUS_SECRETS_KEY_FILES",
        value_delimiter = ','
    )]
    pub previous_secrets_key_files: Vec<PathBuf>,
    /// A private network webhooks may target (repeatable), e.g. 10.0.0.0/8.
    #[arg(
        long = "allow-network",
        env = "KAIT_ALLOW_NETWORKS",
        value_delimiter = ','
    )]
    pub allow_networks: Vec<IpNet>,
    /// Delays between attempts, each with ±20 % jitter
    #[arg(long, env = "KAIT_RETRY_SCHEDULE")]
    pub retry_schedule: Option<String>,
    /// Time limit of one webhook request, e.g. 15s
    #[arg(long, env = "KAIT_REQUEST_TIMEOUT")]
    pub request_timeout: Option<String>,
    /// Time limit for connecting to a webhook receiver, e.g. 5s
    #[arg(long, env = "KAIT_CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// PEM file of certificate authorities trusted for HTTPS endpoints and an mqtts://
    /// broker, in addition to the system's (for receivers or brokers behind a private CA).
    #[arg(long, env = "KAIT_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Bytes of each receiver response kept in the attempt log
    #[arg(long, env = "KAIT_MAX_RESPONSE_BYTES")]
    pub max_response_bytes: Option<usize>,
    /// Largest accepted API request body in bytes (a larger one gets 413)
    #[arg(long, env = "KAIT_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Deepest nesting of arrays and objects in a message payload
    #[arg(long, env = "KAIT_MAX_PAYLOAD_DEPTH")]
    pub max_payload_depth: Option<usize>,
    /// Most endpoints one application may have
    #[arg(long, env = "KAIT_MAX_ENDPOINTS_PER_APP")]
    pub max_endpoints_per_app: Option<usize>,
    /// Requests one incoming source may have in progress at once (more wait up to 2 s, then get 429)
    #[arg(long, env = "KAIT_SOURCE_IN_FLIGHT")]
    pub source_in_flight: Option<usize>,
    /// Webhook requests in flight at once
    #[arg(long, env = "KAIT_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// Threads running Kait's requests, deliveries and timers; 1 suits a small gateway (less CPU per message at low rates, a lower ceiling flat out) [default: one per CPU core]
    #[arg(long, env = "KAIT_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Webhook requests in flight at once to one endpoint
    #[arg(long, env = "KAIT_ENDPOINT_IN_FLIGHT")]
    pub endpoint_in_flight: Option<usize>,
    /// Consecutive failures that pause an endpoint (circuit breaker); 0 turns it off
    #[arg(long, env = "KAIT_BREAKER_THRESHOLD")]
    pub breaker_threshold: Option<u32>,
    /// How long a tripped breaker pauses an endpoint before probing, doubling up to
    /// --breaker-max-cooldown
    #[arg(long, env = "KAIT_BREAKER_COOLDOWN")]
    pub breaker_cooldown: Option<String>,
    /// Longest pause the doubling cooldown reaches
    #[arg(long, env = "KAIT_BREAKER_MAX_COOLDOWN")]
    pub breaker_max_cooldown: Option<String>,
    /// Disable an endpoint that has failed without a single success for this long
    #[arg(long, env = "KAIT_DISABLE_AFTER")]
    pub disable_after: Option<String>,
    /// Where to send operational webhooks (endpoint.disabled, message.attempt.exhausted, …).
    #[arg(long, env = "KAIT_OPERATIONAL_WEBHOOK_URL")]
    pub operational_webhook_url: Option<String>,
    /// The `whsec_` secret that signs operational webhooks (required with the URL).
    #[arg(long, env = "KAIT_OPERATIONAL_WEBHOOK_SECRET", hide_env_values = true)]
    pub operational_webhook_secret: Option<String>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "KAIT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Export traces (each message's accepting and every attempt, one trace per message) to
    /// this OpenTelemetry collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 [default:
    /// no tracing]
    #[arg(long, env = "KAIT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP/HTTP encoding [default: protobuf]
    #[arg(long, env = "KAIT_OTLP_PROTOCOL")]
    pub otlp_protocol: Option<crate::telemetry::OtlpProtocol>,
    /// Send each attempt's W3C `traceparent` header to receivers, so their traces join the
    /// message's [default: false]
    #[arg(long, env = "KAIT_TRACEPARENT_TO_RECEIVERS", num_args = 0..=1, default_missing_value = "true")]
    pub traceparent_to_receivers: Option<bool>,
    /// A postgres:// URL: store everything in PostgreSQL (several nodes may share it)
    /// instead of the embedded SQLite in the data dir.
    #[arg(long, env = "KAIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The PostgreSQL schema for Kait's tables, created if missing
    #[arg(long, env = "KAIT_DATABASE_SCHEMA")]
    pub database_schema: Option<String>,
    /// PostgreSQL connections per node (plus one for LISTEN)
    #[arg(long, env = "KAIT_DATABASE_POOL_SIZE")]
    pub database_pool_size: Option<usize>,
    /// Longest one PostgreSQL statement may run, e.g. 30s
    #[arg(long, env = "KAIT_DATABASE_STATEMENT_TIMEOUT")]
    pub database_statement_timeout: Option<String>,
    /// How long a node's claims outlive its last heartbeat before other nodes take its
    /// deliveries over (PostgreSQL), e.g. 30s
    #[arg(long, env = "KAIT_LEASE")]
    pub lease: Option<String>,
    /// Delete messages (payloads) this old once delivered, e.g. 30d, or `forever`
    #[arg(long, env = "KAIT_RETAIN_MESSAGES")]
    pub retain_messages: Option<String>,
    /// Delete attempt records this old, e.g. 30d, or `forever`
    #[arg(long, env = "KAIT_RETAIN_ATTEMPTS")]
    pub retain_attempts: Option<String>,
    /// How long an API client may take to send a request's headers
    #[arg(long, env = "KAIT_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// Close API connections with no request in progress for this long
    #[arg(long, env = "KAIT_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Most API connections open at once; when full, the oldest idle one is closed to make
    /// room (lowered to fit the open files limit, which is raised to its hard limit at start)
    #[arg(long, env = "KAIT_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Long-polls and event streams open at once, in all (past that, 429)
    #[arg(long, env = "KAIT_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Long-polls and event streams one token may hold open at once
    #[arg(long, env = "KAIT_MAX_STREAMS_PER_TOKEN")]
    pub max_streams_per_token: Option<usize>,
    /// The URL this server is reached at from outside, for the receiving URLs of incoming
    /// sources, e.g. https://hooks.example.com [default: http:// and the listening address]
    #[arg(long, env = "KAIT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A bearer token that may read /metrics and nothing else (the admin token may too).
    #[arg(long, env = "KAIT_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Where attachments are stored: s3://bucket[/prefix] (credentials, region and endpoint
    /// from the AWS_* environment variables) or file:///path (a directory every node mounts).
    /// On PostgreSQL a shared store is needed for attachments [default: files under the
    /// data dir on SQLite; none on PostgreSQL]
    #[arg(long, env = "KAIT_BLOB_URL")]
    pub blob_url: Option<String>,
    /// The largest attachment upload accepted, in bytes (a larger one is a 413)
    #[arg(long, env = "KAIT_MAX_ATTACHMENT_BYTES")]
    pub max_attachment_bytes: Option<u64>,
    /// An MQTT broker to bridge (mqtt://[user[:password]@]host[:port], or mqtts://): device
    /// messages on the topics of the MQTT routes become events [default: none]
    #[arg(long, env = "KAIT_MQTT_URL", hide_env_values = true)]
    pub mqtt_url: Option<String>,
    /// The client id Kait connects with; the broker keeps the session under it, so it must be
    /// stable across restarts: one for the whole cluster on PostgreSQL (the node that reads
    /// device messages connects with it), each node's own with --mqtt-shared-group
    /// [default: kait]
    #[arg(long, env = "KAIT_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Where commands to devices are published: a topic template of {app}, {device}, {name}
    /// and {commandId} (MQTT 3.1.1 devices, which see no response topic, read the command id
    /// from the topic) [default: devices/{device}/commands/{name}]
    #[arg(long, env = "KAIT_MQTT_COMMAND_TOPIC")]
    pub mqtt_command_topic: Option<String>,
    /// The prefix of the topics devices reply on: {prefix}/{commandId} [default: kait/replies]
    #[arg(long, env = "KAIT_MQTT_REPLY_TOPIC")]
    pub mqtt_reply_topic: Option<String>,
    /// Every node reads device messages, in this shared-subscription group ($share/{group}/…:
    /// each message to one node); scales out reading, but a device's messages keep their
    /// order only on a broker that deals each topic to one member [default: none: on
    /// PostgreSQL one node at a time reads, so each device's order holds]
    #[arg(long, env = "KAIT_MQTT_SHARED_GROUP")]
    pub mqtt_shared_group: Option<String>,
}

impl ServeArgs {
    /// These settings over `under` (flags and environment over the file): a setting given
    /// here wins, a list given here replaces the file's. Generic over the fields (through
    /// their serde form), so a new setting needs nothing here.
    fn over(self, under: ServeArgs) -> anyhow::Result<ServeArgs> {
        let mut merged = serde_json::to_value(under).context("reading the config file")?;
        let serde_json::Value::Object(given) = serde_json::to_value(self)? else {
            bail!("settings are a map");
        };
        for (key, value) in given {
            let unset = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
            if !unset {
                merged[key] = value;
            }
        }
        Ok(serde_json::from_value(merged)?)
    }
}

/// Where Kait keeps its state when it is not the embedded SQLite.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: String,
    pub schema: String,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub lease: Duration,
}

impl PostgresConfig {
    /// The store's own defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        use kait_store::postgres::defaults;
        Self {
            url: url.into(),
            schema: defaults::SCHEMA.to_owned(),
            pool_size: defaults::POOL_SIZE,
            statement_timeout: defaults::STATEMENT_TIMEOUT,
            lease: defaults::LEASE,
        }
    }

    pub fn store_options(&self, secret_keys: SecretKeys) -> anyhow::Result<kait_store::PgOptions> {
        let mut options = kait_store::PgOptions::new(&self.url, secret_keys)
            .map_err(|error| anyhow::anyhow!("--database-url: {error}"))?;
        options.schema = self.schema.clone();
        options.pool_size = self.pool_size;
        options.statement_timeout = self.statement_timeout;
        options.lease = self.lease;
        Ok(options)
    }
}

/// How long history is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub messages: Option<Duration>,
    pub attempts: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        let ninety_days = Some(Duration::from_secs(90 * 24 * 3600));
        Self {
            messages: ninety_days,
            attempts: ninety_days,
        }
    }
}

fn duration_setting(flag: &str, text: &str, example: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text)
        .with_context(|| format!("--{flag}: `{text}` is not a duration such as {example}"))
}

fn retention_setting(flag: &str, text: Option<String>) -> anyhow::Result<Option<Option<Duration>>> {
    let Some(text) = text else { return Ok(None) };
    if text == "forever" {
        return Ok(Some(None));
    }
    let duration = duration_setting(flag, &text, "30d (or `forever`)")?;
    if duration < Duration::from_secs(3600) {
        bail!("--{flag} must be at least 1h (or `forever`)");
    }
    Ok(Some(Some(duration)))
}

/// Checked settings for one `serve` run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None` until [`ServeConfig::ensure_admin_token`] generated or loaded one.
    pub admin_token: Option<String>,
    pub allow_networks: Vec<IpNet>,
    pub retry_schedule: RetrySchedule,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Certificate authorities trusted for HTTPS endpoints beside the system's (`--ca-file`).
    pub extra_root_certificates: Vec<CertificateDer<'static>>,
    pub max_response_bytes: usize,
    /// API input limits (body size, payload depth, headers, endpoints per app).
    pub limits: Limits,
    pub max_in_flight: usize,
    pub endpoint_in_flight: usize,
    /// The async runtime's worker threads; `None`: one per CPU core.
    pub worker_threads: Option<usize>,
    pub breaker: BreakerConfig,
    /// How long an endpoint may fail without a success before it is disabled.
    pub disable_after: Duration,
    /// The operational webhook endpoint and its secret, if configured.
    pub operational_webhook: Option<(String, Secret)>,
    pub log_format: LogFormat,
    /// `--otlp-endpoint` and its encoding: traces are exported there (`None`: no tracing).
    pub otlp: Option<(String, crate::telemetry::OtlpProtocol)>,
    /// `--traceparent-to-receivers`.
    pub traceparent_to_receivers: bool,
    /// `Some` runs on PostgreSQL; `None` on the SQLite database in `data_dir`.
    pub postgres: Option<PostgresConfig>,
    pub retention: Retention,
    pub connections: crate::http_server::ConnectionLimits,
    pub metrics_token: Option<String>,
    /// Where this server is reached from outside; `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    /// The keys that seal secrets at rest; `None` until resolved: then the data dir's
    /// generated key ([`ServeConfig::secret_keys`]).
    pub secret_keys: Option<SecretKeys>,
    /// `--blob-url`: where attachments live (`None`: the data dir on SQLite, none on
    /// PostgreSQL).
    pub blob_url: Option<String>,
    pub max_attachment_bytes: u64,
    /// How often blobs no message needs are looked for and deleted (not a setting: tests
    /// shorten it).
    pub attachment_sweep_interval: Duration,
    /// The dispatcher's safety-net claim interval (not a setting: tests lengthen it, to show
    /// that work is never left waiting for it).
    pub dispatcher_poll_interval: Duration,
    /// `--mqtt-url`: the broker to bridge, if any.
    pub mqtt: Option<crate::mqtt::MqttConfig>,
}

impl ServeConfig {
    /// Defaults suitable for tests: everything local under `data_dir`.
    /// The defaults are those of the crates that use each setting.
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        let sender = SenderConfig::default();
        let dispatcher = DispatcherConfig::default();
        Self {
            listen: DEFAULT_LISTEN.parse().expect("default address parses"),
            data_dir: data_dir.into(),
            admin_token: None,
            allow_networks: Vec::new(),
            retry_schedule: dispatcher.retry_schedule,
            request_timeout: sender.request_timeout,
            connect_timeout: sender.connect_timeout,
            extra_root_certificates: Vec::new(),
            max_response_bytes: sender.max_response_body,
            limits: Limits::default(),
            max_in_flight: dispatcher.max_in_flight,
            endpoint_in_flight: dispatcher.endpoint_in_flight,
            worker_threads: None,
            breaker: dispatcher.breaker,
            disable_after: dispatcher
                .disable_after
                .expect("the dispatcher disables failing endpoints by default"),
            operational_webhook: None,
            log_format: LogFormat::Text,
            otlp: None,
            traceparent_to_receivers: false,
            postgres: None,
            retention: Retention::default(),
            connections: crate::http_server::ConnectionLimits::default(),
            metrics_token: None,
            public_url: None,
            secret_keys: None,
            blob_url: None,
            max_attachment_bytes: kait_media::DEFAULT_MAX_UPLOAD_BYTES,
            attachment_sweep_interval: Duration::from_secs(600),
            dispatcher_poll_interval: dispatcher.poll_interval,
            mqtt: None,
        }
    }

    /// Merges flags/environment over the file over the defaults, and validates.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        let settings = args.over(file)?;
        let defaults = Self::for_data_dir(DEFAULT_DATA_DIR);
        let retry_schedule = match settings.retry_schedule {
            Some(text) => RetrySchedule::parse(&text).context("--retry-schedule")?,
            None => defaults.retry_schedule,
        };
        let request_timeout = match settings.request_timeout {
            Some(text) => humantime::parse_duration(&text).with_context(|| {
                format!("--request-timeout: `{text}` is not a duration such as 15s")
            })?,
            None => defaults.request_timeout,
        };
        if request_timeout.is_zero() {
            bail!("--request-timeout must be more than zero");
        }
        let max_in_flight = settings.max_in_flight.unwrap_or(defaults.max_in_flight);
        if max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        if settings.worker_threads == Some(0) {
            bail!("--worker-threads must be at least 1");
        }
        let endpoint_in_flight = settings
            .endpoint_in_flight
            .unwrap_or(defaults.endpoint_in_flight);
        if endpoint_in_flight == 0 {
            bail!("--endpoint-in-flight must be at least 1");
        }
        let mut breaker = defaults.breaker;
        if let Some(threshold) = settings.breaker_threshold {
            breaker.threshold = threshold;
        }
        if let Some(text) = settings.breaker_cooldown {
            breaker.initial_cooldown = humantime::parse_duration(&text).with_context(|| {
                format!("--breaker-cooldown: `{text}` is not a duration such as 30s")
            })?;
            breaker.max_cooldown = breaker.max_cooldown.max(breaker.initial_cooldown);
        }
        if let Some(text) = settings.breaker_max_cooldown {
            breaker.max_cooldown = duration_setting("breaker-max-cooldown", &text, "10m")?;
            if breaker.max_cooldown < breaker.initial_cooldown {
                bail!("--breaker-max-cooldown must not be shorter than --breaker-cooldown");
            }
        }
        let connect_timeout = match settings.connect_timeout {
            Some(text) => humantime::parse_duration(&text).with_context(|| {
                format!("--connect-timeout: `{text}` is not a duration such as 5s")
            })?,
            None => defaults.connect_timeout,
        };
        if connect_timeout.is_zero() {
            bail!("--connect-timeout must be more than zero");
        }
        let extra_root_certificates = match settings.ca_file {
            Some(path) => {
                let pem = std::fs::read(&path)
                    .with_context(|| format!("--ca-file: reading {}", path.display()))?;
                read_pem_certificates(&pem)
                    .map_err(|reason| anyhow::anyhow!("--ca-file: {}: {reason}", path.display()))?
            }
            None => Vec::new(),
        };
        let disable_after = match settings.disable_after {
            Some(text) => humantime::parse_duration(&text).with_context(|| {
                format!("--disable-after: `{text}` is not a duration such as 5d")
            })?,
            None => defaults.disable_after,
        };
        let operational_webhook = match (
            settings.operational_webhook_url,
            settings.operational_webhook_secret,
        ) {
            (Some(url), Some(secret)) => {
                kait_core::validate::endpoint_url(&url)
                    .map_err(|problem| anyhow::anyhow!("--operational-webhook-url: {problem}"))?;
                let secret = Secret::parse(&secret)
                    .map_err(|error| anyhow::anyhow!("--operational-webhook-secret: {error}"))?;
                Some((url, secret))
            }
            (None, None) => None,
            _ => bail!("--operational-webhook-url and --operational-webhook-secret go together"),
        };
        let max_response_bytes = settings
            .max_response_bytes
            .unwrap_or(defaults.max_response_bytes);
        let mut limits = defaults.limits;
        limits.max_body_bytes = settings.max_body_bytes.unwrap_or(limits.max_body_bytes);
        if limits.max_body_bytes < 1024 {
            bail!("--max-body-bytes must be at least 1024");
        }
        limits.max_payload_depth = settings
            .max_payload_depth
            .unwrap_or(limits.max_payload_depth);
        limits.max_endpoints_per_app = settings
            .max_endpoints_per_app
            .unwrap_or(limits.max_endpoints_per_app);
        if let Some(total) = settings.max_streams {
            limits.streams.total = total;
        }
        if let Some(per_token) = settings.max_streams_per_token {
            limits.streams.per_token = per_token;
        }
        if limits.streams.total == 0 || limits.streams.per_token == 0 {
            bail!("--max-streams and --max-streams-per-token must be at least 1");
        }
        if limits.max_payload_depth == 0 || limits.max_endpoints_per_app == 0 {
            bail!("--max-payload-depth and --max-endpoints-per-app must be at least 1");
        }
        limits.source_in_flight = settings.source_in_flight.unwrap_or(limits.source_in_flight);
        if limits.source_in_flight == 0 {
            bail!("--source-in-flight must be at least 1");
        }
        let postgres = match settings.database_url {
            Some(url) => {
                let mut postgres = PostgresConfig::new(url);
                if let Some(schema) = settings.database_schema {
                    if !kait_store::postgres::valid_schema_name(&schema) {
                        bail!(
                            "--database-schema: `{schema}` must start with a lowercase letter or `_` \
                             and hold only lowercase letters, digits and `_` (at most 48)"
                        );
                    }
                    postgres.schema = schema;
                }
                if let Some(size) = settings.database_pool_size {
                    if !(2..=1000).contains(&size) {
                        bail!("--database-pool-size must be between 2 and 1000");
                    }
                    postgres.pool_size = size;
                }
                if let Some(text) = settings.database_statement_timeout {
                    postgres.statement_timeout =
                        duration_setting("database-statement-timeout", &text, "30s")?;
                    if postgres.statement_timeout < Duration::from_millis(100) {
                        bail!("--database-statement-timeout must be at least 100ms");
                    }
                }
                if let Some(text) = settings.lease {
                    postgres.lease = duration_setting("lease", &text, "30s")?;
                    if postgres.lease < Duration::from_secs(1) {
                        bail!("--lease must be at least 1s");
                    }
                }
                postgres.store_options(SecretKeys::ephemeral())?;
                Some(postgres)
            }
            None => {
                if settings.database_schema.is_some() {
                    bail!("--database-schema needs --database-url");
                }
                None
            }
        };
        let mut retention = defaults.retention;
        if let Some(messages) = retention_setting("retain-messages", settings.retain_messages)? {
            retention.messages = messages;
        }
        if let Some(attempts) = retention_setting("retain-attempts", settings.retain_attempts)? {
            retention.attempts = attempts;
        }
        let mut connections = defaults.connections;
        if let Some(text) = settings.header_read_timeout {
            connections.header_read_timeout =
                duration_setting("header-read-timeout", &text, "10s")?;
        }
        if let Some(text) = settings.idle_timeout {
            connections.idle_timeout = duration_setting("idle-timeout", &text, "60s")?;
        }
        if connections.header_read_timeout.is_zero() || connections.idle_timeout.is_zero() {
            bail!("--header-read-timeout and --idle-timeout must be more than zero");
        }
        if let Some(max) = settings.max_connections {
            if max == 0 {
                bail!("--max-connections must be at least 1");
            }
            connections.max_connections = max;
        }
        let admin_token = match (settings.admin_token, settings.admin_token_file) {
            (Some(_), Some(_)) => bail!("--admin-token and --admin-token-file exclude each other"),
            (token, None) => token,
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("--admin-token-file: reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
        };
        if let Some(token) = &admin_token {
            check_token(token)?;
        }
        let previous_keys = settings
            .previous_secrets_key_files
            .iter()
            .map(|path| read_key_file("--previous-secrets-key-file", path))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let secret_keys = match settings.secrets_key_file {
            Some(path) => Some(SecretKeys::new(
                read_key_file("--secrets-key-file", &path)?,
                previous_keys,
            )),
            None if previous_keys.is_empty() => None,
            None => bail!("--previous-secrets-key-file needs --secrets-key-file (the new key)"),
        };
        let metrics_token = settings.metrics_token;
        let mqtt = match settings.mqtt_url {
            Some(url) => {
                let mut mqtt = crate::mqtt::MqttConfig::parse(&url, settings.mqtt_client_id)
                    .context("--mqtt-url")?;
                if let Some(template) = &settings.mqtt_command_topic {
                    mqtt.command_topic = kait_devices::CommandTopic::parse(template)
                        .map_err(|reason| anyhow::anyhow!("--mqtt-command-topic: {reason}"))?;
                }
                if let Some(prefix) = &settings.mqtt_reply_topic {
                    mqtt.reply_topic = kait_devices::ReplyTopic::parse(prefix)
                        .map_err(|reason| anyhow::anyhow!("--mqtt-reply-topic: {reason}"))?;
                }
                mqtt.extra_roots = extra_root_certificates.clone();
                mqtt.ingest = match settings.mqtt_shared_group {
                    Some(group) => {
                        if group.is_empty()
                            || group.len() > 64
                            || group.contains(['/', '+', '#', '\0'])
                        {
                            bail!("--mqtt-shared-group: 1 to 64 characters, none of `/ + #`");
                        }
                        crate::mqtt::Ingest::Shared(group)
                    }
                    None if postgres.is_some() => crate::mqtt::Ingest::Leader,
                    None => crate::mqtt::Ingest::Alone,
                };
                Some(mqtt)
            }
            None => {
                let needing = [
                    ("--mqtt-client-id", settings.mqtt_client_id.is_some()),
                    (
                        "--mqtt-command-topic",
                        settings.mqtt_command_topic.is_some(),
                    ),
                    ("--mqtt-reply-topic", settings.mqtt_reply_topic.is_some()),
                    ("--mqtt-shared-group", settings.mqtt_shared_group.is_some()),
                ];
                if let Some((flag, _)) = needing.iter().find(|(_, given)| *given) {
                    bail!("{flag} needs --mqtt-url");
                }
                None
            }
        };
        let max_attachment_bytes = settings
            .max_attachment_bytes
            .unwrap_or(defaults.max_attachment_bytes);
        if max_attachment_bytes == 0 {
            bail!("--max-attachment-bytes must be at least 1");
        }
        if let Some(url) = &settings.blob_url {
            kait_media::blobs::check_url(url)
                .map_err(|problem| anyhow::anyhow!("--blob-url: {problem}"))?;
            if postgres.is_some() {
                crate::media::check_shared(
                    url,
                    settings.data_dir.as_deref().unwrap_or(&defaults.data_dir),
                )?;
            }
        }
        let public_url = match settings.public_url {
            Some(url) => {
                let parsed = url::Url::parse(&url)
                    .map_err(|error| anyhow::anyhow!("--public-url: `{url}`: {error}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    bail!("--public-url must be an http:// or https:// URL with a host");
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    bail!("--public-url must not have a query or fragment");
                }
                Some(url.trim_end_matches('/').to_owned())
            }
            None => None,
        };
        if let Some(token) = &metrics_token {
            check_token(token).context("--metrics-token")?;
        }
        let otlp = match settings.otlp_endpoint {
            Some(endpoint) => {
                let parsed = url::Url::parse(&endpoint)
                    .map_err(|error| anyhow::anyhow!("--otlp-endpoint: `{endpoint}`: {error}"))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    bail!("--otlp-endpoint must be an http:// or https:// URL with a host");
                }
                Some((endpoint, settings.otlp_protocol.unwrap_or_default()))
            }
            None if settings.otlp_protocol.is_some() => {
                bail!("--otlp-protocol needs --otlp-endpoint")
            }
            None => None,
        };
        Ok(Self {
            listen: settings.listen.unwrap_or(defaults.listen),
            data_dir: settings.data_dir.unwrap_or(defaults.data_dir),
            admin_token,
            allow_networks: settings.allow_networks,
            retry_schedule,
            request_timeout,
            connect_timeout,
            extra_root_certificates,
            max_response_bytes,
            limits: Limits {
                message_retention: retention.messages,
                ..limits
            },
            max_in_flight,
            endpoint_in_flight,
            worker_threads: settings.worker_threads,
            breaker,
            disable_after,
            operational_webhook,
            log_format: settings.log_format.unwrap_or(defaults.log_format),
            otlp,
            traceparent_to_receivers: settings.traceparent_to_receivers.unwrap_or(false),
            postgres,
            retention,
            connections,
            metrics_token,
            public_url,
            secret_keys,
            blob_url: settings.blob_url,
            max_attachment_bytes,
            attachment_sweep_interval: defaults.attachment_sweep_interval,
            dispatcher_poll_interval: defaults.dispatcher_poll_interval,
            mqtt,
        })
    }

    /// Makes sure an admin token is set: the configured one, else the one kept in the data
    /// dir, else a new one that is written there. Returns whether a new one was generated.
    pub fn ensure_admin_token(&mut self) -> anyhow::Result<bool> {
        if self.admin_token.is_some() {
            return Ok(false);
        }
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let token = text.trim().to_owned();
                check_token(&token).with_context(|| format!("{}", path.display()))?;
                self.admin_token = Some(token);
                Ok(false)
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let token = generate_token();
                write_secret_file(&self.data_dir, &path, &token)?;
                self.admin_token = Some(token);
                Ok(true)
            }
            Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
        }
    }
}

impl ServeConfig {
    /// Each setting's default as `--help` and the README show it, by argument id, read from
    /// the resolved defaults (so it is the value the code uses, from the crate that owns it).
    pub fn defaults() -> Vec<(&'static str, String)> {
        let config = Self::for_data_dir(DEFAULT_DATA_DIR);
        let postgres = PostgresConfig::new("");
        let time = short_duration;
        let kept = |retention: Option<Duration>| retention.map_or("forever".to_owned(), time);
        vec![
            ("listen", config.listen.to_string()),
            ("data_dir", DEFAULT_DATA_DIR.to_owned()),
            (
                "retry_schedule",
                config
                    .retry_schedule
                    .delays()
                    .iter()
                    .map(|delay| time(*delay))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("request_timeout", time(config.request_timeout)),
            ("connect_timeout", time(config.connect_timeout)),
            ("max_response_bytes", config.max_response_bytes.to_string()),
            ("max_body_bytes", config.limits.max_body_bytes.to_string()),
            (
                "max_payload_depth",
                config.limits.max_payload_depth.to_string(),
            ),
            (
                "max_endpoints_per_app",
                config.limits.max_endpoints_per_app.to_string(),
            ),
            (
                "source_in_flight",
                config.limits.source_in_flight.to_string(),
            ),
            ("max_in_flight", config.max_in_flight.to_string()),
            ("endpoint_in_flight", config.endpoint_in_flight.to_string()),
            ("breaker_threshold", config.breaker.threshold.to_string()),
            ("breaker_cooldown", time(config.breaker.initial_cooldown)),
            ("breaker_max_cooldown", time(config.breaker.max_cooldown)),
            ("disable_after", time(config.disable_after)),
            ("log_format", "text".to_owned()),
            ("database_schema", postgres.schema),
            ("database_pool_size", postgres.pool_size.to_string()),
            (
                "database_statement_timeout",
                time(postgres.statement_timeout),
            ),
            ("lease", time(postgres.lease)),
            ("retain_messages", kept(config.retention.messages)),
            ("retain_attempts", kept(config.retention.attempts)),
            (
                "header_read_timeout",
                time(config.connections.header_read_timeout),
            ),
            ("idle_timeout", time(config.connections.idle_timeout)),
            (
                "max_connections",
                config.connections.max_connections.to_string(),
            ),
            ("max_streams", config.limits.streams.total.to_string()),
            (
                "max_attachment_bytes",
                config.max_attachment_bytes.to_string(),
            ),
            (
                "max_streams_per_token",
                config.limits.streams.per_token.to_string(),
            ),
        ]
    }
}

/// A duration in its largest whole unit, as the settings take it (`90d`, `10m`, `250ms`).
fn short_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ]
    .into_iter()
    .find(|(unit, _)| millis >= *unit && millis.is_multiple_of(*unit))
    .map_or(format!("{millis}ms"), |(unit, suffix)| {
        format!("{}{suffix}", millis / unit)
    })
}

/// `kait serve`'s arguments with each default appended to its help (`[default: …]`), taken
/// from [`ServeConfig::defaults`] rather than written into the help text, so they cannot
/// drift from the code. Not clap's own defaults: those would make every flag look given and
/// override the config file.
pub fn with_defaults(mut command: clap::Command) -> clap::Command {
    // Changing an argument moves it to the end; keep the declared order for help and README.
    let declared: Vec<String> = command
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect();
    for (index, id) in declared.iter().enumerate() {
        command = command.mut_arg(id, |arg| arg.display_order(index));
    }
    for (id, default) in ServeConfig::defaults() {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {default}]"))
        });
    }
    command
}

/// `kait serve`'s arguments as the binary shows them (with defaults).
pub fn serve_command() -> clap::Command {
    with_defaults(ServeArgs::augment_args(clap::Command::new("serve")))
}

/// The README's settings table, generated from `kait serve`'s arguments: flag, variable,
/// and help with its default.
pub fn settings_table(command: &clap::Command) -> String {
    let mut table = String::from("| Flag | Environment | Meaning |\n|---|---|---|\n");
    let mut arguments: Vec<&clap::Arg> = command.get_arguments().collect();
    arguments.sort_by_key(|arg| arg.get_display_order());
    for arg in arguments {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let env = arg
            .get_env()
            .map(|env| format!("`{}`", env.to_string_lossy()))
            .unwrap_or_default();
        let help = arg
            .get_help()
            .map(ToString::to_string)
            .unwrap_or_default()
            .replace('|', "\\|");
        table.push_str(&format!("| `--{long}` | {env} | {help} |\n"));
    }
    table
}

impl ServeConfig {
    /// The keys that seal secrets at rest: those configured, or the data dir's own key,
    /// generated there (owner-only) on first start. Two nodes starting together on one data
    /// dir both end up with the key the first one wrote.
    pub fn secret_keys(&self) -> anyhow::Result<SecretKeys> {
        if let Some(keys) = &self.secret_keys {
            return Ok(keys.clone());
        }
        let path = self.data_dir.join(SECRETS_KEY_FILE);
        if !path.exists() {
            let (key, text) = SealingKey::generate();
            match write_secret_file(&self.data_dir, &path, &text) {
                Ok(()) => {
                    tracing::info!(
                        path = %path.display(),
                        key = key.id(),
                        "generated the key that seals secrets at rest; back it up with the database"
                    );
                    return Ok(SecretKeys::new(key, Vec::new()));
                }
                Err(_) if path.exists() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(SecretKeys::new(
            read_key_file("the data dir's secrets key", &path)?,
            Vec::new(),
        ))
    }
}

fn read_key_file(setting: &str, path: &Path) -> anyhow::Result<SealingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{setting}: reading {}", path.display()))?;
    SealingKey::parse(&text)
        .map_err(|error| anyhow::anyhow!("{setting}: {}: {error}", path.display()))
}

fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

fn check_token(token: &str) -> anyhow::Result<()> {
    if token.len() < 16 || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        bail!("the admin token must be at least 16 visible ASCII characters");
    }
    Ok(())
}

fn generate_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("kait_{body}")
}

/// Writes a new owner-only file in `dir`, creating the directory owner-only if needed.
fn write_secret_file(dir: &Path, path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // An existing data dir is narrowed too: it is about to hold a secret.
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("making {} owner-only", dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{contents}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kait.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_in_flight = 7\nretry_schedule = \"1s\"\n",
        )
        .unwrap();
        let config = ServeConfig::resolve(ServeArgs {
            config: Some(file),
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            worker_threads: Some(1),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.worker_threads, Some(1));
        assert_eq!(config.max_in_flight, 7);
        assert_eq!(config.retry_schedule.max_attempts(), 2);
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad_schedule = ServeArgs {
            retry_schedule: Some("5s,later".into()),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(bad_schedule).is_err());
        let short_token = ServeArgs {
            admin_token: Some("short".into()),
            ..ServeArgs::default()
        };
        assert!(ServeConfig::resolve(short_token).is_err());
        let no_source_slots = ServeArgs {
            source_in_flight: Some(0),
            ..ServeArgs::default()
        };
        let error = ServeConfig::resolve(no_source_slots).unwrap_err();
        assert!(
            format!("{error:#}").contains("--source-in-flight"),
            "{error:#}"
        );
        let no_threads = ServeArgs {
            worker_threads: Some(0),
            ..ServeArgs::default()
        };
        let error = ServeConfig::resolve(no_threads).unwrap_err();
        assert!(
            format!("{error:#}").contains("--worker-threads"),
            "{error:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kait.toml");
        std::fs::write(&file, "listne = \"127.0.0.1:9000\"\n").unwrap();
        let error = ServeConfig::resolve(ServeArgs {
            config: Some(file),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("unknown field"), "{error:#}");
    }

    #[test]
    fn ca_files_are_read_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let with_ca = |path: PathBuf| {
            ServeConfig::resolve(ServeArgs {
                ca_file: Some(path),
                ..ServeArgs::default()
            })
        };
        let good = dir.path().join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(with_ca(good).unwrap().extra_root_certificates.len(), 1);
        let missing = with_ca(dir.path().join("nowhere.pem")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("--ca-file: reading"),
            "{missing:#}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = with_ca(empty).unwrap_err();
        assert!(
            format!("{error:#}").contains("no PEM certificate"),
            "{error:#}"
        );
    }

    #[test]
    fn database_settings_are_checked() {
        let config = ServeConfig::resolve(ServeArgs {
            database_url: Some("postgres://kait@127.0.0.1:5432/kait".into()),
            database_schema: Some("kait_blue".into()),
            lease: Some("5s".into()),
            retain_messages: Some("forever".into()),
            retain_attempts: Some("7d".into()),
            ..ServeArgs::default()
        })
        .unwrap();
        let postgres = config.postgres.expect("PostgreSQL selected");
        assert_eq!(postgres.schema, "kait_blue");
        assert_eq!(postgres.lease, Duration::from_secs(5));
        assert_eq!(config.retention.messages, None);
        assert_eq!(
            config.retention.attempts,
            Some(Duration::from_secs(7 * 24 * 3600))
        );

        for (args, expected) in [
            (
                ServeArgs {
                    database_url: Some("mysql://nope".into()),
                    ..ServeArgs::default()
                },
                "--database-url",
            ),
            (
                ServeArgs {
                    database_url: Some("postgres://127.0.0.1/test".into()),
                    database_schema: Some("Robert'); DROP TABLE".into()),
                    ..ServeArgs::default()
                },
                "--database-schema",
            ),
            (
                ServeArgs {
                    database_schema: Some("kait".into()),
                    ..ServeArgs::default()
                },
                "needs --database-url",
            ),
            (
                ServeArgs {
                    database_url: Some("postgres://127.0.0.1/test".into()),
                    lease: Some("10ms".into()),
                    ..ServeArgs::default()
                },
                "--lease",
            ),
            (
                ServeArgs {
                    database_url: Some("postgres://127.0.0.1/test".into()),
                    database_pool_size: Some(1),
                    ..ServeArgs::default()
                },
                "--database-pool-size",
            ),
            (
                ServeArgs {
                    retain_messages: Some("1m".into()),
                    ..ServeArgs::default()
                },
                "--retain-messages",
            ),
            (
                ServeArgs {
                    retain_attempts: Some("soon".into()),
                    ..ServeArgs::default()
                },
                "--retain-attempts",
            ),
        ] {
            let error = ServeConfig::resolve(args).unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }

    #[test]
    fn secrets_keys_come_from_files_or_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        // Unset: generated into the data dir, owner-only, and the same key next time.
        let config = ServeConfig::for_data_dir(dir.path().join("data"));
        let generated = config.secret_keys().unwrap();
        let path = dir.path().join("data").join(SECRETS_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            config.secret_keys().unwrap().current_id(),
            generated.current_id()
        );
        // Given as files: the current key and a previous one.
        let (new_key, new_text) = SealingKey::generate();
        let new_path = dir.path().join("new.key");
        std::fs::write(&new_path, new_text).unwrap();
        let config = ServeConfig::resolve(ServeArgs {
            secrets_key_file: Some(new_path.clone()),
            previous_secrets_key_files: vec![path.clone()],
            ..ServeArgs::default()
        })
        .unwrap();
        let keys = config.secret_keys().unwrap();
        assert_eq!(keys.current_id(), new_key.id());
        let sealed = generated.seal("f", "old");
        assert_eq!(keys.open("f", &sealed).unwrap(), "old");
        // Bad input: a key of the wrong size, a previous key without a current one.
        std::fs::write(dir.path().join("short.key"), "c2hvcnQ=").unwrap();
        let error = ServeConfig::resolve(ServeArgs {
            secrets_key_file: Some(dir.path().join("short.key")),
            ..ServeArgs::default()
        })
        .unwrap_err();
        assert!(format!("{error:#}").contains("32 bytes"), "{error:#}");
        assert!(
            ServeConfig::resolve(ServeArgs {
                previous_secrets_key_files: vec![path],
                ..ServeArgs::default()
            })
            .is_err()
        );
    }

    #[test]
    fn the_admin_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "kait_from_a_file_0123456789\n").unwrap();
        let config = ServeConfig::resolve(ServeArgs {
            admin_token_file: Some(path.clone()),
            ..ServeArgs::default()
        })
        .unwrap();
        assert_eq!(
            config.admin_token.as_deref(),
            Some("kait_from_a_file_0123456789")
        );
        let missing = ServeConfig::resolve(ServeArgs {
            admin_token_file: Some(dir.path().join("absent")),
            ..ServeArgs::default()
        });
        assert!(missing.is_err());
    }

    #[test]
    fn generated_token_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = ServeConfig::for_data_dir(dir.path());
        assert!(first.ensure_admin_token().unwrap());
        let mut second = ServeConfig::for_data_dir(dir.path());
        assert!(!second.ensure_admin_token().unwrap());
        assert_eq!(first.admin_token, second.admin_token);
    }

    /// The README's settings table is generated from `kait serve --help`; this fails when
    /// they differ. `KAIT_WRITE_README=1 cargo test -p kait readme` writes it.
    #[test]
    fn the_readme_settings_table_is_the_help() {
        const START: &str = "<!-- settings table: generated from `kait serve --help` -->\n";
        const END: &str = "<!-- end of settings table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme
            .find(START)
            .expect("the README marks its settings table")
            + START.len();
        let end = start
            + readme[start..]
                .find(END)
                .expect("the table's end is marked");
        let table = settings_table(&serve_command());
        if std::env::var_os("KAIT_WRITE_README").is_some() {
            std::fs::write(
                path,
                format!("{}{table}{}", &readme[..start], &readme[end..]),
            )
            .unwrap();
            return;
        }
        assert_eq!(
            readme[start..end],
            table,
            "the README's settings table differs from `kait serve --help`: \
             run KAIT_WRITE_README=1 cargo test -p kait readme"
        );
    }

    #[test]
    fn every_default_is_shown_on_an_existing_setting() {
        let command = serve_command();
        for (id, default) in ServeConfig::defaults() {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap_or_else(|| panic!("no setting {id}"));
            let help = arg.get_help().unwrap().to_string();
            assert!(help.ends_with(&format!("[default: {default}]")), "{help}");
        }
        let help = command
            .get_arguments()
            .find(|arg| arg.get_id() == "request_timeout")
            .unwrap()
            .get_help()
            .unwrap()
            .to_string();
        assert!(help.ends_with("[default: 15s]"), "{help}");
        assert_eq!(short_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(short_duration(Duration::from_secs(60)), "1m");
        assert_eq!(short_duration(Duration::from_millis(1_500)), "1500ms");
    }

    #[test]
    fn flags_win_over_the_file_and_lists_replace() {
        let file: ServeArgs = toml::from_str(
            "max_in_flight = 7\nendpoint_in_flight = 3\nallow_networks = [\"10.0.0.0/8\"]",
        )
        .unwrap();
        let flags = ServeArgs {
            max_in_flight: Some(9),
            ..Default::default()
        };
        let merged = flags.over(file).unwrap();
        assert_eq!(merged.max_in_flight, Some(9));
        assert_eq!(merged.endpoint_in_flight, Some(3));
        assert_eq!(merged.allow_networks.len(), 1);
        let unknown = toml::from_str::<ServeArgs>("max_in_fligth = 1");
        assert!(unknown.is_err(), "a misspelt key is refused");
    }
}
