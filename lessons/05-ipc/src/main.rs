//! # Lesson 05 — How do the primary and its workers talk to each other?
//!
//! **The short answer.** Over an IPC channel Node sets up for every worker:
//! `worker.send(msg)` in the primary, `process.send(msg)` in the worker, and a
//! `message` event on the other side. A broadcast is a loop over the workers.
//!
//! This lesson, once every worker is ready:
//!
//! 1. **broadcasts** a typed configuration change; each worker applies it
//!    (its responses change) and acknowledges; the primary counts the acks;
//! 2. **asks every worker for its stats** and gathers the answers with a
//!    timeout — request/response matched by a correlation id — naming any
//!    worker that did not answer (`--stall-worker 2` makes one stay silent);
//! 3. **kills a worker and sends to it**, the moment its channel closes and
//!    again after its exit, and shows that both sends are refused.
//!
//! `SIGUSR1` runs the broadcast and the gather again.
//!
//! **What the usual answer leaves out.** A message is serialised: the other
//! side gets a copy, never shared memory, so sending a large object costs its
//! encoding (see the benchmark). `send` can fail — the channel closes when
//! the worker exits — and a send to a worker that has just died must fail
//! too, not vanish into a queue (in Node an unhandled failure is an `error`
//! event that takes the primary down). Ordering holds per channel only: two
//! workers' messages reach the primary in any order. Node has no
//! request/response built in; without a correlation id, answers to
//! overlapping questions get mixed up.
//!
//! | Node                                             | Rust (this workbook)                          |
//! |--------------------------------------------------|-----------------------------------------------|
//! | `worker.send(msg)`                               | `cluster.send(id, &msg)` → `Result`           |
//! | `worker.on('error', …)` (`ERR_IPC_CHANNEL_CLOSED`)| the `Err` of that `Result`                   |
//! | `for (const w of Object.values(cluster.workers))`| `for id in cluster.workers()`                 |
//! | `process.on('message', …)` in the worker         | `worker.messages()`                           |
//! | `process.send(msg)` in the worker                | `worker.send(&msg)`                           |
//! | `cluster.on('message', (w, msg) => …)`           | `Event::Message` from `cluster.subscribe()`   |
//! | hand-made `{ id, reply }` pairs + `setTimeout`   | `cluster.ask_all(&q, timeout)` / `worker.reply` |

mod messages;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use messages::{FromPrimary, FromWorker, Stats};
use supervisor::http::{serve, text};
use supervisor::{Cluster, ClusterArgs, Event, Worker, WorkerId};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

/// Lesson 05: typed messages, broadcast, request/response, a peer that is gone.
#[derive(Debug, Parser)]
#[command(name = "lesson-05", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// This worker reads the primary's questions and never answers them
    #[arg(long, value_name = "ID")]
    stall_worker: Option<u32>,

    /// How long the primary waits for answers
    #[arg(long, default_value = "1s", value_parser = supervisor::cli::parse_seconds)]
    answer_timeout: Duration,
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, worker)
}

async fn primary(args: Args) -> anyhow::Result<()> {
    let options = args.cluster.options();
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;

    // EXERCISE 05.1: a broadcast reaches the workers running when it is
    // sent. A worker that joins later (SIGTTIN, a replacement) starts with
    // no configuration, and nothing here ever sends it one.
    let demo = cluster.clone();
    let timeout = args.answer_timeout;
    let mut usr1 = signal(SignalKind::user_defined1()).context("watching SIGUSR1")?;
    tokio::spawn(async move {
        if demo
            .wait_ready(workers, Duration::from_secs(30))
            .await
            .is_ok()
        {
            let mut version = 1;
            broadcast_config(&demo, version).await;
            gather_stats(&demo, timeout).await;
            send_to_a_dead_worker(&demo).await;
            while usr1.recv().await.is_some() {
                version += 1;
                broadcast_config(&demo, version).await;
                gather_stats(&demo, timeout).await;
            }
        }
    });

    cluster.run().await?;
    Ok(())
}

// ANCHOR: broadcast
/// Sends a new configuration to every worker and counts the acknowledgements.
async fn broadcast_config(cluster: &Cluster, version: u32) {
    // Listen for the acknowledgements before anything is sent.
    let mut events = cluster.subscribe();
    let config = FromPrimary::Config {
        version,
        greeting: format!("hello (config v{version})"),
    };
    // A broadcast is a loop: each worker gets its own serialised copy.
    let mut sent = 0;
    for id in cluster.workers() {
        match cluster.send(id, &config) {
            Ok(()) => sent += 1,
            Err(error) => cluster.note_line(&format!("broadcast to worker {id} failed: {error}")),
        }
    }
    // Acks come back in whatever order the workers get to them.
    let is_ack = |event: &Event| match event {
        Event::Message { body, .. } => {
            serde_json::from_value::<FromWorker>(body.clone()).ok()
                == Some(FromWorker::ConfigApplied { version })
        }
        _ => false,
    };
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while acked.len() < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.wait_for(left, is_ack).await {
            Ok(Event::Message { id, .. }) => acked.push(id),
            _ => break, // the rest did not answer in time
        }
    }
    acked.sort();
    let says = format!(
        "config v{version} sent to {sent} workers; applied by {}: {}",
        acked.len(),
        list(&acked)
    );
    let fields = serde_json::json!({ "version": version, "sent": sent, "acked": acked.len() });
    cluster.report("broadcast", &fields, &says);
}
// ANCHOR_END: broadcast

// ANCHOR: gather
/// Asks every worker for its stats; reports who answered and who did not.
async fn gather_stats(cluster: &Cluster, timeout: Duration) {
    let gathered = cluster.ask_all(&"stats", timeout).await;
    let answered: Vec<WorkerId> = gathered.answers.keys().copied().collect();
    let missing: Vec<_> = gathered
        .missing
        .iter()
        .map(|(id, why)| serde_json::json!({ "id": id, "reason": why.to_string() }))
        .collect();
    let mut says = format!("stats from {} workers: {}", answered.len(), list(&answered));
    for (id, answer) in &gathered.answers {
        if let Ok(stats) = serde_json::from_value::<Stats>(answer.clone()) {
            says += &format!(
                "\n    worker {id}: pid {}, {} requests, config v{}",
                stats.pid, stats.requests, stats.config_version
            );
        }
    }
    for why in gathered.missing.values() {
        says += &format!("\n    no answer: {why}");
    }
    let fields = serde_json::json!({ "answered": answered, "missing": missing });
    cluster.report("gathered", &fields, &says);
}
// ANCHOR_END: gather

fn list(ids: &[WorkerId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| format!("worker {id}")).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

// ANCHOR: gone
/// Kills the newest worker, then sends to it twice: as soon as its channel
/// closes (the primary has not yet seen it exit), and after its exit.
async fn send_to_a_dead_worker(cluster: &Cluster) {
    let Some(&victim) = cluster.workers().last() else {
        return;
    };
    let mut events = cluster.subscribe();
    // `kill -9`: a crash no code in the worker sees coming. (The signal is
    // parsed from its name, which gives it the type `kill` takes.)
    let Ok(sigkill) = "SIGKILL".parse() else {
        return;
    };
    if cluster.kill(victim, sigkill).is_err() {
        return;
    }
    let message = FromPrimary::Config {
        version: 0,
        greeting: "anyone there?".into(),
    };
    let within = Duration::from_secs(10);

    // The first sign of death: the channel reaches end-of-file.
    let closed = |event: &Event| matches!(event, Event::Disconnect { id } if *id == victim);
    if events.wait_for(within, closed).await.is_err() {
        return;
    }
    let just_died = outcome(cluster.send(victim, &message));

    // Then the exit event; by now the primary has forgotten the worker.
    let exited = |event: &Event| matches!(event, Event::Exit { id, .. } if *id == victim);
    if events.wait_for(within, exited).await.is_err() {
        return;
    }
    let after_exit = outcome(cluster.send(victim, &message));

    let says = format!(
        "worker {victim} killed; a send as its channel closed: {}; after its exit: {}",
        just_died["said"], after_exit["said"]
    );
    let fields =
        serde_json::json!({ "id": victim, "just_died": just_died, "after_exit": after_exit });
    cluster.report("send_to_dead", &fields, &says);
}

/// What a send returned, for the report: accepted, or the error it gave.
fn outcome(sent: Result<(), supervisor::ClusterError>) -> serde_json::Value {
    match sent {
        Ok(()) => serde_json::json!({ "accepted": true, "said": "accepted (and lost)" }),
        Err(error) => serde_json::json!({ "accepted": false, "said": error.to_string() }),
    }
}
// ANCHOR_END: gone

// ANCHOR: state
/// What a worker knows, in one place: its message task, its question task
/// and its HTTP handler each hold an `Arc` of it (a reference-counted
/// pointer: one value, shared, freed when the last holder lets go).
#[derive(Debug)]
struct WorkerState {
    /// The configuration it applied last: (version, greeting).
    config: Mutex<(u32, String)>,
    /// Requests served.
    requests: AtomicU64,
}

impl WorkerState {
    fn new() -> Self {
        WorkerState {
            config: Mutex::new((0, "hello (no config yet)".into())),
            requests: AtomicU64::new(0),
        }
    }

    fn config(&self) -> (u32, String) {
        // A panic while holding the lock cannot leave a half-written pair:
        // the pair is replaced whole. So a poisoned lock is still good.
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn apply(&self, version: u32, greeting: String) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = (version, greeting);
    }
}
// ANCHOR_END: state

// ANCHOR: worker
async fn worker(args: Args, id: WorkerId) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let state = Arc::new(WorkerState::new());

    // Messages: apply each configuration, then acknowledge it.
    let mut messages = worker.messages().context("messages taken twice")?;
    let (me, mine) = (Arc::clone(&worker), Arc::clone(&state));
    tokio::spawn(async move {
        while let Some(body) = messages.recv().await {
            match serde_json::from_value::<FromPrimary>(body) {
                Ok(FromPrimary::Config { version, greeting }) => {
                    mine.apply(version, greeting);
                    let _ = me.send(&FromWorker::ConfigApplied { version });
                }
                Err(error) => supervisor::report::stderr_line(&format!(
                    "[worker {id}] ignored a message of the wrong shape: {error}"
                )),
            }
        }
    });

    // Questions: answer with our stats (unless told to stall).
    let mut questions = worker.questions().context("questions taken twice")?;
    let stalled = args.stall_worker == Some(id.0);
    let (me, mine) = (Arc::clone(&worker), Arc::clone(&state));
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            if stalled {
                continue; // read, never answered: the primary's timeout must catch it
            }
            let stats = Stats {
                pid: std::process::id(),
                requests: mine.requests.load(Ordering::Relaxed),
                config_version: mine.config().0,
            };
            let _ = me.reply(&question, &stats);
        }
    });

    let listener = worker.listen().await?;
    worker.ready()?;
    let handler = move |_| {
        let state = Arc::clone(&state);
        async move {
            state.requests.fetch_add(1, Ordering::Relaxed);
            let (_, greeting) = state.config();
            text(200, format!("{greeting} from worker {id}\n"))
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker
