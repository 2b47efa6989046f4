//! # Lesson 04 — Load-balancing strategies: who gets the next connection?
//!
//! **The short answer.** Node offers two: *round-robin* (the primary accepts
//! each connection and hands it to the next worker; the default everywhere
//! but Windows) and *OS scheduling* (`SCHED_NONE`: every worker accepts on
//! the shared socket and the kernel picks). A third is no `cluster` policy:
//! `SO_REUSEPORT`, one socket per worker, and the kernel hashes each new
//! connection to one of them. nginx offers it as an opt-in (`listen …
//! reuseport`), and Node's `net` since v22.12/v23.1 (`listen({ reusePort:
//! true })`), for processes you start yourself. With it, closing a worker's
//! socket resets the connections still queued on it — which is why the
//! supervisor keeps each slot's socket open across its workers.
//!
//! This lesson runs any of the three (`--sched rr|shared|reuseport`). Each
//! worker counts the connections it accepted and the requests it answered;
//! the primary prints the table when it stops (and on `SIGUSR1`):
//!
//! ```text
//! just lesson 04 --workers 4 --sched shared
//! kill -USR1 <primary pid>      # the table so far
//! ```
//!
//! **What the usual answer gets wrong.** Distribution is per *connection*:
//! a keep-alive client stays on the worker that accepted it, however many
//! requests it sends. The usual sample counts "requests" from messages its
//! workers never send. The policy is fixed before the first fork. And "OS
//! scheduling has less overhead" is true per connection, but on Linux it can
//! leave most of the work on a few processes — run `just bench-lb` and see.
//!
//! | Node                                              | Rust (this workbook)                        |
//! |---------------------------------------------------|---------------------------------------------|
//! | `cluster.schedulingPolicy = cluster.SCHED_RR`     | `--sched rr` (`Sched::RoundRobin`)          |
//! | `cluster.schedulingPolicy = cluster.SCHED_NONE`   | `--sched shared` (`Sched::Shared`)          |
//! | (no policy; `net`: `listen({ reusePort: true })`)  | `--sched reuseport` (`Sched::ReusePort`)    |
//! | `NODE_CLUSTER_SCHED_POLICY=rr`                    | the flag, read once before the first fork   |
//! | `server.getConnections()`                         | `supervisor::http::Stats`                   |
//! | `worker.send()` / `process.on('message')`         | `cluster.ask_all()` / `worker.questions()`  |

mod distribution;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use distribution::{Counts, Distribution};
use supervisor::http::{Server, text};
use supervisor::{Cluster, ClusterArgs, Event, Events, Worker};
use tokio::signal::unix::{SignalKind, signal};

/// Lesson 04: the same cluster under three strategies, with the numbers.
#[derive(Debug, Parser)]
#[command(name = "lesson-04", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, |_, _| worker())
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let cluster = Cluster::start(args.cluster.options())
        .await
        .context("starting the cluster")?;
    // Every worker sends its final counts as a message just before it
    // exits, which happens inside `run` below. Like `cluster.on('message')`
    // in Node, a subscription hears what happens after it is made — so it
    // is made here, before `run`, and read once `run` has returned.
    let mut events = cluster.subscribe();

    // On demand: ask every worker for its counts right now.
    let live = cluster.clone();
    let mut usr1 = signal(SignalKind::user_defined1()).context("watching SIGUSR1")?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let gathered = live.ask_all(&"counts", Duration::from_secs(1)).await;
            let mut table = Distribution::default();
            for (id, answer) in gathered.answers {
                if let Ok(counts) = serde_json::from_value::<Counts>(answer) {
                    table.workers.insert(id, counts);
                }
            }
            show(&live, "now", &table);
        }
    });

    let result = cluster.run().await;
    show(&cluster, "at exit", &final_counts(&mut events));
    result?;
    Ok(())
}

/// The table from the workers' final messages, all published by the time
/// `run` returns: each worker sent its counts after its last request.
fn final_counts(events: &mut Events) -> Distribution {
    let mut table = Distribution::default();
    while let Some(event) = events.try_next() {
        if let Event::Message { id, body } = event
            && let Ok(counts) = serde_json::from_value::<Counts>(body["final"].clone())
        {
            table.workers.insert(id, counts);
        }
    }
    table
}

fn show(cluster: &Cluster, when: &str, table: &Distribution) {
    let mut json = table.to_json();
    json["when"] = when.into();
    cluster.report(
        "distribution",
        &json,
        &format!("distribution {when}:\n{table}"),
    );
}
// ANCHOR_END: primary

// ANCHOR: worker
async fn worker() -> anyhow::Result<()> {
    let worker = std::sync::Arc::new(Worker::connect().await?);
    let listener = worker.listen().await?;
    let server = Server::new();
    let stats = server.stats();

    // Answer the primary's "how many so far?" with this worker's counters.
    let mut questions = worker.questions().context("questions taken twice")?;
    let (answering, counted) = (worker.clone(), stats.clone());
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            let counts = Counts {
                connections: counted.connections(),
                requests: counted.requests(),
            };
            let _ = answering.reply(&question, &counts);
        }
    });

    worker.ready()?;
    let id = worker.id();
    let hello = move |_| async move { text(200, format!("hello from worker {id}\n")) };
    server.serve(listener, hello, worker.disconnected()).await;

    // Drained: nothing more will be counted. Report, and make sure the
    // report has left the process before it exits.
    let last = Counts {
        connections: stats.connections(),
        requests: stats.requests(),
    };
    worker.send(&serde_json::json!({ "final": last }))?;
    worker.flush().await?;
    Ok(())
}
// ANCHOR_END: worker
