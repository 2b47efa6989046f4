//! One host of `hosts`: a plain cluster with a rate-limited path, whose
//! workers decide who the client is.
//!
//! Lesson 12's limiter keys on the client. Behind nginx, every request
//! arrives from nginx's address, so "the peer's address" is one client
//! for everyone. nginx says who the client was in `X-Real-IP` and
//! `X-Forwarded-For` — but anyone can send those headers, so they say
//! something only when the request came from the proxy itself. `/limited`
//! decides under three rules, one per `?key=`, so that one run compares
//! them ([`super::client_ip`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rate_limit::{Algorithm, Limiter, Policy};
use redis_helper::Redis;
use supervisor::http::{ClientAddr, Request, serve, text};
use supervisor::{Cluster, ClusterArgs, Worker};

/// `/limited` admits this many requests per client per window.
pub const LIMIT: u64 = 5;
const WINDOW: Duration = Duration::from_secs(60);

/// The header the host answers with: the client it counted.
pub const CLIENT_HEADER: &str = "x-client";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// The proxy whose X-Real-IP this host believes
    #[arg(long)]
    trusted_proxy: IpAddr,
    /// Prefixes the limiter's keys: a run never counts another's requests
    /// (REDIS_URL may name a Redis that outlives runs)
    #[arg(long, default_value = "")]
    run_id: String,
}

/// Whom a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyBy {
    /// The connection's other end: behind a proxy, the proxy.
    Peer,
    /// The first `X-Forwarded-For` entry, whoever sent it: the usual
    /// `req.headers['x-forwarded-for'].split(',')[0]`.
    AnyHeader,
    /// `X-Real-IP`, only from the trusted proxy; otherwise the peer.
    TrustedProxy,
}

impl KeyBy {
    pub const ALL: [KeyBy; 3] = [KeyBy::Peer, KeyBy::AnyHeader, KeyBy::TrustedProxy];

    pub fn name(self) -> &'static str {
        match self {
            KeyBy::Peer => "peer",
            KeyBy::AnyHeader => "any-header",
            KeyBy::TrustedProxy => "trusted-proxy",
        }
    }

    fn from_query(request: &Request) -> Option<KeyBy> {
        let query = request.uri().query()?;
        KeyBy::ALL
            .into_iter()
            .find(|key| query.strip_prefix("key=") == Some(key.name()))
    }
}

// ANCHOR: client_of
/// The client a request counts against, under `rule`.
fn client_of(request: &Request, rule: KeyBy, proxy: IpAddr) -> Option<IpAddr> {
    let peer = request.extensions().get::<ClientAddr>()?.0.ip();
    let header = |name: &str| request.headers().get(name)?.to_str().ok();
    let first_forwarded = || {
        let first = header("x-forwarded-for")?.split(',').next()?;
        first.trim().parse::<IpAddr>().ok()
    };
    match rule {
        KeyBy::Peer => Some(peer),
        KeyBy::AnyHeader => Some(first_forwarded().unwrap_or(peer)),
        // nginx overwrites X-Real-IP with the address it saw
        // (`proxy_set_header X-Real-IP $remote_addr`): from the proxy, it
        // is the client's. From anyone else it is whatever they wrote.
        KeyBy::TrustedProxy if peer == proxy => {
            let real = header("x-real-ip").and_then(|ip| ip.trim().parse().ok());
            Some(real.unwrap_or(peer))
        }
        KeyBy::TrustedProxy => Some(peer),
    }
}
// ANCHOR_END: client_of

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let redis = Redis::from_env_or_start().await?;
    let mut options = args.cluster.options();
    options.worker_env.push(redis.worker_env());
    let cluster = Cluster::start(options)
        .await
        .context("starting the host's cluster")?;
    let log = cluster.clone();
    redis.tell(move |line| log.note_line(line));
    cluster.run().await?;
    Ok(())
}

pub async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Worker::connect().await?;
    let url =
        std::env::var(redis_helper::REDIS_URL_VAR).context("the primary did not pass REDIS_URL")?;
    let who = format!("{}.{}", args.cluster.host, std::process::id());
    let limiter = Arc::new(Limiter::new(
        Algorithm::Sliding,
        redis_helper::connect(&url).await?,
        who,
    ));
    let (proxy, run) = (args.trusted_proxy, Arc::new(args.run_id));
    let listener = worker.listen().await?;
    worker.ready()?;
    // `/limited?key=RULE` is rate-limited per client under RULE;
    // `/slow?ms=N` takes N ms; anything else (any method) answers at once.
    let handler = move |request: Request| {
        let (limiter, run) = (Arc::clone(&limiter), Arc::clone(&run));
        async move {
            match request.uri().path() {
                "/limited" => limited(&limiter, &request, proxy, &run).await,
                "/slow" => {
                    let ms = request
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("ms="))
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
                    text(200, "done\n")
                }
                _ => text(200, "ok\n"),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}

/// One decision of the shared limiter, keyed by the rule the query names.
async fn limited(
    limiter: &Limiter,
    request: &Request,
    proxy: IpAddr,
    run: &str,
) -> supervisor::http::Response {
    let Some(rule) = KeyBy::from_query(request) else {
        return text(
            400,
            "say ?key=peer, ?key=any-header or ?key=trusted-proxy\n",
        );
    };
    let Some(client) = client_of(request, rule, proxy) else {
        return text(400, "no client address\n");
    };
    let policy = Policy {
        limit: LIMIT,
        window: WINDOW,
    };
    let mut response = match limiter
        .check(&format!("{run}:{}:{client}", rule.name()), policy)
        .await
    {
        Ok(decision) if decision.allowed => text(200, "admitted\n"),
        Ok(_) => text(429, "too many requests\n"),
        Err(error) => text(503, format!("redis: {error}\n")),
    };
    if let Ok(value) = client.to_string().parse() {
        response.headers_mut().insert(CLIENT_HEADER, value);
    }
    response
}
