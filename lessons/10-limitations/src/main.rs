//! # Lesson 10 — What are the cluster module's limits, and its anti-patterns?
//!
//! **The short answer.** Workers share a port and nothing else: no memory
//! (a counter in each worker counts only its own requests), no WebSocket
//! clients (a message reaches only the sockets of the worker that got it),
//! and each has its own file-descriptor limit. More workers than cores buy
//! nothing. And a cluster that stops without a drain loses what was in
//! flight. Each of these is a subcommand that measures it here:
//!
//! ```text
//! just lesson 10 counter        # per-worker counters vs a Redis INCR
//! just lesson 10 websocket      # a chat message reaches every worker only through Redis pub/sub
//! just lesson 10 scaling        # requests/s with 1, 2, 4, 8, 16 workers on this machine
//! just lesson 10 fd-limit       # file-descriptor limits are per process
//! just lesson 10 no-drain       # requests lost when workers exit on SIGTERM at once
//! just lesson 10 threads        # N processes against one process of N threads
//! just lesson 10 hosts sticky   # beyond one machine: two hosts behind a real nginx
//!                               #   (also: hosts client-ip, hosts roll, hosts failover)
//! ```
//!
//! **What the usual answer gets wrong.** "Four workers × 1024 descriptors is
//! still 1024" reads as if the cluster shared one limit. It does not: each
//! process has its own, so four workers together can hold four times as
//! many connections — while no single worker can pass its own.
//!
//! | Node                                          | Rust (this workbook)                                |
//! |-----------------------------------------------|-----------------------------------------------------|
//! | `let hits = 0` in the worker                  | an `AtomicU64` per worker: per worker               |
//! | `redis.incr('hits')`                          | `INCR` on the shared Redis                          |
//! | `ws` + `redis.publish` / `subscribe`          | hyper upgrade + tokio-tungstenite + Redis pub/sub   |
//! | `ulimit -n` per process                       | `RLIMIT_NOFILE`, set per worker (`setrlimit`)       |

mod chat;
mod counter;
mod fdlimit;
mod hosts;
mod nodrain;
mod scaling;
mod threads;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use supervisor::ClusterArgs;

/// Lesson 10: each limitation, measured.
#[derive(Debug, Parser)]
#[command(name = "lesson-10", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An in-memory counter per worker disagrees with the truth; a Redis INCR does not
    Counter(counter::Args),
    /// A chat message reaches clients on every worker only through Redis pub/sub
    Websocket(chat::Args),
    /// Requests per second as the worker count grows past the cores
    Scaling(scaling::Args),
    /// File-descriptor limits are per process: per worker, and in total
    FdLimit(fdlimit::Args),
    /// Requests lost when workers exit on SIGTERM without a drain, against a drain
    NoDrain(nodrain::Args),
    /// A CPU-bound endpoint as N processes and as one process of N threads: speed, memory, what a crash takes down
    Threads(threads::Args),
    /// Beyond one machine: two hosts behind a real nginx (sticky, client-ip, roll, failover)
    Hosts(hosts::Args),
    /// One host of `hosts` (a cluster with a rate-limited path)
    #[command(hide = true)]
    Host(hosts::host::Args),
    /// Serve a plain cluster (the clusters `scaling` and `no-drain` measure)
    #[command(hide = true)]
    Serve(Serve),
}

/// The cluster other subcommands start and measure.
#[derive(Debug, clap::Args)]
struct Serve {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Workers exit the moment they are told to stop (no drain)
    #[arg(long)]
    no_drain: bool,
    /// Replace a worker that crashes (lesson 03's backoff and budget)
    #[arg(long)]
    restart: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`).
    supervisor::block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let primary = supervisor::role()?.is_primary();
    match args.command {
        Command::Counter(args) if primary => counter::primary(args).await,
        Command::Counter(args) => counter::worker(args).await,
        Command::Websocket(args) if primary => chat::primary(args).await,
        Command::Websocket(args) => chat::worker(args).await,
        Command::Scaling(args) => scaling::primary(args).await,
        Command::FdLimit(args) if primary => fdlimit::primary(args).await,
        Command::FdLimit(args) => fdlimit::worker(args).await,
        Command::NoDrain(args) => nodrain::primary(args).await,
        Command::Threads(args) => threads::primary(args).await,
        Command::Hosts(args) => hosts::primary(args).await,
        Command::Host(args) if primary => hosts::host::primary(args).await,
        Command::Host(args) => hosts::host::worker(args).await,
        Command::Serve(args) if primary => serve_primary(args).await,
        Command::Serve(args) => nodrain::worker(args.no_drain).await,
    }
}

/// A plain cluster, serving until SIGTERM.
async fn serve_primary(args: Serve) -> anyhow::Result<()> {
    let mut options = args.cluster.options();
    if args.restart {
        options.restart = Some(supervisor::restart::RestartPolicy::default());
    }
    let cluster = supervisor::Cluster::start(options).await?;
    cluster.run().await?;
    Ok(())
}
