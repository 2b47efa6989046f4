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

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use supervisor::cli::parse_seconds;
use supervisor::http::{Request, serve, text};
use supervisor::{Cluster, ClusterArgs, HealthPolicy, RestartPolicy, Role, Worker};

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
    cluster.run().await?;
    Ok(())
}

// ANCHOR_END: primary

// ANCHOR: worker
async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let listener = worker.listen().await?;
    let id = worker.id();
    let leaked = Arc::new(Mutex::new(Vec::<Box<[u8]>>::new()));
    if args.leak > 0 {
        tokio::spawn(leak_steadily(leaked.clone(), args.leak));
    }
    worker.ready()?;

    let handler = move |request: Request| {
        let leaked = leaked.clone();
        async move {
            match request.uri().path() {
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
                _ => text(200, format!("hello from worker {id}\n")),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
// ANCHOR_END: worker

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
