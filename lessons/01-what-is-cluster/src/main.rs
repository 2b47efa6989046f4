//! # Lesson 01 — What is the cluster module, and why does it exist?
//!
//! **The short answer.** One Node process runs JavaScript on one thread, so
//! it uses one core. `cluster` starts several copies of the program — one
//! *primary* and N *workers* — that serve the same port. That buys more
//! cores, and isolation: a worker that crashes takes down its own requests,
//! not the service.
//!
//! This lesson starts one worker per CPU this process may use, every worker
//! serves HTTP on the same port, and each response names the worker that
//! served it:
//!
//! ```text
//! just lesson 01            # then, in another terminal:
//! curl -s localhost:8000    # hello from worker 3 (pid 81234)
//! ```
//!
//! Rust has no one-thread limit — tokio already uses every core in one
//! process — so why would a Rust service run several processes? For what
//! processes give and threads do not: a crash (or a leak, or an abort in a C
//! library) stays inside one worker; each process has its own memory limit
//! and heap; a worker can be replaced while the others serve (lesson 08); and
//! code that is not thread-safe, or blocks, harms only its own process.
//!
//! | Node                                  | Rust (this workbook)                                  |
//! |---------------------------------------|-------------------------------------------------------|
//! | `cluster.isPrimary` (was `isMaster`)  | [`supervisor::role()`] → `Role::Primary`              |
//! | `os.availableParallelism()`           | [`supervisor::default_workers`] (`available_parallelism`) |
//! | `cluster.fork()` × N                  | `Cluster::start(ClusterOptions { workers, .. })`      |
//! | `http.createServer(h).listen(8000)`   | `worker.listen()` then `supervisor::http::serve`      |
//! | `cluster.worker.id`                   | `worker.id()`                                         |
//! | `cluster.on('exit', …)`               | the event stream (`--events json` to see it raw)      |

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use supervisor::http::{serve, text};
use supervisor::{Cluster, ClusterArgs, Role, Worker};

/// Lesson 01: N workers share one port; every response names its worker.
#[derive(Debug, Parser)]
#[command(name = "lesson-01", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`).
    supervisor::block_on(run(args))
}

// ANCHOR: role
async fn run(args: Args) -> anyhow::Result<()> {
    // The same binary is both: the primary started it by hand, a worker was
    // started by the primary with its id in the environment.
    match supervisor::role()? {
        Role::Primary => primary(args).await,
        Role::Worker(_) => worker().await,
    }
}
// ANCHOR_END: role

// ANCHOR: primary
/// Forks the workers, then supervises until SIGINT/SIGTERM.
async fn primary(args: Args) -> anyhow::Result<()> {
    let options = args.cluster.options();
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    cluster.run().await?;
    Ok(())
}
// ANCHOR_END: primary

// ANCHOR: worker
/// Serves HTTP on the port every worker shares, naming itself in each reply.
async fn worker() -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let listener = worker.listen().await?;
    worker.ready()?;

    let (id, pid) = (worker.id(), std::process::id());
    let hello =
        move |_request| async move { text(200, format!("hello from worker {id} (pid {pid})\n")) };
    serve(listener, hello, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker
