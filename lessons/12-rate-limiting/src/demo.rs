//! The demo's three stories, told by its own clients and counted.
//!
//! 1. **The retrier.** One client sends at four times the limit, window
//!    after window, as a client with a naive retry loop does. Counting what
//!    each window admitted shows whether refused attempts count against it.
//! 2. **The burst.** 64 clients at once send 300 requests with one API key,
//!    half to this cluster and half to a second one ([`supervisor::peer`])
//!    sharing the Redis, against a limit of 100 a minute: exactly 100 must
//!    get through, not "about" 100.
//! 3. **The outage.** The private redis-server is stopped under the
//!    clients, then started again: what do they get meanwhile, and when is
//!    the limiter back?

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hyper::Method;
use loadgen::one::request;
use rate_limit::Policy;
use redis_helper::Redis;
use serde_json::json;
use supervisor::Cluster;
use supervisor::peer::OtherPrimary;
use tokio::time::Instant;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PATIENCE: Duration = Duration::from_secs(10);

/// What one request got: its status (0 for none), and whether the
/// limiter spoke (`RateLimit-Limit`) and said when to retry.
#[derive(Debug, Clone, Copy)]
struct Got {
    status: u16,
    limiter_spoke: bool,
    retry_after: bool,
    /// When the limiter decided, by its clock (`x-decided-at-ms`).
    decided_at_ms: Option<u64>,
}

/// One GET of `path` as the client with API key `key`.
async fn get(to: SocketAddr, path: &str, key: &str) -> Got {
    match request(
        LOOPBACK,
        to,
        Method::GET,
        path,
        &[("x-api-key", key)],
        PATIENCE,
    )
    .await
    {
        Ok(answer) => Got {
            status: answer.status,
            limiter_spoke: answer.header("ratelimit-limit").is_some(),
            retry_after: answer.header("retry-after").is_some(),
            decided_at_ms: answer
                .header("x-decided-at-ms")
                .and_then(|ms| ms.parse().ok()),
        },
        Err(_) => Got {
            status: 0,
            limiter_spoke: false,
            retry_after: false,
            decided_at_ms: None,
        },
    }
}

/// All three stories, in order.
pub async fn tell(
    cluster: &Cluster,
    redis: &mut Redis,
    peer_args: &[String],
    policy: Policy,
    windows: u32,
) -> anyhow::Result<()> {
    retrier(cluster, policy, windows).await;
    burst(cluster, redis.url(), peer_args).await?;
    if redis.is_private() {
        outage(cluster, redis).await?;
    } else {
        cluster.note_line("REDIS_URL is someone else's Redis: the outage story is skipped");
    }
    Ok(())
}

// ANCHOR: retrier
/// One client, four attempts per admitted place, for `windows` windows.
async fn retrier(cluster: &Cluster, policy: Policy, windows: u32) {
    let per_window = 4 * policy.limit;
    let interval = policy.window / u32::try_from(per_window).unwrap_or(u32::MAX);
    let mut admitted = vec![0u64; windows as usize];
    let mut told_when = 0;
    let window_ms = u64::try_from(policy.window.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut first_decision = None;
    let start = Instant::now();
    for attempt in 0..per_window * u64::from(windows) {
        // The client's schedule: evenly spaced attempts, whatever the answers.
        tokio::time::sleep_until(start + interval * attempt as u32).await;
        let got = get(cluster.addr(), "/", "retrier").await;
        // Windows by the clock that decided, from the first decision: the
        // limit holds in the limiter's time, and a request delayed on its
        // way belongs to the window in which it was decided.
        let Some(at) = got.decided_at_ms else {
            continue;
        };
        let window = (at.saturating_sub(*first_decision.get_or_insert(at)) / window_ms) as usize;
        if let Some(count) = admitted.get_mut(window) {
            *count += u64::from(got.status == 200);
        }
        told_when += u64::from(got.status == 429 && got.retry_after);
    }
    let fields = json!({
        "limit": policy.limit,
        "window_ms": policy.window.as_millis() as u64,
        "sent_per_window": per_window,
        "admitted": admitted,
        "refusals_with_retry_after": told_when,
    });
    let list: Vec<String> = admitted.iter().map(u64::to_string).collect();
    cluster.report(
        "retrier",
        &fields,
        &format!(
            "a client retrying at 4× the limit ({per_window} attempts a window, limit {}): admitted per window {}",
            policy.limit,
            list.join(", ")
        ),
    );
}
// ANCHOR_END: retrier

/// 300 requests from 64 clients at once, over this cluster and another.
async fn burst(cluster: &Cluster, redis_url: &str, peer_args: &[String]) -> anyhow::Result<()> {
    const SENT: u64 = 300;
    let args: Vec<&str> = peer_args.iter().map(String::as_str).collect();
    let other = OtherPrimary::start(&args, &[(redis_helper::REDIS_URL_VAR, redis_url)], 2).await?;
    let targets = [cluster.addr(), other.addr];
    let tickets = Arc::new(AtomicU64::new(0));
    let begun = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let tickets = tickets.clone();
        clients.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            loop {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                if ticket >= SENT {
                    return statuses;
                }
                let to = targets[(ticket % 2) as usize];
                let got = get(to, "/burst", "burst").await;
                *statuses.entry(got.status).or_default() += 1;
            }
        });
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    while let Some(Ok(mine)) = clients.join_next().await {
        for (status, n) in mine {
            *statuses.entry(status).or_default() += n;
        }
    }
    let took = begun.elapsed();
    other.stop().await;
    let admitted = statuses.get(&200).copied().unwrap_or(0);
    let refused = statuses.get(&429).copied().unwrap_or(0);
    let fields = json!({
        "sent": SENT,
        "admitted": admitted,
        "refused": refused,
        "other": SENT - admitted - refused,
        "limit": crate::BURST.limit,
        "clusters": 2,
        "took_ms": took.as_millis() as u64,
    });
    cluster.report(
        "burst",
        &fields,
        &format!(
            "{SENT} requests from 64 clients over 2 clusters in {} ms, limit {} a minute: {admitted} admitted, {refused} refused",
            took.as_millis(),
            crate::BURST.limit
        ),
    );
    Ok(())
}

/// The private redis-server stopped under the clients, then started again.
async fn outage(cluster: &Cluster, redis: &mut Redis) -> anyhow::Result<()> {
    redis.stop().await;
    let mut during: BTreeMap<u16, u64> = BTreeMap::new();
    for _ in 0..10 {
        let got = get(cluster.addr(), "/", "during-the-outage").await;
        *during.entry(got.status).or_default() += 1;
    }
    redis.restart().await?;
    // While Redis was down each worker asks it only once every
    // `redis_helper::PROBE_EVERY` (the other requests are decided at once),
    // so ask for up to 5 s, a little at a time, until one is decided by
    // Redis again.
    let mut tries = 0;
    let mut back = false;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    while !back && tokio::time::Instant::now() < give_up {
        tries += 1;
        back = get(cluster.addr(), "/", "after-the-outage")
            .await
            .limiter_spoke;
        if !back {
            tokio::time::sleep(redis_helper::PROBE_EVERY / 10).await;
        }
    }
    let fields = json!({ "during": during, "back": back, "tries": tries });
    cluster.report(
        "outage",
        &fields,
        &format!("Redis stopped: 10 requests answered {during:?}; after a restart the limiter answered again: {back}"),
    );
    Ok(())
}
