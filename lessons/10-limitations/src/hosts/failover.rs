//! `hosts failover`: a host dies under load.
//!
//! Host A's primary is killed with `kill -9` while clients send through
//! nginx: its workers go with it, the requests they were serving are cut,
//! and its port refuses new connections. What the clients see depends on
//! what nginx may retry:
//!
//! * nginx's defaults — `proxy_next_upstream error timeout`, and each
//!   server `max_fails=1 fail_timeout=10s`: a GET that fails on A, in
//!   flight or at connect, is sent to B; the client never knows. After one
//!   failure a worker leaves A alone for 10 s, then tries it again with one
//!   request;
//! * `proxy_next_upstream off`: every request that meets the dead host
//!   fails, until nginx has counted its failure;
//! * a POST, under the defaults: nginx does not send a non-idempotent
//!   request a second time once it has sent it (only
//!   `proxy_next_upstream non_idempotent` would) — a POST in flight on A
//!   fails; one refused at connect was never sent, and goes to B.
//!
//! nginx's own access log (`$msec $status $upstream_addr`) says how often
//! it tried the dead host (requests that failed on A: a 5xx from it, or
//! passed on to B), and when the last of them ended.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use loadgen::{Finished, LoadReport, LoadSpec};
use serde_json::json;
use tokio::sync::oneshot;

use super::{Args, HOST_A, Hosts, UPSTREAM_HEADER, Upstream};

/// How long the load runs after the kill.
const AFTER_KILL: Duration = Duration::from_millis(1500);

/// How long each request takes: some are always in flight on A.
const REQUEST_MS: u64 = 20;

pub async fn run(
    hosts: &mut Hosts,
    args: &Args,
    reporter: &supervisor::report::Reporter,
) -> anyhow::Result<()> {
    let cases = [
        ("GET, nginx's defaults", hyper::Method::GET, "error timeout"),
        ("GET, proxy_next_upstream off", hyper::Method::GET, "off"),
        (
            "POST, nginx's defaults",
            hyper::Method::POST,
            "error timeout",
        ),
    ];
    let mut rows = Vec::new();
    for (name, method, next_upstream) in cases {
        let (report, tries) = measure(hosts, args, method, next_upstream)
            .await
            .context(name)?;
        let row = json!({
            "case": name,
            "ok": report.ok,
            "failed": report.failed,
            "statuses": report.statuses,
            "errors": report.errors,
            "retried_on_b": report
                .by_worker
                .iter()
                .filter(|(upstreams, _)| upstreams.contains(", "))
                .map(|(_, n)| n)
                .sum::<u64>(),
            "tries_of_a_after_kill": tries.count,
            "last_try_of_a_ms": tries.last_ms,
        });
        reporter.custom(
            "failover_case",
            &row,
            &format!(
                "{name}: {} failed of {}, {} answered by B after failing on A; nginx tried dead A {} times, the last {} ms after the kill",
                row["failed"],
                report.ok + report.failed,
                row["retried_on_b"],
                row["tries_of_a_after_kill"],
                row["last_try_of_a_ms"],
            ),
        );
        rows.push(row);
    }
    if let Some(out) = &args.out {
        std::fs::write(out, table(&rows, args.clients))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    reporter.custom("failover", &json!({ "rows": rows }), "every case measured");
    Ok(())
}

/// What nginx's access log says of the dead host: requests that met it
/// dead, and when the last of them ended, after the kill.
struct Tries {
    count: u64,
    last_ms: u64,
}

/// Host A killed under load, then started again and put back.
async fn measure(
    hosts: &mut Hosts,
    args: &Args,
    method: hyper::Method,
    next_upstream: &'static str,
) -> anyhow::Result<(LoadReport, Tries)> {
    let upstream = Upstream {
        next_upstream,
        ..Upstream::default()
    };
    // A fresh reload: new nginx workers, which know nothing of earlier
    // failures.
    hosts.configure(&upstream).await?;
    // The access log holds the earlier cases too: only what follows counts.
    let earlier = hosts.access_log().len();
    let clients = usize::from(args.clients);
    let spec = LoadSpec {
        requests: 1_000_000,
        connections: clients,
        keep_alive: true,
        method,
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
    finished
        .reached(4 * clients as u64, Duration::from_secs(20))
        .await?;
    // ANCHOR: kill
    let mut a = hosts.take_a().context("host A is not running")?;
    let killed_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    a.kill().await;
    // ANCHOR_END: kill
    // Load goes on meanwhile: a fault that lasts, not an event to await.
    tokio::time::sleep(AFTER_KILL).await;
    let _ = stop.send(());
    let report = load.await.context("the load task")??;

    // A request sent to A that failed there — a 5xx from A, or A and then
    // B — was sent after A died: one that A answered was not. (Not by
    // time: nginx stamps `$msec` from a clock it updates once per event
    // loop turn, which may read just before the kill.)
    let a_addr = format!("{HOST_A}:");
    let after: Vec<f64> = hosts
        .access_log()
        .into_iter()
        .skip(earlier)
        .filter(|(_, status, upstreams)| {
            upstreams.contains(&a_addr) && (*status >= 500 || upstreams.contains(", "))
        })
        .map(|(at, _, _)| at)
        .collect();
    let tries = Tries {
        count: after.len() as u64,
        last_ms: after
            .iter()
            .copied()
            .fold(None, |last: Option<f64>, at| {
                Some(last.map_or(at, |l| l.max(at)))
            })
            .map_or(0, |last| ((last - killed_at).max(0.0) * 1000.0) as u64),
    };
    hosts.restart_a().await?;
    Ok((report, tries))
}

/// The chapter's table.
fn table(rows: &[serde_json::Value], clients: u16) -> String {
    let mut text = format!(
        "Generated by `lesson-10 hosts failover --out`. Two hosts of 2 workers behind nginx 1.22 \
         (2 workers, `max_fails=1 fail_timeout=10s`); {clients} keep-alive clients from 127.0.1.1 onwards, each request \
         {REQUEST_MS} ms; host A's primary killed with SIGKILL under load, {} ms of load after. \
         Failed: no response, or a 5xx. Tries of dead A: requests nginx's access log shows failed \
         on A (a 5xx from it, or passed on to B).\n\n\
         | case | failed | answered by B after failing on A | tries of dead A | last try after the kill |\n\
         |------|-------:|---------------------------------:|----------------:|------------------------:|\n",
        AFTER_KILL.as_millis()
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {} of {} | {} | {} | {} ms |\n",
            row["case"].as_str().unwrap_or(""),
            row["failed"],
            row["ok"].as_u64().unwrap_or(0) + row["failed"].as_u64().unwrap_or(0),
            row["retried_on_b"],
            row["tries_of_a_after_kill"],
            row["last_try_of_a_ms"],
        ));
    }
    text
}
