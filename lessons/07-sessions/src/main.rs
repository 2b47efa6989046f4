//! # Lesson 07 — How do you keep sessions across workers?
//!
//! **The short answer.** A session kept in a worker's memory exists in that
//! worker only; the next request may go to another. Either keep sessions
//! where every worker reads them — Redis, with a time to live — or route
//! each client to the same worker every time (sticky sessions). Redis also
//! works across machines; stickiness does not, and breaks behind a NAT.
//!
//! Run on its own, the lesson tells the story with simulated users: each
//! logs in, then asks "who am I?" four times on new connections.
//!
//! ```text
//! just lesson 07 --store memory            # most of the answers: "who are you?"
//! just lesson 07 --store redis             # every answer right, on a second cluster too
//! just lesson 07 --store memory --sticky   # right again: each address sticks to a worker
//! just lesson 07 --store memory --sticky --one-address   # all behind one NAT: one worker
//! just lesson 07 --serve                   # then: curl -c jar -X POST 'localhost:8000/login?user=ada'
//!                                          #       curl -b jar localhost:8000/me
//! ```
//!
//! **What the usual answer gets wrong.** Its sticky snippet,
//! `parseInt(md5(ip), 16) % workers`, sends every client to worker 0 when
//! the worker count is a power of two (see `hashes.rs`); and stickiness by
//! address cannot tell apart clients behind one address.
//!
//! | Node                                          | Rust (this workbook)                                  |
//! |-----------------------------------------------|-------------------------------------------------------|
//! | `express-session` with a `MemoryStore`        | `Store::Memory`: a map in the worker                  |
//! | `connect-redis` (`RedisStore`) with a TTL     | `Store::Redis`: `SET … EX`, then `GETEX … EX`         |
//! | `crypto.randomBytes(16).toString('hex')`      | `getrandom::fill` into 16 bytes, as hex               |
//! | `res.cookie('sid', id, { httpOnly, sameSite })` | a `Set-Cookie` header, `HttpOnly; SameSite=Lax`     |
//! | a hand-made sticky balancer in the primary    | `ClusterOptions { sticky: true, .. }` (rendezvous)    |

mod demo;
mod hashes;
mod store;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hyper::Method;
use hyper::header::{COOKIE, HeaderValue, SET_COOKIE};
use redis_helper::{Outages, Redis};
use serde_json::json;
use store::{Session, Store};
use supervisor::cli::parse_seconds;
use supervisor::http::{Request, Response, json, serve};
use supervisor::{Cluster, ClusterArgs, RestartPolicy, Worker, WorkerId};

/// Lesson 07: sessions that survive the next request landing elsewhere.
#[derive(Debug, Parser)]
#[command(name = "lesson-07", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Where sessions live: memory (each worker's own) or redis (shared)
    #[arg(long, value_enum, default_value_t = StoreKind::Redis)]
    store: StoreKind,

    /// Route each client address to the same worker (round-robin only)
    #[arg(long)]
    sticky: bool,

    /// Serve and wait, instead of running the demo's users
    #[arg(long)]
    serve: bool,

    /// Users in the demo
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=200))]
    users: u16,

    /// "Who am I?" requests per user after logging in
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=100))]
    each: u16,

    /// Every user connects from 127.0.0.1, as if behind one NAT or proxy
    #[arg(long)]
    one_address: bool,

    /// How long an unused session lives
    #[arg(long, default_value = "1800s", value_parser = parse_seconds)]
    session_ttl: Duration,

    /// Live sessions each worker keeps at most (memory store); a login
    /// past it is refused with 503 until sessions expire
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_sessions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum StoreKind {
    Memory,
    Redis,
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, worker)
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    // The Redis every worker shares: REDIS_URL, or a private server that
    // lives as long as this primary.
    let redis = match args.store {
        StoreKind::Redis => Some(Redis::from_env_or_start().await?),
        StoreKind::Memory => None,
    };
    let mut options = args.cluster.options();
    options.sticky = args.sticky;
    // A crashed worker's slot is filled again (lesson 03). With --sticky
    // the slot's new worker gets the dead one's clients — but not their
    // sessions, if those lived in the dead process's memory.
    options.restart = Some(RestartPolicy::default());
    // Every worker finds the same server in its environment.
    options
        .worker_env
        .extend(redis.as_ref().map(Redis::worker_env));
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    if let Some(redis) = &redis {
        let log = cluster.clone();
        redis.tell(move |line| log.note_line(line));
    }
    cluster
        .wait_ready(workers, Duration::from_secs(30))
        .await
        .context("waiting for the workers")?;
    report_hash_table(&cluster);

    if args.serve {
        cluster.note_line(&format!(
            "log in: curl -c jar -X POST 'http://{0}/login?user=ada'; then: curl -b jar http://{0}/me",
            cluster.addr()
        ));
    } else {
        let told = tell_the_story(&cluster, &args, redis.as_ref()).await;
        cluster.shutdown();
        cluster.run().await?;
        return told;
    }
    cluster.run().await?;
    Ok(())
}

/// The demo: users log in and come back; with Redis, they come back to a
/// second cluster too.
async fn tell_the_story(
    cluster: &Cluster,
    args: &Args,
    redis: Option<&Redis>,
) -> anyhow::Result<()> {
    let (users, each) = (usize::from(args.users), usize::from(args.each));
    let seen = demo::users(cluster.addr(), users, each, args.one_address).await?;
    let mut fields = serde_json::to_value(&seen)?;
    fields["store"] = json!(args.store);
    fields["sticky"] = json!(args.sticky);
    fields["workers_seen"] = json!(seen.workers.len());
    cluster.report(
        "sessions",
        &fields,
        &format!(
            "{} users logged in; of their {} \"who am I?\" requests, {} found the session and {} did not; {} of {} users were always answered by the same worker; workers that answered: {}",
            seen.logins,
            seen.requests,
            seen.found,
            seen.lost,
            seen.stuck,
            seen.logins,
            seen.workers.len()
        ),
    );

    if let Some(redis) = redis {
        // A second machine behind the same load balancer: another primary,
        // another port, the same Redis.
        let other = supervisor::peer::OtherPrimary::start(
            &["--serve", "--store", "redis", "--workers", "2"],
            &[(redis_helper::REDIS_URL_VAR, redis.url())],
            2,
        )
        .await?;
        let found = demo::come_back(other.addr, &seen.cookies).await;
        other.stop().await;
        let found = found?;
        cluster.report(
            "two_clusters",
            &json!({ "users": seen.cookies.len(), "found": found }),
            &format!(
                "on a second cluster sharing the Redis: {found} of {} users were recognised",
                seen.cookies.len()
            ),
        );
    }
    Ok(())
}

/// Both sticky hashes over the same 1,000 addresses, for 2, 3, 4, 8 workers.
fn report_hash_table(cluster: &Cluster) {
    let rows: Vec<hashes::Spread> = [2, 3, 4, 8].map(|n| hashes::spread(1000, n)).into();
    let mut human = String::from("1,000 client addresses over N workers:\n");
    for row in &rows {
        let list = |counts: &[u64]| {
            counts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join("/")
        };
        human += &format!(
            "  N = {}: parseInt(md5, 16) % N → {:<28} rendezvous → {}\n",
            row.workers,
            list(&row.usual),
            list(&row.rendezvous)
        );
    }
    cluster.report("hash_spread", &json!({ "rows": rows }), human.trim_end());
}
// ANCHOR_END: primary

// ANCHOR: worker
async fn worker(args: Args, id: WorkerId) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let store = Arc::new(match args.store {
        StoreKind::Memory => Store::Memory {
            map: Mutex::new(store::Sessions::new(
                usize::try_from(args.max_sessions).unwrap_or(usize::MAX),
            )),
            ttl: args.session_ttl,
        },
        StoreKind::Redis => {
            let url = std::env::var(redis_helper::REDIS_URL_VAR)
                .context("the primary did not pass REDIS_URL")?;
            Store::Redis {
                connection: redis_helper::connect(&url).await?,
                ttl: args.session_ttl,
            }
        }
    });
    let outages = Arc::new(Mutex::new(Outages::default()));
    let listener = worker.listen().await?;
    worker.ready()?;

    let handler = move |request: Request| {
        let (store, outages) = (store.clone(), outages.clone());
        async move {
            // While Redis is down, only one request in a while asks it
            // (redis_helper::Outages): the rest are answered at once.
            if store.is_redis()
                && !outages
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .may_try()
            {
                return json(503, &json!({ "error": "the session store is unavailable" }));
            }
            let answer = match (request.method(), request.uri().path()) {
                (&Method::POST, "/login") => login(&store, &request, id).await,
                (_, "/me") => who_am_i(&store, &request, id).await,
                _ => Ok(json(
                    200,
                    &json!({ "hello": "POST /login?user=NAME, then GET /me", "worker": id }),
                )),
            };
            said(&outages, id, answer.is_ok());
            answer.unwrap_or_else(|error| {
                if let store::StoreError::Full = error {
                    // A flood of logins, not a fault: answered, not logged.
                    return json(503, &json!({ "error": error.to_string() }));
                }
                if let Some(line) = outage(&outages, &error) {
                    supervisor::report::stderr_line(&format!("[worker {id}] {line}"));
                }
                json(503, &json!({ "error": "the session store is unavailable" }))
            })
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}

/// `POST /login?user=NAME`: a new session, and its id in a cookie.
async fn login(
    store: &Store,
    request: &Request,
    id: WorkerId,
) -> Result<Response, store::StoreError> {
    let user = query(request, "user").unwrap_or_default();
    let valid = (1..=32).contains(&user.len())
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Ok(json(
            400,
            &json!({ "error": "user must be 1 to 32 letters, digits, _ or -" }),
        ));
    }
    let sid = store
        .create(&Session {
            user: user.clone(),
            made_by: id,
        })
        .await?;
    let mut response = json(200, &json!({ "user": user, "worker": id }));
    set_cookie(&mut response, &sid, store.ttl_secs());
    Ok(response)
}

/// The session cookie. HttpOnly: page scripts cannot read it. SameSite=Lax:
/// other sites' forms do not send it. In production add Secure (HTTPS
/// only); the demo speaks plain HTTP on loopback. `Max-Age` is the
/// session's time to live, sent again with every answer that uses the
/// session, so the cookie expires with the session and not before it.
fn set_cookie(response: &mut Response, sid: &str, ttl_secs: u64) {
    let cookie = format!("sid={sid}; HttpOnly; SameSite=Lax; Path=/; Max-Age={ttl_secs}");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
}

/// `GET /me`: whose session the cookie names, if this worker can find it.
async fn who_am_i(
    store: &Store,
    request: &Request,
    id: WorkerId,
) -> Result<Response, store::StoreError> {
    let sid = request
        .headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("sid="));
    let Some(sid) = sid else {
        return Ok(json(
            401,
            &json!({ "error": "not logged in: no sid cookie" }),
        ));
    };
    Ok(match store.get(sid).await? {
        Some(session) => {
            let mut response = json(
                200,
                &json!({ "user": session.user, "made_by": session.made_by, "served_by": id }),
            );
            // The store restarted the session's time to live; so does the cookie.
            set_cookie(&mut response, sid, store.ttl_secs());
            response
        }
        None => json(
            401,
            &json!({ "error": format!("worker {id} knows no such session"), "served_by": id }),
        ),
    })
}
// ANCHOR_END: worker

/// Records a command that worked; prints the line that ends an outage.
fn said(outages: &Mutex<Outages>, id: WorkerId, worked: bool) {
    if worked
        && let Some(line) = outages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .worked()
    {
        supervisor::report::stderr_line(&format!("[worker {id}] {line}"));
    }
}

/// Records a failed command; the line to print, once per outage.
fn outage(outages: &Mutex<Outages>, error: &store::StoreError) -> Option<String> {
    let mut outages = outages
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match error {
        store::StoreError::Redis(redis) => outages.failed(redis),
        other => Some(other.to_string()),
    }
}

/// `?name=value` from the query string.
fn query(request: &Request, name: &str) -> Option<String> {
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map(str::to_owned)
}
