//! The demo's story, told by switching the upstream and counting what the
//! clients get and what the upstream sees.
//!
//! 1. **Healthy**: every request goes through.
//! 2. **Failing**: each worker's breaker calls the upstream until its own
//!    failure rate says "open" — so the upstream sees calls from *every*
//!    worker, each until its own breaker gives up — then answers 503 at
//!    once, without calling.
//! 3. **Half-open, upstream slow**: once the breakers probe, 40 clients
//!    arrive at once. Only `probes` per worker reach the upstream (the usual
//!    answer: all 40). The probes overrun the deadline and are cancelled:
//!    the upstream sees each one go (the usual answer: it works on to the
//!    end, for nobody).
//! 4. **Healthy again**: the probes succeed and every breaker closes.
//!
//! Waiting for a breaker to probe is waiting on a clock inside each worker;
//! nothing announces it, so the demo asks the workers for their state until
//! they say so, a bounded number of times.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use hyper::Method;
use loadgen::one::request;
use serde_json::json;
use supervisor::Cluster;
use tokio::time::Instant;

use crate::Args;
use crate::upstream::{Mode, Upstream};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Statuses by code (0: no answer).
type Statuses = BTreeMap<u16, u64>;

async fn get(addr: SocketAddr) -> u16 {
    got(addr).await.0
}

/// One GET: its status (0: no answer), and its `Retry-After` in seconds.
async fn got(addr: SocketAddr) -> (u16, Option<u64>) {
    let answer = request(
        LOOPBACK,
        addr,
        Method::GET,
        "/",
        &[],
        Duration::from_secs(10),
    )
    .await;
    match answer {
        Ok(answer) => {
            let retry_after = answer.header("retry-after").and_then(|s| s.parse().ok());
            (answer.status, retry_after)
        }
        Err(_) => (0, None),
    }
}

/// `count` requests, one after another; also every distinct `Retry-After`
/// the 503s carried, and how many 503s carried one.
async fn one_by_one(addr: SocketAddr, count: usize) -> (Statuses, BTreeSet<u64>, u64) {
    let mut statuses = Statuses::new();
    let (mut values, mut told) = (BTreeSet::new(), 0);
    for _ in 0..count {
        let (status, retry_after) = got(addr).await;
        *statuses.entry(status).or_default() += 1;
        if let (503, Some(seconds)) = (status, retry_after) {
            values.insert(seconds);
            told += 1;
        }
    }
    (statuses, values, told)
}

/// `count` requests, all at once.
async fn all_at_once(addr: SocketAddr, count: usize) -> Statuses {
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..count {
        clients.spawn(get(addr));
    }
    let mut statuses = Statuses::new();
    while let Some(Ok(status)) = clients.join_next().await {
        *statuses.entry(status).or_default() += 1;
    }
    statuses
}

/// Every worker's breaker state, by worker id.
async fn states(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .ask_all(&"state", Duration::from_secs(1))
        .await
        .answers
        .into_iter()
        .map(|(id, answer)| {
            let state = answer["state"].as_str().unwrap_or("?").to_owned();
            (id.to_string(), state)
        })
        .collect()
}

/// Asks until every breaker is in `state`, at most `within`.
async fn until_all(cluster: &Cluster, state: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let now = states(cluster).await;
        if !now.is_empty() && now.values().all(|s| s == state) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the breakers were not all {state} within {within:?}: {now:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(upstream: &Upstream, field: &str) -> u64 {
    upstream.stats_json()[field].as_u64().unwrap_or(0)
}

/// All four acts, each reported as an event.
pub async fn tell(cluster: &Cluster, upstream: &Arc<Upstream>, args: &Args) -> anyhow::Result<()> {
    let workers = cluster.ready_workers().len() as u64;
    healthy(cluster).await;
    failing(cluster, upstream, workers).await;
    half_open(cluster, upstream, args, workers).await?;
    recovered(cluster, upstream, args).await
}

/// Act one: a healthy upstream, every request answered.
async fn healthy(cluster: &Cluster) {
    let addr = cluster.addr();
    let (healthy, _, _) = one_by_one(addr, 12).await;
    cluster.report(
        "healthy",
        &json!({ "statuses": healthy, "breakers": states(cluster).await }),
        &format!("upstream healthy: 12 requests answered {healthy:?}"),
    );
}

// ANCHOR: failing
/// Act two: the upstream fails; each worker's breaker opens on its own.
async fn failing(cluster: &Cluster, upstream: &Upstream, workers: u64) {
    let addr = cluster.addr();
    upstream.set_mode(Mode::Fail);
    let before = count(upstream, "started");
    let (failing, retry_after, told) = one_by_one(addr, 40).await;
    let calls = count(upstream, "started") - before;
    let breakers = states(cluster).await;
    cluster.report(
        "failing",
        &json!({
            "statuses": failing,
            "upstream_calls": calls,
            "workers": workers,
            "breakers": breakers,
            "refusals_with_retry_after": told,
            "retry_after_seconds": retry_after,
        }),
        &format!(
            "upstream failing: 40 requests answered {failing:?}; the upstream saw {calls} of them: each of the {workers} workers called it until its own breaker opened; breakers {breakers:?}"
        ),
    );
}
// ANCHOR_END: failing

// ANCHOR: half_open
/// Act three: a slow upstream meets breakers that are half-open.
async fn half_open(
    cluster: &Cluster,
    upstream: &Upstream,
    args: &Args,
    workers: u64,
) -> anyhow::Result<()> {
    let addr = cluster.addr();
    upstream.set_mode(Mode::Slow);
    until_all(
        cluster,
        "half_open",
        args.reset_timeout * 5 + Duration::from_secs(5),
    )
    .await?;
    let (started, cancelled, completed) = (
        count(upstream, "started"),
        count(upstream, "cancelled"),
        count(upstream, "completed"),
    );
    let burst = all_at_once(addr, 40).await;
    let let_through = count(upstream, "started") - started;
    cluster.report(
        "half_open",
        &json!({
            "concurrent": 40,
            "statuses": burst,
            "upstream_calls": let_through,
            "probes_per_worker": args.probes,
            "workers": workers,
        }),
        &format!(
            "half-open, 40 requests at once: {let_through} reached the upstream ({}); answers {burst:?}",
            if args.usual {
                "the usual half-open lets every call through".to_string()
            } else {
                format!("{workers} workers × {} probes allowed", args.probes)
            }
        ),
    );
    // The probes overran the deadline. Did the upstream stop working on
    // them? Wait (bounded) until it has finished with every call.
    let settle_by = Instant::now() + args.slow + Duration::from_secs(5);
    loop {
        let all = count(upstream, "started");
        let done =
            count(upstream, "completed") + count(upstream, "cancelled") + count(upstream, "failed");
        if done >= all || Instant::now() > settle_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = count(upstream, "cancelled") - cancelled;
    let completed = count(upstream, "completed") - completed;
    cluster.report(
        "slow",
        &json!({ "timed_out": burst.get(&504).copied().unwrap_or(0), "cancelled": cancelled, "completed_for_nobody": completed }),
        &format!(
            "the calls that overran {} ms: the upstream saw {cancelled} cancelled and finished {completed} that nobody waited for",
            args.timeout.as_millis()
        ),
    );
    Ok(())
}
// ANCHOR_END: half_open

/// Act four: the upstream heals, and the probes close every breaker.
async fn recovered(cluster: &Cluster, upstream: &Upstream, args: &Args) -> anyhow::Result<()> {
    let addr = cluster.addr();
    upstream.set_mode(Mode::Healthy);
    until_all(
        cluster,
        "half_open",
        args.reset_timeout * 5 + Duration::from_secs(5),
    )
    .await?;
    let mut recovery = Statuses::new();
    for _ in 0..100 {
        *recovery.entry(get(addr).await).or_default() += 1;
        if states(cluster).await.values().all(|s| s == "closed") {
            break;
        }
    }
    let breakers = states(cluster).await;
    cluster.report(
        "recovered",
        &json!({
            "statuses": recovery,
            "breakers": breakers,
            "successes_to_close_all": recovery.get(&200).copied().unwrap_or(0),
        }),
        &format!("upstream healthy again: the probes succeeded; answers {recovery:?}; breakers {breakers:?}"),
    );
    Ok(())
}
