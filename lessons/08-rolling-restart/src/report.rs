//! What the demo's clients saw, and the report that says so.
//!
//! Two kinds of client run side by side, because a rollout fails them in
//! different ways: a client that opens a new connection per request only
//! needs a listening socket that never refuses or resets it; a keep-alive
//! client needs every connection it holds to be closed *cleanly* — never
//! under a request it is sending. The load generator never retries, so
//! every reset counts.

use std::future::Future;
use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use loadgen::{LoadReport, LoadSpec};
use serde_json::json;
use supervisor::{Cluster, Event, EventsFormat, RolloutReport};
use tokio::sync::watch;

/// What both kinds of client saw over one stretch of time.
#[derive(Debug, Default)]
pub struct Loads {
    pub keep_alive: LoadReport,
    pub new_connection: LoadReport,
}

impl Loads {
    /// Runs `clients` keep-alive clients and `clients` new-connection
    /// clients against `addr` until `stop` resolves (bounded anyway by a
    /// count and a minute).
    pub async fn measure(
        addr: SocketAddr,
        clients: usize,
        stop: impl Future<Output = ()>,
        progress: ProgressBar,
    ) -> Loads {
        let (stop_tx, stopped) = watch::channel(false);
        let spec = |keep_alive| LoadSpec {
            requests: 5_000_000,
            connections: clients,
            keep_alive,
            max_time: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            ..LoadSpec::default()
        };
        let until = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|&yes| yes).await;
        };
        let (keep_alive, new_connection) = (spec(true), spec(false));
        let keep_alive = loadgen::run_until(addr, &keep_alive, &progress, until(stopped.clone()));
        let new_connection = loadgen::run_until(addr, &new_connection, &progress, until(stopped));
        let stopper = async {
            stop.await;
            let _ = stop_tx.send(true);
        };
        let (keep_alive, new_connection, ()) = tokio::join!(keep_alive, new_connection, stopper);
        Loads {
            // Only a non-loopback address fails, and `loopback` rules it out.
            keep_alive: keep_alive.unwrap_or_default(),
            new_connection: new_connection.unwrap_or_default(),
        }
    }

    fn requests_per_second(&self) -> f64 {
        self.keep_alive.requests_per_second() + self.new_connection.requests_per_second()
    }
}

/// The address the demo's clients use: the load generator talks to
/// loopback only, so a cluster on 0.0.0.0 is reached through 127.0.0.1.
pub fn loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else if addr.ip().is_unspecified() {
        Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port())))
    } else {
        anyhow::bail!(
            "the demo sends its load to 127.0.0.1 only, and the cluster listens on {addr}: use --host 127.0.0.1, or --serve and your own load"
        )
    }
}

pub fn hidden() -> ProgressBar {
    ProgressBar::hidden()
}

/// A live line for people — requests sent so far and the rollout's latest
/// step — or nothing when the output is for a machine.
pub fn progress(cluster: &Cluster, events: EventsFormat) -> ProgressBar {
    if events != EventsFormat::Human || !std::io::stderr().is_terminal() {
        return hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} requests sent · {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(100));
    bar.set_message("rolling");
    let (line, mut events) = (bar.clone(), cluster.subscribe());
    tokio::spawn(async move {
        while let Ok(event) = events.next().await {
            match event {
                Event::Replaced { old, new, .. } => {
                    line.set_message(format!("worker {old} replaced by worker {new}"));
                }
                Event::RolloutFinished { .. } => return,
                _ => {}
            }
        }
    });
    bar
}

/// Prints the report: the rollout's steps, then what each kind of client
/// saw during it, against the same load at rest.
pub fn show(
    cluster: &Cluster,
    rollout: &anyhow::Result<RolloutReport>,
    at_rest: &Loads,
    during: &Loads,
    naive: bool,
) {
    let mut human = String::from("rollout report\n");
    let mut fields = json!({});
    match rollout {
        Ok(report) => {
            // The usual sequence forks with `cluster.fork()` (the same
            // generation) and waits only for `listening`: say so.
            let (release, waited_for) = if naive {
                ("the usual sequence".to_string(), "listening")
            } else {
                (format!("generation {}", report.generation), "ready")
            };
            human += &format!(
                "  {release}: {} in {} ms\n",
                report.outcome,
                report.took.as_millis()
            );
            for step in &report.steps {
                human += &format!(
                    "  worker {} → worker {}: {waited_for} after {} ms, drained in {} ms\n",
                    step.old,
                    step.new,
                    step.ready_after.as_millis(),
                    step.drained_after.as_millis()
                );
            }
            if let Some(why) = &report.failure {
                human += &format!("  stopped early: {why}\n");
            }
            fields["outcome"] = json!(report.outcome);
            fields["replaced"] = json!(report.steps.len());
            fields["took_ms"] = json!(report.took.as_millis() as u64);
        }
        Err(error) => {
            human += &format!("  the rollout failed: {error:#}\n");
            fields["outcome"] = json!("error");
            fields["error"] = json!(format!("{error:#}"));
        }
    }
    human += "  clients during the rollout:\n";
    for (name, key, seen) in [
        ("keep-alive", "keep_alive", &during.keep_alive),
        ("new connection", "new_connection", &during.new_connection),
    ] {
        human += &format!(
            "    {name:<15} {:>8} ok, {} failed{}\n",
            seen.ok,
            seen.failed,
            failures(seen)
        );
        fields[key] = json!({
            "ok": seen.ok,
            "failed": seen.failed,
            "errors": seen.errors,
            "requests_per_s": seen.requests_per_second(),
        });
    }
    fields["at_rest"] = json!({
        "keep_alive_per_s": at_rest.keep_alive.requests_per_second(),
        "new_connection_per_s": at_rest.new_connection.requests_per_second(),
    });
    let (rest, busy) = (at_rest.requests_per_second(), during.requests_per_second());
    let ratio = if rest > 0.0 { busy / rest } else { 0.0 };
    human +=
        &format!("    requests/s      {busy:>8.0} during, {rest:.0} at rest ({ratio:.2} of it)");
    fields["failed"] = json!(during.keep_alive.failed + during.new_connection.failed);
    fields["ratio_to_rest"] = json!(ratio);
    cluster.report("rollout_report", &fields, &human);
}

fn failures(seen: &LoadReport) -> String {
    if seen.errors.is_empty() {
        return String::new();
    }
    let kinds: Vec<String> = seen
        .errors
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    format!(" ({})", kinds.join(", "))
}
