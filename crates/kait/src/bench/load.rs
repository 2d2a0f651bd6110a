//! The bench's load client: each sender task owns one keep-alive HTTP/1.1 connection per
//! target and drives it with hyper's connection API, one request at a time.
//!
//! Written on hyper directly rather than with a pooled general-purpose client: the load
//! client shares the two cores with the server and the receiver, and every cycle it spends is
//! taken from what it measures. With reqwest the bench's own `raw` pair reached about 33,000
//! requests/s on this machine; see BENCHMARKS.md for the figure with this client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// What every request of one load run shares.
#[derive(Clone)]
pub struct Target {
    /// The servers; request `i` goes to `servers[i % servers.len()]`.
    pub servers: Arc<[SocketAddr]>,
    pub path: Arc<str>,
    pub bearer: Option<HeaderValue>,
    /// The status every answer must have.
    pub expect: StatusCode,
}

/// Sending at a fixed rate instead of as fast as possible: request `i` leaves at
/// `start + i / rate`.
#[derive(Clone, Copy)]
pub struct Pace {
    pub start: Instant,
    pub rate: u32,
}

/// Sends `total` POSTs with bodies from `body(i)` over `concurrency` tasks; returns when the
/// last answer arrived.
pub async fn post_all<B>(
    target: Target,
    total: usize,
    concurrency: usize,
    pace: Option<Pace>,
    body: B,
) -> anyhow::Result<Instant>
where
    B: Fn(usize) -> Bytes + Clone + Send + Sync + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (next, target, body) = (next.clone(), target.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut connections: Vec<Option<SendRequest<Full<Bytes>>>> =
                (0..target.servers.len()).map(|_| None).collect();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                if index >= total {
                    return anyhow::Ok(());
                }
                if let Some(pace) = pace {
                    let slot =
                        pace.start + Duration::from_secs_f64(index as f64 / f64::from(pace.rate));
                    tokio::time::sleep_until(slot.into()).await;
                }
                let server = index % target.servers.len();
                let connection = match &mut connections[server] {
                    Some(connection) if !connection.is_closed() => connection,
                    slot => slot.insert(connect(target.servers[server]).await?),
                };
                let mut request = Request::post(&*target.path)
                    .header(header::HOST, target.servers[server].to_string())
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body(index)))?;
                if let Some(bearer) = &target.bearer {
                    request
                        .headers_mut()
                        .insert(header::AUTHORIZATION, bearer.clone());
                }
                connection.ready().await?;
                let response = connection.send_request(request).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if status != target.expect {
                    bail!("{} answered {status}", target.path);
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(Instant::now())
}

async fn connect(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}
