//! # Lesson 06 — How do you shut a cluster down gracefully?
//!
//! **The short answer.** On SIGTERM (or SIGINT) the primary tells every
//! worker to stop; each stops accepting new connections, finishes the
//! requests it has, closes its idle keep-alive connections and exits 0. The
//! primary exits as soon as the last worker is gone, and kills only a worker
//! that overruns the deadline — and then exits non-zero, saying which.
//!
//! Try it with requests in flight:
//!
//! ```text
//! just lesson 06 --workers 2 --grace 5
//! curl 'localhost:8000/slow?ms=3000' &   # then, within 3 s:
//! kill -TERM <primary pid>              # the curl still gets its 200
//! curl 'localhost:8000/slow?ms=9000' &   # longer than the grace period:
//! kill -TERM <primary pid>              # killed at 5 s, exit status 1
//! just lesson 06 --idle-client          # watch an idle keep-alive client
//! node lessons/06-graceful-shutdown/node/usual.js   # the usual answer, in Node
//! ```
//!
//! **What the usual answer gets wrong.** Its worker counts *requests*, not
//! connections, and its `server.close()` leaves busy keep-alive connections
//! serving: under keep-alive load it never drains. Its primary waits out a
//! fixed timer whether or not the workers are long gone, kills what is
//! left, and exits 0 — success — even when it had to kill; and a send to a
//! worker that died earlier crashes it. Its Node twin (`node/usual.js`) runs
//! it in Node itself, and the `06-*-node*` scenarios show each of these.
//!
//! | Node                                          | Rust (this workbook)                                   |
//! |-----------------------------------------------|--------------------------------------------------------|
//! | `process.on('SIGTERM', …)` in the primary     | built into `Cluster` (`handle_signals`)                |
//! | `worker.disconnect()` for each worker         | `cluster.shutdown()` → `disconnect` each               |
//! | `server.close()` in the worker                | `serve(…, worker.disconnected())` drains               |
//! | `server.closeIdleConnections()` (Node 18.2+)  | `Connection: close` + idle timeout in `http::Server`   |
//! | `setTimeout(() => worker.kill(), grace)`      | `--grace`: `ClusterOptions::grace`                     |
//! | `cluster.on('exit')` until none are left      | `cluster.run().await` returns after the last exit      |

mod idle_client;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use supervisor::http::{Request, Server, text};
use supervisor::{Cluster, ClusterArgs, Worker};
use tokio::task::JoinHandle;

/// Lesson 06: stop without losing a request, and say so when you could not.
#[derive(Debug, Parser)]
#[command(name = "lesson-06", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Play an idle keep-alive client: one request, then silence; report how
    /// the drain closes its connection
    #[arg(long)]
    idle_client: bool,
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, |_, _| worker())
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let options = args.cluster.options();
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    let idle = args
        .idle_client
        .then(|| spawn_idle_client(&cluster, workers, args.cluster.grace));
    // SIGTERM/SIGINT: disconnect every worker, return after the last exit,
    // kill those still running at the deadline. `run` turns a forced kill
    // into an error, so the exit status tells the truth.
    let stopped = cluster.run().await;
    if let Some(idle) = idle {
        // It has reported by now, unless the connection outlived the drain.
        let _ = tokio::time::timeout(Duration::from_secs(5), idle).await;
    }
    let stopped = stopped?;
    let took = stopped.took.as_millis();
    let fields = serde_json::json!({ "reason": stopped.reason, "took_ms": took });
    cluster.report(
        "stopped",
        &fields,
        &format!(
            "all workers drained and exited {took} ms after {}",
            stopped.reason
        ),
    );
    Ok(())
}
// ANCHOR_END: primary

/// Starts the idle keep-alive client once every worker is ready. It gives
/// up on the connection a little after the grace period: by then the drain
/// has either closed it or been cut short.
fn spawn_idle_client(cluster: &Cluster, workers: usize, grace: Duration) -> JoinHandle<()> {
    let cluster = cluster.clone();
    tokio::spawn(async move {
        if cluster
            .wait_ready(workers, Duration::from_secs(30))
            .await
            .is_err()
        {
            return;
        }
        let within = Duration::from_secs(3600).min(grace + Duration::from_secs(5));
        if let Err(error) = idle_client::watch(cluster.clone(), within).await {
            cluster.note_line(&format!("idle client: {error}"));
        }
    })
}

// ANCHOR: worker
async fn worker() -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let listener = worker.listen().await?;
    worker.ready()?;
    let id = worker.id();

    // Connections, not requests: once the drain begins, the next response
    // on each connection says `Connection: close`, and a connection that
    // stays idle is closed after a short wait.
    let server = Server::new();

    let me = Arc::clone(&worker);
    let handler = move |request: Request| {
        let me = Arc::clone(&me);
        async move {
            match request.uri().path() {
                "/slow" => {
                    let ms = query_ms(&request).unwrap_or(1000);
                    // Tell the primary a slow request started, so a script
                    // can send SIGTERM exactly while requests are in flight.
                    let _ = me.send(&serde_json::json!({ "slow_started": ms }));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    text(200, format!("worker {id} took {ms} ms\n"))
                }
                _ => text(200, format!("hello from worker {id}; try /slow?ms=3000\n")),
            }
        }
    };
    server.serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker

/// `?ms=N` from the query string.
fn query_ms(request: &Request) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))?
        .parse()
        .ok()
}
