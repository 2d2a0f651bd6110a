//! The `media` scenario (issue 15): attachments through Kait against the same transfers on
//! plain loopback HTTP.
//!
//! Upload: one blob of `--media-mib` MiB posted to `…/attachment` (streamed, hashed, sniffed,
//! written and synced), three times; the ceiling is the same body posted to a loopback server
//! that discards it. Download: `--concurrency` readers fetch random 1 MiB ranges through a
//! signed link until `--media-mib` × 4 MiB have been read; the ceiling is the same ranges
//! served from memory by a loopback server. The server's peak RSS shows whether either grows
//! with the blob.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use futures_util::StreamExt;
use serde_json::json;

use super::{BENCH_TOKEN, BenchArgs, Cluster, api_post};

/// Bytes per ranged read.
const RANGE_BYTES: u64 = 1024 * 1024;
/// Uploads measured (the best and the median are reported).
const UPLOADS: usize = 3;

#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub blob_mib: usize,
    pub upload_mb_per_second: f64,
    pub upload_raw_mb_per_second: f64,
    pub readers: usize,
    pub ranged_download_mb_per_second: f64,
    pub ranged_download_raw_mb_per_second: f64,
    pub range_p50_ms: f64,
    pub range_p99_ms: f64,
    pub server_idle_rss_mib: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<MediaResult> {
    let blob_mib = args.media_mib.max(1);
    let data = Bytes::from(blob(blob_mib * 1024 * 1024));
    let shared_dir = tempfile::tempdir()?;
    let blob_flag = format!("file://{}", shared_dir.path().display());
    let extra: Vec<&str> = if args.database_url.is_some() {
        vec!["--blob-url", &blob_flag]
    } else {
        Vec::new()
    };
    let cluster = Cluster::start(args, &extra).await?;
    let server = &cluster.servers[0].process;
    let base_url = server.base_url.clone();
    let idle_rss = server.rss_mib().0;
    let client = reqwest::Client::new();
    let app = api_post(
        &client,
        format!("{base_url}/api/v1/app"),
        json!({ "name": "media" }).to_string(),
    )
    .await?;
    let app = app["id"].as_str().context("app id")?.to_owned();
    let poller = api_post(
        &client,
        format!("{base_url}/api/v1/app/{app}/endpoint"),
        json!({ "kind": "polling" }).to_string(),
    )
    .await?;
    let poller = poller["id"].as_str().context("endpoint id")?.to_owned();

    let ceiling = Loopback::start(data.clone()).await?;
    let mut uploads = Vec::with_capacity(UPLOADS);
    let mut raw_uploads = Vec::with_capacity(UPLOADS);
    let mut attachment = String::new();
    for _ in 0..UPLOADS {
        let started = Instant::now();
        let response = client
            .post(format!("{}/sink", ceiling.url))
            .header("content-type", "video/mp4")
            .body(data.clone())
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("the loopback sink answered {}", response.status());
        }
        raw_uploads.push(mb_per_second(data.len() as u64, started));
        let started = Instant::now();
        let response = client
            .post(format!(
                "{base_url}/api/v1/app/{app}/attachment?filename=bench.mp4"
            ))
            .bearer_auth(BENCH_TOKEN)
            .header("content-type", "video/mp4")
            .body(data.clone())
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
        if status != StatusCode::CREATED {
            bail!("the upload answered {status}: {body}");
        }
        uploads.push(mb_per_second(data.len() as u64, started));
        attachment = body["id"].as_str().context("attachment id")?.to_owned();
    }

    api_post(
        &client,
        format!("{base_url}/api/v1/app/{app}/msg"),
        json!({ "eventType": "camera.clip", "payload": {}, "attachments": [attachment] })
            .to_string(),
    )
    .await?;
    let page: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{base_url}/api/v1/app/{app}/poller/{poller}"))
            .bearer_auth(BENCH_TOKEN)
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let link = page["data"][0]["attachments"][0]["url"]
        .as_str()
        .context("no attachment link in the polling endpoint's read")?
        .to_owned();

    let readers = args.concurrency.max(1);
    let reads = (blob_mib * 4).max(readers);
    let (raw_rate, _) = ranged_reads(
        &client,
        &format!("{}/blob", ceiling.url),
        data.len() as u64,
        readers,
        reads,
    )
    .await?;
    let (rate, mut latencies) =
        ranged_reads(&client, &link, data.len() as u64, readers, reads).await?;
    latencies.sort_by(f64::total_cmp);
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    let (range_p50_ms, range_p99_ms) = (at(0.5), at(0.99));
    let peak_rss = server.rss_mib().1;
    cluster.stop().await?;
    Ok(MediaResult {
        scenario: "media",
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        blob_mib,
        upload_mb_per_second: median(&mut uploads),
        upload_raw_mb_per_second: median(&mut raw_uploads),
        readers,
        ranged_download_mb_per_second: rate,
        ranged_download_raw_mb_per_second: raw_rate,
        range_p50_ms,
        range_p99_ms,
        server_idle_rss_mib: idle_rss,
        server_peak_rss_mib: peak_rss,
    })
}

/// `reads` random 1 MiB ranges of a `size`-byte blob at `url` by `readers` concurrent
/// readers, each checking it got the bytes asked for: MB/s and each read's latency (ms).
async fn ranged_reads(
    client: &reqwest::Client,
    url: &str,
    size: u64,
    readers: usize,
    reads: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let started = Instant::now();
    let results = futures_util::stream::iter(0..reads)
        .map(|index| {
            let client = client.clone();
            let url = url.to_owned();
            async move {
                // Past the 24-byte header, whose bytes say nothing of their place.
                let start = 24
                    + (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        % (size - RANGE_BYTES - 24);
                let end = start + RANGE_BYTES - 1;
                let began = Instant::now();
                let response = client
                    .get(&url)
                    .header("range", format!("bytes={start}-{end}"))
                    .send()
                    .await?;
                if response.status() != StatusCode::PARTIAL_CONTENT {
                    bail!("a ranged read answered {}", response.status());
                }
                let bytes = response.bytes().await?;
                if bytes.len() as u64 != RANGE_BYTES || bytes[..8] != expected_at(start)[..] {
                    bail!(
                        "a ranged read of {start}-{end} from {url} returned {} bytes starting {:?}, not {:?}",
                        bytes.len(),
                        &bytes[..bytes.len().min(8)],
                        expected_at(start)
                    );
                }
                Ok::<_, anyhow::Error>(began.elapsed().as_secs_f64() * 1000.0)
            }
        })
        .buffer_unordered(readers)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started;
    let latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((
        mb_per_second(reads as u64 * RANGE_BYTES, elapsed),
        latencies,
    ))
}

fn mb_per_second(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / 1e6 / since.elapsed().as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A blob that starts like an MP4 file and whose every 8-byte word says where it is, so a
/// read can check it got the range it asked for.
fn blob(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    data.extend_from_slice(b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2");
    while data.len() < len {
        let position = data.len() as u64;
        data.extend_from_slice(&position.to_le_bytes());
    }
    data.truncate(len);
    data
}

/// The 8 bytes at `start` of [`blob`] (past its 24-byte header).
fn expected_at(start: u64) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    for (offset, byte) in bytes.iter_mut().enumerate() {
        let at = start + offset as u64;
        let word = at - at % 8;
        *byte = word.to_le_bytes()[(at % 8) as usize];
    }
    bytes
}

/// The ceiling: a loopback server that discards uploads (`POST /sink`) and serves the blob's
/// ranges from memory (`GET /blob`).
struct Loopback {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Loopback {
    async fn start(data: Bytes) -> anyhow::Result<Self> {
        let data = Arc::new(data);
        let app = axum::Router::new()
            .route(
                "/sink",
                axum::routing::post(|body: axum::body::Body| async move {
                    let mut stream = body.into_data_stream();
                    while let Some(chunk) = stream.next().await {
                        if chunk.is_err() {
                            return StatusCode::BAD_REQUEST;
                        }
                    }
                    StatusCode::CREATED
                }),
            )
            .route(
                "/blob",
                axum::routing::get(move |headers: HeaderMap| {
                    let data = data.clone();
                    async move {
                        let size = data.len() as u64;
                        let header = headers.get("range").and_then(|value| value.to_str().ok());
                        match kait_media::range::answer(header, size) {
                            kait_media::range::Answer::Partial { start, end } => (
                                StatusCode::PARTIAL_CONTENT,
                                data.slice(start as usize..=end as usize),
                            ),
                            _ => (StatusCode::OK, (*data).clone()),
                        }
                    }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, task })
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Prints the result as a table and a JSON line.
pub fn report(result: &MediaResult) {
    println!(
        "media ({}, {} MiB blob): upload {:.0} MB/s (loopback {:.0}); {} readers of 1 MiB ranges {:.0} MB/s (loopback {:.0}), p50 {:.1} ms, p99 {:.1} ms; server RSS idle {} MiB, peak {} MiB",
        result.backend,
        result.blob_mib,
        result.upload_mb_per_second,
        result.upload_raw_mb_per_second,
        result.readers,
        result.ranged_download_mb_per_second,
        result.ranged_download_raw_mb_per_second,
        result.range_p50_ms,
        result.range_p99_ms,
        result
            .server_idle_rss_mib
            .map_or("-".into(), |mib| format!("{mib:.1}")),
        result
            .server_peak_rss_mib
            .map_or("-".into(), |mib| format!("{mib:.1}")),
    );
    println!("{}", serde_json::to_string(result).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_of_the_blob_says_where_it_is() {
        let data = blob(1 << 16);
        for start in [24u64, 25, 1000, 4093, 65_000] {
            assert_eq!(data[start as usize..start as usize + 8], expected_at(start));
        }
        assert_eq!(&data[4..8], b"ftyp");
    }
}
