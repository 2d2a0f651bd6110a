//! The commands themselves: arguments, the requests they make, what they print.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Api, segment};
use super::profile::ConnectArgs;
use super::table::{Column, render, text};

/// Messages read from standard input at most (the server's default body limit).
const MAX_STDIN_PAYLOAD: u64 = 1024 * 1024;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn api(connect: &ConnectArgs) -> anyhow::Result<Api> {
    Api::new(connect.resolve()?)
}

// ---------------------------------------------------------------------------------------
// kait send

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The application's id or uid.
    pub app: String,
    /// The event type, e.g. camera.motion.
    pub event_type: String,
    /// The payload, a JSON object; read from standard input when absent or `-`.
    pub payload: Option<String>,
    /// Your id for the event (a repeat with the same id is the same message).
    #[arg(long)]
    pub event_id: Option<String>,
    /// A channel (repeat for several).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Print the whole message as JSON instead of its id.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn send(args: SendArgs) -> anyhow::Result<()> {
    let text = match args.payload.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_STDIN_PAYLOAD + 1)
                .read_to_string(&mut text)
                .context("reading the payload from standard input")?;
            if text.len() as u64 > MAX_STDIN_PAYLOAD {
                bail!("the payload on standard input is larger than {MAX_STDIN_PAYLOAD} bytes");
            }
            text
        }
        Some(text) => text.to_owned(),
    };
    let payload: Value = serde_json::from_str(&text).context("the payload is not JSON")?;
    if !payload.is_object() {
        bail!("the payload must be a JSON object");
    }
    let mut body = json!({"eventType": args.event_type, "payload": payload});
    if let Some(event_id) = args.event_id {
        body["eventId"] = json!(event_id);
    }
    if !args.channels.is_empty() {
        body["channels"] = json!(args.channels);
    }
    let api = api(&args.connect)?;
    let message =
        runtime()?.block_on(api.post(&format!("/api/v1/app/{}/msg", segment(&args.app)), &body))?;
    if args.json {
        println!("{message}");
    } else {
        println!("{}", text_of(&message, "id"));
    }
    Ok(())
}

fn text_of(value: &Value, field: &str) -> String {
    text(value, field)
}

// ---------------------------------------------------------------------------------------
// kait tail

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The application's id or uid.
    pub app: String,
    /// Only this event type (repeat for several).
    #[arg(long = "event-type")]
    pub event_types: Vec<String>,
    /// Only messages on this channel.
    #[arg(long)]
    pub channel: Option<String>,
    /// Print each message as one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages (default: follow until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn tail(args: TailArgs) -> anyhow::Result<()> {
    let api = api(&args.connect)?;
    runtime()?.block_on(follow(&api, &args))
}

async fn follow(api: &Api, args: &TailArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = Vec::new();
    if !args.event_types.is_empty() {
        query.push(("event_types", args.event_types.join(",")));
    }
    if let Some(channel) = &args.channel {
        query.push(("channel", channel.clone()));
    }
    let path = format!("/api/v1/app/{}/stream", segment(&args.app));
    let mut last_id: Option<String> = None;
    let mut seen = 0u64;
    let mut stdout = std::io::stdout();
    // A dropped connection is resumed after the last event (Last-Event-ID); a refusal ends.
    loop {
        let mut request = api
            .request(Method::GET, &path)
            .query(&query)
            .header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id);
        }
        let response = api.response(request).await?;
        if seen == 0 && last_id.is_none() {
            eprintln!("following {} (Ctrl-C to stop)", args.app);
        }
        let mut reader = kait_core::sse::Reader::default();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            for event in reader.feed(&chunk)? {
                last_id = event.id.clone().or(last_id);
                let message: Value =
                    serde_json::from_str(&event.data).context("an event that is not JSON")?;
                let line = if args.json {
                    message.to_string()
                } else {
                    format!(
                        "{}  {}  {}  {}",
                        text(&message, "timestamp"),
                        text(&message, "eventType"),
                        text(&message, "id"),
                        crate::listen::printable(&message["payload"].to_string())
                    )
                };
                writeln!(stdout, "{line}").context("writing to standard output")?;
                stdout.flush().ok();
                seen += 1;
                if args.count.is_some_and(|count| seen >= count) {
                    return Ok(());
                }
            }
        }
        eprintln!("the stream ended; reconnecting");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ---------------------------------------------------------------------------------------
// kait replay

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The application's id or uid.
    pub app: String,
    /// From this time: RFC 3339 (2026-12-01T10:00:00Z) or an age (90m, 2h, 1day).
    #[arg(long)]
    pub since: String,
    /// Up to this time (same forms); default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this endpoint (repeat for several); default every endpoint of the application.
    #[arg(long = "endpoint")]
    pub endpoints: Vec<String>,
    /// Send what the endpoints never had in the window (e.g. from before they existed)
    /// instead of what failed.
    #[arg(long)]
    pub missing: bool,
    /// Do not wait for the deliveries to be sent.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// A time given as RFC 3339, or as an age before `now`.
pub fn parse_time(text: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc).to_rfc3339());
    }
    let age = humantime::parse_duration(text).with_context(|| {
        format!("{text:?} is neither an RFC 3339 time nor an age like 90m or 2h")
    })?;
    let age = chrono::Duration::from_std(age).context("that age is too long")?;
    Ok((now - age).to_rfc3339())
}

pub fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let mut window = json!({"since": parse_time(&args.since, now)?});
    if let Some(until) = &args.until {
        window["until"] = json!(parse_time(until, now)?);
    }
    let api = api(&args.connect)?;
    runtime()?.block_on(async {
        let app = segment(&args.app);
        let endpoints = if args.endpoints.is_empty() {
            list_all(&api, &format!("/api/v1/app/{app}/endpoint"))
                .await?
                .iter()
                .map(|endpoint| text(endpoint, "id"))
                .collect()
        } else {
            args.endpoints.clone()
        };
        let action = if args.missing {
            "replay-missing"
        } else {
            "recover"
        };
        let mut total = 0;
        for endpoint in &endpoints {
            let task = api
                .post(
                    &format!("/api/v1/app/{app}/endpoint/{}/{action}", segment(endpoint)),
                    &window,
                )
                .await
                .with_context(|| format!("endpoint {endpoint}"))?;
            total += task["count"].as_u64().unwrap_or(0);
        }
        println!(
            "{total} deliveries made due again at {} endpoint(s)",
            endpoints.len()
        );
        if args.no_wait || total == 0 {
            return Ok(());
        }
        wait_for_sending(&api, &app, &endpoints, total, args.wait_timeout).await
    })
}

/// Shows a progress bar until the endpoints have nothing pending or sending.
async fn wait_for_sending(
    api: &Api,
    app: &str,
    endpoints: &[String],
    total: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} sent {elapsed}")
            .expect("a valid template"),
    );
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut left = 0;
        for endpoint in endpoints {
            let stats = api
                .get(&format!(
                    "/api/v1/app/{app}/endpoint/{}/stats",
                    segment(endpoint)
                ))
                .await?;
            left += stats["pending"].as_u64().unwrap_or(0) + stats["sending"].as_u64().unwrap_or(0);
        }
        bar.set_position(total.saturating_sub(left));
        if left == 0 {
            bar.finish();
            println!("done: nothing left pending");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bar.abandon();
            bail!(
                "{left} deliveries still pending after {}",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------
// kait app|endpoint|source|pipe list

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// List them as a table (or JSON with --json).
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The application's id or uid (endpoints only).
    pub app: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// What is listed.
#[derive(Debug, Clone, Copy)]
pub enum Listing {
    Apps,
    Endpoints,
    Sources,
    Pipes,
}

/// Every page of a listing, following its iterator.
async fn list_all(api: &Api, path: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut iterator: Option<String> = None;
    loop {
        let mut request = api.request(Method::GET, path).query(&[("limit", "250")]);
        if let Some(iterator) = &iterator {
            request = request.query(&[("iterator", iterator)]);
        }
        let page = api.send(request).await?;
        items.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["iterator"].as_str() {
            Some(next) if page["done"] == false && !next.is_empty() => {
                iterator = Some(next.to_owned())
            }
            _ => return Ok(items),
        }
    }
}

pub fn list(what: Listing, args: ListArgs) -> anyhow::Result<()> {
    let path = match (what, &args.app) {
        (Listing::Endpoints, Some(app)) => format!("/api/v1/app/{}/endpoint", segment(app)),
        (Listing::Endpoints, None) => bail!("which application? kait endpoint list APP"),
        (_, Some(app)) => {
            bail!("unexpected argument {app:?}: only endpoints belong to an application")
        }
        (Listing::Apps, None) => "/api/v1/app".to_owned(),
        (Listing::Sources, None) => "/ingest/api/v1/source".to_owned(),
        (Listing::Pipes, None) => "/api/v1/pipe".to_owned(),
    };
    let api = api(&args.connect)?;
    let items = runtime()?.block_on(list_all(&api, &path))?;
    if args.json {
        println!("{}", Value::Array(items));
        return Ok(());
    }
    let columns: Vec<Column> = match what {
        Listing::Apps => vec![
            Column {
                heading: "ID",
                cell: |row| text(row, "id"),
            },
            Column {
                heading: "UID",
                cell: |row| text(row, "uid"),
            },
            Column {
                heading: "NAME",
                cell: |row| text(row, "name"),
            },
            Column {
                heading: "CREATED",
                cell: |row| text(row, "createdAt"),
            },
        ],
        Listing::Endpoints => vec![
            Column {
                heading: "ID",
                cell: |row| text(row, "id"),
            },
            Column {
                heading: "UID",
                cell: |row| text(row, "uid"),
            },
            Column {
                heading: "URL",
                cell: |row| text(row, "url"),
            },
            Column {
                heading: "STATE",
                cell: |row| {
                    if row["disabled"] == true {
                        "disabled".into()
                    } else {
                        "enabled".into()
                    }
                },
            },
            Column {
                heading: "EVENT TYPES",
                cell: |row| match row["filterTypes"].as_array() {
                    Some(types) => types
                        .iter()
                        .map(|name| name.as_str().unwrap_or("").to_owned())
                        .collect::<Vec<_>>()
                        .join(","),
                    None => "*".into(),
                },
            },
        ],
        Listing::Sources => vec![
            Column {
                heading: "ID",
                cell: |row| text(row, "id"),
            },
            Column {
                heading: "UID",
                cell: |row| text(row, "uid"),
            },
            Column {
                heading: "TYPE",
                cell: |row| text(row, "type"),
            },
            Column {
                heading: "NAME",
                cell: |row| text(row, "name"),
            },
            Column {
                heading: "RECEIVING URL",
                cell: |row| text(row, "ingestUrl"),
            },
        ],
        Listing::Pipes => vec![
            Column {
                heading: "ID",
                cell: |row| text(row, "id"),
            },
            Column {
                heading: "NAME",
                cell: |row| text(row, "name"),
            },
            Column {
                heading: "APP",
                cell: |row| text(row, "appId"),
            },
            Column {
                heading: "STATE",
                cell: |row| {
                    if row["enabled"] == true {
                        "enabled".into()
                    } else {
                        "paused".into()
                    }
                },
            },
            Column {
                heading: "ACTIONS",
                cell: |row| row["actions"].as_array().map_or(0, Vec::len).to_string(),
            },
        ],
    };
    print!("{}", render(&columns, &items));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// kait portal

#[derive(Debug, Args)]
pub struct PortalArgs {
    /// The application's id or uid.
    pub app: String,
    /// The link's token lasts this many seconds (default 7 days).
    #[arg(long)]
    pub expiry: Option<u64>,
    /// A read-only portal.
    #[arg(long)]
    pub read_only: bool,
    /// Only these capabilities (repeat; Svix's names, e.g. ViewBase, ManageEndpoint).
    #[arg(long = "capability")]
    pub capabilities: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn portal(args: PortalArgs) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(expiry) = args.expiry {
        body["expiry"] = json!(expiry);
    }
    if args.read_only {
        body["readOnly"] = json!(true);
    }
    if !args.capabilities.is_empty() {
        body["capabilities"] = json!(args.capabilities);
    }
    let api = api(&args.connect)?;
    let access = runtime()?.block_on(api.post(
        &format!("/api/v1/auth/app-portal-access/{}", segment(&args.app)),
        &body,
    ))?;
    println!("{}", text(&access, "url"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_time("2h", now).unwrap(), "2026-12-01T10:00:00+00:00");
        assert_eq!(
            parse_time("2026-11-30T08:00:00+01:00", now).unwrap(),
            "2026-11-30T07:00:00+00:00"
        );
        assert!(parse_time("yesterday-ish", now).is_err());
    }
}
