//! `just bench-rollout`: what a rolling restart costs the clients, measured.
//!
//! Lesson 08 claims that its rolling restart fails no request, keep-alive or
//! not, in every strategy, and that the usual answer's sequence does fail
//! some. Each run of the lesson's demo measures one second of load at rest,
//! rolls all four workers under the same load, and reports what the
//! clients saw (its `rollout_report` event). This harness runs that demo
//! for every strategy, with the supervisor's rollout and with `--naive`,
//! several rounds each, and prints one markdown table: failed requests (all
//! rounds added up), the rollout's duration and the requests per second
//! during it as a share of the same load at rest (medians of the rounds).
//!
//! The share at rest is the one number here that compares runs: absolute
//! requests per second move by a fifth between runs on this machine.

// One process, whose stderr nobody shares: progress lines may go out as
// eprintln! writes them (see clippy.toml).
#![allow(clippy::disallowed_macros)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use scenarios::bench::{Machine, STRATEGIES, median};
use scenarios::lesson::Lesson;
use serde_json::Value;
use supervisor::Sched;

/// A demo run: a second at rest, the rollout, the report. Far less than this.
const RUN_WITHIN: Duration = Duration::from_secs(120);

/// Measure lesson 08's rolling restart against the same load at rest.
#[derive(Debug, Parser)]
#[command(name = "bench-rollout", version)]
struct Args {
    /// The lesson-08 binary; by default the one next to this program.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Workers in every cluster.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// Clients of each kind (keep-alive, new connection) sending at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    clients: u16,
    /// Runs per cell; the table shows medians, and failures summed.
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

/// One cell's rounds.
#[derive(Debug, Default)]
struct Cell {
    strategy: Sched,
    naive: bool,
    keep_alive: (u64, u64),
    new_connection: (u64, u64),
    took_ms: Vec<f64>,
    ratio: Vec<f64>,
    at_rest: Vec<f64>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()
            .context("finding this program's folder")?
            .with_file_name("lesson-08"),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p lesson-08` (`just bench-rollout` does that for you)",
            bin.display()
        );
    }
    if let Some(folder) = args.out.as_ref().and_then(|out| out.parent())
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }

    let started = Instant::now();
    let mut cells = Vec::new();
    for strategy in STRATEGIES {
        for naive in [false, true] {
            let mut cell = Cell {
                strategy,
                naive,
                ..Cell::default()
            };
            for round in 1..=args.rounds {
                let report = demo(&bin, &args, strategy, naive)
                    .await
                    .with_context(|| format!("{strategy}, {}, round {round}", sequence(naive)))?;
                cell.add(&report);
            }
            // Sched's Display writes its name unpadded: pad the text.
            eprintln!(
                "{:>9}, {:<11} failed {} keep-alive, {} new connection",
                strategy.to_string(),
                sequence(naive),
                cell.keep_alive.1,
                cell.new_connection.1
            );
            cells.push(cell);
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());

    let markdown = format!("{}\n\n{}", header(&args), table(&cells));
    print!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn sequence(naive: bool) -> &'static str {
    if naive { "usual" } else { "supervisor" }
}

/// Runs lesson 08's demo once and returns its `rollout_report` event.
async fn demo(
    bin: &std::path::Path,
    args: &Args,
    strategy: Sched,
    naive: bool,
) -> anyhow::Result<Value> {
    let mut lesson_args = vec![
        "--workers".to_owned(),
        args.workers.to_string(),
        "--sched".to_owned(),
        strategy.to_string(),
        "--clients".to_owned(),
        args.clients.to_string(),
    ];
    if naive {
        lesson_args.push("--naive".to_owned());
    }
    let mut lesson = Lesson::start(bin, &lesson_args)?;
    let exited = lesson.wait_exit(RUN_WITHIN).await;
    lesson.kill_all().await;
    if exited.is_none() {
        bail!("the demo did not finish within {} s", RUN_WITHIN.as_secs());
    }
    // `rollout_report` is lesson 08's own record (`cluster.report`), not a
    // supervisor event: there is no type to read it as, so it stays JSON.
    let report = lesson
        .events()
        .into_iter()
        .rev()
        .find(|event| event["event"] == "rollout_report");
    match report {
        Some(report) if report["outcome"] == "completed" => Ok(report),
        Some(report) => bail!("the rollout did not complete: {report}"),
        None => {
            let stderr = lesson.stderr();
            let last = stderr.lines().last().unwrap_or("(nothing)");
            bail!("no rollout report (the lesson's last stderr line: {last})")
        }
    }
}

impl Cell {
    fn add(&mut self, report: &Value) {
        let count = |shape: &str, field: &str| report[shape][field].as_u64().unwrap_or(0);
        self.keep_alive.0 += count("keep_alive", "ok");
        self.keep_alive.1 += count("keep_alive", "failed");
        self.new_connection.0 += count("new_connection", "ok");
        self.new_connection.1 += count("new_connection", "failed");
        self.took_ms.push(report["took_ms"].as_f64().unwrap_or(0.0));
        self.ratio
            .push(report["ratio_to_rest"].as_f64().unwrap_or(0.0));
        let rest = report["at_rest"]["keep_alive_per_s"]
            .as_f64()
            .unwrap_or(0.0)
            + report["at_rest"]["new_connection_per_s"]
                .as_f64()
                .unwrap_or(0.0);
        self.at_rest.push(rest);
    }
}

fn table(cells: &[Cell]) -> String {
    let mut out = String::from(
        "| strategy | sequence | rollout ms | keep-alive ok / failed | new connection ok / failed | requests/s during ÷ at rest | at rest, requests/s |\n\
         |----------|----------|-----------:|-----------------------:|---------------------------:|----------------------------:|--------------------:|\n",
    );
    for cell in cells {
        out += &format!(
            "| {} | {} | {:.0} | {} / {} | {} / {} | {:.2} | {:.0} |\n",
            cell.strategy,
            sequence(cell.naive),
            median(&cell.took_ms).unwrap_or(0.0),
            cell.keep_alive.0,
            cell.keep_alive.1,
            cell.new_connection.0,
            cell.new_connection.1,
            median(&cell.ratio).unwrap_or(0.0),
            median(&cell.at_rest).unwrap_or(0.0),
        );
    }
    out += "\nok / failed: requests over all rounds, during the rollouts only. The load generator never retries: a reset, an early close or a refused connection is a failed request. \
            Rollout ms and the ratio are medians of the rounds; \"usual\" is lesson 08's `--naive` (wait for `listening`; the old worker closes its connections as Node 20's `server.close()` does: idle ones at once, busy ones after 5 s idle).\n";
    out
}

fn header(args: &Args) -> String {
    let machine = Machine::here();
    let date = Machine::today();
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: use `just bench-rollout`, which builds release)"
    } else {
        "release build"
    };
    format!(
        "Machine: {machine}; {} workers rolled one at a time; {} keep-alive and {} new-connection clients; {} rounds per cell; {date}; {build}; load generator on the same machine.",
        args.workers, args.clients, args.clients, args.rounds
    )
}
