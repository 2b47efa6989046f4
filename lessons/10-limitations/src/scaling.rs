//! `scaling`: more workers than cores buy nothing.
//!
//! A cluster of 1, 2, 4, 8, 16 workers, one after the other, each under the
//! same load for the same time: requests per second, new connections and
//! keep-alive. Past the number of cores the workers take turns on the same
//! CPUs, and each one's runtime threads, buffers and accept wake-ups are
//! overhead with nothing to pay for it. Each cluster is a second primary of
//! this program ([`supervisor::peer`]), started fresh and stopped after.
//!
//! Beside requests per second, the table gives the CPU the primary and
//! its workers used during the new-connection cell, where round-robin puts
//! the primary on every connection's path: read from `/proc` (user plus
//! system time over the cell's wall time; 100 % is one core busy). A
//! primary near a whole core is the bottleneck, whatever the workers do.

use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use loadgen::LoadSpec;
use serde_json::json;
use supervisor::peer::OtherPrimary;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worker counts to measure
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    counts: Vec<u16>,
    /// Seconds of load per cell
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Clients sending at once
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
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
    /// Threads in each worker's runtime [default: the cores ÷ workers, at least 1]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    worker_threads: Option<u16>,
}

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let seconds = args.seconds.clamp(0.1, 600.0);
    let mut rows = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for &workers in &args.counts {
        let workers = workers.clamp(1, 256);
        let threads = args.worker_threads.map_or_else(
            || supervisor::runtime::worker_threads(usize::from(workers), cores),
            usize::from,
        );
        let cluster = OtherPrimary::start(
            &[
                "serve",
                "--workers",
                &workers.to_string(),
                "--worker-threads",
                &threads.to_string(),
            ],
            &[],
            usize::from(workers),
        )
        .await
        .with_context(|| format!("starting {workers} workers"))?;
        let mut cell = json!({ "workers": workers, "threads": threads });
        for (shape, keep_alive) in [("new_connection", false), ("keep_alive", true)] {
            let spec = LoadSpec {
                requests: u64::MAX,
                connections: usize::from(args.clients),
                keep_alive,
                max_time: Duration::from_secs_f64(seconds),
                ..LoadSpec::default()
            };
            let before = cpu::Sample::take(cluster.pid());
            let report = loadgen::run(cluster.addr, &spec, &ProgressBar::hidden()).await?;
            let used = cpu::Sample::take(cluster.pid()).since(&before);
            cell[shape] = json!(report.requests_per_second().round() as u64);
            cell[format!("{shape}_failed")] = json!(report.failed);
            cell[format!("{shape}_primary_cpu")] = json!(used.primary_pct.round() as u64);
            cell[format!("{shape}_workers_cpu")] = json!(used.workers_pct.round() as u64);
        }
        cluster.stop().await;
        rows.push(cell);
    }
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: run it with --release)"
    } else {
        "release build"
    };
    let mut table = format!(
        "{cores} cores; {} clients on 127.0.0.1; {seconds} s per cell; {build}; round-robin. CPU: user + system time over the cell's wall time, 100 % = one core busy, during the new-connection cell; the load generator's own CPU is not counted.\n\n\
         | workers | threads per worker | new connection, req/s | primary CPU % | workers' CPU % | keep-alive, req/s |\n\
         |--------:|-------------------:|----------------------:|--------------:|---------------:|------------------:|\n",
        args.clients
    );
    for row in &rows {
        table += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row["workers"],
            row["threads"],
            row["new_connection"],
            row["new_connection_primary_cpu"],
            row["new_connection_workers_cpu"],
            row["keep_alive"]
        );
    }
    if let Some(out) = &args.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    let reporter = supervisor::report::Reporter::new(args.events);
    reporter.custom(
        "scaling",
        &json!({ "cores": cores, "rows": rows }),
        table.trim_end(),
    );
    Ok(())
}

/// CPU time from `/proc`: the primary's own, and its children's — the
/// workers, which are the only processes it starts in `serve`.
mod cpu {
    use std::time::Instant;

    /// CPU ticks used so far, and when they were read.
    pub struct Sample {
        at: Instant,
        primary: u64,
        workers: u64,
    }

    /// CPU used between two samples, as percentages of one core.
    pub struct Used {
        pub primary_pct: f64,
        pub workers_pct: f64,
    }

    impl Sample {
        /// Reads the primary `pid` and every process whose parent it is. A
        /// process that cannot be read (it just exited) counts as nothing.
        pub fn take(pid: Option<u32>) -> Sample {
            let ticks = |stat: &procfs::process::Stat| stat.utime + stat.stime;
            let pid = pid.and_then(|pid| i32::try_from(pid).ok()).unwrap_or(-1);
            let primary = procfs::process::Process::new(pid)
                .and_then(|process| process.stat())
                .map_or(0, |stat| ticks(&stat));
            let workers = procfs::process::all_processes()
                .into_iter()
                .flatten()
                .filter_map(|process| process.ok()?.stat().ok())
                .filter(|stat| stat.ppid == pid)
                .map(|stat| ticks(&stat))
                .sum();
            Sample {
                at: Instant::now(),
                primary,
                workers,
            }
        }

        /// What was used from `before` to this sample. Workers that exited
        /// in between take their ticks with them; `serve`'s do not exit.
        pub fn since(&self, before: &Sample) -> Used {
            let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
            let per_tick = 100.0 / (procfs::ticks_per_second() as f64).max(1.0) / seconds;
            Used {
                primary_pct: self.primary.saturating_sub(before.primary) as f64 * per_tick,
                workers_pct: self.workers.saturating_sub(before.workers) as f64 * per_tick,
            }
        }
    }
}
