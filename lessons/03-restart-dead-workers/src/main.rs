//! # Lesson 03 — How do you detect a dead worker and restart it?
//!
//! **The short answer.** The primary gets an `exit` event for every worker
//! that ends, with its exit code or the signal that killed it. If the worker
//! was not asked to leave (`exitedAfterDisconnect` is false), it crashed:
//! fork a replacement.
//!
//! **What the usual answer gets wrong.** "On exit, fork again" — at once and
//! without limit — turns a worker that crashes at start-up into a fork storm.
//! This lesson restarts with exponential backoff and a crash-loop budget:
//! after `--restart-budget` restarts within `--restart-window`, the primary
//! gives up with one clear line and a non-zero exit.
//!
//! Try it:
//!
//! ```text
//! just lesson 03 --workers 2
//! curl localhost:8000/crash        # the worker exits with code 1: replaced
//! kill -9 <a worker's pid>         # killed by SIGKILL: replaced
//! curl localhost:8000/leave        # asked to leave: NOT replaced
//! just lesson 03 --crash-on-start  # backoff 100, 200, 400 ms … then gives up
//! ```
//!
//! | Node                                          | Rust (this workbook)                              |
//! |-----------------------------------------------|---------------------------------------------------|
//! | `cluster.on('exit', (w, code, signal) => …)`  | `Event::Exit { code, signal, .. }`                |
//! | `worker.exitedAfterDisconnect`                | `Event::Exit { exited_after_disconnect, .. }`     |
//! | `cluster.fork()` in the exit handler          | `ClusterOptions { restart: Some(policy), .. }`    |
//! | (hand-written, if at all) backoff and budget  | `supervisor::RestartPolicy`                       |
//! | `worker.disconnect()` in the worker           | `worker.disconnect()`                             |
//! | `process.exit(1)`                             | `std::process::exit(1)`                           |

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use supervisor::cli::parse_seconds;
use supervisor::http::{serve, text};
use supervisor::{Cluster, ClusterArgs, RestartPolicy, Worker};

/// Lesson 03: crashed workers are replaced, with backoff and a budget.
#[derive(Debug, Parser)]
#[command(name = "lesson-03", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Make every worker crash right after it starts, to watch the backoff
    /// and the budget at work
    #[arg(long)]
    crash_on_start: bool,

    /// Restarts allowed within the window; one more crash and the primary gives up
    #[arg(long, default_value_t = 5)]
    restart_budget: u32,

    /// How far back crashes count against the budget (e.g. 60s)
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    restart_window: Duration,

    /// Wait before the first restart; each further restart in the window waits twice as long
    #[arg(long, default_value = "100ms", value_parser = parse_seconds)]
    restart_delay: Duration,
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, |args, _| worker(args))
}

// ANCHOR: primary
/// Starts the cluster with a restart policy; the supervisor does the rest:
/// on every exit it reports code or signal, and restarts only crashes.
async fn primary(args: Args) -> anyhow::Result<()> {
    let policy = RestartPolicy {
        base_delay: args.restart_delay,
        max_delay: Duration::from_secs(5),
        budget: args.restart_budget,
        window: args.restart_window,
    };
    let options = supervisor::ClusterOptions {
        restart: Some(policy),
        ..args.cluster.options()
    };
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    // Ends on SIGINT/SIGTERM, or with an error once the budget is spent.
    cluster.run().await?;
    Ok(())
}
// ANCHOR_END: primary

// ANCHOR: worker
/// A worker with two doors out: `/crash` (a crash, restarted) and `/leave`
/// (a deliberate disconnect, not restarted).
async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let id = worker.id();
    if args.crash_on_start {
        supervisor::report::stderr_line(&format!(
            "[worker {id}] crashing on start, as --crash-on-start asks"
        ));
        std::process::exit(1);
    }
    let listener = worker.listen().await?;
    worker.ready()?;

    let me = Arc::clone(&worker);
    let handler = move |request: supervisor::Request| {
        let me = Arc::clone(&me);
        async move {
            match request.uri().path() {
                "/crash" => {
                    supervisor::report::stderr_line(&format!(
                        "[worker {id}] /crash: exiting with code 1"
                    ));
                    std::process::exit(1)
                }
                "/leave" => match me.disconnect() {
                    Ok(()) => text(
                        200,
                        format!("worker {id} is leaving; it will not be replaced\n"),
                    ),
                    Err(error) => text(503, format!("worker {id} cannot leave: {error}\n")),
                },
                _ => text(200, format!("hello from worker {id}\n")),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker
