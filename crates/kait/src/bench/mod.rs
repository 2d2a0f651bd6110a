//! `kait bench`: end-to-end throughput and latency on this machine, everything on loopback.
//!
//! The server runs as a child process (`kait serve` on a temporary data dir, durable commits
//! as always; or `--nodes` of them on a fresh PostgreSQL schema with `--database-url`), the
//! receiver and the load client in this process. The receiver verifies every
//! signature, so signing cannot be skipped to look fast. Scenarios:
//!
//! - `raw`: the load client POSTs ~1 KiB JSON bodies straight to the receiver: the ceiling of
//!   an HTTP round trip on this box, which the other figures are compared with.
//! - `push-1` / `push-10`: messages through `POST /api/v1/app/{app}/msg` to one or ten
//!   endpoints; accepted/s, delivered/s and end-to-end latency (arrival minus send time).

mod load;
mod streams;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use clap::{Args, ValueEnum};
use kait_core::signing::{Secret, SigningKey};
use serde_json::json;

const BENCH_TOKEN: &str = "kait_bench_admin_token_0123456789";
/// One secret for every bench endpoint, so the receiver verifies with a single key.
const BENCH_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Raw,
    #[value(name = "push-1")]
    Push1,
    #[value(name = "push-10")]
    Push10,
    /// A fixed rate (`--rate` per second for `--seconds`) to one endpoint: end-to-end latency
    /// when Kait is not saturated.
    Latency,
    /// `--backlog` messages (and, to compare, 10,000) queued while the endpoint is down, then
    /// drained once it is back: drain rate and memory against backlog size.
    Backlog,
    /// 1,000 event streams held on one application: another application's ingest latency
    /// against idle (see `streams.rs`).
    Streams,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run (repeatable) [default: all of them].
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Messages (or raw requests) per scenario.
    #[arg(long, default_value_t = 20_000)]
    pub messages: usize,
    /// Requests the load client keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Approximate payload size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Messages per second in the `latency` scenario.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// How long the `latency` scenario sends.
    #[arg(long, default_value_t = 20)]
    pub seconds: u32,
    /// Run the servers on this PostgreSQL (a `postgres://` URL) instead of SQLite; each
    /// scenario gets a fresh schema, dropped afterwards.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Messages queued while the endpoint is down in the `backlog` scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Kait nodes sharing the database (more than one needs `--database-url`); the load
    /// client spreads its requests over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// The `kait` binary to run as the server [default: this one]: for A/B runs of two
    /// builds with the same load client.
    #[arg(long)]
    pub server_binary: Option<std::path::PathBuf>,
}

/// One scenario's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub nodes: usize,
    pub messages: usize,
    pub endpoints: usize,
    pub accepted_per_second: f64,
    /// Webhooks received per second, first send to last arrival.
    pub delivered_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub missing: usize,
    pub duplicates: usize,
    pub bad_signatures: u64,
    pub ratio_to_raw: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    pub server_idle_rss_mib: Option<f64>,
    /// CPU time (user + system) the server processes used over the whole scenario, per
    /// webhook delivered: the cost that the rates depend on once the box is saturated, and
    /// far less noisy than the rates on a shared machine.
    pub server_cpu_us_per_webhook: Option<f64>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.messages == 0 || args.concurrency == 0 || args.nodes == 0 {
        bail!("--messages, --concurrency and --nodes must be at least 1");
    }
    if args.nodes > 1 && args.database_url.is_none() {
        bail!("--nodes above 1 needs --database-url (nodes share a PostgreSQL database)");
    }
    if let Some(url) = &args.database_url {
        kait_store::PgOptions::new(url, kait_store::sealing::SecretKeys::ephemeral())
            .map_err(|error| anyhow::anyhow!("--database-url: {error}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_scenarios(args))
}

async fn run_scenarios(args: BenchArgs) -> anyhow::Result<()> {
    let scenarios = if args.scenario.is_empty() {
        vec![
            Scenario::Raw,
            Scenario::Push1,
            Scenario::Push10,
            Scenario::Latency,
            Scenario::Backlog,
            Scenario::Streams,
        ]
    } else {
        args.scenario.clone()
    };
    let mut results = Vec::new();
    let mut streams_results = Vec::new();
    let mut raw_rate = None;
    for scenario in scenarios {
        if scenario == Scenario::Streams {
            streams_results.push(streams::run(&args).await?);
            continue;
        }
        if scenario == Scenario::Backlog {
            for size in [10_000, args.backlog] {
                let receiver = BenchReceiver::start().await?;
                let mut result = backlog(&receiver, &args, size).await?;
                result.ratio_to_raw = raw_rate.map(|raw| result.delivered_per_second / raw);
                results.push(result);
            }
            continue;
        }
        let receiver = BenchReceiver::start().await?;
        let mut result = match scenario {
            Scenario::Raw => raw(&receiver, &args).await?,
            Scenario::Push1 => push(&receiver, &args, 1).await?,
            Scenario::Push10 => push(&receiver, &args, 10).await?,
            Scenario::Backlog | Scenario::Streams => unreachable!("handled above"),
            Scenario::Latency => {
                let paced = Pace {
                    rate: args.rate.max(1),
                    total: (args.rate.max(1) * args.seconds.max(1)) as usize,
                };
                push_with(&receiver, &args, 1, Some(paced)).await?
            }
        };
        if scenario == Scenario::Raw {
            raw_rate = Some(result.delivered_per_second);
        } else if let Some(raw_rate) = raw_rate {
            result.ratio_to_raw = Some(result.delivered_per_second / raw_rate);
        }
        results.push(result);
    }
    println!(
        "{:<8} {:<8} {:>5} {:>8} {:>4} {:>11} {:>12} {:>8} {:>8} {:>8} {:>7} {:>5} {:>7} {:>9} {:>10}",
        "scenario",
        "store",
        "nodes",
        "messages",
        "eps",
        "accepted/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "missing",
        "dups",
        "vs raw",
        "peak MiB",
        "cpu us/wh"
    );
    for result in &results {
        println!(
            "{:<8} {:<8} {:>5} {:>8} {:>4} {:>11.0} {:>12.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>5} {:>7} {:>9} {:>10}",
            result.scenario,
            result.backend,
            result.nodes,
            result.messages,
            result.endpoints,
            result.accepted_per_second,
            result.delivered_per_second,
            result.latency_p50_ms,
            result.latency_p99_ms,
            result.latency_max_ms,
            result.missing,
            result.duplicates,
            result
                .ratio_to_raw
                .map_or("-".into(), |ratio| format!("{ratio:.3}")),
            result
                .server_peak_rss_mib
                .map_or("-".into(), |mib| format!("{mib:.1}")),
            result
                .server_cpu_us_per_webhook
                .map_or("-".into(), |us| format!("{us:.1}")),
        );
    }
    for result in &results {
        println!("{}", serde_json::to_string(result)?);
    }
    for result in &streams_results {
        streams::report(result);
    }
    let failed: Vec<_> = results
        .iter()
        .filter(|result| result.missing > 0 || result.bad_signatures > 0)
        .map(|result| result.scenario)
        .collect();
    if !failed.is_empty() {
        bail!("webhooks missing or badly signed in: {}", failed.join(", "));
    }
    Ok(())
}

/// What the receiver saw.
struct Arrivals {
    /// (endpoint path, webhook id) → how many times it arrived.
    counts: HashMap<(String, String), u32>,
    latencies_micros: Vec<u64>,
    last_arrival: Option<Instant>,
}

struct ReceiverState {
    epoch: Instant,
    /// While set, webhooks are refused with 503 and not counted (the `backlog` scenario).
    down: std::sync::atomic::AtomicBool,
    /// When the first webhook was accepted.
    first_arrival: Mutex<Option<Instant>>,
    key: SigningKey,
    arrivals: Mutex<Arrivals>,
    received: AtomicU64,
    bad_signatures: AtomicU64,
}

struct BenchReceiver {
    address: std::net::SocketAddr,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BenchReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the send time the load client put at the start of the payload: `{"t":<micros>,`.
fn sent_micros(body: &[u8]) -> Option<u64> {
    let digits = body.strip_prefix(b"{\"t\":")?;
    let end = digits.iter().position(|byte| !byte.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

impl BenchReceiver {
    async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(ReceiverState {
            epoch: Instant::now(),
            down: std::sync::atomic::AtomicBool::new(false),
            first_arrival: Mutex::new(None),
            key: Secret::parse(BENCH_SECRET)?.signing_key(),
            arrivals: Mutex::new(Arrivals {
                counts: HashMap::new(),
                latencies_micros: Vec::new(),
                last_arrival: None,
            }),
            received: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
        });
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let state = handler_state.clone();
            async move { state.receive(uri, headers, body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            state,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.address)
    }
}

impl ReceiverState {
    fn receive(&self, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
        let now = Instant::now();
        self.received.fetch_add(1, Ordering::Relaxed);
        if uri.path() == "/raw" {
            return StatusCode::OK;
        }
        if self.down.load(Ordering::Relaxed) {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        self.first_arrival
            .lock()
            .expect("first arrival lock")
            .get_or_insert(now);
        let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
        let Some(msg_id) = header("webhook-id") else {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::BAD_REQUEST;
        };
        let timestamp = header("webhook-timestamp").and_then(|text| text.parse::<i64>().ok());
        let signed = match (timestamp, header("webhook-signature")) {
            (Some(timestamp), Some(signature)) => {
                self.key.matches_any(msg_id, timestamp, &body, signature)
            }
            _ => false,
        };
        if !signed {
            self.bad_signatures.fetch_add(1, Ordering::Relaxed);
            return StatusCode::UNAUTHORIZED;
        }
        let latency = sent_micros(&body)
            .map(|sent| (now.duration_since(self.epoch).as_micros() as u64).saturating_sub(sent));
        let mut arrivals = self.arrivals.lock().expect("arrivals lock");
        *arrivals
            .counts
            .entry((uri.path().to_owned(), msg_id.to_owned()))
            .or_default() += 1;
        if let Some(latency) = latency {
            arrivals.latencies_micros.push(latency);
        }
        arrivals.last_arrival = Some(now);
        StatusCode::OK
    }
}

fn payload(epoch: Instant, pad: &str) -> String {
    format!(
        "{{\"t\":{},\"pad\":\"{pad}\"}}",
        epoch.elapsed().as_micros()
    )
}

async fn raw(receiver: &BenchReceiver, args: &BenchArgs) -> anyhow::Result<BenchResult> {
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let epoch = receiver.state.epoch;
    let target = load::Target {
        servers: Arc::from([receiver.address]),
        path: "/raw".into(),
        bearer: None,
        expect: StatusCode::OK,
    };
    // At least 200,000 requests: a shorter run is over in a fraction of a second and its
    // figure swings with whatever else the machine does at that moment.
    let requests = args.messages.max(200_000);
    let started = Instant::now();
    let finished = load::post_all(target, requests, args.concurrency, None, move |_| {
        Bytes::from(payload(epoch, &pad))
    })
    .await?;
    let rate = requests as f64 / finished.duration_since(started).as_secs_f64();
    Ok(BenchResult {
        scenario: "raw",
        backend: "-",
        nodes: 0,
        messages: requests,
        endpoints: 1,
        accepted_per_second: rate,
        delivered_per_second: rate,
        latency_p50_ms: 0.0,
        latency_p99_ms: 0.0,
        latency_max_ms: 0.0,
        missing: 0,
        duplicates: 0,
        bad_signatures: 0,
        ratio_to_raw: None,
        server_peak_rss_mib: None,
        server_idle_rss_mib: None,
        server_cpu_us_per_webhook: None,
    })
}

/// The PostgreSQL schema one scenario's nodes share; dropped when the scenario ends.
struct BenchSchema {
    options: kait_store::PgOptions,
    /// Holds the secrets key the nodes share (each has a data dir of its own).
    key_dir: tempfile::TempDir,
}

impl BenchSchema {
    fn new(url: &str) -> anyhow::Result<Self> {
        let (key, key_text) = kait_store::sealing::SealingKey::generate();
        let key_dir = tempfile::tempdir()?;
        std::fs::write(key_dir.path().join("secrets.key"), key_text)?;
        let mut options =
            kait_store::PgOptions::new(url, kait_store::sealing::SecretKeys::new(key, Vec::new()))
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        options.schema = format!("kait_bench_{:012x}", rand::random::<u64>() >> 16);
        Ok(Self { options, key_dir })
    }

    fn flags(&self, url: &str) -> Vec<String> {
        vec![
            "--database-url".into(),
            url.into(),
            "--database-schema".into(),
            self.options.schema.clone(),
            "--secrets-key-file".into(),
            self.key_dir
                .path()
                .join("secrets.key")
                .display()
                .to_string(),
        ]
    }

    async fn drop_schema(self) -> anyhow::Result<()> {
        kait_store::postgres::drop_schema(&self.options)
            .await
            .map_err(|error| anyhow::anyhow!("dropping {}: {error}", self.options.schema))
    }
}

/// A `kait serve` child process on a temporary data dir (and maybe a shared schema).
struct ServerProcess {
    child: Child,
    base_url: String,
    _data_dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(binary: Option<&std::path::Path>, extra: &[String]) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let binary = match binary {
            Some(binary) => binary.to_owned(),
            None => std::env::current_exe()?,
        };
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-network",
                "127.0.0.0/8",
            ])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(extra)
            .args(["--admin-token", BENCH_TOKEN])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting kait serve")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let base_url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(address) = line.strip_prefix("kait listening on ") {
                        break address.to_owned();
                    }
                }
                _ => bail!("kait serve exited before listening"),
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self {
            child,
            base_url,
            _data_dir: data_dir,
        })
    }

    /// Resident set size now and at its peak, in MiB, from /proc (Linux only).
    fn rss_mib(&self) -> (Option<f64>, Option<f64>) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
        else {
            return (None, None);
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
                .map(|kib| kib / 1024.0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// User plus system CPU time the process has used, in seconds, from /proc (Linux only).
    fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        cpu_seconds_from_stat(&stat)
    }
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name may hold spaces, so fields
/// are counted after its closing parenthesis; the unit is USER_HZ, 100 on Linux.
fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The largest of the nodes' resident sizes (now or peak, as `pick` chooses), in MiB.
fn max_rss(
    servers: &[ServerProcess],
    pick: impl Fn((Option<f64>, Option<f64>)) -> Option<f64>,
) -> Option<f64> {
    servers
        .iter()
        .filter_map(|server| pick(server.rss_mib()))
        .reduce(f64::max)
}

async fn api_post(
    client: &reqwest::Client,
    url: String,
    body: String,
) -> anyhow::Result<serde_json::Value> {
    let response = client
        .post(&url)
        .bearer_auth(BENCH_TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let bytes = response.bytes().await?;
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Sending at a fixed rate instead of as fast as possible.
#[derive(Clone, Copy)]
struct Pace {
    rate: u32,
    total: usize,
}

async fn push(
    receiver: &BenchReceiver,
    args: &BenchArgs,
    endpoints: usize,
) -> anyhow::Result<BenchResult> {
    push_with(receiver, args, endpoints, None).await
}

/// The servers of one scenario (`--nodes` of them) and the schema they share, if any.
struct Cluster {
    servers: Vec<ServerProcess>,
    schema: Option<BenchSchema>,
}

impl Cluster {
    async fn start(args: &BenchArgs, extra: &[&str]) -> anyhow::Result<Self> {
        let schema = match &args.database_url {
            Some(url) => Some(BenchSchema::new(url)?),
            None => None,
        };
        let mut flags: Vec<String> = match (&schema, &args.database_url) {
            (Some(schema), Some(url)) => schema.flags(url),
            _ => Vec::new(),
        };
        flags.extend(extra.iter().map(|flag| flag.to_string()));
        let mut servers = Vec::with_capacity(args.nodes);
        for _ in 0..args.nodes {
            servers.push(ServerProcess::start(args.server_binary.as_deref(), &flags)?);
        }
        // Let the fresh processes settle before reading their idle size.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Self { servers, schema })
    }

    /// Stops the servers and drops the schema; returns the largest peak RSS of a node.
    /// Stops the nodes; returns the largest peak RSS and the CPU seconds of all nodes.
    async fn stop(self) -> anyhow::Result<(Option<f64>, Option<f64>)> {
        let peak = max_rss(&self.servers, |(_, peak)| peak);
        let cpu = self
            .servers
            .iter()
            .map(ServerProcess::cpu_seconds)
            .sum::<Option<f64>>();
        drop(self.servers);
        if let Some(schema) = self.schema {
            schema.drop_schema().await?;
        }
        Ok((peak, cpu))
    }

    /// Creates the bench application with `endpoints` endpoints on the receiver; returns the
    /// load target: every node's address (the load goes round-robin over them) and the
    /// message path.
    async fn app(
        &self,
        receiver: &BenchReceiver,
        endpoints: usize,
    ) -> anyhow::Result<load::Target> {
        let client = reqwest::Client::new();
        let base_url = &self.servers[0].base_url;
        let app = api_post(
            &client,
            format!("{base_url}/api/v1/app"),
            json!({ "name": "bench" }).to_string(),
        )
        .await?;
        let app_id = app["id"].as_str().context("app id")?.to_owned();
        for index in 0..endpoints {
            let body = json!({ "url": receiver.url(&format!("e{index}")), "secret": BENCH_SECRET });
            api_post(
                &client,
                format!("{base_url}/api/v1/app/{app_id}/endpoint"),
                body.to_string(),
            )
            .await?;
        }
        let servers = self
            .servers
            .iter()
            .map(|server| {
                server
                    .base_url
                    .trim_start_matches("http://")
                    .parse::<std::net::SocketAddr>()
                    .context("server address")
            })
            .collect::<anyhow::Result<Arc<[_]>>>()?;
        Ok(load::Target {
            servers,
            path: format!("/api/v1/app/{app_id}/msg").into(),
            bearer: Some(axum::http::HeaderValue::from_str(&format!(
                "Bearer {BENCH_TOKEN}"
            ))?),
            expect: StatusCode::ACCEPTED,
        })
    }
}

/// Posts `messages` messages to the target with `--concurrency` senders (paced or as fast as
/// accepted); returns when sending started and when the last was accepted.
async fn send_messages(
    target: load::Target,
    args: &BenchArgs,
    epoch: Instant,
    messages: usize,
    pace: Option<Pace>,
) -> anyhow::Result<(Instant, Instant)> {
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let started = Instant::now();
    let pace = pace.map(|pace| load::Pace {
        start: started,
        rate: pace.rate,
    });
    let accepted_at = load::post_all(target, messages, args.concurrency, pace, move |_| {
        Bytes::from(format!(
            "{{\"eventType\":\"bench.event\",\"payload\":{}}}",
            payload(epoch, &pad)
        ))
    })
    .await?;
    Ok((started, accepted_at))
}

/// Waits (bounded) until `expected` distinct webhooks arrived.
async fn wait_for_arrivals(receiver: &BenchReceiver, expected: usize) {
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(expected as u64);
    loop {
        let distinct = receiver
            .state
            .arrivals
            .lock()
            .expect("arrivals lock")
            .counts
            .len();
        if distinct >= expected || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a scenario measured around the receiver's arrivals.
struct Run {
    scenario: &'static str,
    messages: usize,
    endpoints: usize,
    /// Sending started; the last message was accepted.
    started: Instant,
    accepted_at: Instant,
    /// Delivered/s is counted from here to the last arrival.
    delivery_from: Instant,
    idle_rss: Option<f64>,
    peak_rss: Option<f64>,
    cpu_seconds: Option<f64>,
}

fn summarize(receiver: &BenchReceiver, args: &BenchArgs, run: Run) -> BenchResult {
    let mut arrivals = receiver.state.arrivals.lock().expect("arrivals lock");
    let distinct = arrivals.counts.len();
    let total: u64 = arrivals
        .counts
        .values()
        .map(|count| u64::from(*count))
        .sum();
    let last_arrival = arrivals.last_arrival.unwrap_or(run.delivery_from);
    arrivals.latencies_micros.sort_unstable();
    let percentile = |fraction: f64| {
        let latencies = &arrivals.latencies_micros;
        if latencies.is_empty() {
            return 0.0;
        }
        let index =
            ((latencies.len() as f64 * fraction).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index] as f64 / 1000.0
    };
    let expected = run.messages * run.endpoints;
    BenchResult {
        scenario: run.scenario,
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        nodes: args.nodes,
        messages: run.messages,
        endpoints: run.endpoints,
        accepted_per_second: run.messages as f64
            / run.accepted_at.duration_since(run.started).as_secs_f64(),
        delivered_per_second: distinct as f64
            / last_arrival.duration_since(run.delivery_from).as_secs_f64(),
        latency_p50_ms: percentile(0.50),
        latency_p99_ms: percentile(0.99),
        latency_max_ms: percentile(1.0),
        missing: expected.saturating_sub(distinct),
        duplicates: (total as usize).saturating_sub(distinct),
        bad_signatures: receiver.state.bad_signatures.load(Ordering::Relaxed),
        ratio_to_raw: None,
        server_peak_rss_mib: run.peak_rss,
        server_idle_rss_mib: run.idle_rss,
        server_cpu_us_per_webhook: run
            .cpu_seconds
            .map(|seconds| seconds * 1e6 / expected.max(1) as f64),
    }
}

async fn push_with(
    receiver: &BenchReceiver,
    args: &BenchArgs,
    endpoints: usize,
    pace: Option<Pace>,
) -> anyhow::Result<BenchResult> {
    let messages = pace.map_or(args.messages, |pace| pace.total);
    let cluster = Cluster::start(args, &[]).await?;
    let idle_rss = max_rss(&cluster.servers, |(now, _)| now);
    let target = cluster.app(receiver, endpoints).await?;
    let (started, accepted_at) =
        send_messages(target, args, receiver.state.epoch, messages, pace).await?;
    wait_for_arrivals(receiver, messages * endpoints).await;
    let (peak_rss, cpu_seconds) = cluster.stop().await?;
    let scenario = match (pace, endpoints) {
        (Some(_), _) => "latency",
        (None, 1) => "push-1",
        (None, _) => "push-10",
    };
    Ok(summarize(
        receiver,
        args,
        Run {
            scenario,
            messages,
            endpoints,
            started,
            accepted_at,
            delivery_from: started,
            idle_rss,
            peak_rss,
            cpu_seconds,
        },
    ))
}

/// Queues `size` messages while the receiver answers 503 (the breaker pauses the endpoint,
/// probing at least every second), then brings it back: delivered/s is the drain rate from
/// that moment to the last arrival; peak RSS shows whether memory grows with the backlog.
async fn backlog(
    receiver: &BenchReceiver,
    args: &BenchArgs,
    size: usize,
) -> anyhow::Result<BenchResult> {
    // Probes that fail while the endpoint is down are retried soon after it is back, so the
    // drain is not measured to a retry scheduled minutes later.
    let retries = vec!["250ms"; 40].join(",");
    let cluster = Cluster::start(
        args,
        &[
            "--breaker-cooldown",
            "500ms",
            "--breaker-max-cooldown",
            "1s",
            "--retry-schedule",
            &retries,
        ],
    )
    .await?;
    let idle_rss = max_rss(&cluster.servers, |(now, _)| now);
    let target = cluster.app(receiver, 1).await?;
    receiver.state.down.store(true, Ordering::Relaxed);
    let (started, accepted_at) =
        send_messages(target, args, receiver.state.epoch, size, None).await?;
    let up_at = Instant::now();
    receiver.state.down.store(false, Ordering::Relaxed);
    wait_for_arrivals(receiver, size).await;
    let (peak_rss, cpu_seconds) = cluster.stop().await?;
    let first = receiver
        .state
        .first_arrival
        .lock()
        .expect("first arrival lock")
        .unwrap_or(up_at);
    eprintln!(
        "backlog {size}: queued in {:.1} s, first delivery {:.2} s after the endpoint came back",
        accepted_at.duration_since(started).as_secs_f64(),
        first.duration_since(up_at).as_secs_f64()
    );
    Ok(summarize(
        receiver,
        args,
        Run {
            scenario: if size == 10_000 {
                "backlog-10k"
            } else {
                "backlog"
            },
            messages: size,
            endpoints: 1,
            started,
            accepted_at,
            delivery_from: up_at,
            idle_rss,
            peak_rss,
            cpu_seconds,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        let stat = "4242 (kait serve) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 9";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.8));
        assert_eq!(cpu_seconds_from_stat("4242 (kait) S 1"), None);
    }

    #[test]
    fn reads_the_send_time() {
        assert_eq!(sent_micros(br#"{"t":12345,"pad":"xx"}"#), Some(12345));
        assert_eq!(sent_micros(br#"{"pad":"xx"}"#), None);
    }
}
