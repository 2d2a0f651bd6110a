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
//! - `ingest`: webhooks posted to an incoming source's receiving URL and forwarded to its
//!   endpoint; received/s (accepted), forwarded/s (delivered), send-to-forward latency.
//! - `ingest-isolation`: one source at a steady rate, alone and beside a flood on another.
//! - `timers`: pipe timers firing together over a backlog of pending ones (`timers.rs`).
//! - `media`: attachment upload and ranged download against loopback HTTP (`media.rs`).
//! - `mqtt`: device messages from the broker to delivered webhooks, flat out and paced
//!   (`mqtt.rs`).
//! - `pages`: the portal's and the dashboard's page times over a large log (`pages.rs`).
//! - `overload`: twice push-10's delivery rate offered for 30 s, then the drain (`overload.rs`).
//! - `efficiency`: CPU per webhook at 10 to 1,000 messages/s against flat out, and a quiet
//!   server's idle cost (`efficiency.rs`).

mod cluster;
mod efficiency;
mod load;
mod media;
mod mqtt;
mod overload;
mod pages;
mod receiver;
mod scenarios;
mod streams;
mod summary;
mod timers;

use self::cluster::*;
use self::receiver::*;
use self::scenarios::*;

use anyhow::bail;
use clap::{Args, ValueEnum};

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
    /// Requests received on an incoming source and forwarded to its endpoint.
    Ingest,
    /// One source paced at `--rate` for `--seconds`, alone and then while another source is
    /// flooded with `--messages`: whether the flood holds it up.
    #[value(name = "ingest-isolation")]
    IngestIsolation,
    /// 10,000 pipe timers due within about a second over `--timer-backlog` pending ones:
    /// timers fired per second and lateness.
    Timers,
    /// An attachment of `--media-mib` uploaded, then read in 1 MiB ranges by `--concurrency`
    /// readers: MB/s against the same transfers on loopback HTTP, and peak RSS.
    Media,
    /// Device messages published at QoS 1 to `--mqtt-url`, bridged to webhooks: as fast as
    /// the bridge keeps up (`--messages`), then paced at `--rate` for `--seconds`.
    Mqtt,
    /// The portal's and the dashboard's pages (their API calls) over `--page-messages`
    /// delivered messages.
    Pages,
    /// Twice push-10's delivered/s offered for 30 s, then a trickle: how long the backlog
    /// takes to drain against backlog ÷ capacity, and the trickle's latency.
    Overload,
    /// CPU-seconds per 1,000 webhooks at 10, 100, 500 and 1,000 messages/s (for `--seconds`
    /// each) and flat out, to one and to ten endpoints; then idle CPU over `--idle-seconds`
    /// with 1,000 endpoints configured.
    Efficiency,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run (repeatable) [default: all of them but `pages` and `efficiency`].
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Every scenario, `pages` too, and one summary table over them all.
    #[arg(long, conflicts_with = "scenario")]
    pub all: bool,
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
    /// Waits pending (due tomorrow) while the `timers` scenario fires its burst.
    #[arg(long, default_value_t = 1_000_000)]
    pub timer_backlog: usize,
    /// Kait nodes sharing the database (more than one needs `--database-url`); the load
    /// client spreads its requests over them round-robin.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// The `kait` binary to run as the server [default: this one]: for A/B runs of two
    /// builds with the same load client.
    #[arg(long)]
    pub server_binary: Option<std::path::PathBuf>,
    /// The attachment's size in the `media` scenario, in MiB.
    #[arg(long, default_value_t = 256)]
    pub media_mib: usize,
    /// Messages delivered before the `pages` scenario times the pages.
    #[arg(long, default_value_t = 1_000_000)]
    pub page_messages: usize,
    /// How long the `efficiency` scenario watches an idle server.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// The MQTT broker of the `mqtt` scenarios.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub mqtt_url: String,
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
    let scenarios = if args.all {
        Scenario::value_variants().to_vec()
    } else if args.scenario.is_empty() {
        vec![
            Scenario::Raw,
            Scenario::Push1,
            Scenario::Push10,
            Scenario::Latency,
            Scenario::Backlog,
            Scenario::Streams,
            Scenario::Ingest,
            Scenario::IngestIsolation,
            Scenario::Timers,
            Scenario::Media,
            Scenario::Mqtt,
            Scenario::Overload,
        ]
    } else {
        args.scenario.clone()
    };
    let mut results = Vec::new();
    let mut streams_results = Vec::new();
    let mut media_results = Vec::new();
    let mut pages_results = Vec::new();
    let mut overload_results = Vec::new();
    let mut efficiency_results = Vec::new();
    let mut rows: Vec<summary::SummaryRow> = Vec::new();
    let mut raw_rate = None;
    for scenario in scenarios {
        let first_new_row = rows.len();
        let first_new_result = results.len();
        match scenario {
            Scenario::Streams => {
                let result = streams::run(&args).await?;
                rows.push(summary::of_streams(&result));
                streams_results.push(result);
            }
            Scenario::Media => {
                let result = media::run(&args).await?;
                rows.extend(summary::of_media(&result));
                media_results.push(result);
            }
            Scenario::Pages => {
                let result = pages::run(&args).await?;
                rows.push(summary::of_pages(&result));
                pages_results.push(result);
            }
            Scenario::Overload => {
                let result = overload::run(&args).await?;
                rows.push(summary::of_overload(&result, raw_rate));
                overload_results.push(result);
            }
            Scenario::Efficiency => {
                let result = efficiency::run(&args).await?;
                rows.push(summary::of_efficiency(&result));
                efficiency_results.push(result);
            }
            Scenario::Mqtt => results.extend(mqtt::run(&args).await?),
            Scenario::IngestIsolation => results.extend(ingest_isolation(&args).await?),
            Scenario::Timers => {
                let receiver = BenchReceiver::start().await?;
                results.extend(timers::timers(&receiver, &args).await?);
            }
            Scenario::Backlog => {
                for size in [10_000, args.backlog] {
                    let receiver = BenchReceiver::start().await?;
                    results.push(backlog(&receiver, &args, size).await?);
                }
            }
            Scenario::Raw => {
                let receiver = BenchReceiver::start().await?;
                let result = raw(&receiver, &args).await?;
                raw_rate = Some(result.delivered_per_second);
                results.push(result);
            }
            Scenario::Push1 | Scenario::Push10 | Scenario::Ingest | Scenario::Latency => {
                let receiver = BenchReceiver::start().await?;
                results.push(match scenario {
                    Scenario::Push1 => push(&receiver, &args, 1).await?,
                    Scenario::Push10 => push(&receiver, &args, 10).await?,
                    Scenario::Ingest => ingest(&receiver, &args).await?,
                    _ => {
                        let paced = Pace {
                            rate: args.rate.max(1),
                            total: (args.rate.max(1) * args.seconds.max(1)) as usize,
                        };
                        push_with(&receiver, &args, 1, Some(paced)).await?
                    }
                });
            }
        }
        // Rates of delivery flat out compare with `raw`; paced and timer figures do not.
        let against_raw = !matches!(
            scenario,
            Scenario::Raw | Scenario::IngestIsolation | Scenario::Timers
        );
        for result in &mut results[first_new_result..] {
            if against_raw {
                result.ratio_to_raw = raw_rate.map(|raw| result.delivered_per_second / raw);
            }
            rows.push(summary::of_result(result));
        }
        // Each scenario's lines as it ends: `--all` on PostgreSQL runs for over half an hour,
        // and a run cut short still leaves what it measured.
        summary::print_progress(&rows[first_new_row..]);
    }
    if !results.is_empty() {
        print_table(&results)?;
    }
    for result in &streams_results {
        streams::report(result);
    }
    for result in &media_results {
        media::report(result);
    }
    for result in &pages_results {
        pages::report(result);
    }
    for result in &overload_results {
        overload::report(result);
    }
    for result in &efficiency_results {
        efficiency::report(result);
    }
    // The table over every scenario (always, so a partial run reads the same way).
    summary::print(&rows);
    let failed: Vec<_> = results
        .iter()
        .filter(|result| result.missing > 0 || result.bad_signatures > 0)
        .map(|result| result.scenario)
        .chain(
            overload_results
                .iter()
                .filter(|result| result.missing > 0)
                .map(|result| result.scenario),
        )
        .chain(
            efficiency_results
                .iter()
                .filter(|result| result.phases.iter().any(|phase| phase.missing > 0))
                .map(|result| result.scenario),
        )
        .collect();
    if !failed.is_empty() {
        bail!("webhooks missing or badly signed in: {}", failed.join(", "));
    }
    Ok(())
}

/// The main table, then each result as a JSON line.
fn print_table(results: &[BenchResult]) -> anyhow::Result<()> {
    println!(
        "{:<14} {:<8} {:>5} {:>8} {:>4} {:>11} {:>12} {:>8} {:>8} {:>8} {:>7} {:>5} {:>7} {:>9} {:>10}",
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
    for result in results {
        println!(
            "{:<14} {:<8} {:>5} {:>8} {:>4} {:>11.0} {:>12.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>5} {:>7} {:>9} {:>10}",
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
    for result in results {
        println!("{}", serde_json::to_string(result)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::cpu_seconds_from_stat;

    #[test]
    fn reads_cpu_time_from_proc_stat() {
        let stat = "4242 (kait serve) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0 9";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.8));
        assert_eq!(cpu_seconds_from_stat("4242 (kait) S 1"), None);
    }

    #[test]
    fn reads_the_send_time() {
        assert_eq!(
            receiver::sent_micros(br#"{"t":12345,"pad":"xx"}"#),
            Some(12345)
        );
        assert_eq!(receiver::sent_micros(br#"{"pad":"xx"}"#), None);
    }
}
