//! `overload`: ingest at about twice the delivery capacity for 30 s, then stop, and see how
//! the backlog drains (issue 19).
//!
//! The capacity is push-10's delivered/s, measured first in the same run (ten endpoints,
//! ingest flat out). The burst then offers twice that many deliveries per second (a paced
//! load client, which sends as fast as it is answered when Kait falls behind the pace), and a
//! trickle of 100 messages/s follows for 10 s. Reported: the backlog left when the burst ends
//! (deliveries accepted but not yet arrived), how long it took to drain against backlog ÷
//! capacity (the goal is at most 1.2×: after a burst Kait delivers at its full rate), and the
//! latency of the trickle's messages, which shows whether new work waits behind the backlog.

use std::time::Duration;

use super::*;

const ENDPOINTS: usize = 10;
const BURST: Duration = Duration::from_secs(30);
const AFTER_RATE: u32 = 100;
const AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, serde::Serialize)]
pub struct OverloadResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    /// push-10's delivered/s in this run.
    pub capacity_per_second: f64,
    /// Deliveries accepted per second during the burst (messages × endpoints).
    pub burst_offered_per_second: f64,
    pub burst_seconds: f64,
    /// Deliveries accepted but not arrived when the last burst message was accepted.
    pub backlog_at_end: usize,
    /// From the burst's end to the last arrival of a burst message.
    pub drain_seconds: f64,
    /// backlog ÷ capacity.
    pub expected_drain_seconds: f64,
    pub drain_ratio: Option<f64>,
    pub after_p50_ms: f64,
    pub after_p99_ms: f64,
    pub missing: usize,
    pub duplicates: usize,
    pub server_peak_rss_mib: Option<f64>,
    pub server_cpu_us_per_webhook: Option<f64>,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<OverloadResult> {
    let calibration = BenchReceiver::start().await?;
    let capacity = push(&calibration, args, ENDPOINTS)
        .await?
        .delivered_per_second;
    drop(calibration);
    eprintln!("overload: capacity {capacity:.0} deliveries/s (push-10 in this run)");

    let receiver = BenchReceiver::start().await?;
    let cluster = Cluster::start(args, &[]).await?;
    let target = cluster.app(&receiver, ENDPOINTS).await?;
    let epoch = receiver.state.epoch;
    let rate = ((2.0 * capacity / ENDPOINTS as f64).round() as u32).max(1);
    let burst_messages = rate as usize * BURST.as_secs() as usize;
    let pace = Pace {
        rate,
        total: burst_messages,
    };
    let (started, burst_end) =
        send_messages(target.clone(), args, epoch, burst_messages, Some(pace)).await?;
    let delivered_at_end = distinct_arrivals(&receiver);
    let after_messages = (AFTER_RATE as u64 * AFTER.as_secs()) as usize;
    let after = Pace {
        rate: AFTER_RATE,
        total: after_messages,
    };
    send_messages(target, args, epoch, after_messages, Some(after)).await?;
    let expected = (burst_messages + after_messages) * ENDPOINTS;
    wait_for_arrivals(&receiver, expected).await;
    let (peak_rss, cpu_seconds) = cluster.stop().await?;

    let burst_seconds = burst_end.duration_since(started).as_secs_f64();
    let end_micros = burst_end.duration_since(epoch).as_micros() as u64;
    let arrivals = receiver.state.arrivals.lock().expect("arrivals lock");
    let last_burst_arrival = arrivals
        .timeline
        .iter()
        .filter(|(sent, _)| *sent < end_micros)
        .map(|(_, arrived)| *arrived)
        .max()
        .unwrap_or(end_micros);
    let mut after_latencies: Vec<u64> = arrivals
        .timeline
        .iter()
        .filter(|(sent, _)| *sent >= end_micros)
        .map(|(sent, arrived)| arrived.saturating_sub(*sent))
        .collect();
    after_latencies.sort_unstable();
    let distinct = arrivals.counts.len();
    let total: usize = arrivals.counts.values().map(|count| *count as usize).sum();
    let backlog = (burst_messages * ENDPOINTS).saturating_sub(delivered_at_end);
    let drain_seconds = last_burst_arrival.saturating_sub(end_micros) as f64 / 1e6;
    let expected_drain_seconds = backlog as f64 / capacity;
    Ok(OverloadResult {
        scenario: "overload",
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        capacity_per_second: capacity,
        burst_offered_per_second: (burst_messages * ENDPOINTS) as f64 / burst_seconds,
        burst_seconds,
        backlog_at_end: backlog,
        drain_seconds,
        expected_drain_seconds,
        // A burst that left (almost) nothing behind has no drain to judge.
        drain_ratio: (expected_drain_seconds >= 0.5)
            .then(|| drain_seconds / expected_drain_seconds),
        after_p50_ms: percentile_ms(&after_latencies, 0.50),
        after_p99_ms: percentile_ms(&after_latencies, 0.99),
        missing: expected.saturating_sub(distinct),
        duplicates: total.saturating_sub(distinct),
        server_peak_rss_mib: peak_rss,
        server_cpu_us_per_webhook: cpu_seconds.map(|seconds| seconds * 1e6 / expected as f64),
    })
}

fn distinct_arrivals(receiver: &BenchReceiver) -> usize {
    receiver
        .state
        .arrivals
        .lock()
        .expect("arrivals lock")
        .counts
        .len()
}

pub fn report(result: &OverloadResult) {
    println!(
        "\noverload ({}): capacity {:.0} deliveries/s; burst offered {:.0}/s ({:.2}× capacity) \
         for {:.1} s",
        result.backend,
        result.capacity_per_second,
        result.burst_offered_per_second,
        result.burst_offered_per_second / result.capacity_per_second,
        result.burst_seconds,
    );
    println!(
        "backlog at the burst's end {} deliveries; drained in {:.1} s against {:.1} s at capacity \
         ({}); after the burst p50 {:.1} ms, p99 {:.1} ms; missing {}, duplicates {}; peak {} MiB",
        result.backlog_at_end,
        result.drain_seconds,
        result.expected_drain_seconds,
        result
            .drain_ratio
            .map_or("kept up".to_owned(), |ratio| format!("{ratio:.2}×")),
        result.after_p50_ms,
        result.after_p99_ms,
        result.missing,
        result.duplicates,
        result
            .server_peak_rss_mib
            .map_or("-".to_owned(), |mib| format!("{mib:.1}")),
    );
    println!(
        "{}",
        serde_json::to_string(result).expect("a result serializes")
    );
}
