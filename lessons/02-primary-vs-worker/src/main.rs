//! # Lesson 02 — Primary vs worker: how does a process know its role?
//!
//! **The short answer.** The same program runs as both. The primary starts
//! it again for each worker with a marker in the new process's environment;
//! at start-up each process looks for the marker (`cluster.isPrimary` /
//! `cluster.isWorker`) and takes its branch.
//!
//! The primary's duties: decide how many workers, fork them, watch their
//! lifecycle, restart or stop them, route messages — and, in round-robin mode
//! (the default), **accept every connection** and hand it to a worker. So
//! "the primary serves no traffic" is false: it touches every connection,
//! although it runs none of the request handling. The workers' duties: serve
//! requests, report to the primary, stop when told.
//!
//! Why not call `fork()` like C servers do? A tokio process has several
//! threads; `fork()` copies only the calling thread, so a lock held by any
//! other thread at that instant is held forever in the child. Starting the
//! binary afresh (spawn = fork + immediate exec) avoids that, and it is what
//! Node does too: its workers are new processes, not forks of the primary's
//! memory.
//!
//! Run it and ask a worker who it is:
//!
//! ```text
//! just lesson 02 --workers 3
//! curl -s localhost:8000/whoami   # {"role":"worker","id":2,"pid":81234,"parent_pid":81230}
//! ```
//!
//! | Node                                 | Rust (this workbook)                               |
//! |--------------------------------------|----------------------------------------------------|
//! | `cluster.isPrimary` / `isWorker`     | `supervisor::role()` → `Role::Primary` / `Worker`  |
//! | `NODE_UNIQUE_ID` in the environment  | `CLUSTER_WORKER_ID` (`supervisor::role::WORKER_ID_VAR`) |
//! | `cluster.fork()` (spawn, not fork)   | `Command::new(current_exe())` inside `Cluster::fork` |
//! | `process.pid`, `process.ppid`        | `std::process::id()`, `nix::unistd::getppid()`     |
//! | `process.send(msg)`                  | `worker.send(&msg)`                                |
//! | `cluster.schedulingPolicy`           | `--sched rr` / `--sched shared`                    |
//! | `ss -ltnp` (who listens on the port) | `sockets::listening_on` + `sockets::holds_any`     |

mod sockets;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use supervisor::http::{json, serve, text};
use supervisor::{Cluster, ClusterArgs, Role, Sched, Worker, WorkerId};

/// Lesson 02: one binary, two roles; each process says which it is.
#[derive(Debug, Parser)]
#[command(name = "lesson-02", version, about)]
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

// ANCHOR: branch
async fn run(args: Args) -> anyhow::Result<()> {
    // One question decides everything that follows: was CLUSTER_WORKER_ID
    // set when this process started?
    match supervisor::role()? {
        Role::Primary => primary(args).await,
        Role::Worker(id) => worker(id).await,
    }
}
// ANCHOR_END: branch

/// What each process says about itself.
#[derive(Debug, Serialize)]
struct Identity {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<WorkerId>,
    pid: u32,
    parent_pid: i32,
}

impl Identity {
    fn of_this_process(role: &'static str, id: Option<WorkerId>) -> Self {
        Identity {
            role,
            id,
            pid: std::process::id(),
            parent_pid: nix::unistd::getppid().as_raw(),
        }
    }
}

// ANCHOR: primary
/// The primary: forks, supervises, and (round-robin) accepts every connection.
async fn primary(args: Args) -> anyhow::Result<()> {
    let options = args.cluster.options();
    let sched = options.sched;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    let me = Identity::of_this_process("primary", None);
    let says = format!(
        "I am the primary: pid {}, started by pid {}",
        me.pid, me.parent_pid
    );
    cluster.report("role", &me, &says);

    // The part of the usual answer this lesson corrects: ask the kernel,
    // not the supervisor, which processes hold a listening socket.
    let census = cluster.clone();
    tokio::spawn(async move {
        if census
            .wait_ready(census.desired(), Duration::from_secs(30))
            .await
            .is_ok()
        {
            report_listeners(&census);
        }
    });

    let result = cluster.run().await;

    // Round-robin: what the primary's dispatcher accepted and handed on.
    let handed_out = cluster.connections_handed_out();
    let says = match sched {
        Sched::RoundRobin => format!(
            "round-robin: the primary accepted all {handed_out} connections and handed each to a worker"
        ),
        _ => format!(
            "{sched}: the primary handed out {handed_out} connections; who accepts is in the listeners line"
        ),
    };
    let fields = serde_json::json!({ "sched": sched, "connections": handed_out });
    cluster.report("primary_accepted", &fields, &says);
    result?;
    Ok(())
}

/// Which processes hold a listening socket on the cluster's port, as
/// `ss -ltnp` would show: the primary's and each worker's open descriptors,
/// matched against the kernel's list of listening sockets.
fn report_listeners(cluster: &Cluster) {
    let port = cluster.addr().port();
    let listening = match sockets::listening_on(port) {
        Ok(inodes) => inodes,
        Err(error) => return cluster.note_line(&format!("reading /proc/net/tcp: {error}")),
    };
    let holds = |pid: u32| sockets::holds_any(pid, &listening).unwrap_or(false);
    let primary = holds(std::process::id());
    let (with, without): (Vec<WorkerId>, Vec<WorkerId>) = cluster
        .workers()
        .into_iter()
        .partition(|&id| cluster.pid(id).is_some_and(holds));
    let fields = serde_json::json!({
        "port": port,
        "sockets": listening.len(),
        "primary": primary,
        "workers": with,
        "workers_without": without,
    });
    let whom = |ids: &[WorkerId]| {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    };
    let says = format!(
        "holding a listening socket on port {port}: the primary {}; workers: {}",
        if primary { "yes" } else { "no" },
        whom(&with),
    );
    cluster.report("listeners", &fields, &says);
}
// ANCHOR_END: primary

// ANCHOR: worker
/// A worker: says who it is, to the primary and to any client that asks.
async fn worker(id: WorkerId) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let me = Identity::of_this_process("worker", Some(id));
    supervisor::report::stderr_line(&format!(
        "[worker {id}] I am a worker: pid {}, started by pid {}",
        me.pid, me.parent_pid
    ));
    worker.send(&me)?;

    let listener = worker.listen().await?;
    worker.ready()?;
    let whoami = serde_json::to_value(&me)?;
    let handler = move |request: supervisor::http::Request| {
        let whoami = whoami.clone();
        async move {
            match request.uri().path() {
                "/whoami" => json(200, &whoami),
                "/" => text(200, format!("worker {id} here; try /whoami\n")),
                _ => text(404, "not found; try /whoami\n"),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker
