//! The scenarios' load and measurements: sending (as fast as accepted, or paced), waiting
//! for the arrivals, and summing up latency, rates, memory and CPU.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::body::Bytes;
use axum::http::StatusCode;

use super::*;

pub(super) async fn raw(receiver: &BenchReceiver, args: &BenchArgs) -> anyhow::Result<BenchResult> {
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

pub(super) async fn api_post(
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
pub(super) struct Pace {
    pub(super) rate: u32,
    pub(super) total: usize,
}

pub(super) async fn push(
    receiver: &BenchReceiver,
    args: &BenchArgs,
    endpoints: usize,
) -> anyhow::Result<BenchResult> {
    push_with(receiver, args, endpoints, None).await
}

/// Posts `messages` messages to the target with `--concurrency` senders (paced or as fast as
/// accepted); returns when sending started and when the last was accepted.
pub(super) async fn send_messages(
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
pub(super) async fn wait_for_arrivals(receiver: &BenchReceiver, expected: usize) {
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
pub(super) struct Run {
    pub(super) scenario: &'static str,
    pub(super) messages: usize,
    pub(super) endpoints: usize,
    /// Sending started; the last message was accepted.
    pub(super) started: Instant,
    pub(super) accepted_at: Instant,
    /// Delivered/s is counted from here to the last arrival.
    pub(super) delivery_from: Instant,
    pub(super) idle_rss: Option<f64>,
    pub(super) peak_rss: Option<f64>,
    pub(super) cpu_seconds: Option<f64>,
}

/// The `fraction` percentile (nearest rank) of latencies sorted ascending, µs in, ms out.
pub(super) fn percentile_ms(sorted_micros: &[u64], fraction: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let index =
        ((sorted_micros.len() as f64 * fraction).ceil() as usize).clamp(1, sorted_micros.len()) - 1;
    sorted_micros[index] as f64 / 1000.0
}

pub(super) fn summarize(receiver: &BenchReceiver, args: &BenchArgs, run: Run) -> BenchResult {
    let mut arrivals = receiver.state.arrivals.lock().expect("arrivals lock");
    let distinct = arrivals.counts.len();
    let total: u64 = arrivals
        .counts
        .values()
        .map(|count| u64::from(*count))
        .sum();
    let last_arrival = arrivals.last_arrival.unwrap_or(run.delivery_from);
    arrivals.latencies_micros.sort_unstable();
    let percentile = |fraction: f64| percentile_ms(&arrivals.latencies_micros, fraction);
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

pub(super) async fn push_with(
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
pub(super) async fn backlog(
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

/// Webhooks received on an incoming source's URL (a `generic-webhook` source checking a
/// bearer token) and forwarded, re-signed, to its endpoint: received/s (accepted), forwarded/s
/// (delivered) and latency from the sender's send to the forward's arrival. Compare with `raw`
/// and `push-1`: the extra cost of receiving is the source lookup, the token check and the
/// received log entry written with the message.
pub(super) async fn ingest(
    receiver: &BenchReceiver,
    args: &BenchArgs,
) -> anyhow::Result<BenchResult> {
    let cluster = Cluster::start(args, &[]).await?;
    let idle_rss = max_rss(&cluster.servers, |(now, _)| now);
    let target = cluster.source(receiver).await?;
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let epoch = receiver.state.epoch;
    let started = Instant::now();
    let accepted_at = load::post_all(target, args.messages, args.concurrency, None, move |_| {
        Bytes::from(payload(epoch, &pad))
    })
    .await?;
    wait_for_arrivals(receiver, args.messages).await;
    let (peak_rss, cpu_seconds) = cluster.stop().await?;
    Ok(summarize(
        receiver,
        args,
        Run {
            scenario: "ingest",
            messages: args.messages,
            endpoints: 1,
            started,
            accepted_at,
            delivery_from: started,
            idle_rss,
            peak_rss,
            cpu_seconds,
        },
    ))
}

/// Whether a flood on one source holds up another: source B is sent `--rate` requests/s for
/// `--seconds`, first alone, then while source A is flooded (`--messages` as fast as
/// accepted with `--concurrency` senders, beyond A's `--source-in-flight`). Reports B's
/// latency both times (`ingest-b-alone`, `ingest-b-flood`) and A's rates (`ingest-a-flood`).
pub(super) async fn ingest_isolation(args: &BenchArgs) -> anyhow::Result<Vec<BenchResult>> {
    let cluster = Cluster::start(args, &[]).await?;
    let idle_rss = max_rss(&cluster.servers, |(now, _)| now);
    let flooded = BenchReceiver::start().await?;
    let quiet_alone = BenchReceiver::start().await?;
    let quiet_beside = BenchReceiver::start().await?;
    let target_a = cluster.source(&flooded).await?;
    let paced = (args.rate.max(1) * args.seconds.max(1)) as usize;
    let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
    let mut results = Vec::new();

    // B alone, then B beside A's flood; B's latency is measured at its own receiver.
    for (phase, receiver) in [
        ("ingest-b-alone", &quiet_alone),
        ("ingest-b-flood", &quiet_beside),
    ] {
        let target_b = cluster.source(receiver).await?;
        let flood = (phase == "ingest-b-flood").then(|| {
            let (target, pad, epoch) = (target_a.clone(), pad.clone(), flooded.state.epoch);
            let (messages, concurrency) = (args.messages, args.concurrency);
            tokio::spawn(async move {
                let started = Instant::now();
                let finished = load::post_all(target, messages, concurrency, None, move |_| {
                    Bytes::from(payload(epoch, &pad))
                })
                .await;
                (started, finished)
            })
        });
        let started = Instant::now();
        let (pad, epoch) = (pad.clone(), receiver.state.epoch);
        let pace = load::Pace {
            start: started,
            rate: args.rate.max(1),
        };
        let accepted_at = load::post_all(target_b, paced, 8, Some(pace), move |_| {
            Bytes::from(payload(epoch, &pad))
        })
        .await?;
        wait_for_arrivals(receiver, paced).await;
        results.push(summarize(
            receiver,
            args,
            Run {
                scenario: phase,
                messages: paced,
                endpoints: 1,
                started,
                accepted_at,
                delivery_from: started,
                idle_rss,
                peak_rss: None,
                cpu_seconds: None,
            },
        ));
        if let Some(flood) = flood {
            let (flood_started, flood_finished) = flood.await?;
            let flood_finished = flood_finished?;
            wait_for_arrivals(&flooded, args.messages).await;
            results.push(summarize(
                &flooded,
                args,
                Run {
                    scenario: "ingest-a-flood",
                    messages: args.messages,
                    endpoints: 1,
                    started: flood_started,
                    accepted_at: flood_finished,
                    delivery_from: flood_started,
                    idle_rss,
                    peak_rss: None,
                    cpu_seconds: None,
                },
            ));
        }
    }
    let (peak_rss, _) = cluster.stop().await?;
    for result in &mut results {
        result.server_peak_rss_mib = peak_rss;
    }
    Ok(results)
}
