//! The `timers` scenario: pipe timers with a large backlog.
//!
//! First `--timer-backlog` waits are written that fall due only tomorrow (messages through a
//! pipe whose only action is a day's `delay`), so the store holds them all; then 10,000 more
//! messages go through a second pipe that waits `BURST_DELAY` and emits `bench.fired`: their
//! timers fall due within about the same second and fire into a webhook each. Reported:
//! timers fired per second (first due to last webhook), lateness (webhook arrival minus the
//! time the timer was due, so it includes the emitted message's delivery), the server's
//! memory with the backlog in the store, and how fast the backlog was written. Whether
//! firing holds up ingest is measured by probe messages to another application (`PROBE_RATE`
//! per second, end to end at their own receiver): once while quiet, once while the burst
//! fires.

use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::json;

use super::*;

/// Timers falling due together.
const BURST: usize = 10_000;
/// How long after its message each burst timer is due: long enough for the whole burst to
/// be sent first, so the timers fall due together rather than as they are written.
const BURST_DELAY: Duration = Duration::from_secs(8);
/// Probe messages per second, and how long each probe phase sends.
const PROBE_RATE: u32 = 200;
const PROBE_SECONDS: u32 = 4;

pub(super) async fn timers(
    receiver: &BenchReceiver,
    args: &BenchArgs,
) -> anyhow::Result<Vec<BenchResult>> {
    let cluster = Cluster::start(args, &[]).await?;
    let probe_quiet = BenchReceiver::start().await?;
    let probe_firing = BenchReceiver::start().await?;
    let idle_rss = max_rss(&cluster.servers, |(now, _)| now);
    let client = reqwest::Client::new();
    let base_url = cluster.servers[0].process.base_url.clone();
    let target = cluster.app_for(receiver, 1, Some(&["bench.fired"])).await?;
    let app_id = target
        .path
        .trim_start_matches("/api/v1/app/")
        .trim_end_matches("/msg")
        .to_owned();
    let pipe = |body: serde_json::Value| {
        let (client, url) = (client.clone(), format!("{base_url}/api/v1/pipe"));
        async move { api_post(&client, url, body.to_string()).await }
    };
    let backlog_pipe = pipe(json!({
        "name": "backlog",
        "trigger": { "app": app_id, "eventTypes": ["bench.wait"] },
        "actions": [{ "type": "delay", "ms": 86_400_000u64 }]
    }))
    .await?;
    pipe(json!({
        "name": "burst",
        "trigger": { "app": app_id, "eventTypes": ["bench.burst"] },
        "actions": [
            { "type": "delay", "ms": BURST_DELAY.as_millis() as u64 },
            { "type": "emit", "app": app_id, "eventType": "bench.fired", "payload": "e => ({ t: e.payload.t })" }
        ]
    }))
    .await?;

    // The backlog: messages with many ordering keys, so the pipe runs them in parallel.
    let backlog_started = Instant::now();
    load::post_all(
        target.clone(),
        args.timer_backlog,
        args.concurrency,
        None,
        |index| {
            Bytes::from(format!(
                "{{\"eventType\":\"bench.wait\",\"orderingKey\":\"k{}\",\"payload\":{{\"n\":{index}}}}}",
                index % 4096
            ))
        },
    )
    .await?;
    let backlog_id = backlog_pipe["id"].as_str().context("pipe id")?;
    wait_for_waits(&client, &base_url, backlog_id, args.timer_backlog).await?;
    let backlog_seconds = backlog_started.elapsed().as_secs_f64();
    println!(
        "timers: {} waits written in {backlog_seconds:.1} s ({:.0}/s)",
        args.timer_backlog,
        args.timer_backlog as f64 / backlog_seconds
    );

    let quiet = probe(&cluster, &probe_quiet, args, "timers-ingest-quiet").await?;

    let epoch = receiver.state.epoch;
    let started = Instant::now();
    let accepted_at = load::post_all(target, BURST, args.concurrency, None, move |index| {
        let sent = epoch.elapsed().as_micros();
        Bytes::from(format!(
            "{{\"eventType\":\"bench.burst\",\"orderingKey\":\"b{}\",\"payload\":{{\"t\":{sent}}}}}",
            index % 4096
        ))
    })
    .await?;
    tokio::time::sleep_until((started + BURST_DELAY).into()).await;
    let firing = probe(&cluster, &probe_firing, args, "timers-ingest-firing").await?;
    wait_for_arrivals(receiver, BURST).await;
    let (peak_rss, cpu_seconds) = cluster.stop().await?;
    {
        // Latency from sending is the delay plus the lateness: keep the lateness.
        let mut arrivals = receiver.state.arrivals.lock().expect("arrivals lock");
        let delay = BURST_DELAY.as_micros() as u64;
        for latency in &mut arrivals.latencies_micros {
            *latency = latency.saturating_sub(delay);
        }
    }
    let mut result = summarize(
        receiver,
        args,
        Run {
            scenario: "timers",
            messages: BURST,
            endpoints: 1,
            started,
            accepted_at,
            delivery_from: started + BURST_DELAY,
            idle_rss,
            peak_rss,
            cpu_seconds,
        },
    );
    // What was accepted per second is the burst's; the figure of interest is fired/s.
    result.accepted_per_second = BURST as f64 / accepted_at.duration_since(started).as_secs_f64();
    Ok(vec![result, quiet, firing])
}

/// Paced messages to an application of their own, end to end at `receiver`.
async fn probe(
    cluster: &Cluster,
    receiver: &BenchReceiver,
    args: &BenchArgs,
    scenario: &'static str,
) -> anyhow::Result<BenchResult> {
    let target = cluster.app(receiver, 1).await?;
    let total = (PROBE_RATE * PROBE_SECONDS) as usize;
    let pace = Pace {
        rate: PROBE_RATE,
        total,
    };
    let (started, accepted_at) =
        send_messages(target, args, receiver.state.epoch, total, Some(pace)).await?;
    wait_for_arrivals(receiver, total).await;
    Ok(summarize(
        receiver,
        args,
        Run {
            scenario,
            messages: total,
            endpoints: 1,
            started,
            accepted_at,
            delivery_from: started,
            idle_rss: None,
            peak_rss: None,
            cpu_seconds: None,
        },
    ))
}

/// Waits (bounded) until the pipe holds `expected` waits.
async fn wait_for_waits(
    client: &reqwest::Client,
    base_url: &str,
    pipe_id: &str,
    expected: usize,
) -> anyhow::Result<()> {
    let deadline =
        Instant::now() + Duration::from_secs(120) + Duration::from_millis(expected as u64 / 2);
    loop {
        let response = client
            .get(format!("{base_url}/api/v1/pipe/{pipe_id}/stats"))
            .header("authorization", format!("Bearer {BENCH_TOKEN}"))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == StatusCode::OK,
            "pipe stats: {}",
            response.status()
        );
        let stats: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        let waiting = stats["waiting"].as_u64().unwrap_or(0) as usize;
        if waiting >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {waiting} of {expected} waits were written"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
