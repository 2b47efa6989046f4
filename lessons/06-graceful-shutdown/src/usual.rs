//! The usual answer's primary, written with this workbook's API, so that
//! `--naive` shows what that code really does rather than a caricature.
//!
//! ```js
//! process.on('SIGTERM', () => {
//!   for (const w of Object.values(cluster.workers)) w.send('shutdown');
//!   setTimeout(() => {
//!     for (const w of Object.values(cluster.workers)) w.kill('SIGKILL');
//!     process.exit(0);
//!   }, 10_000);
//! });
//! ```
//!
//! Two things follow from it, and the naive scenarios check both: the
//! primary always waits out its whole timer, even when every worker was
//! gone long before; and it exits 0 even when the timer had to kill a
//! worker in the middle of a request, so whatever runs the service is told
//! the drain went well. The timer here is `--grace`. (The worker's half of
//! the usual answer is in `main.rs`: exit once no request is in flight.)

use std::time::{Duration, Instant};

use anyhow::Context;
use supervisor::{Cluster, ClusterOptions};
use tokio::signal::unix::{SignalKind, signal};

// ANCHOR: usual
pub async fn primary(options: ClusterOptions, idle_client: bool) -> anyhow::Result<()> {
    let timer = options.grace;
    let workers = options.workers;
    // Caught from before the first fork, so a SIGTERM during start-up is
    // not the default action — the primary dying alone.
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let cluster = Cluster::start(ClusterOptions {
        // This primary catches the signals itself, as the Node code does…
        handle_signals: false,
        // …and has no deadline but its own timer.
        grace: Duration::from_secs(24 * 3600),
        ..options
    })
    .await
    .context("starting the cluster")?;
    let idle = idle_client.then(|| crate::spawn_idle_client(&cluster, workers, timer));

    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let began = Instant::now();
    // Every worker: stop accepting, finish, exit.
    cluster.shutdown();
    // Not something the usual code knows; measured for the report.
    let all_gone = tokio::spawn({
        let cluster = cluster.clone();
        async move {
            let _ = cluster.wait().await;
            began.elapsed()
        }
    });

    // setTimeout(…, timer): always the whole timer.
    tokio::time::sleep(timer).await;
    let took = began.elapsed().as_millis() as u64;
    let gone_in_time = all_gone.is_finished();
    let sigkill = "SIGKILL".parse().context("naming SIGKILL")?;
    let mut killed = 0;
    for id in cluster.workers() {
        if cluster.kill(id, sigkill).is_ok() {
            killed += 1;
        }
    }
    // The Node code exits right here. The demo first lets the killed
    // workers' exits be reported, so the story prints in order.
    let workers_gone = tokio::time::timeout(Duration::from_secs(5), all_gone).await;
    if let Some(idle) = idle {
        let _ = tokio::time::timeout(Duration::from_secs(1), idle).await;
    }

    let gone_ms = match workers_gone {
        Ok(Ok(gone)) if gone_in_time => Some(gone.as_millis() as u64),
        _ => None,
    };
    let fields = serde_json::json!({
        "reason": reason,
        "took_ms": took,
        "workers_gone_ms": gone_ms,
        "killed": killed,
    });
    let says = match gone_ms {
        Some(gone) => format!(
            "the usual primary: workers gone {gone} ms after {reason}, exiting at {took} ms, when its timer fired"
        ),
        None => format!(
            "the usual primary: {killed} worker(s) still running when its timer fired at {took} ms; killed, and exiting 0 all the same"
        ),
    };
    cluster.report("stopped", &fields, &says);
    // process.exit(0): success, whatever happened.
    Ok(())
}
// ANCHOR_END: usual
