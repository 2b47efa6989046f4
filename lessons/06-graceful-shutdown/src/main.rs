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
//! curl 'localhost:3000/slow?ms=3000' &   # then, within 3 s:
//! kill -TERM <primary pid>              # the curl still gets its 200
//! curl 'localhost:3000/slow?ms=9000' &   # longer than the grace period:
//! kill -TERM <primary pid>              # killed at 5 s, exit status 1
//! just lesson 06 --naive                # the "just exit" answer: requests fail
//! ```
//!
//! **What the usual answer gets wrong.** It counts *requests* in flight, but
//! an idle keep-alive connection has none and is still open: Node's
//! `server.close()` waits for it (before Node 19) until the force-exit timer
//! fires. It then calls `process.exit(0)` — success — although the drain
//! failed. And it waits with timers and polling where an event (the last
//! worker's exit) says exactly when it is done.
//!
//! | Node                                          | Rust (this workbook)                                   |
//! |-----------------------------------------------|--------------------------------------------------------|
//! | `process.on('SIGTERM', …)` in the primary     | built into `Cluster` (`handle_signals`)                |
//! | `worker.disconnect()` for each worker         | `cluster.shutdown(reason)` → `disconnect` each         |
//! | `server.close()` in the worker                | `serve(…, worker.disconnected())` drains               |
//! | `server.closeIdleConnections()` (Node 18.2+)  | `Connection: close` + idle timeout in `http::Server`   |
//! | `setTimeout(() => worker.kill(), grace)`      | `--grace`: `ClusterOptions::grace`                     |
//! | `cluster.on('exit')` until none are left      | `cluster.run().await` returns after the last exit      |

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use supervisor::http::{Request, serve, text};
use supervisor::{Cluster, ClusterArgs, Role, Worker};

/// Lesson 06: stop without losing a request, and say so when you could not.
#[derive(Debug, Parser)]
#[command(name = "lesson-06", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Show the usual mistake: workers exit the moment they are told to stop
    #[arg(long)]
    naive: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    supervisor::exit_code(run(args).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    match supervisor::role()? {
        Role::Primary => primary(args).await,
        Role::Worker(_) => worker(args).await,
    }
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(args.cluster.options())
        .await
        .context("starting the cluster")?;
    // SIGTERM/SIGINT: disconnect every worker, return after the last exit,
    // kill those still running at the deadline. `run` turns a forced kill
    // into an error, so the exit status tells the truth.
    let stopped = cluster.run().await?;
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

// ANCHOR: worker
async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let listener = worker.listen().await?;
    worker.ready()?;
    let id = worker.id();
    let in_flight = Arc::new(AtomicU64::new(0));

    if args.naive {
        // The usual mistake: stop means exit, now. Every request in flight,
        // and every request on its way in a keep-alive connection, is lost.
        let stop = worker.disconnected();
        tokio::spawn(async move {
            stop.await;
            eprintln!("[worker {id}] --naive: exiting at once");
            std::process::exit(0);
        });
    }

    let (me, counter) = (worker.clone(), in_flight.clone());
    let handler = move |request: Request| {
        let (me, counter) = (me.clone(), counter.clone());
        async move {
            match request.uri().path() {
                "/slow" => {
                    let ms = query_ms(&request).unwrap_or(1000);
                    let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    // Tell the primary a slow request started, so a script
                    // can send SIGTERM exactly while requests are in flight.
                    let _ = me.send(&serde_json::json!({ "slow_started": ms, "in_flight": now }));
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    counter.fetch_sub(1, Ordering::Relaxed);
                    text(200, format!("worker {id} took {ms} ms\n"))
                }
                _ => text(200, format!("hello from worker {id}; try /slow?ms=3000\n")),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
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
