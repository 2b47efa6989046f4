//! `scaling`: more workers than cores buy nothing.
//!
//! A cluster of 1, 2, 4, 8, 16 workers, one after the other, each under the
//! same load for the same time: requests per second, new connections and
//! keep-alive. Past the number of cores the workers take turns on the same
//! CPUs, and each one's runtime threads, buffers and accept wake-ups are
//! overhead with nothing to pay for it. Each cluster is a second primary of
//! this program ([`supervisor::peer`]), started fresh and stopped after.

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
}

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let seconds = args.seconds.clamp(0.1, 600.0);
    let mut rows = Vec::new();
    for &workers in &args.counts {
        let workers = workers.clamp(1, 256);
        let cluster = OtherPrimary::start(
            &["serve", "--workers", &workers.to_string()],
            &[],
            usize::from(workers),
        )
        .await
        .with_context(|| format!("starting {workers} workers"))?;
        let mut cell = json!({ "workers": workers });
        for (shape, keep_alive) in [("new_connection", false), ("keep_alive", true)] {
            let spec = LoadSpec {
                requests: u64::MAX,
                connections: usize::from(args.clients),
                keep_alive,
                max_time: Duration::from_secs_f64(seconds),
                ..LoadSpec::default()
            };
            let report = loadgen::run(cluster.addr, &spec, &ProgressBar::hidden()).await?;
            cell[shape] = json!(report.requests_per_second().round() as u64);
            cell[format!("{shape}_failed")] = json!(report.failed);
        }
        cluster.stop().await;
        rows.push(cell);
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: run it with --release)"
    } else {
        "release build"
    };
    let mut table = format!(
        "{cores} cores; {} clients on 127.0.0.1; {seconds} s per cell; {build}; each worker on a default tokio runtime (one thread per core).\n\n| workers | new connection, req/s | keep-alive, req/s |\n|--------:|----------------------:|------------------:|\n",
        args.clients
    );
    for row in &rows {
        table += &format!(
            "| {} | {} | {} |\n",
            row["workers"], row["new_connection"], row["keep_alive"]
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
