//! The `streams` scenario: does holding many event streams on one application slow another
//! application's ingest? (Issue 11: 1,000 streams on application A once took application B's
//! ingest latency from 2.7 ms to 155 ms at the median.)
//!
//! Measures the latency of `POST /msg` to application B (sequential, one keep-alive
//! connection) three times: with nothing else going on, with `STREAMS` server-sent event
//! streams open on application A (spread over app tokens within the per-token cap), and with
//! those streams while application A also receives `A_RATE` messages per second, each of
//! which wakes every stream.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{BENCH_TOKEN, BenchArgs, BenchReceiver, Cluster, api_post};

/// Streams held open on application A.
const STREAMS: usize = 1000;
/// Streams per app token (the server's default cap per token is 100).
const STREAMS_PER_TOKEN: usize = 100;
/// Messages to application B per measurement.
const PROBES: usize = 300;
/// Messages per second to application A in the last measurement.
const A_RATE: u64 = 100;

/// One measurement of B's ingest latency, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamsResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub streams: usize,
    pub idle: Latency,
    pub with_streams: Latency,
    pub with_streams_and_traffic: Latency,
    /// p50 with streams and traffic on A over p50 idle (issue 11's goal: at most 2).
    pub p50_ratio: f64,
    pub p99_ratio: f64,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<StreamsResult> {
    let receiver = BenchReceiver::start().await?;
    let cluster = Cluster::start(args, &[]).await?;
    let base_url = cluster.servers[0].process.base_url.clone();
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        api_post(&client, format!("{base_url}{path}"), body.to_string())
    };
    post(
        "/api/v1/app".into(),
        json!({ "name": "a", "uid": "streams-a" }),
    )
    .await?;
    post(
        "/api/v1/app".into(),
        json!({ "name": "b", "uid": "streams-b" }),
    )
    .await?;
    let polling = post(
        "/api/v1/app/streams-a/endpoint".into(),
        json!({ "kind": "polling" }),
    )
    .await?;
    let polling = polling["id"].as_str().context("endpoint id")?.to_owned();
    post(
        "/api/v1/app/streams-b/endpoint".into(),
        json!({ "url": receiver.url("b"), "secret": super::BENCH_SECRET }),
    )
    .await?;

    let idle = measure(&client, &base_url).await?;

    let mut tokens = Vec::new();
    for _ in 0..STREAMS.div_ceil(STREAMS_PER_TOKEN) {
        let access = post(
            "/api/v1/auth/app-portal-access/streams-a".into(),
            json!({ "readOnly": true }),
        )
        .await?;
        tokens.push(access["token"].as_str().context("token")?.to_owned());
    }
    let address = base_url.trim_start_matches("http://").to_owned();
    let mut streams = Vec::with_capacity(STREAMS);
    for index in 0..STREAMS {
        let token = &tokens[index / STREAMS_PER_TOKEN];
        streams.push(open_stream(&address, &polling, token).await?);
    }
    let with_streams = measure(&client, &base_url).await?;

    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = tokio::spawn({
        let (client, base_url, stop) = (client.clone(), base_url.clone(), stop.clone());
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / A_RATE));
            while !stop.is_cancelled() {
                tick.tick().await;
                let _ = api_post(
                    &client,
                    format!("{base_url}/api/v1/app/streams-a/msg"),
                    json!({ "eventType": "a.tick", "payload": { "n": 1 } }).to_string(),
                )
                .await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_streams_and_traffic = measure(&client, &base_url).await?;
    stop.cancel();
    traffic.await?;
    drop(streams);
    cluster.stop().await?;

    Ok(StreamsResult {
        scenario: "streams",
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        streams: STREAMS,
        idle,
        with_streams,
        with_streams_and_traffic,
        p50_ratio: with_streams_and_traffic.p50_ms / idle.p50_ms,
        p99_ratio: with_streams_and_traffic.p99_ms / idle.p99_ms,
    })
}

/// Opens one event stream and waits for its `200` head.
async fn open_stream(address: &str, endpoint: &str, token: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream
        .write_all(
            format!(
                "GET /api/v1/app/streams-a/poller/{endpoint}/stream HTTP/1.1\r\nHost: kait\r\n\
                 Authorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await?;
    if &head != b"HTTP/1.1 200" {
        bail!("a stream was refused: {}", String::from_utf8_lossy(&head));
    }
    Ok(stream)
}

/// `PROBES` sequential messages to application B; their accept latency.
async fn measure(client: &reqwest::Client, base_url: &str) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(PROBES);
    for index in 0..PROBES {
        let started = Instant::now();
        let response = client
            .post(format!("{base_url}/api/v1/app/streams-b/msg"))
            .bearer_auth(BENCH_TOKEN)
            .header("content-type", "application/json")
            .body(json!({ "eventType": "b.probe", "payload": { "n": index } }).to_string())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("a probe was refused: {}", response.status());
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |quantile: f64| samples[((samples.len() - 1) as f64 * quantile) as usize];
    Ok(Latency {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

/// Prints the result as a table and a JSON line.
pub fn report(result: &StreamsResult) {
    println!(
        "streams ({} on application A, {}): B's ingest p50 / p99 ms",
        result.streams, result.backend
    );
    for (label, latency) in [
        ("idle", result.idle),
        ("with streams", result.with_streams),
        (
            "with streams + 100 msg/s to A",
            result.with_streams_and_traffic,
        ),
    ] {
        println!(
            "  {label:<32} {:>8.2} {:>8.2}",
            latency.p50_ms, latency.p99_ms
        );
    }
    println!(
        "  ratio to idle                    {:>8.2} {:>8.2}",
        result.p50_ratio, result.p99_ratio
    );
    if let Ok(line) = serde_json::to_string(result) {
        println!("{line}");
    }
}
