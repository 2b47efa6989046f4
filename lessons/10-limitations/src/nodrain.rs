//! `no-drain`: what stopping without a drain costs, against a drain.
//!
//! The same cluster twice under the same load of slow requests, each
//! stopped with SIGTERM while requests are in flight: once with lesson 06's
//! drain (workers finish what they have), once with workers that exit the
//! moment they are told (the usual anti-pattern: `process.exit()` on
//! SIGTERM). Requests refused after the stop are expected either way — the
//! cluster is gone; requests *accepted and then cut* are the loss.

use std::time::Duration;

use anyhow::Context;
use loadgen::{Finished, LoadSpec};
use serde_json::json;
use supervisor::http::{Request, serve, text};
use supervisor::peer::OtherPrimary;
use supervisor::{EventsFormat, Worker};
use tokio::sync::oneshot;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Clients sending at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    clients: u16,
    /// How long each request takes
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    slow_ms: u64,
    /// The events format, for the table (the runner passes --events json)
    #[arg(long, default_value_t = EventsFormat::Human)]
    events: EventsFormat,
    /// Ignored: each measured cluster picks its own port
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Ignored: each measured cluster listens on 127.0.0.1
    #[arg(long)]
    host: Option<std::net::IpAddr>,
}

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for drain in [true, false] {
        rows.push(measure(&args, drain).await?);
    }
    let lost = |row: &serde_json::Value| row["lost"].as_u64().unwrap_or(0);
    let reporter = supervisor::report::Reporter::new(args.events);
    reporter.custom(
        "no_drain",
        &json!({ "rows": rows }),
        &format!(
            "SIGTERM under load: with a drain, {} requests lost; without, {}",
            lost(&rows[0]),
            lost(&rows[1])
        ),
    );
    Ok(())
}

// ANCHOR: measure
/// One cluster under load, stopped with SIGTERM mid-way.
async fn measure(args: &Args, drain: bool) -> anyhow::Result<serde_json::Value> {
    let mut flags = vec!["serve", "--workers", "2"];
    if !drain {
        flags.push("--no-drain");
    }
    let cluster = OtherPrimary::start(&flags, &[], 2)
        .await
        .context("starting a cluster")?;
    let spec = LoadSpec {
        requests: 100_000,
        connections: usize::from(args.clients),
        path: format!("/slow?ms={}", args.slow_ms),
        max_time: Duration::from_secs(30),
        ..LoadSpec::default()
    };
    let finished = Finished::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let load = {
        let (finished, addr) = (finished.clone(), cluster.addr);
        tokio::spawn(async move {
            loadgen::run_until(addr, &spec, &finished, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    // Two rounds of requests answered: the clients are in full flow, and a
    // request is in flight on every one of them.
    let flowing = finished.reached(2 * u64::from(args.clients), Duration::from_secs(20));
    flowing.await?;
    cluster.stop().await; // SIGTERM, then wait for it to exit
    let _ = stop.send(());
    let report = load.await.context("the load task")??;
    let refused = report.refused();
    Ok(json!({
        "mode": if drain { "drain" } else { "no drain" },
        "ok": report.ok,
        "refused_after_the_stop": refused,
        "lost": report.failed - refused,
        // How each failed request failed: a reset or an early close is a
        // request cut; "refused" is a client turned away after the stop.
        "failures": report.errors,
    }))
}
// ANCHOR_END: measure

/// A worker of the measured cluster: slow requests, and a drain or not.
pub async fn worker(no_drain: bool) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let listener = worker.listen().await?;
    worker.ready()?;
    // ANCHOR: no_drain
    if no_drain {
        // The anti-pattern: told to stop, exit — whatever is in flight.
        let stop = worker.disconnected();
        tokio::spawn(async move {
            stop.await;
            std::process::exit(0);
        });
    }
    // ANCHOR_END: no_drain
    // `/slow?ms=N` takes N ms; `/cpu?rounds=N` computes for N rounds on
    // this thread (lesson 10's `threads`), `/panic` and `/abort` crash;
    // anything else answers at once.
    let handler = |request: Request| async move {
        let number = |key: &str| {
            request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix(key))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0u64)
        };
        match request.uri().path() {
            "/cpu" => {
                return text(
                    200,
                    format!("{}\n", crate::threads::burn(number("rounds="))),
                );
            }
            "/panic" => panic!("a bug in one request's handler"),
            "/abort" => std::process::abort(),
            _ => {}
        }
        let ms = number("ms=");
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
        }
        text(200, "done\n")
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
