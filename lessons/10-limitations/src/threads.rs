//! `threads`: the other way to use every core — one process, several threads.
//!
//! The usual answer lists worker threads as the alternative "for
//! CPU-intensive tasks (shared memory)". This measures the trade: the same
//! CPU-bound endpoint (`/cpu`, a fixed computation per request) served
//!
//! * by N worker processes of one runtime thread each — what `cluster`
//!   gives Node, one event loop per process; and
//! * by one worker process whose runtime has N threads — what a threaded
//!   server is, and the closest Rust has to Node's worker threads.
//!
//! For each: requests per second under the same load, the workers' memory,
//! and what a crash takes down — a panic in one handler (a bug), and an
//! abort (the process ends at once, as a segfault, a failed assertion in
//! native code, or the kernel's out-of-memory killer would end it). Both
//! clusters replace a worker that dies (`serve --restart`).

use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use loadgen::{Finished, LoadSpec};
use serde_json::json;
use supervisor::peer::OtherPrimary;
use tokio::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Processes in the first cluster, threads in the second's one process
    /// [default: the usable cores, at least 2]
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=64))]
    workers: Option<u16>,
    /// Seconds of load for the speed measurement
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Keep-alive clients sending at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
    /// The work in one request: rounds of a xorshift (about 1 ns each in a
    /// release build)
    #[arg(long, default_value_t = 1_000_000)]
    rounds: u64,
    /// Also write the markdown table to this file
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// The events format, for the table (the runner passes --events json)
    #[arg(long, default_value_t = supervisor::EventsFormat::Human)]
    events: supervisor::EventsFormat,
    /// Ignored: each measured cluster picks its own port
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Ignored: each measured cluster listens on 127.0.0.1
    #[arg(long)]
    host: Option<std::net::IpAddr>,
}

/// The computation behind `/cpu`: `rounds` steps that cannot be skipped.
pub fn burn(rounds: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds.min(1_000_000_000) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
    x
}

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let n = args.workers.map_or(cores.max(2), usize::from);
    let mut rows = Vec::new();
    for (shape, processes, threads) in [("processes", n, 1), ("threads", 1, n)] {
        rows.push(
            measure(&args, shape, processes, threads)
                .await
                .with_context(|| format!("measuring {shape}"))?,
        );
    }
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: run it with --release)"
    } else {
        "release build"
    };
    let mut table = format!(
        "{cores} cores; /cpu does {} rounds; {} keep-alive clients on 127.0.0.1 for {} s; {build}. Memory: the workers' resident set, summed. Cut: requests sent that got no answer (a client whose connection died sends again, so an abort can cut more requests than there are clients).\n\n\
         | {n} cores' worth of | requests/s | workers' memory, MiB | a panic in one handler cut | requests an abort cut ({} clients) | the next request served by, after |\n\
         |---|--:|--:|--:|--:|--:|\n",
        args.rounds, args.clients, args.seconds, args.clients
    );
    for row in &rows {
        table += &format!(
            "| {} | {} | {} | {}, the process {} | {} | {}, {} ms |\n",
            row["shape_said"].as_str().unwrap_or("?"),
            row["requests_per_s"],
            row["workers_rss_mib"],
            match row["panic_cut"].as_u64() {
                Some(1) => "1 request".to_string(),
                n => format!("{} requests", n.unwrap_or(0)),
            },
            if row["panic_process_lived"] == true {
                "lived"
            } else {
                "died"
            },
            row["abort_cut"],
            row["abort_then_served_by"].as_str().unwrap_or("?"),
            row["abort_back_ms"],
        );
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    supervisor::report::Reporter::new(args.events).custom(
        "threads",
        &json!({ "cores": cores, "n": n, "rows": rows }),
        table.trim_end(),
    );
    Ok(())
}

// ANCHOR: measure
/// One shape: start it, load it, crash it.
async fn measure(
    args: &Args,
    shape: &str,
    processes: usize,
    threads: usize,
) -> anyhow::Result<serde_json::Value> {
    let cluster = OtherPrimary::start(
        &[
            "serve",
            "--restart",
            "--workers",
            &processes.to_string(),
            "--worker-threads",
            &threads.to_string(),
        ],
        &[],
        processes,
    )
    .await?;
    let primary = cluster.pid().context("the cluster has no pid")?;
    let cpu = format!("/cpu?rounds={}", args.rounds);

    // Speed: the same load on either shape.
    let load = LoadSpec {
        requests: u64::MAX,
        connections: usize::from(args.clients),
        keep_alive: true,
        path: cpu.clone(),
        max_time: Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0)),
        timeout: Duration::from_secs(30),
        ..LoadSpec::default()
    };
    let speed = loadgen::run(cluster.addr, &load, &ProgressBar::hidden()).await?;
    let rss: u64 = workers(primary)
        .iter()
        .filter_map(|&pid| rss_kib(pid))
        .sum();

    // A panic in one handler: tokio catches it in that connection's task.
    let before = workers(primary);
    let panicked = loadgen::get(cluster.addr, "/panic", Duration::from_secs(10)).await;
    let after_panic = loadgen::get(cluster.addr, &cpu, Duration::from_secs(30)).await;
    let panic_lived = workers(primary) == before && after_panic.is_ok_and(|r| r.status == 200);

    // An abort while every client has a request in flight.
    let abort = abort_under_load(cluster.addr, args, load, &cpu, &speed.by_worker).await?;
    cluster.stop().await;

    let said = match shape {
        "processes" => format!("{processes} processes × 1 thread"),
        _ => format!("1 process × {threads} threads"),
    };
    Ok(json!({
        "shape": shape,
        "shape_said": said,
        "processes": processes,
        "threads": threads,
        "requests_per_s": speed.requests_per_second().round() as u64,
        "speed_failed": speed.failed,
        "workers_rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
        "panic_cut": u64::from(panicked.is_err()),
        "panic_process_lived": panic_lived,
        "abort_cut": abort.during.failed,
        "abort_answered": abort.during.ok,
        "abort_back_ms": abort.back.as_millis() as u64,
        "abort_then_served_by": abort.by,
    }))
}

/// What an abort did to the clients in flight, and how soon (and by whom)
/// they were served again.
struct Abort {
    during: loadgen::LoadReport,
    back: Duration,
    by: &'static str,
}

/// Aborts one worker while every client has a request in flight, then
/// waits for the first answer after it.
async fn abort_under_load(
    addr: std::net::SocketAddr,
    args: &Args,
    load: LoadSpec,
    cpu: &str,
    served_before: &std::collections::BTreeMap<String, u64>,
) -> anyhow::Result<Abort> {
    let finished = Finished::default();
    let spec = LoadSpec {
        requests: u64::from(args.clients) * 6,
        max_time: Duration::from_secs(20),
        ..load
    };
    let background = {
        let (addr, finished) = (addr, finished.clone());
        tokio::spawn(async move { loadgen::run(addr, &spec, &finished).await })
    };
    // One answer per client: every one of them has its next request in
    // flight. If the load is that slow to start (20 s), the abort goes
    // ahead all the same.
    let flowing = finished.reached(u64::from(args.clients), Duration::from_secs(20));
    let _ = flowing.await;
    let aborted = Instant::now();
    let _ = loadgen::get(addr, "/abort", Duration::from_secs(10)).await;
    // Served again: the first answer after the abort, from a worker that
    // was never down, or from the replacement (a new worker id).
    let (back, by) = loop {
        let answer = loadgen::get(addr, cpu, Duration::from_secs(30)).await;
        match answer {
            Ok(answer) if answer.status == 200 => {
                let worker = answer.worker.unwrap_or_default();
                let by = if served_before.contains_key(&worker) {
                    "a worker that was never down"
                } else {
                    "a replacement"
                };
                break (aborted.elapsed(), by);
            }
            _ if aborted.elapsed() > Duration::from_secs(30) => {
                break (aborted.elapsed(), "nobody");
            }
            _ => {}
        }
    };
    let during = background.await.context("the load task")??;
    Ok(Abort { during, back, by })
}
// ANCHOR_END: measure

/// The worker processes of the cluster whose primary is `primary`.
fn workers(primary: u32) -> Vec<i32> {
    let mut pids: Vec<i32> = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .filter_map(|process| process.ok()?.stat().ok())
        .filter(|stat| u32::try_from(stat.ppid) == Ok(primary))
        .map(|stat| stat.pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// A process's resident memory in KiB.
fn rss_kib(pid: i32) -> Option<u64> {
    let status = procfs::process::Process::new(pid).ok()?.status().ok()?;
    status.vmrss
}
