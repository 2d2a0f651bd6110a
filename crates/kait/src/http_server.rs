//! The HTTP/1 accept loop, with the limits that keep one client from holding the server.
//!
//! `axum::serve` has no header-read timeout, no idle timeout and no cap on open connections:
//! a client trickling headers kept its socket for ever, and enough idle sockets used up the
//! process's file descriptors so that nothing else was served. Here every connection is
//! registered, and:
//!
//! - headers must arrive within [`ConnectionLimits::header_read_timeout`] (hyper's timer);
//! - a connection with no request in progress for [`ConnectionLimits::idle_timeout`] is
//!   closed, whether it never sent a byte or is a kept-alive connection between requests;
//! - at [`ConnectionLimits::max_connections`] a new connection first sheds the oldest idle
//!   one, and is itself closed only when every open connection is busy. Idle sockets are
//!   what an attacker can open cheaply, so they go first; requests in progress are never cut.
//!
//! A request counts as in progress from the moment its headers are read until its response
//! body has been sent (so a server-sent event stream is busy for its whole life).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// Limits on the API's client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// How long a stopping server waits for requests in progress before closing their sockets.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The pause after a failed `accept` (typically out of descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// One open connection, as the registry sees it.
struct Connection {
    /// Requests read and not yet fully answered.
    busy: AtomicUsize,
    /// When the last request finished (or the connection opened), in ms since `epoch`.
    idle_since_ms: AtomicU64,
    /// Tells the connection's task to close the socket if it is (still) idle.
    shed: tokio::sync::Notify,
    /// Raised when a request ends, so the task restarts its idle clock without polling.
    request_ended: tokio::sync::Notify,
    epoch: Instant,
}

impl Connection {
    fn new(epoch: Instant) -> Self {
        Self {
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(epoch.elapsed().as_millis() as u64),
            shed: tokio::sync::Notify::new(),
            request_ended: tokio::sync::Notify::new(),
            epoch,
        }
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    fn idle_for(&self) -> Duration {
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(since)
    }
}

/// Marks a request in progress on its connection until dropped (with the response body, or
/// with the handler's future if the client went away first).
struct InProgress(Arc<Connection>);

impl InProgress {
    fn enter(connection: &Arc<Connection>) -> Self {
        connection.busy.fetch_add(1, Ordering::AcqRel);
        Self(connection.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let connection = &self.0;
        connection.idle_since_ms.store(
            connection.epoch.elapsed().as_millis() as u64,
            Ordering::Release,
        );
        connection.busy.fetch_sub(1, Ordering::AcqRel);
        connection.request_ended.notify_one();
    }
}

/// A response body that keeps its request marked in progress until it has been sent.
struct TrackedBody {
    body: Body,
    _in_progress: InProgress,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, oldest first (ids only grow).
#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Registry {
    /// Registers a new connection if there is room, shedding the oldest idle one to make
    /// room when at `max`. `None` when every open connection is busy.
    fn admit(&self, max: usize, epoch: Instant) -> Option<(u64, Arc<Connection>)> {
        let mut open = self.open.lock().expect("registry lock");
        if open.len() >= max {
            let oldest_idle = open
                .iter()
                .find(|(_, connection)| connection.is_idle())
                .map(|(id, _)| *id)?;
            let shed = open.remove(&oldest_idle).expect("found above");
            shed.shed.notify_one();
            metrics::counter!("kait_http_connections_shed_total").increment(1);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection::new(epoch));
        open.insert(id, connection.clone());
        metrics::gauge!("kait_http_connections_open").set(open.len() as f64);
        Some((id, connection))
    }

    fn remove(&self, id: u64) {
        let mut open = self.open.lock().expect("registry lock");
        open.remove(&id);
        metrics::gauge!("kait_http_connections_open").set(open.len() as f64);
    }
}

/// Raises the soft limit on open files to the hard limit, so the connection cap (not the
/// OS default of often 1,024) decides when connections are refused. Returns the limit now in
/// force, if the OS tells.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "could not raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// The connection cap that fits the descriptor limit: room is kept for the webhook
/// client's connections (`outgoing`), the database and the data files.
pub fn fit_connection_cap(wanted: usize, open_files_limit: Option<u64>, outgoing: usize) -> usize {
    const RESERVED: u64 = 256;
    match open_files_limit {
        Some(limit) => {
            let room = limit.saturating_sub(outgoing as u64 + RESERVED).max(16);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        None => wanted,
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then stops accepting, lets
/// requests in progress finish (up to [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    app: tower_http::normalize_path::NormalizePath<axum::Router>,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let registry = Arc::new(Registry::default());
    let tracker = TaskTracker::new();
    let epoch = Instant::now();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some((id, connection)) = registry.admit(limits.max_connections, epoch) else {
            // Every connection is busy: this one is closed unanswered (dropped).
            metrics::counter!("kait_http_connections_refused_total").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(
            stream,
            app.clone(),
            limits,
            connection,
            shutdown.clone(),
            ConnectionGuard {
                registry: registry.clone(),
                id,
            },
        ));
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after the shutdown grace period were cut");
    }
}

/// Removes a connection from the registry when its task ends, however it ends.
struct ConnectionGuard {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: tower_http::normalize_path::NormalizePath<axum::Router>,
    limits: ConnectionLimits,
    connection: Arc<Connection>,
    shutdown: CancellationToken,
    _registered: ConnectionGuard,
) {
    let tracked = connection.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_progress = InProgress::enter(&tracked);
        let app = app.clone();
        async move {
            let response: Response = app.oneshot(request.map(Body::new)).await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                body,
                _in_progress: in_progress,
            }))
        }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(serving);
    let mut stopping = false;
    loop {
        // While idle, wake when it has been idle long enough; while a request is in progress
        // (an event stream may last hours) sleep until one ends: no polling either way.
        let idle_check = if connection.is_idle() {
            limits
                .idle_timeout
                .saturating_sub(connection.idle_for())
                .max(Duration::from_millis(10))
        } else {
            Duration::MAX
        };
        tokio::select! {
            _ = connection.request_ended.notified() => {}
            _ = serving.as_mut() => return,
            _ = connection.shed.notified() => {
                if connection.is_idle() {
                    return;
                }
                // It took a request since it was picked: let that finish, then close.
                serving.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = sleep_unless_forever(idle_check) => {
                if connection.is_idle() && connection.idle_for() >= limits.idle_timeout {
                    return;
                }
            }
            _ = shutdown.cancelled(), if !stopping => {
                serving.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// `tokio::time::sleep`, except that `Duration::MAX` never wakes (and makes no timer entry).
async fn sleep_unless_forever(duration: Duration) {
    if duration == Duration::MAX {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(duration).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_registry_sheds_its_oldest_idle_connection() {
        let registry = Registry::default();
        let epoch = Instant::now();
        let (first, first_connection) = registry.admit(2, epoch).unwrap();
        let _busy = InProgress::enter(&first_connection);
        let (second, _) = registry.admit(2, epoch).unwrap();
        let (third, _) = registry.admit(2, epoch).unwrap();
        let open: Vec<u64> = registry.open.lock().unwrap().keys().copied().collect();
        // The first is busy, so the second (idle) made room for the third.
        assert_eq!(open, vec![first, third]);
        assert!(second < third);
    }

    #[test]
    fn a_registry_of_busy_connections_refuses_new_ones() {
        let registry = Registry::default();
        let epoch = Instant::now();
        let (_, connection) = registry.admit(1, epoch).unwrap();
        let busy = InProgress::enter(&connection);
        assert!(registry.admit(1, epoch).is_none());
        drop(busy);
        assert!(registry.admit(1, epoch).is_some());
    }

    #[test]
    fn idleness_starts_when_the_last_request_ends() {
        let epoch = Instant::now() - Duration::from_secs(100);
        let connection = Arc::new(Connection::new(epoch));
        assert!(connection.idle_for() < Duration::from_secs(1));
        let request = InProgress::enter(&connection);
        assert!(!connection.is_idle());
        drop(request);
        assert!(connection.is_idle());
        assert!(connection.idle_for() < Duration::from_secs(1));
    }

    #[test]
    fn the_cap_leaves_room_for_outgoing_connections_and_files() {
        assert_eq!(fit_connection_cap(10_000, Some(1024), 512), 256);
        assert_eq!(fit_connection_cap(10_000, Some(1_048_576), 1024), 10_000);
        assert_eq!(fit_connection_cap(10_000, None, 1024), 10_000);
        assert_eq!(fit_connection_cap(10_000, Some(100), 1024), 16);
    }
}
