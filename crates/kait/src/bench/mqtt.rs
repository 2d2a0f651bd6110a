//! `mqtt`: device messages from the broker to delivered webhooks (issue 16). A device client
//! in this process publishes at QoS 1 to `--mqtt-url` (Mosquitto on this machine), one
//! server bridges a route from those topics to an application whose endpoint is the bench
//! receiver. Latency runs from the publish to the webhook's arrival, through the broker.
//!
//! - `mqtt`: as fast as the bridge keeps up. A broker queues at most so many messages for a
//!   client (Mosquitto: 1,000) and drops the rest, so the device keeps at most `WINDOW`
//!   messages published but not yet delivered: the figure is the sustained rate, not how
//!   fast a broker can be filled.
//! - `mqtt-paced`: `--rate` messages a second for `--seconds`: the latency when Kait is not
//!   saturated.
//!
//! One node only: each node needs its own client id, which the bench's cluster does not give.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

use super::{BENCH_TOKEN, BenchArgs, BenchReceiver, BenchResult, Cluster, Run, api_post};
use super::{payload, summarize, wait_for_arrivals};

/// Published but not yet delivered, at most (well under the broker's queue for a client).
const WINDOW: u64 = 500;
/// Devices the messages come from (each its own ordering key).
const DEVICES: usize = 100;

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchResult>> {
    if args.nodes > 1 {
        bail!("the mqtt scenarios run on one node (each node needs its own --mqtt-client-id)");
    }
    let broker = crate::mqtt::MqttConfig::parse(&args.mqtt_url, None).context("--mqtt-url")?;
    let paced_total = (args.rate.max(1) * args.seconds.max(1)) as usize;
    let mut results = Vec::new();
    for (scenario, total, rate) in [
        ("mqtt", args.messages, None),
        ("mqtt-paced", paced_total, Some(args.rate.max(1))),
    ] {
        let receiver = BenchReceiver::start().await?;
        let prefix = format!("kait-bench-{:08x}", rand::random::<u32>());
        let client_id = format!("{prefix}-kait");
        let cluster = Cluster::start(
            args,
            &["--mqtt-url", &args.mqtt_url, "--mqtt-client-id", &client_id],
        )
        .await?;
        let idle_rss = super::max_rss(&cluster.servers, |(now, _)| now);
        let target = cluster
            .app_for(&receiver, 1, Some(&["device.reading"]))
            .await?;
        let app_id = target
            .path
            .trim_start_matches("/api/v1/app/")
            .trim_end_matches("/msg")
            .to_owned();
        let base_url = cluster.servers[0].process.base_url.clone();
        let http = reqwest::Client::new();
        api_post(
            &http,
            format!("{base_url}/api/v1/mqtt/route"),
            json!({
                "topic": format!("{prefix}/{{device}}/{{event}}"),
                "app": app_id,
                "eventType": "device.{event}",
            })
            .to_string(),
        )
        .await?;
        let (device, mut events) = AsyncClient::new(
            MqttOptions::new(format!("{prefix}-device"), &broker.host, broker.port),
            4096,
        );
        let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
        subscribed(&device, &http, &base_url, &app_id, &prefix).await?;

        let pad = "x".repeat(args.payload_bytes.saturating_sub(40));
        let epoch = receiver.state.epoch;
        let started = Instant::now();
        for n in 0..total {
            match rate {
                Some(rate) => {
                    let due = started + Duration::from_secs_f64(n as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                None => {
                    while n as u64 - receiver.state.received.load(Ordering::Relaxed) > WINDOW {
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                }
            }
            device
                .publish(
                    format!("{prefix}/d-{}/reading", n % DEVICES),
                    QoS::AtLeastOnce,
                    false,
                    payload(epoch, &pad),
                )
                .await?;
        }
        let published_at = Instant::now();
        wait_for_arrivals(&receiver, total).await;
        poller.abort();
        let (peak_rss, cpu_seconds) = cluster.stop().await?;
        results.push(summarize(
            &receiver,
            args,
            Run {
                scenario,
                messages: total,
                endpoints: 1,
                started,
                accepted_at: published_at,
                delivery_from: started,
                idle_rss,
                peak_rss,
                cpu_seconds,
            },
        ));
    }
    Ok(results)
}

/// Probes (`device.probe`, which the bench endpoint does not take) until one is stored: the
/// bridge has subscribed to the route.
async fn subscribed(
    device: &AsyncClient,
    http: &reqwest::Client,
    base_url: &str,
    app_id: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        device
            .publish(
                format!("{prefix}/probe/probe"),
                QoS::AtLeastOnce,
                false,
                "{}",
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let body = http
            .get(format!(
                "{base_url}/api/v1/app/{app_id}/msg?event_types=device.probe&limit=1"
            ))
            .bearer_auth(BENCH_TOKEN)
            .send()
            .await?
            .bytes()
            .await?;
        let listed: serde_json::Value = serde_json::from_slice(&body)?;
        if listed["data"]
            .as_array()
            .is_some_and(|data| !data.is_empty())
        {
            return Ok(());
        }
    }
    bail!("the MQTT bridge did not subscribe within 30 s (is the broker at --mqtt-url up?)")
}
