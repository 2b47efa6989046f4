//! `just bench-lb`: lesson 04's three strategies measured side by side.
//!
//! Lesson 04 claims that round-robin spreads connections evenly, that the
//! kernel's choice (`shared`, Node's `SCHED_NONE`) can pile them on a few
//! workers, and that keep-alive makes connection spreading say little about
//! request spreading. One lesson run shows one strategy; this harness runs
//! all six cells — `rr`, `shared`, `reuseport`, each with a new connection
//! per request and with keep-alive — one after another with the same load,
//! and prints one markdown table with the machine it ran on, so the claim
//! can be checked and the numbers quoted.
//!
//! Every cell gets a fresh cluster (so one cell's connections and counters
//! never leak into the next), a warm-up whose results are thrown away, and
//! bounded waits everywhere: a lesson that never listens or never exits
//! costs seconds, not a hung run, and is always killed before the next cell.
//!
//! Beside the strategies runs the limit: one plain multi-threaded hyper
//! process with the same answer (`plain-hyper`), measured the same way in
//! the same round. Absolute requests per second move by a fifth between
//! runs on this machine; the ratio of a strategy to the limit, measured
//! side by side, moves far less. So the run is several rounds, each round
//! measures every cell once (in a rotated order, so no cell always goes
//! first), and the table shows each cell's median ratio to the limit and
//! the spread of its rounds, then the absolute figures.

// One process, whose stderr nobody shares: progress lines may go out as
// eprintln! writes them (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::Signal;
use scenarios::bench::{self, Machine, Row, STRATEGIES, Server};
use scenarios::lesson::Lesson;
use scenarios::{LoadReport, LoadSpec};

/// How long a cluster may take to fork and listen before the run gives up.
const LISTEN_WITHIN: Duration = Duration::from_secs(20);

/// How long a SIGTERMed cluster may take to drain. The lesson's own grace
/// is 10 s; past this the harness kills what is left and moves on.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// Measure lesson 04's load-balancing strategies side by side.
#[derive(Debug, Parser)]
#[command(name = "bench-lb", version)]
struct Args {
    /// The lesson-04 binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Workers in every cluster [default: one per usable core, the lessons' own default]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Clients sending at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Measured requests per cell, the same for new connections and keep-alive.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,
    /// Seconds a cell's measured load may run before it stops short.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_time: u64,
    /// Requests sent before each measurement and thrown away.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Rounds: every cell measured once per round; the table gives medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
    rounds: u16,
    /// Also write the markdown to this file (its folder is created).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    scenarios::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (bin, plain) = binaries(&args)?;
    // Checked before a minute of load, not after it.
    if let Some(out) = &args.out
        && let Some(folder) = out.parent().filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }

    let started = Instant::now();
    let servers: Vec<Server> = std::iter::once(Server::Plain)
        .chain(STRATEGIES.into_iter().map(Server::Cluster))
        .collect();
    let measured = rounds(&args, &servers, &bin, &plain).await?;
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    let rows = summarise(&measured);
    let markdown = format!(
        "{}\n\n{}\n{}",
        header(&args),
        bench::table(&rows),
        bench::reading(&rows)
    );
    print!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// The lesson-04 binary and the plain process beside it, both checked to
/// exist before anything runs.
fn binaries(args: &Args) -> anyhow::Result<(PathBuf, PathBuf)> {
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name("lesson-04"),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p lesson-04` (`just bench-lb` does that for you)",
            bin.display()
        );
    }
    let plain = bin.with_file_name("plain-hyper");
    if !plain.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p scenarios` (`just bench-lb` does that for you)",
            plain.display()
        );
    }
    Ok((bin, plain))
}

/// Every round: each cell once, in an order rotated by the round so no
/// cell always goes first. `[shape][server]` = that cell's rows, in round
/// order.
async fn rounds(
    args: &Args,
    servers: &[Server],
    bin: &Path,
    plain: &Path,
) -> anyhow::Result<Vec<Vec<Vec<Row>>>> {
    let mut measured: Vec<Vec<Vec<Row>>> = vec![vec![Vec::new(); servers.len()]; 2];
    for round in 0..usize::from(args.rounds) {
        for (s, keep_alive) in [false, true].into_iter().enumerate() {
            for offset in 0..servers.len() {
                let index = (round + offset) % servers.len();
                let server = servers[index];
                let binary = match server {
                    Server::Plain => plain,
                    Server::Cluster(_) => bin,
                };
                let row = cell(binary, args, server, keep_alive)
                    .await
                    .with_context(|| format!("{server}, {}", shape(keep_alive)))?;
                eprintln!(
                    "round {}: {:>11}, {:<15} {:>7.0} requests/s, {} failed",
                    round + 1,
                    server.to_string(),
                    shape(keep_alive),
                    row.requests_per_second,
                    row.failed
                );
                measured[s][index].push(row);
            }
        }
    }
    Ok(measured)
}

/// One row per cell: its median round, and its ratio the median of the
/// per-round ratios to the limit measured in the same round (the first
/// server of each shape is the limit).
fn summarise(measured: &[Vec<Vec<Row>>]) -> Vec<Row> {
    let mut rows = Vec::new();
    for shape_rows in measured {
        let limits: Vec<f64> = shape_rows
            .first()
            .map(|limit| limit.iter().map(|r| r.requests_per_second).collect())
            .unwrap_or_default();
        for cell_rows in shape_rows {
            let ratios: Vec<f64> = cell_rows
                .iter()
                .zip(&limits)
                .map(|(row, limit)| {
                    if *limit > 0.0 {
                        row.requests_per_second / limit
                    } else {
                        0.0
                    }
                })
                .collect();
            rows.push(bench::Row::median_of(cell_rows, &ratios));
        }
    }
    rows
}

fn shape(keep_alive: bool) -> &'static str {
    if keep_alive {
        "keep-alive"
    } else {
        "new connections"
    }
}

/// One cell: a fresh cluster, a warm-up, the measured load, a clean stop.
async fn cell(bin: &Path, args: &Args, server: Server, keep_alive: bool) -> anyhow::Result<Row> {
    let (lesson_args, workers) = match server {
        Server::Plain => (Vec::new(), 1),
        Server::Cluster(sched) => (
            vec![
                "--workers".to_owned(),
                workers(args).to_string(),
                "--sched".to_owned(),
                sched.to_string(),
            ],
            workers(args),
        ),
    };
    let mut lesson = Lesson::start(bin, &lesson_args)?;
    let measured = measure(&mut lesson, args, workers, server, keep_alive).await;

    // Stopped the way an operator would, whatever the measurement did;
    // kill_all is the backstop, so no cluster outlives its cell.
    let _ = lesson.signal(Signal::SIGTERM);
    let exited = lesson.wait_exit(EXIT_WITHIN).await;
    lesson.kill_all().await;
    if exited.is_none() {
        eprintln!(
            "warning: {server} did not exit within {} s of SIGTERM; killed",
            EXIT_WITHIN.as_secs()
        );
    }

    // The lesson's own last word usually says why; one line keeps the
    // error one line.
    let (report, workers) = measured.map_err(|error| {
        let stderr = lesson.stderr();
        let last = stderr.lines().last().unwrap_or("(nothing)");
        anyhow::anyhow!("{error:#} (the lesson's last stderr line: {last})")
    })?;
    Ok(Row::new(server, keep_alive, &report, &workers))
}

/// Waits for every worker to be ready, warms up, measures; returns the
/// report and the ids of the workers that said `ready`.
async fn measure(
    lesson: &mut Lesson,
    args: &Args,
    wanted: usize,
    server: Server,
    keep_alive: bool,
) -> anyhow::Result<(LoadReport, Vec<u32>)> {
    let addr: SocketAddr = lesson.addr().await?;
    if !lesson
        .wait_until(LISTEN_WITHIN, |events| {
            bench::ready_workers(events).len() >= wanted
        })
        .await
    {
        bail!(
            "only {} of {wanted} workers said `ready` within {} s",
            bench::ready_workers(&lesson.events()).len(),
            LISTEN_WITHIN.as_secs()
        );
    }
    let workers = bench::ready_workers(&lesson.events());

    let connections = usize::try_from(args.connections).context("--connections")?;
    let spec = LoadSpec {
        requests: args.requests,
        connections,
        keep_alive,
        max_time: Duration::from_secs(args.max_time),
        ..LoadSpec::default()
    };
    if args.warmup > 0 {
        // Same shape as the measurement, so the first measured requests
        // don't pay for lazily created pools, page faults or cold caches.
        let warmup = LoadSpec {
            requests: args.warmup,
            ..spec.clone()
        };
        scenarios::load::run(addr, &warmup, &ProgressBar::hidden()).await?;
    }
    let progress = progress(args.requests, format!("{server}, {}", shape(keep_alive)));
    let report = scenarios::load::run(addr, &spec, &progress).await?;
    progress.finish_and_clear();
    Ok((report, workers))
}

/// A bar on stderr while a cell runs, only on a terminal: stdout stays the
/// markdown and nothing else, and a log file gets no bar noise.
fn progress(len: u64, label: String) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>26} {bar:40} {pos}/{len} requests {elapsed}")
    {
        bar.set_style(style);
    }
    bar.set_message(label);
    bar
}

/// The line above the table: the machine, the load, the date, the build.
fn header(args: &Args) -> String {
    let (machine, date) = (Machine::here(), Machine::today());
    // A debug build measures the debug build; say so next to the numbers.
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: use `just bench-lb`, which builds release)"
    } else {
        "release build"
    };
    format!(
        "Machine: {machine}; {} workers, {} connections, {} requests per cell (at most {} s, after {} warm-up requests); {date}; {build}; load generator on the same machine.",
        workers(args),
        args.connections,
        args.requests,
        args.max_time,
        args.warmup
    )
}

/// How many workers each cluster runs: the flag, or what a lesson starts
/// with by default, one per usable core.
fn workers(args: &Args) -> usize {
    args.workers
        .map_or_else(supervisor::default_workers, usize::from)
}
