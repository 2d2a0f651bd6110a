//! The `pages` scenario (issue 18): how long the portal's and the dashboard's pages take
//! with `--page-messages` messages (1,000,000 by default) delivered to one endpoint.
//!
//! A page is its API calls made together, as the page's script makes them (`Promise.all`);
//! its time is the wall time until the last answer. Each page is loaded `LOADS` times one
//! after another on warm connections; the table gives the median and the 95th percentile.
//! What makes a page fast with a large log is what it asks for: keyset pages of 50, never a
//! count of the whole log, so these times should not grow with the log (compare with a run at
//! 10,000 messages).

use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::future::try_join_all;

use super::{BENCH_TOKEN, BenchArgs, BenchReceiver, Cluster, send_messages, wait_for_arrivals};

/// Loads per page.
const LOADS: usize = 50;

/// One page's times, and its slowest call's.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PageTime {
    pub page: &'static str,
    pub calls: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// The call with the highest median when made alone, and that median.
    pub slowest_call: String,
    pub slowest_call_p50_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PagesResult {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub messages: usize,
    pub fill_seconds: f64,
    pub pages: Vec<PageTime>,
}

pub async fn run(args: &BenchArgs) -> anyhow::Result<PagesResult> {
    let receiver = BenchReceiver::start().await?;
    let cluster = Cluster::start(args, &[]).await?;
    let base = cluster.servers[0].process.base_url.clone();
    let target = cluster.app(&receiver, 1).await?;
    let app = target
        .path
        .strip_prefix("/api/v1/app/")
        .and_then(|rest| rest.strip_suffix("/msg"))
        .context("the bench application's path")?
        .to_owned();
    let messages = args.page_messages;
    let started = Instant::now();
    send_messages(target, args, receiver.state.epoch, messages, None).await?;
    wait_for_arrivals(&receiver, messages).await;
    let fill_seconds = started.elapsed().as_secs_f64();
    eprintln!("pages: {messages} messages sent and delivered in {fill_seconds:.0} s");

    let client = reqwest::Client::new();
    let get = |path: String| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let response = client.get(&url).bearer_auth(BENCH_TOKEN).send().await?;
            if !response.status().is_success() {
                bail!("{url} answered {}", response.status());
            }
            Ok::<serde_json::Value, anyhow::Error>(response.json().await?)
        }
    };
    let endpoint = get(format!("/api/v1/app/{app}/endpoint?limit=1")).await?["data"][0]["id"]
        .as_str()
        .context("the bench endpoint")?
        .to_owned();
    let first_page = get(format!("/api/v1/app/{app}/msg?limit=50")).await?;
    let newest = first_page["data"][0]["id"]
        .as_str()
        .context("a message")?
        .to_owned();
    // An old page: follow the iterator 200 pages (10,000 messages) back.
    let mut iterator = first_page["iterator"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for _ in 0..200 {
        let page = get(format!(
            "/api/v1/app/{app}/msg?limit=50&iterator={iterator}"
        ))
        .await?;
        iterator = page["iterator"].as_str().unwrap_or_default().to_owned();
    }
    let pages: Vec<(&'static str, Vec<String>)> = vec![
        (
            "portal: endpoints",
            vec![
                format!("/api/v1/app/{app}"),
                format!("/api/v1/app/{app}/endpoint?limit=250"),
            ],
        ),
        (
            "portal: an endpoint",
            vec![
                format!("/api/v1/app/{app}/endpoint/{endpoint}"),
                format!("/api/v1/app/{app}/attempt/endpoint/{endpoint}?limit=50"),
                "/api/v1/event-type?limit=250".to_owned(),
                format!("/api/v1/app/{app}/endpoint/{endpoint}/transformation"),
            ],
        ),
        (
            "portal: messages, newest",
            vec![format!("/api/v1/app/{app}/msg?limit=50")],
        ),
        (
            "portal: messages, 200 pages back",
            vec![format!(
                "/api/v1/app/{app}/msg?limit=50&iterator={iterator}"
            )],
        ),
        (
            "portal: a message",
            vec![
                format!("/api/v1/app/{app}/msg/{newest}"),
                format!("/api/v1/app/{app}/attempt/msg/{newest}?limit=50"),
                format!("/api/v1/app/{app}/msg/{newest}/endpoint?limit=50"),
            ],
        ),
        (
            "dashboard: applications",
            vec![
                "/api/v1/app?limit=50".to_owned(),
                format!("/api/v1/app/{app}/endpoint?limit=250"),
            ],
        ),
        (
            "dashboard: an application",
            vec![
                format!("/api/v1/app/{app}"),
                format!("/api/v1/app/{app}/endpoint?limit=250"),
                format!("/api/v1/app/{app}/attempt/endpoint/{endpoint}?limit=50"),
            ],
        ),
        (
            "dashboard: an endpoint's counts",
            vec![format!("/api/v1/app/{app}/endpoint/{endpoint}/stats")],
        ),
    ];
    let mut times = Vec::new();
    for (page, calls) in pages {
        let mut samples = Vec::with_capacity(LOADS);
        for _ in 0..LOADS {
            let began = Instant::now();
            try_join_all(calls.iter().map(|path| get(path.clone()))).await?;
            samples.push(began.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        let mut slowest = (String::new(), 0.0);
        for path in &calls {
            let mut alone = Vec::with_capacity(LOADS / 5);
            for _ in 0..LOADS / 5 {
                let began = Instant::now();
                get(path.clone()).await?;
                alone.push(began.elapsed().as_secs_f64() * 1000.0);
            }
            alone.sort_by(f64::total_cmp);
            let median = alone[alone.len() / 2];
            if median > slowest.1 {
                // The path without the ids, so the report reads as a route.
                let route = path.split('?').next().unwrap_or(path);
                slowest = (
                    route
                        .replace(&app, "{app}")
                        .replace(&endpoint, "{ep}")
                        .replace(&newest, "{msg}"),
                    median,
                );
            }
        }
        times.push(PageTime {
            page,
            calls: calls.len(),
            p50_ms: samples[LOADS / 2],
            p95_ms: samples[LOADS * 95 / 100],
            slowest_call: slowest.0,
            slowest_call_p50_ms: slowest.1,
        });
    }
    cluster.stop().await?;
    Ok(PagesResult {
        scenario: "pages",
        backend: if args.database_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        messages,
        fill_seconds,
        pages: times,
    })
}

pub fn report(result: &PagesResult) {
    println!(
        "\npages ({}, {} messages, filled in {:.0} s)",
        result.backend, result.messages, result.fill_seconds
    );
    println!(
        "{:<34} {:>5} {:>8} {:>8}  slowest call (p50 ms alone)",
        "page", "calls", "p50 ms", "p95 ms"
    );
    for page in &result.pages {
        println!(
            "{:<34} {:>5} {:>8.2} {:>8.2}  {} ({:.2})",
            page.page,
            page.calls,
            page.p50_ms,
            page.p95_ms,
            page.slowest_call,
            page.slowest_call_p50_ms
        );
    }
    if let Ok(json) = serde_json::to_string(result) {
        println!("{json}");
    }
}
