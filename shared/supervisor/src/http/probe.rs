//! Heartbeats, answered by the server itself: one `GET` of [`HEALTH_PATH`]
//! served to itself over an in-memory pipe, through the same connection
//! code and the lesson's own handler, then the status it got and the
//! server's counters go to the primary. Apart from the accept loop so that
//! the loop reads as serving, with the probe one branch of it.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::CONNECTION;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;

use super::{Conn, HEALTH_PATH, Request, Response};
use crate::ipc::{Beat, ToPrimary};
use crate::listen::Probes;

/// The next heartbeat, or never if there is no queue (a worker that is not
/// in a cluster, or whose queue closed).
pub(super) async fn next_probe(probes: &mut Option<Probes>) -> Option<u64> {
    match probes {
        Some(probes) => match probes.queue.recv().await {
            Some(seq) => Some(seq),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Answers heartbeat `seq`: one GET of [`HEALTH_PATH`] served by this
/// server to itself over an in-memory pipe, then the status and counters
/// to the primary.
pub(super) async fn probe<H, F>(
    conn: Conn,
    handler: H,
    drain: watch::Receiver<bool>,
    seq: u64,
    reply: Option<crate::ipc::Sender<ToPrimary>>,
) where
    H: Fn(Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response> + Send + 'static,
{
    let stats = Arc::clone(&conn.stats);
    let (client_end, server_end) = tokio::io::duplex(16 * 1024);
    let server = conn.run(server_end, handler, drain, true, None);
    let client = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(client_end)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(HEALTH_PATH)
            .header(hyper::header::HOST, "localhost")
            .header(CONNECTION, "close")
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|_| ProbeFailed)?;
        let response = sender.send_request(request).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response.status().as_u16())
    };
    let (_, status) = tokio::join!(server, client);
    let beat = Beat {
        status: status.unwrap_or(0),
        requests: stats.requests(),
        connections: stats.connections(),
    };
    if let Some(reply) = reply {
        let _ = reply.send(&ToPrimary::Heartbeat { seq, beat });
    }
}

/// The probe's request could not even be built.
#[derive(Debug, thiserror::Error)]
#[error("the heartbeat request could not be built")]
struct ProbeFailed;
