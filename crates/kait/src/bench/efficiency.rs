//! `efficiency`: what a webhook costs in CPU when Kait is not busy, and what a quiet server
//! costs doing nothing (issue 20).
//!
//! For one and for ten endpoints, one server is sent messages at 10, 100, 500 and 1,000 per
//! second for `--seconds` each, then `--messages` as fast as they are accepted (the flat-out
//! figure the others are compared with). Each phase reads the CPU time (user + system, from
//! `/proc`) of Kait's processes and, when the database is a PostgreSQL on this machine, of
//! PostgreSQL's (every `postgres` process, and what its exited children used) before and
//! after, so each side's cost per 1,000 webhooks is reported separately. A phase ends once
//! every webhook arrived and the outcome writes that follow had time to land.
//!
//! Then a fresh server with 1,000 endpoints configured (on ten applications) and nothing flowing is watched for
//! `--idle-seconds`: the share of one core it uses, which should be close to nothing.

use std::time::{Duration, Instant};

use super::*;
use crate::launch::{cpu_seconds_from_stat, stat_field};

const RATES: [u32; 4] = [10, 100, 500, 1000];
const ENDPOINT_COUNTS: [usize; 2] = [1, 10];
const IDLE_ENDPOINTS: usize = 1000;
const IDLE_ENDPOINTS_PER_APP: usize = 100;
/// Before a phase is measured (creating its application and endpoints costs CPU too) and
/// after its last arrival (the outcomes are written in batches shortly after).
const SETTLE: Duration = Duration::from_millis(500);
/// A paced sender needs few connections: at 1,000/s and a few ms per request, a handful.
const PACED_CONCURRENCY: usize = 8;

/// One rate (or flat out) to one endpoint count.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EfficiencyPhase {
    pub endpoints: usize,
    /// Messages per second; `None` when sent as fast as accepted.
    pub rate: Option<u32>,
    pub messages: usize,
    /// Webhooks delivered (messages × endpoints).
    pub webhooks: usize,
    pub seconds: f64,
    /// Kait's CPU-seconds per 1,000 webhooks delivered.
    pub kait_cpu_per_1000: f64,
    /// PostgreSQL's, when it runs on this machine.
    pub database_cpu_per_1000: Option<f64>,
    /// Kait's CPU per webhook against the flat-out phase's (the goal is at most 1.5).
    pub vs_flat_out: Option<f64>,
    /// Kait's share of one core over the phase, in %.
    pub kait_core_percent: f64,
    pub p99_ms: f64,
    pub missing: usize,
}

/// A server with endpoints configured and nothing flowing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleCost {
    pub endpoints: usize,
    pub seconds: f64,
    /// Share of one core, in %.
    pub kait_core_percent: f64,
    pub database_core_percent: Option<f64>,
    pub rss_mib: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EfficiencyResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub phases: Vec<EfficiencyPhase>,
    pub idle: IdleCost,
    pub server_peak_rss_mib: Option<f64>,
}

impl EfficiencyResult {
    /// The worst paced phase against flat out.
    pub fn worst_vs_flat_out(&self) -> Option<f64> {
        self.phases
            .iter()
            .filter_map(|phase| phase.vs_flat_out)
            .reduce(f64::max)
    }
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<EfficiencyResult> {
    let backend = if args.database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let mut phases = Vec::new();
    let mut peak_rss: Option<f64> = None;
    for endpoints in ENDPOINT_COUNTS {
        // A server per endpoint count, so one's flat-out phase (its checkpoints, its
        // outcome backlog) does not land in the next one's quiet phases.
        let cluster = Cluster::start(args, &[]).await?;
        let mut measured = Vec::new();
        for rate in RATES.map(Some).into_iter().chain([None]) {
            measured.push(phase(&cluster, args, endpoints, rate).await?);
        }
        let flat_out = measured
            .iter()
            .find(|phase| phase.rate.is_none())
            .map(|phase| phase.kait_cpu_per_1000);
        for phase in &mut measured {
            phase.vs_flat_out = match (phase.rate, flat_out) {
                (Some(_), Some(flat_out)) if flat_out > 0.0 => {
                    Some(phase.kait_cpu_per_1000 / flat_out)
                }
                _ => None,
            };
        }
        phases.extend(measured);
        let (peak, _) = cluster.stop().await?;
        peak_rss = larger(peak_rss, peak);
    }
    let idle = idle(args).await?;
    peak_rss = larger(peak_rss, idle.rss_mib);
    Ok(EfficiencyResult {
        scenario: "efficiency",
        backend,
        phases,
        idle,
        server_peak_rss_mib: peak_rss,
    })
}

async fn phase(
    cluster: &Cluster,
    args: &BenchArgs,
    endpoints: usize,
    rate: Option<u32>,
) -> anyhow::Result<EfficiencyPhase> {
    let receiver = BenchReceiver::start().await?;
    let target = cluster.app(&receiver, endpoints).await?;
    let (messages, concurrency, pace) = match rate {
        Some(rate) => {
            let total = (rate * args.seconds.max(1)) as usize;
            (total, PACED_CONCURRENCY, Some(Pace { rate, total }))
        }
        None => (args.messages, args.concurrency, None),
    };
    let paced_args = BenchArgs {
        concurrency,
        ..args.clone()
    };
    tokio::time::sleep(SETTLE).await;
    let before = CpuReading::take(cluster);
    let (started, accepted_at) =
        send_messages(target, &paced_args, receiver.state.epoch, messages, pace).await?;
    let webhooks = messages * endpoints;
    wait_for_arrivals(&receiver, webhooks).await;
    tokio::time::sleep(SETTLE).await;
    let after = CpuReading::take(cluster);
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let delivered = summarize(
        &receiver,
        args,
        Run {
            scenario: "efficiency",
            messages,
            endpoints,
            started,
            accepted_at,
            delivery_from: started,
            idle_rss: None,
            peak_rss: None,
            cpu_seconds: None,
        },
    );
    let per_1000 = |cpu: f64| cpu * 1000.0 / webhooks.max(1) as f64;
    let kait = after.kait - before.kait;
    let phase = EfficiencyPhase {
        endpoints,
        rate,
        messages,
        webhooks,
        seconds,
        kait_cpu_per_1000: per_1000(kait),
        database_cpu_per_1000: after
            .database
            .zip(before.database)
            .map(|(after, before)| per_1000(after - before)),
        vs_flat_out: None,
        kait_core_percent: kait * 100.0 / seconds,
        p99_ms: delivered.latency_p99_ms,
        missing: delivered.missing,
    };
    eprintln!(
        "efficiency: {endpoints} endpoint(s), {}: Kait {:.3} CPU-s per 1,000 webhooks ({:.1} % of a core), p99 {:.2} ms",
        rate.map_or("flat out".to_owned(), |rate| format!("{rate}/s")),
        phase.kait_cpu_per_1000,
        phase.kait_core_percent,
        phase.p99_ms,
    );
    Ok(phase)
}

async fn idle(args: &BenchArgs) -> anyhow::Result<IdleCost> {
    let cluster = Cluster::start(args, &[]).await?;
    let receiver = BenchReceiver::start().await?;
    // An application holds at most 100 endpoints.
    for _ in 0..IDLE_ENDPOINTS / IDLE_ENDPOINTS_PER_APP {
        cluster.app(&receiver, IDLE_ENDPOINTS_PER_APP).await?;
    }
    // Past the start-up work (migrations, the first upkeep rounds, caches filling).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = CpuReading::take(&cluster);
    tokio::time::sleep(Duration::from_secs(args.idle_seconds.max(1))).await;
    let after = CpuReading::take(&cluster);
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let rss_mib = max_rss(&cluster.servers, |(now, _)| now);
    cluster.stop().await?;
    Ok(IdleCost {
        endpoints: IDLE_ENDPOINTS,
        seconds,
        kait_core_percent: (after.kait - before.kait) * 100.0 / seconds,
        database_core_percent: after
            .database
            .zip(before.database)
            .map(|(after, before)| (after - before) * 100.0 / seconds),
        rss_mib,
    })
}

fn larger(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// CPU-seconds used so far by Kait's nodes and by the local PostgreSQL.
struct CpuReading {
    at: Instant,
    kait: f64,
    database: Option<f64>,
}

impl CpuReading {
    fn take(cluster: &Cluster) -> Self {
        let kait = cluster
            .servers
            .iter()
            .filter_map(|server| server.process.cpu_seconds())
            .sum();
        Self {
            at: Instant::now(),
            kait,
            database: cluster.schema.as_ref().and_then(|_| postgres_cpu_seconds()),
        }
    }
}

/// Every `postgres` process's CPU time plus, for the postmaster (whose parent is not
/// `postgres`), what its exited children used: a backend that ended between two readings
/// still counts. `None` when no PostgreSQL runs on this machine (a remote database).
fn postgres_cpu_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    let processes: Vec<(u32, String)> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().to_str()?.parse::<u32>().ok()?;
            Some((
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
            ))
        })
        .collect();
    let is_postgres = |stat: &str| stat.contains("(postgres)");
    let postgres_pids: std::collections::HashSet<u32> = processes
        .iter()
        .filter(|(_, stat)| is_postgres(stat))
        .map(|(pid, _)| *pid)
        .collect();
    for (_, stat) in processes.iter().filter(|(_, stat)| is_postgres(stat)) {
        found = true;
        total += cpu_seconds_from_stat(stat).unwrap_or(0.0);
        let parent = parent_pid(stat);
        if parent.is_some_and(|parent| !postgres_pids.contains(&parent)) {
            total += children_cpu_seconds(stat).unwrap_or(0.0);
        }
    }
    found.then_some(total)
}

/// The parent's pid in a `/proc/<pid>/stat` line.
fn parent_pid(stat: &str) -> Option<u32> {
    u32::try_from(stat_field(stat, 1)?).ok()
}

/// cutime + cstime: what the exited (and reaped) children used, in seconds.
fn children_cpu_seconds(stat: &str) -> Option<f64> {
    Some((stat_field(stat, 13)? + stat_field(stat, 14)?) as f64 / 100.0)
}

pub fn report(result: &EfficiencyResult) {
    println!(
        "\nefficiency ({}): CPU-seconds per 1,000 webhooks delivered\n{:>9} {:>9} {:>8} {:>10} {:>10} {:>12} {:>8} {:>8} {:>7}",
        result.backend,
        "endpoints",
        "rate",
        "webhooks",
        "Kait",
        "database",
        "vs flat out",
        "% core",
        "p99 ms",
        "missing"
    );
    for phase in &result.phases {
        println!(
            "{:>9} {:>9} {:>8} {:>10.3} {:>10} {:>12} {:>8.1} {:>8.2} {:>7}",
            phase.endpoints,
            phase
                .rate
                .map_or("flat out".to_owned(), |rate| format!("{rate}/s")),
            phase.webhooks,
            phase.kait_cpu_per_1000,
            phase
                .database_cpu_per_1000
                .map_or("-".to_owned(), |cpu| format!("{cpu:.3}")),
            phase
                .vs_flat_out
                .map_or("-".to_owned(), |ratio| format!("{ratio:.2}×")),
            phase.kait_core_percent,
            phase.p99_ms,
            phase.missing,
        );
    }
    println!(
        "idle, {} endpoints, {:.0} s: Kait {:.2} % of a core, database {}, RSS {} MiB",
        result.idle.endpoints,
        result.idle.seconds,
        result.idle.kait_core_percent,
        result
            .idle
            .database_core_percent
            .map_or("-".to_owned(), |percent| format!(
                "{percent:.2} % of a core"
            )),
        result
            .idle
            .rss_mib
            .map_or("-".to_owned(), |mib| format!("{mib:.1}")),
    );
    println!(
        "{}",
        serde_json::to_string(result).expect("a result serializes")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_and_the_children_time_from_proc_stat() {
        let stat = "812 (postgres) S 1 812 812 0 -1 4194560 900 0 0 0 250 130 700 50 20 0 9";
        assert_eq!(parent_pid(stat), Some(1));
        assert_eq!(children_cpu_seconds(stat), Some(7.5));
        assert_eq!(children_cpu_seconds("812 (postgres) S 1 812"), None);
    }

    #[test]
    fn the_worst_paced_phase_is_compared_with_flat_out() {
        let phase = |rate: Option<u32>, vs_flat_out: Option<f64>| EfficiencyPhase {
            endpoints: 1,
            rate,
            messages: 10,
            webhooks: 10,
            seconds: 1.0,
            kait_cpu_per_1000: 0.5,
            database_cpu_per_1000: None,
            vs_flat_out,
            kait_core_percent: 1.0,
            p99_ms: 1.0,
            missing: 0,
        };
        let result = EfficiencyResult {
            scenario: "efficiency",
            backend: "sqlite",
            phases: vec![
                phase(Some(10), Some(3.5)),
                phase(Some(100), Some(1.2)),
                phase(None, None),
            ],
            idle: IdleCost {
                endpoints: 1000,
                seconds: 60.0,
                kait_core_percent: 0.3,
                database_core_percent: None,
                rss_mib: None,
            },
            server_peak_rss_mib: None,
        };
        assert_eq!(result.worst_vs_flat_out(), Some(3.5));
    }
}
