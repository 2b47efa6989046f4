//! # Lesson 09 — How do you detect an unhealthy worker and recover?
//!
//! **The short answer.** A crashed worker tells you (`exit`); a sick one
//! does not. So the primary asks: a heartbeat every interval, answered only
//! if the worker's request path works, and a memory sample. Too many missed
//! heartbeats in a row (hung), or memory over a limit for several samples in
//! a row (a leak, not a spike), and the worker is replaced — a new one ready
//! before the old one goes. A budget of replacements per time window, kept
//! for the whole cluster, turns a worker that keeps failing into one clear
//! line and a stop instead of an endless loop.
//!
//! ```text
//! just lesson 09 --dashboard                  # a live view of every worker
//! curl 'localhost:8000/block?ms=20000'        # blocks one worker's only thread
//! just lesson 09 --workers 1                  # then, three times:
//! curl 'localhost:8000/leak?mb=32'            # one worker keeps 96 MiB: replaced
//! just lesson 09 --leak 40 --health-budget 2  # every worker leaks: the budget stops it
//! just lesson 09 --workers 1 --pool 4 --ipc-ping  # then four times, in the background:
//! curl localhost:8000/stuck &                 # the pool runs dry: pings pass, heartbeats fail
//! ```
//!
//! **What the usual answer gets wrong.** Its sample keeps the restart
//! history in a tracker per worker id, and every replacement gets a new
//! tracker, so its "max restarts per hour" never trips (its Node twin,
//! `node/usual.js`, shows it in Node itself). It prints cumulative CPU
//! seconds as a percentage, and heap used as memory — RSS is what the
//! machine gives the process. And a heartbeat answered by the IPC handler
//! proves only that the IPC handler runs.
//!
//! | Node                                           | Rust (this workbook)                                  |
//! |------------------------------------------------|-------------------------------------------------------|
//! | `setInterval(() => worker.send(check))`        | `HealthPolicy { interval, timeout, missed, .. }`      |
//! | `process.on('message', …)` answering `health`  | the worker's HTTP server serves itself one request   |
//! | `process.memoryUsage().heapUsed`               | RSS, read with the `procfs` crate                     |
//! | `cluster.fork()`, `kill()` at `'listening'`    | `Cluster::replace`: the new one is ready first        |
//! | `tracker.restarts`, a tracker per worker id    | one `RestartBudget` for the whole cluster             |

mod dashboard;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use supervisor::cli::parse_seconds;
use supervisor::http::{HEALTH_PATH, Request, serve, text};
use supervisor::{
    Cluster, ClusterArgs, EventsFormat, HealthPolicy, HealthReason, RestartPolicy, Role, Verdict,
    Vitals, Worker,
};

/// Lesson 09: hung and leaking workers found and replaced, within a budget.
#[derive(Debug, Parser)]
#[command(name = "lesson-09", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Redraw a per-worker view every second (JSON `vitals` events with --events json)
    #[arg(long)]
    dashboard: bool,

    /// How often each worker gets a heartbeat (and a memory sample)
    #[arg(long, default_value = "500ms", value_parser = parse_seconds)]
    heartbeat: Duration,

    /// Missed heartbeats in a row that make a worker hung
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    missed: u32,

    /// Resident memory (MiB) a worker may keep
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_rss: u64,

    /// The kernel's hard limit on a worker's memory (MiB, RLIMIT_DATA): past
    /// it an allocation fails and the worker dies at once. The backstop for a
    /// leak too fast for --max-rss's samples; keep it well above --max-rss
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    max_memory: u64,

    /// Samples over --max-rss in a row that make a worker over memory
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rss_samples: u32,

    /// Health replacements allowed within --health-window; one more and the primary gives up
    #[arg(long, default_value_t = 5)]
    health_budget: u32,

    /// How far back health replacements count against the budget
    #[arg(long, default_value = "60s", value_parser = parse_seconds)]
    health_window: Duration,

    /// Every worker leaks this many MiB per second from the start (0: none)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1024))]
    leak: u64,

    /// Connections in each worker's database pool. Every request checks
    /// one out while it runs — the heartbeat's request too — and `/stuck`
    /// never gives its connection back
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pool: u32,

    /// Also ask every worker over IPC each --heartbeat, as the usual answer
    /// does, and report who answered (`ipc_ping` events): to compare with
    /// the heartbeat, which goes through the request path
    #[arg(long)]
    ipc_ping: bool,

    /// A stand-in for the database the workers query: it is down while
    /// this file exists (`touch` it for an outage, `rm` it to end it).
    /// `/orders` needs it; see exercise 09.1 for what the heartbeat does
    #[arg(long, value_name = "FILE")]
    database_down_if: Option<PathBuf>,
}

// ANCHOR: runtime
fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match supervisor::role() {
        // A worker runs one thread, as a Node worker runs one event loop:
        // a handler that blocks it blocks the whole worker, and that is
        // what the heartbeat must notice.
        Ok(Role::Worker(_)) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        // The primary: what every lesson's primary runs on.
        _ => supervisor::runtime::build(),
    };
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(error) => Err(anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    supervisor::exit_code(result)
}
// ANCHOR_END: runtime

async fn run(args: Args) -> anyhow::Result<()> {
    match supervisor::role()? {
        Role::Primary => primary(args).await,
        Role::Worker(_) => worker(args).await,
    }
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let health = HealthPolicy {
        interval: args.heartbeat,
        timeout: args.heartbeat,
        missed: args.missed,
        max_rss: Some(args.max_rss << 20),
        rss_samples: args.rss_samples,
        budget: RestartPolicy {
            budget: args.health_budget,
            window: args.health_window,
            ..RestartPolicy::default()
        },
        judge: verdict,
    };
    if args.max_memory <= args.max_rss {
        anyhow::bail!(
            "--max-memory {} MiB must be above --max-rss {} MiB: it is the hard backstop behind the sampled limit",
            args.max_memory,
            args.max_rss
        );
    }
    let options = supervisor::ClusterOptions {
        restart: Some(RestartPolicy::default()),
        health: Some(health),
        // Soft limit above, sampled; hard limit here, enforced by the kernel.
        worker_memory_limit: Some(args.max_memory << 20),
        ..args.cluster.options()
    };
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;

    if args.dashboard {
        let every = Duration::from_secs(1);
        tokio::spawn(dashboard::run(cluster.clone(), args.cluster.events, every));
    }
    if args.ipc_ping {
        tokio::spawn(ipc_ping(
            cluster.clone(),
            args.heartbeat,
            args.cluster.events,
        ));
    }
    cluster.run().await?;
    Ok(())
}

// ANCHOR_END: primary

// ANCHOR: verdict
/// The answer to "when is a worker sick?", read after every round of
/// heartbeats and memory samples. The supervisor counts (heartbeats missed
/// in a row, samples over `--max-rss` in a row; one good one resets each);
/// this decides. Counting in a row is the point: one slow heartbeat, or
/// one spike of memory, is not a verdict — a run of them is.
fn verdict(worker: &Vitals, policy: &HealthPolicy) -> Verdict {
    if worker.missed >= policy.missed {
        Verdict::Sick {
            reason: HealthReason::Hung,
            detail: format!(
                "missed {} heartbeats in a row ({} ms each)",
                worker.missed,
                policy.timeout.as_millis()
            ),
        }
    } else if worker.over_memory >= policy.rss_samples {
        Verdict::Sick {
            reason: HealthReason::OverMemory,
            detail: format!(
                "RSS {} MiB over the {} MiB limit for {} samples in a row",
                worker.rss >> 20,
                policy.max_rss.unwrap_or(0) >> 20,
                worker.over_memory
            ),
        }
    } else {
        Verdict::Healthy
    }
}
// ANCHOR_END: verdict

// ANCHOR: ipc_ping
/// The usual answer's check, beside the real one: every `interval`, a
/// question over IPC that each worker answers from its IPC handler, not
/// through its request path. Says who answered (`ipc_ping` events with
/// `--events json`), and, for people, when a worker answers it while it
/// misses heartbeats: a check that passes a worker that cannot serve.
async fn ipc_ping(cluster: Cluster, interval: Duration, events: EventsFormat) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut said = std::collections::BTreeSet::new();
    loop {
        ticks.tick().await;
        // The workers in rotation: one still starting has nothing to say yet.
        let mut asks = tokio::task::JoinSet::new();
        for id in cluster.ready_workers() {
            let cluster = cluster.clone();
            asks.spawn(async move {
                // The usual answer's own timeout is longer than its check
                // interval; here at least a second, so that a loaded machine
                // does not count as a silent worker.
                let timeout = interval.max(Duration::from_secs(1));
                let pong = cluster.ask(id, &json!({ "ping": true }), timeout).await;
                (id, pong.is_ok())
            });
        }
        let (mut answered, mut silent) = (Vec::new(), Vec::new());
        while let Some(Ok((id, pong))) = asks.join_next().await {
            match pong {
                true => answered.push(id),
                false => silent.push(id),
            }
        }
        answered.sort();
        silent.sort();
        if events == EventsFormat::Json {
            let fields = json!({ "answered": answered, "silent": silent });
            cluster.report("ipc_ping", &fields, "");
        }
        for row in cluster.vitals() {
            if row.missed > 0 && answered.contains(&row.id) && said.insert(row.id) {
                cluster.note_line(&format!(
                    "worker {} answers IPC pings, yet has missed {} heartbeat(s) in a row: its request path is stuck, its IPC handler is not",
                    row.id, row.missed
                ));
            }
        }
    }
}
// ANCHOR_END: ipc_ping

// ANCHOR: worker
async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let listener = worker.listen().await?;
    let id = worker.id();
    let leaked = Arc::new(Mutex::new(Vec::<Box<[u8]>>::new()));
    if args.leak > 0 {
        tokio::spawn(leak_steadily(leaked.clone(), args.leak));
    }
    // The usual answer's health check: answered by the IPC handler, a task
    // of its own, whatever the request path is doing.
    if let Some(mut questions) = worker.questions() {
        let worker = worker.clone();
        tokio::spawn(async move {
            while let Some(question) = questions.recv().await {
                let _ = worker.reply(&question, &json!({ "pong": true }));
            }
        });
    }
    let pool = Pool::new(args.pool, worker.clone());
    let database = Arc::new(args.database_down_if);
    worker.ready()?;

    let handler = move |request: Request| {
        let (leaked, pool, database) = (leaked.clone(), pool.clone(), database.clone());
        async move {
            // Every request, the heartbeat's included, holds a connection
            // from the pool while it runs.
            let _connection = pool.check_out().await;
            match request.uri().path() {
                "/stuck" => {
                    // A query with no timeout, to a database that never
                    // answers: the connection is never given back.
                    std::future::pending::<()>().await;
                    text(200, "never\n")
                }
                "/block" => {
                    let ms = query(&request, "ms").unwrap_or(10_000);
                    // Blocks this worker's only thread: no request, no
                    // heartbeat, no IPC until it returns.
                    std::thread::sleep(Duration::from_millis(ms));
                    text(200, format!("worker {id} was blocked for {ms} ms\n"))
                }
                "/leak" => {
                    let mb = query(&request, "mb").unwrap_or(16).min(1024);
                    let total = leak(&leaked, mb);
                    text(
                        200,
                        format!("worker {id} now holds {total} MiB it never frees\n"),
                    )
                }
                "/orders" => {
                    // A request that needs the database. While it is down,
                    // say so at once — 503, try again later — rather than
                    // hold a connection on a query that cannot succeed.
                    if is_down(&database) {
                        text(503, "the database is down: try again later\n")
                    } else {
                        text(200, format!("worker {id}: your orders\n"))
                    }
                }
                HEALTH_PATH => {
                    // EXERCISE 09.1: the heartbeat's request. As shipped it
                    // asks the database too, as a health check running
                    // `SELECT 1` does: the mistake "Liveness is not
                    // readiness" warns of, made here on purpose.
                    if is_down(&database) {
                        text(503, "the database is down\n")
                    } else {
                        text(200, format!("worker {id} is alive\n"))
                    }
                }
                _ => text(200, format!("hello from worker {id}\n")),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker

/// Whether the stand-in database (`--database-down-if`) is down now.
fn is_down(database: &Option<PathBuf>) -> bool {
    database.as_deref().is_some_and(Path::exists)
}

/// Each worker's database pool: `size` connections, each checked out by
/// one request at a time. The heartbeat's request checks one out too, so a
/// pool that never gives connections back fails the heartbeat — the
/// worker's own fault, which a new worker cures. The probe runs no query:
/// a database that is down must not fail it (chapter 09, "Liveness is not
/// readiness").
#[derive(Clone)]
struct Pool {
    free: Arc<tokio::sync::Semaphore>,
    worker: Arc<Worker>,
}

impl Pool {
    fn new(size: u32, worker: Arc<Worker>) -> Self {
        Pool {
            free: Arc::new(tokio::sync::Semaphore::new(size as usize)),
            worker,
        }
    }

    /// A connection, once one is free: the wait is where requests hang
    /// when the pool is empty.
    async fn check_out(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let connection = self.free.clone().acquire_owned().await.ok()?;
        if self.free.available_permits() == 0 {
            // Said once each time the pool runs dry (a `message` event).
            let _ = self.worker.send(&json!({ "pool": "empty" }));
        }
        Some(connection)
    }
}

/// Keeps `mb` more MiB, written to so the pages are really resident;
/// returns the total kept.
fn leak(leaked: &Mutex<Vec<Box<[u8]>>>, mb: u64) -> u64 {
    let chunk = vec![1u8; (mb as usize) << 20].into_boxed_slice();
    let mut kept = leaked
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    kept.push(chunk);
    kept.iter().map(|c| c.len() as u64).sum::<u64>() >> 20
}

/// `--leak N`: N MiB a second, in ten steps.
async fn leak_steadily(leaked: Arc<Mutex<Vec<Box<[u8]>>>>, per_second: u64) {
    let mut ticks = tokio::time::interval(Duration::from_millis(100));
    let mut owed_kib = 0u64;
    loop {
        ticks.tick().await;
        owed_kib += per_second * 1024 / 10;
        let mb = owed_kib / 1024;
        if mb > 0 {
            owed_kib -= mb * 1024;
            leak(&leaked, mb);
        }
    }
}

/// `?name=N` from the query string.
fn query(request: &Request, name: &str) -> Option<u64> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))?
        .parse()
        .ok()
}
