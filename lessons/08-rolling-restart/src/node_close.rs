//! Node 20's `server.close()`, imitated for `--naive`: what the usual
//! answer's old worker does with the connections it has when it is told to
//! go.
//!
//! Checked against Node itself by this lesson's Node scenarios
//! (`scenarios/08-rolling-restart-node*.toml`) and by
//! `tests/naive_like_node.rs`, which runs `--naive` and the Node twin under
//! the same load:
//!
//! - the listening socket stops taking connections (here: no more accepts;
//!   round-robin: the primary has already taken the worker out of its
//!   routes, and connections it handed over an instant before are served);
//! - a connection *idle* at that instant — a response finished, no request
//!   read since — is closed at once (Node's `closeIdleConnections()`). A
//!   client sending its next request on it right then gets no answer: a
//!   reset or an early close;
//! - a connection *busy* with a request goes on as if nothing happened: its
//!   responses keep the connection alive, and it serves the client's later
//!   requests too. So does a connection accepted whose first request has
//!   not been read yet;
//! - either closes only when its client closes it or after 5 seconds
//!   without a request (Node's `keepAliveTimeout`), and the worker exits
//!   when its last connection has closed.
//!
//! So a client that keeps one busy connection keeps the old worker alive
//! for as long as it sends: the usual rolling restart then waits on it.
//! The workbook's own drain ([`supervisor::http::Server`]) answers the
//! next request on every connection with `Connection: close` instead.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use supervisor::Listener;
use supervisor::http::{Request, Response, WORKER_ID_HEADER};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Node's `server.keepAliveTimeout` default: a keep-alive connection with
/// no request for this long is closed.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `handler` until `close` resolves, then closes as Node 20's
/// `server.close()` does (see the module doc) and returns when the last
/// connection has closed.
// ANCHOR: serve
pub async fn serve<H, F>(listener: Listener, handler: H, close: impl Future<Output = ()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let worker_id = HeaderValue::from(listener.worker_id().0);
    let (closing_tx, closing) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(close);
    let mut closed = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((stream, _peer))) => {
                    let (handler, worker_id) = (handler.clone(), worker_id.clone());
                    let conn = connection(stream, handler, worker_id, closing.clone(), closed);
                    connections.spawn(conn);
                }
                // Round-robin: the primary will hand us nothing more.
                Ok(None) => break,
                // EMFILE and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            () = &mut close, if !closed => {
                closed = true;
                // closeIdleConnections(): every connection looks now.
                let _ = closing_tx.send(true);
                if !listener.is_handed_connections() {
                    break;
                }
            }
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
}
// ANCHOR_END: serve

/// One connection, as a Node `http.Server` keeps it. A `late` one was
/// handed over by the primary as the worker closed: Node's worker would
/// refuse it and the primary give it to another worker, so it gets one
/// answer here, with `Connection: close`, and the client moves on.
// ANCHOR: connection
async fn connection<H, F>(
    stream: tokio::net::TcpStream,
    handler: H,
    worker_id: HeaderValue,
    mut closing: watch::Receiver<bool>,
    late: bool,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    // Idle: a response finished and no request read since. A connection
    // whose first request has not come yet is not idle (Node's parser has
    // not finished a message on it).
    let idle = Arc::new(AtomicBool::new(false));
    let in_request = Arc::clone(&idle);
    let service = service_fn(move |request| {
        let (handler, worker_id, idle) = (handler.clone(), worker_id.clone(), in_request.clone());
        idle.store(false, Ordering::SeqCst);
        async move {
            let mut response = handler(request).await;
            response.headers_mut().insert(WORKER_ID_HEADER, worker_id);
            idle.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        // keepAliveTimeout: no request for 5 s closes the connection.
        .header_read_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive(!late)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        // The close first, as Node's closeIdleConnections() looks at every
        // connection at one instant: a request that has arrived but is not
        // read yet does not make its connection busy.
        biased;
        _ = closing.wait_for(|&yes| yes) => {}
        _ = conn.as_mut() => return,
    }
    if idle.load(Ordering::SeqCst) {
        // Closed under a client that may be sending on it right now (hyper
        // first finishes writing a response it has been handed).
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
        return;
    }
    // Busy, or no request yet: served as before, with keep-alive, until the
    // client closes it or it stays idle for KEEP_ALIVE_TIMEOUT.
    let _ = conn.await;
}
// ANCHOR_END: connection
