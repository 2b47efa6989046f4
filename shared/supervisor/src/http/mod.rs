//! Serving HTTP from a worker's accept stream, with graceful shutdown.
//!
//! Every lesson's worker serves HTTP the same way, so the hyper plumbing lives
//! here once: accept from the [`Listener`] (whatever the strategy), serve each
//! connection with hyper's HTTP/1 server, add an `x-worker-id` header to every
//! response (the scenarios count which worker answered from it), and stop
//! gracefully when the shutdown future resolves.
//!
//! Graceful here means: stop taking new connections; let each open
//! connection finish the request it is in; answer the next request on each
//! keep-alive connection with `Connection: close`, so the client moves on to
//! another worker by itself; close a connection that stays idle only after
//! [`Server::idle_close`]; return when the last connection is gone. We track
//! *connections*, not requests: an idle keep-alive connection has no request
//! in flight, yet it is open, and a server that only counts requests either
//! waits on it forever or never closes it.
//!
//! Why not close idle connections at once? Closing an idle keep-alive
//! connection races with a client that is sending its next request on it at
//! that very moment: the request is lost and the client sees a reset or an
//! early end of stream. Telling the client `Connection: close` on a response
//! cannot race; the idle timeout only catches clients that have gone quiet.
//!
//! Heartbeats ([`crate::ipc::ToWorker::Heartbeat`]) are answered here, not
//! by the IPC reader: the server serves one `GET` of [`HEALTH_PATH`] to
//! itself, over an in-memory pipe, through the same hyper connection code
//! and the lesson's own handler, and reports the status it got. A worker
//! whose runtime is blocked, or whose handler hangs, cannot answer — which
//! is exactly what a health check should find out. The probe is not counted
//! in [`Stats`].
//!
//! In round-robin mode the primary may have handed us connections an instant
//! before it told us to stop. We keep accepting after the shutdown signal
//! until the primary closes our handle channel, and serve those stragglers
//! with keep-alive off, so none is dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use tokio::sync::watch;

mod conn;
mod crowd;
mod held;
mod probe;

use self::conn::Conn;
use self::held::Held;
use self::probe::next_probe;
use crate::accept::AcceptFailures;
use crate::listen::Listener;
use crate::report::stderr_line;

/// A request as the handler sees it.
pub type Request = hyper::Request<hyper::body::Incoming>;
/// A response the handler returns: the whole body in memory.
pub type Response = hyper::Response<Full<Bytes>>;

/// The header naming the worker that answered.
pub const WORKER_ID_HEADER: &str = "x-worker-id";

/// The path a heartbeat requests from the worker's own handler. A handler
/// that answers it with a 2xx status (any unknown path's "hello" does) says
/// the request path works. It is a liveness check: it should go through
/// what every request goes through (a connection pool, say), but not ask
/// a dependency whether it is up — an outage of the database would then
/// get every worker replaced, which cures nothing (chapter 09).
pub const HEALTH_PATH: &str = "/_cluster/health";

/// The address at the other end of the connection a request came on, in
/// the request's extensions: `request.extensions().get::<ClientAddr>()`.
/// Behind a proxy it is the proxy's address, not the client's (lesson 10's
/// `hosts client-ip`). A heartbeat's request, served over an in-memory
/// pipe, has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// What a served stream knows of its other end.
trait PeerAddr {
    fn peer(&self) -> Option<std::net::SocketAddr>;
}

impl PeerAddr for tokio::net::TcpStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.peer_addr().ok()
    }
}

impl PeerAddr for tokio::io::DuplexStream {
    fn peer(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<String>) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON response.
pub fn json(status: u16, body: &impl serde::Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(mut text_body) => {
            text_body.push('\n');
            let mut response = text(status, text_body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(error) => text(500, format!("cannot encode the response: {error}\n")),
    }
}

/// Counts what a worker served: the numbers behind lesson 04's
/// distribution table. Shared with the worker, which reports them.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    requests: AtomicU64,
}

impl Stats {
    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A worker's HTTP server: [`serve`] with its settings spelled out.
#[derive(Debug, Clone)]
pub struct Server {
    stats: Arc<Stats>,
    idle_close: Duration,
    header_timeout: Duration,
    max_connections: usize,
    make_room: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            stats: Arc::default(),
            idle_close: Duration::from_millis(500),
            header_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
            make_room: true,
        }
    }
}

/// Descriptors kept free for everything that is not a client connection:
/// the IPC channel, the listener, the runtime's own, a log file or two.
const SPARE_DESCRIPTORS: u64 = 64;

/// As many connections as this process may open files, less a reserve:
/// a worker that stops taking connections before it runs out of
/// descriptors never has to drop one it was handed (a descriptor passed
/// with `SCM_RIGHTS` to a process that has no room is closed by the kernel).
fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _hard)| soft);
    usize::try_from(soft.saturating_sub(SPARE_DESCRIPTORS).max(16)).unwrap_or(usize::MAX)
}

impl Server {
    pub fn new() -> Self {
        Server::default()
    }

    /// After the shutdown signal, how long a keep-alive connection may stay
    /// idle (no request) before we close it.
    pub fn idle_close(mut self, after: Duration) -> Self {
        self.idle_close = after;
        self
    }

    /// How long a client may take to send a request's headers — and, on a
    /// keep-alive connection, to start its next request — before the
    /// connection is closed (hyper's header read timeout). It is what keeps
    /// a client that sends half a request, or goes quiet, from holding a
    /// connection for ever.
    pub fn header_timeout(mut self, after: Duration) -> Self {
        self.header_timeout = after;
        self
    }

    /// The most connections served at once. At the limit the worker stops
    /// accepting (round-robin: stops taking hand-offs, so the primary gives
    /// them to others) until one closes. By default: the process's file
    /// limit less a reserve.
    pub fn max_connections(mut self, most: usize) -> Self {
        self.max_connections = most.max(1);
        self
    }

    /// Whether a worker at (or near) its connection limit closes the
    /// connections that have been quiet longest to make room for new ones
    /// (see `crowd`). On by default; off, quiet connections hold their
    /// places until the header timeout, as lesson 10's `fd-limit` shows.
    pub fn make_room(mut self, yes: bool) -> Self {
        self.make_room = yes;
        self
    }

    /// The live counters of this server.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// Serves `handler` on every connection from `listener` until `shutdown`
    /// resolves, then drains (see the module doc) and returns.
    // ANCHOR: serve
    pub async fn serve<H, F>(
        self,
        mut listener: Listener,
        handler: H,
        shutdown: impl Future<Output = ()>,
    ) where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
    {
        let conn = Conn {
            worker_id: HeaderValue::from(listener.worker_id().0),
            stats: Arc::clone(&self.stats),
            idle_close: self.idle_close,
            header_timeout: self.header_timeout,
        };
        let (drain_tx, drain) = watch::channel(false);
        let mut held = Held::new(conn, handler, drain);
        let mut draining = false;
        // False once the socket is closed (a stop's first step).
        let mut accepting = true;
        let mut probes = listener.take_probes();
        let mut failures = AcceptFailures::default();
        let nearly_full = self.max_connections - self.max_connections / 10;
        tokio::pin!(shutdown);

        loop {
            let full = held.len() >= self.max_connections;
            // Full: close what has been quiet long enough (see `crowd`), and
            // come back when the next quiet one will be.
            let quiet_at = (full && !draining && self.make_room)
                .then(|| held.make_room(self.max_connections))
                .flatten();
            tokio::select! {
                // At the limit: take nothing more until a connection ends.
                Some(()) = held.one_ended(), if full => {}
                () = sleep_until_opt(quiet_at), if quiet_at.is_some() => {}
                accepted = listener.accept(), if !full && accepting => match accepted {
                    Ok(Some((stream, _peer))) => {
                        if let Some(line) = failures.succeeded() {
                            stderr_line(&format!("[worker {}] {line}", listener.worker_id()));
                        }
                        if self.make_room && held.len() >= nearly_full {
                            held.close_quietest();
                        }
                        held.take(stream, draining);
                    }
                    // Round-robin: the primary will send nothing more.
                    Ok(None) => break,
                    Err(error) => {
                        // Usually EMFILE: nothing announces a free descriptor,
                        // so wait a little, longer while it lasts (see `accept`).
                        let retry = failures.failed(&error);
                        if let Some(line) = retry.report {
                            stderr_line(&format!("[worker {}] {line}", listener.worker_id()));
                        }
                        tokio::time::sleep(retry.after).await;
                    }
                },
                // The cluster is stopping: close the socket, serve what was
                // queued on it as usual, and keep every connection until
                // the drain (see `Listener::close_socket`).
                () = listener.stop_requested(), if accepting && !draining => {
                    accepting = false;
                    for stream in listener.close_socket() {
                        held.take(stream, false);
                    }
                }
                Some(seq) = next_probe(&mut probes) => {
                    held.probe(seq, probes.as_ref().map(|p| p.reply.clone()));
                }
                () = &mut shutdown, if !draining => {
                    draining = true;
                    let _ = drain_tx.send(true);
                    if !listener.is_handed_connections() {
                        // The last batch: what waits in the queue would be
                        // reset when the socket closes (see `accept_queued`).
                        for stream in listener.accept_queued() {
                            held.take(stream, true);
                        }
                        break;
                    }
                }
            }
            held.reap();
        }
        // No more accepts: let go of the socket, then wait for every connection.
        drop(listener);
        let _ = drain_tx.send(true);
        held.finish().await;
    }
    // ANCHOR_END: serve
}

async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Serves `handler` with the default [`Server`] settings.
pub async fn serve<H, F>(listener: Listener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    Server::new().serve(listener, handler, shutdown).await;
}
