//! # Lesson 12 — How do you rate-limit across every worker (and machine)?
//!
//! **The short answer.** Not in the workers' memory: each would count only
//! what it sees, and N workers would let N times the limit through. Count
//! in Redis, which all of them share, and decide in one atomic step — a Lua
//! script, one round trip, time from Redis's own clock. Over the limit,
//! answer 429 with `Retry-After` and the `RateLimit-*` headers. Decide, too,
//! what happens when Redis is down: let requests through (fail open) or
//! refuse them (fail closed).
//!
//! Run on its own, the lesson tells three stories with its own clients:
//!
//! 1. a client that retries at four times the limit, window after window;
//! 2. 300 requests from 64 clients at once, over two clusters sharing one
//!    Redis, against a limit of 100 a minute;
//! 3. Redis stopped and started again under the clients' feet.
//!
//! ```text
//! just lesson 12 --algorithm usual     # the retrier is blocked for ever; the set keeps every attempt
//! just lesson 12                       # --algorithm sliding: 10 a window, exactly 100 of 300
//! just lesson 12 --algorithm gcra      # the same limit, one number per client
//! just lesson 12 --redis-down closed   # during the outage: 503 instead of letting requests through
//! just lesson 12 --serve               # then: curl -i -H 'x-api-key: ada' localhost:8000/
//! ```
//!
//! | Node                                              | Rust (this workbook)                                |
//! |---------------------------------------------------|-----------------------------------------------------|
//! | `redis.multi().zremrangebyscore().zcard().zadd()…exec()` | `Algorithm::Usual`, kept as the usual answer has it |
//! | `redis.defineCommand('slidingLog', { lua })`      | `redis::Script`: `EVALSHA`, loaded once if unknown   |
//! | `res.status(429).set('Retry-After', s)`           | `Decision::headers` and a 429                       |
//! | `Date.now()` in each worker                       | `redis.call('TIME')` in the script                  |

mod demo;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hyper::header::{HeaderName, HeaderValue};
use rate_limit::{Algorithm, Limiter, Policy};
use redis_helper::{Outages, Redis};
use serde_json::json;
use supervisor::cli::parse_seconds;
use supervisor::http::{Request, Response, json, serve};
use supervisor::{Cluster, ClusterArgs, Worker, WorkerId};

/// Lesson 12: one limit for every worker of every machine.
#[derive(Debug, Parser)]
#[command(name = "lesson-12", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// How to decide
    #[arg(long, value_enum, default_value_t = Algorithm::Sliding)]
    algorithm: Algorithm,

    /// Requests a client may make per window (route /)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    limit: u64,

    /// The window (route /)
    #[arg(long, default_value = "1s", value_parser = parse_seconds)]
    window: Duration,

    /// When Redis cannot be reached: let requests through (open) or refuse them (closed)
    #[arg(long, value_enum, default_value_t = WhenDown::Open)]
    redis_down: WhenDown,

    /// Serve and wait, instead of running the demo's clients
    #[arg(long)]
    serve: bool,

    /// Windows the retrier keeps retrying for
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=60))]
    windows: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum WhenDown {
    Open,
    Closed,
}

/// The policy of `/burst`: 100 a minute, long enough that a burst of
/// requests fits well inside one window whatever the algorithm.
const BURST: Policy = Policy {
    limit: 100,
    window: Duration::from_secs(60),
};

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, worker)
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let mut redis = Redis::from_env_or_start().await?;
    let mut options = args.cluster.options();
    // Every worker finds the same server in its environment.
    options.worker_env.push(redis.worker_env());
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    let log = cluster.clone();
    redis.tell(move |line| log.note_line(line));
    cluster
        .wait_ready(workers, Duration::from_secs(30))
        .await
        .context("waiting for the workers")?;

    if args.serve {
        cluster.note_line(&format!(
            "try: curl -i -H 'x-api-key: ada' http://{}/  ({} per {:?}, {:?})",
            cluster.addr(),
            args.limit,
            args.window,
            args.algorithm
        ));
        cluster.run().await?;
        return Ok(());
    }
    let policy = Policy {
        limit: args.limit,
        window: args.window,
    };
    let told = demo::tell(&cluster, &mut redis, &args_of(&args), policy, args.windows).await;
    cluster.shutdown();
    cluster.run().await?;
    told
}
// ANCHOR_END: primary

/// The flags a second cluster needs to decide the same way.
fn args_of(args: &Args) -> Vec<String> {
    let algorithm = format!("{:?}", args.algorithm).to_lowercase();
    let down = format!("{:?}", args.redis_down).to_lowercase();
    let window = format!("{}ms", args.window.as_millis());
    [
        "--serve",
        "--workers",
        "2",
        "--algorithm",
        &algorithm,
        "--limit",
        &args.limit.to_string(),
        "--window",
        &window,
        "--redis-down",
        &down,
    ]
    .map(str::to_owned)
    .to_vec()
}

// ANCHOR: worker
async fn worker(args: Args, id: WorkerId) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let url =
        std::env::var(redis_helper::REDIS_URL_VAR).context("the primary did not pass REDIS_URL")?;
    // Unique across machines too: the host, then this process.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let who = format!("{}.{id}.{}", host.trim(), std::process::id());
    let limiter = Arc::new(
        Limiter::new(args.algorithm, redis_helper::connect(&url).await?, who)
            .with_client(redis::Client::open(url.as_str())?),
    );
    let outages = Arc::new(Mutex::new(Outages::default()));
    let listener = worker.listen().await?;
    worker.ready()?;

    let policy = Policy {
        limit: args.limit,
        window: args.window,
    };
    let when_down = args.redis_down;
    let me = Arc::clone(&worker);
    let handler = move |request: Request| {
        let (limiter, outages, me) = (limiter.clone(), outages.clone(), me.clone());
        async move {
            let policy = if request.uri().path() == "/burst" {
                BURST
            } else {
                policy
            };
            // Clients name themselves with an API key: many clients may
            // share an address, and the limit is the client's, not the NAT's.
            let client = request
                .headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_owned();
            // While Redis is down, only one request in a while asks it
            // (redis_helper::Outages): the rest decide at once.
            let may_try = outages.lock().unwrap_or_else(|p| p.into_inner()).may_try();
            let decided = if may_try {
                Some(limiter.check(&client, policy).await)
            } else {
                None
            };
            let mut outages = outages.lock().unwrap_or_else(|p| p.into_inner());
            match decided {
                Some(Ok(decision)) => {
                    if let Some(line) = outages.worked() {
                        supervisor::report::stderr_line(&format!("[worker {id}] {line}"));
                        // The same news to the primary, a `message` event:
                        // the scenarios count these lines.
                        let _ = me.send(&json!({ "redis": "back" }));
                    }
                    answer(&decision, id)
                }
                failed => {
                    let said = match &failed {
                        Some(Err(error)) => outages.failed(error),
                        _ => None,
                    };
                    if let Some(line) = said {
                        let _ = me.send(&json!({ "redis": "unreachable" }));
                        supervisor::report::stderr_line(&format!(
                            "[worker {id}] {line}; failing {} until it is back",
                            if when_down == WhenDown::Open {
                                "open (letting requests through)"
                            } else {
                                "closed (refusing requests)"
                            }
                        ));
                    }
                    match when_down {
                        WhenDown::Open => json(
                            200,
                            &json!({ "worker": id, "limited": "unknown: Redis is down" }),
                        ),
                        WhenDown::Closed => {
                            json(503, &json!({ "error": "the rate limiter is unavailable" }))
                        }
                    }
                }
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}

/// 200 or 429, with the `RateLimit-*` headers either way.
fn answer(decision: &rate_limit::Decision, id: WorkerId) -> Response {
    let mut response = if decision.allowed {
        json(
            200,
            &json!({ "worker": id, "remaining": decision.remaining }),
        )
    } else {
        json(
            429,
            &json!({ "error": format!("rate limited: try again in {} ms", decision.reset_ms) }),
        )
    };
    for (name, value) in decision.headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    // Not a standard field: when the limiter decided, by its clock, so
    // that the demo counts its windows as the limiter does.
    response
        .headers_mut()
        .insert("x-decided-at-ms", HeaderValue::from(decision.decided_at_ms));
    response
}
// ANCHOR_END: worker
