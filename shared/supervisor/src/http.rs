//! Serving HTTP from a worker's accept stream, with graceful shutdown.
//!
//! Every lesson's worker serves HTTP the same way, so the hyper plumbing lives
//! here once: accept from the [`Listener`] (whatever the strategy), serve each
//! connection with hyper's HTTP/1 server, add an `x-worker-id` header to every
//! response (the scenarios count which worker answered from it), and stop
//! gracefully when the shutdown future resolves.
//!
//! Graceful here means: stop taking new connections, let each open
//! connection finish the request it is in, close idle keep-alive connections,
//! and return when the last connection is gone. We track *connections*, not
//! requests: an idle keep-alive connection has no request in flight, yet it is
//! open, and a server that only counts requests never closes it.
//!
//! In round-robin mode the primary may have handed us connections an instant
//! before it told us to stop. We keep accepting after the shutdown signal
//! until the primary closes our handle channel, and serve those stragglers
//! with keep-alive off, so none is dropped.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listen::Listener;

/// A request as the handler sees it.
pub type Request = hyper::Request<hyper::body::Incoming>;
/// A response the handler returns: the whole body in memory.
pub type Response = hyper::Response<Full<Bytes>>;

/// The header naming the worker that answered.
pub const WORKER_ID_HEADER: &str = "x-worker-id";

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

/// Serves `handler` on every connection from `listener` until `shutdown`
/// resolves, then drains (see the module doc) and returns.
pub async fn serve<H, F>(listener: Listener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let worker_id = HeaderValue::from(listener.worker_id().0);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stopping = false;
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(Some((stream, _peer))) => {
                    let conn = serve_connection(stream, handler.clone(), worker_id.clone(), stop_rx.clone(), stopping);
                    connections.spawn(conn);
                }
                // Round-robin: the primary will send nothing more.
                Ok(None) => break,
                Err(error) => {
                    // Usually EMFILE (out of descriptors). There is no event to
                    // wait for here, so pause briefly instead of spinning.
                    eprintln!("[worker {}] accept failed: {error}", listener.worker_id());
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            () = &mut shutdown, if !stopping => {
                stopping = true;
                let _ = stop_tx.send(true);
                if !listener.is_handed_connections() {
                    break;
                }
            }
        }
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
    // No more accepts: let go of the socket, then wait for every connection.
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    handler: H,
    worker_id: HeaderValue,
    mut stop: watch::Receiver<bool>,
    late: bool,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let service = service_fn(move |request| {
        let handler = handler.clone();
        let worker_id = worker_id.clone();
        async move {
            let mut response = handler(request).await;
            response.headers_mut().insert(WORKER_ID_HEADER, worker_id);
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        // A connection that arrives after the stop signal gets one answer.
        .keep_alive(!late)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|&stop| stop) => {}
    }
    // Finish the request in flight (if any), then close; an idle
    // connection closes now.
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
