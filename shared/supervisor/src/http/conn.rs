//! One connection's life: served by hyper with the lesson's handler,
//! marked `Connection: close` once the worker drains, closed when it stays
//! idle past `idle_close`, or made room for when a full worker must take a
//! newcomer. The accept loop (`Server::serve`) spawns one of these per
//! connection; a heartbeat runs one over an in-memory pipe.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::crowd::Presence;
use super::{ClientAddr, PeerAddr, Request, Response, Stats, WORKER_ID_HEADER};

/// What every connection task needs.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    pub(super) worker_id: HeaderValue,
    pub(super) stats: Arc<Stats>,
    pub(super) idle_close: Duration,
    pub(super) header_timeout: Duration,
}

// ANCHOR: drain
impl Conn {
    /// Serves one connection: a TCP stream, or a heartbeat's in-memory
    /// pipe. `presence` says when it is busy or idle, for a full worker
    /// that must make room; the heartbeat's own connection has none, and is
    /// not counted in [`Stats`] either.
    pub(super) async fn run<H, F, S>(
        self,
        stream: S,
        handler: H,
        mut drain: watch::Receiver<bool>,
        late: bool,
        presence: Option<Arc<Presence>>,
    ) where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response> + Send + 'static,
        S: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
    {
        let Conn {
            worker_id,
            stats,
            idle_close,
            header_timeout,
        } = self;
        let peer = stream.peer().map(ClientAddr);
        let counted = presence.is_some();
        let draining = drain.clone();
        let seen = presence.clone();
        let service = service_fn(move |mut request: Request| {
            if let Some(peer) = peer {
                request.extensions_mut().insert(peer);
            }
            let handler = handler.clone();
            let worker_id = worker_id.clone();
            let stats = Arc::clone(&stats);
            let draining = *draining.borrow();
            let seen = seen.clone();
            async move {
                if let Some(seen) = &seen {
                    seen.busy();
                }
                let mut response = handler(request).await;
                if let Some(seen) = &seen {
                    seen.idle();
                }
                let headers = response.headers_mut();
                headers.insert(WORKER_ID_HEADER, worker_id);
                if draining {
                    // hyper closes the connection after this response.
                    headers.insert(CONNECTION, HeaderValue::from_static("close"));
                }
                if counted {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let conn = http1::Builder::new()
            // Without a timer hyper silently disables its header read
            // timeout, and a client that sends half a request holds its
            // connection for ever.
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            // A connection that arrives after the stop signal gets one answer.
            .keep_alive(!late)
            .serve_connection(TokioIo::new(stream), service)
            // A handler may take the connection over (a WebSocket, via
            // `hyper::upgrade::on`); without this, hyper would refuse.
            .with_upgrades();
        tokio::pin!(conn);
        let evicted = async {
            match &presence {
                Some(presence) => presence.evicted().await,
                None => std::future::pending().await,
            }
        };
        let evict = tokio::select! {
            _ = conn.as_mut() => return,
            _ = drain.wait_for(|&yes| yes) => false,
            () = evicted => true,
        };
        if evict {
            // A full worker needs the room: close now if idle, after the
            // response if busy.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
            return;
        }
        // Draining: a request that arrives from now on is answered with
        // `Connection: close` (one already running is not: its header was
        // decided when it arrived). Give a quiet connection `idle_close` to
        // send its request before we close it.
        tokio::select! {
            _ = conn.as_mut() => return,
            () = tokio::time::sleep(idle_close) => {}
        }
        // Still open: idle, or busy with a long request. graceful_shutdown
        // closes an idle connection now and a busy one after its response.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}
// ANCHOR_END: drain
