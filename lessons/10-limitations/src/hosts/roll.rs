//! `hosts roll`: a whole host rolled under load, three ways.
//!
//! Lesson 08 rolls workers inside one machine: a new one is ready before
//! the old one stops taking requests. One level up, the load balancer
//! plays the primary's part, and a host leaves in one of three ways:
//!
//! * **(a) out, then stop** — nginx is reloaded with the host marked
//!   `down`, the old nginx workers (which still know the host) are waited
//!   for until they have exited, and only then is the host sent SIGTERM
//!   and drained;
//! * **(b) out and stop at once** — what an orchestrator does by default:
//!   the endpoint is removed and SIGTERM sent at the same moment, and the
//!   balancer learns of the removal a little later;
//! * **(c) (b) with a pause** — the host waits before it acts on SIGTERM
//!   (Kubernetes' `preStop: sleep`), while the balancer catches up.
//!
//! A reload has a cost of its own under keep-alive clients. The old nginx
//! workers finish the requests they hold (each response says
//! `Connection: close`) and close their *idle* kept-alive connections at
//! once — and a client that sent its next request just as its connection
//! went idle gets no response at all. HTTP lets a client send such a
//! request again (idempotent, nothing received); the load generator never
//! does, so the table counts these apart from what the roll itself cost.
//!
//! Each way runs under keep-alive clients and new-connection clients, once
//! with nginx's default `proxy_next_upstream error timeout` (a request
//! that fails to connect, or fails before its response, is sent to the
//! other host) and once with it `off`. After each roll the host starts
//! again and is put back, as a rolled host is.

use std::time::Duration;

use anyhow::Context;
use loadgen::{Finished, LoadReport, LoadSpec};
use serde_json::json;
use tokio::sync::oneshot;

use super::{Args, Hosts, UPSTREAM_HEADER, Upstream};

/// `(c)`'s pause before SIGTERM is acted on: long enough for the reload to
/// reach every nginx worker here, as `preStop` must outlast the endpoint's
/// removal reaching every balancer.
const PRE_STOP: Duration = Duration::from_millis(500);

/// How long each request takes: some are always in flight.
const REQUEST_MS: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The control: the same two reloads, no host stopped.
    ReloadOnly,
    OutThenStop,
    Together,
    PreStop,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::ReloadOnly => "(0) two reloads of nginx, no host stopped (the control)",
            Way::OutThenStop => "(a) out of nginx, old workers gone, then SIGTERM",
            Way::Together => "(b) out of nginx and SIGTERM at once",
            Way::PreStop => "(c) (b) with a 500 ms pause before SIGTERM (preStop)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Way::ReloadOnly => "0",
            Way::OutThenStop => "a",
            Way::Together => "b",
            Way::PreStop => "c",
        }
    }
}

pub async fn run(
    hosts: &mut Hosts,
    args: &Args,
    reporter: &supervisor::report::Reporter,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for retries in ["error timeout", "off"] {
        for way in [
            Way::ReloadOnly,
            Way::OutThenStop,
            Way::Together,
            Way::PreStop,
        ] {
            let mut row =
                json!({ "way": way.short(), "name": way.name(), "next_upstream": retries });
            for (shape, keep_alive) in [("keep_alive", true), ("new_connection", false)] {
                let (report, settled) = measure(hosts, args, way, keep_alive, retries)
                    .await
                    .with_context(|| format!("way {} under {shape} load", way.short()))?;
                // A kept-alive connection nginx closed under a request,
                // with no response: the reload's old worker closing an
                // idle connection as the next request arrives (see the
                // module's doc). Counted apart from what the roll cost.
                // nginx closes the connection (`closed`), or, when the
                // request already sits unread in its socket, the kernel
                // answers with a reset (`reset`). New connections carry
                // one request each: there, every failure counts.
                let closed = if keep_alive {
                    ["closed", "reset"]
                        .iter()
                        .map(|kind| report.errors.get(kind).copied().unwrap_or(0))
                        .sum()
                } else {
                    0
                };
                let five_xx: u64 = report
                    .statuses
                    .iter()
                    .filter(|(status, _)| **status >= 500)
                    .map(|(_, n)| n)
                    .sum();
                row[shape] = json!({
                    "ok": report.ok,
                    "failed": report.failed,
                    "five_xx": five_xx,
                    "closed_by_reload": closed,
                    "failed_by_the_roll": report.failed - closed,
                    "statuses": report.statuses,
                    "errors": report.errors,
                    "reload_settled_ms": settled.as_millis() as u64,
                });
            }
            reporter.custom(
                "roll_way",
                &row,
                &format!(
                    "{} (proxy_next_upstream {retries}): failed {} of {} keep-alive (and {} closed by the reload), {} of {} new-connection",
                    way.name(),
                    row["keep_alive"]["failed_by_the_roll"],
                    total(&row["keep_alive"]),
                    row["keep_alive"]["closed_by_reload"],
                    row["new_connection"]["failed_by_the_roll"],
                    total(&row["new_connection"]),
                ),
            );
            rows.push(row);
        }
    }
    if let Some(out) = &args.out {
        std::fs::write(out, table(&rows, args.clients))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    reporter.custom("roll", &json!({ "rows": rows }), "every way measured");
    Ok(())
}

fn total(cell: &serde_json::Value) -> u64 {
    cell["ok"].as_u64().unwrap_or(0) + cell["failed"].as_u64().unwrap_or(0)
}

/// One roll of host A under load; returns the load's report and how long
/// the reload that took A out took to settle (its old workers gone).
async fn measure(
    hosts: &mut Hosts,
    args: &Args,
    way: Way,
    keep_alive: bool,
    next_upstream: &'static str,
) -> anyhow::Result<(LoadReport, Duration)> {
    let serving = Upstream {
        next_upstream,
        ..Upstream::default()
    };
    let out = Upstream {
        a_down: true,
        ..serving.clone()
    };
    hosts.configure(&serving).await?;
    let clients = usize::from(args.clients);
    let spec = LoadSpec {
        requests: 1_000_000,
        connections: clients,
        keep_alive,
        path: format!("/slow?ms={REQUEST_MS}"),
        max_time: Duration::from_secs(60),
        count_by: UPSTREAM_HEADER.into(),
        sources: super::load_sources(args.clients),
        ..LoadSpec::default()
    };
    let finished = Finished::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let load = {
        let (finished, proxy) = (finished.clone(), hosts.proxy());
        tokio::spawn(async move {
            loadgen::run_until(proxy, &spec, &finished, async move {
                let _ = stopped.await;
            })
            .await
        })
    };
    // Every client in full flow: requests in flight on both hosts.
    finished
        .reached(4 * clients as u64, Duration::from_secs(20))
        .await?;
    let settled = match way {
        Way::ReloadOnly => {
            let settled = hosts
                .reload(&serving)
                .await?
                .settled(Duration::from_secs(30))
                .await?;
            hosts.configure(&serving).await?;
            let _ = stop.send(());
            let report = load.await.context("the load task")??;
            return Ok((report, settled));
        }
        _ => roll_a(hosts, way, &out).await?,
    };
    // The rolled host comes back, and is put back in.
    hosts.restart_a().await?;
    hosts.configure(&serving).await?;
    let _ = stop.send(());
    let report = load.await.context("the load task")??;
    Ok((report, settled))
}

// ANCHOR: ways
/// Host A out of nginx and stopped, `way`'s way; returns how long the
/// reload took to settle.
async fn roll_a(hosts: &mut Hosts, way: Way, out: &Upstream) -> anyhow::Result<Duration> {
    let a = hosts.take_a().context("host A is not running")?;
    Ok(match way {
        Way::OutThenStop => {
            let settled = hosts
                .reload(out)
                .await?
                .settled(Duration::from_secs(30))
                .await?;
            a.stop().await;
            settled
        }
        Way::Together => {
            let (reload, ()) = tokio::join!(hosts.reload(out), a.stop());
            reload?.settled(Duration::from_secs(30)).await?
        }
        Way::PreStop => {
            let reload = hosts.reload(out).await?;
            tokio::time::sleep(PRE_STOP).await;
            a.stop().await;
            reload.settled(Duration::from_secs(30)).await?
        }
        Way::ReloadOnly => Duration::ZERO,
    })
}
// ANCHOR_END: ways

/// The chapter's table.
fn table(rows: &[serde_json::Value], clients: u16) -> String {
    let cell = |row: &serde_json::Value, shape: &str| {
        let c = &row[shape];
        let closed = c["closed_by_reload"].as_u64().unwrap_or(0);
        let mut text = format!("{} of {}", c["failed_by_the_roll"], total(c));
        if closed > 0 {
            text.push_str(&format!(" (+{closed} cut by a reload)"));
        }
        text
    };
    let mut text = format!(
        "Generated by `lesson-10 hosts roll --out`. Two hosts of 2 workers \
         (127.0.0.2, 127.0.0.3) behind nginx 1.22 with 2 workers on 127.0.0.1; {clients} clients from 127.0.1.1 onwards, \
         each request {REQUEST_MS} ms; host A is rolled once per cell under load, then started \
         again and put back. Failed: requests with no response or a 5xx (the load generator never \
         retries); counted apart, requests on a kept-alive connection that nginx closed or reset \
         under them with no response (a reload's race, see the text; the control row has it too).\n\n\
         | way | `proxy_next_upstream` | keep-alive: failed | new connection: failed |\n\
         |-----|-----------------------|-------------------:|-----------------------:|\n"
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | `{}` | {} | {} |\n",
            row["name"].as_str().unwrap_or(""),
            row["next_upstream"].as_str().unwrap_or(""),
            cell(row, "keep_alive"),
            cell(row, "new_connection"),
        ));
    }
    text
}
