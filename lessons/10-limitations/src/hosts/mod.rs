//! `hosts`: past one machine, for real — two hosts behind a real nginx.
//!
//! Chapter 10 ends where the cluster module does: one machine. The next
//! question in an interview is "and with three servers behind a load
//! balancer?". Here it runs: two *hosts* — two clusters of this same
//! program, one on 127.0.0.2 and one on 127.0.0.3, the same port (every
//! address in 127.0.0.0/8 is this machine, so no namespaces are needed) —
//! sharing one Redis, behind a private nginx on 127.0.0.1
//! ([`nginx_helper`]). Clients come from 127.0.1.x, so that nginx and the
//! hosts can tell them apart. Each run is one question, measured:
//!
//! * `sticky` — `ip_hash` against `hash $remote_addr consistent`
//!   ([`sticky`]);
//! * `client-ip` — whom a rate limit counts behind a proxy, and who may
//!   say who the client is ([`client_ip`]);
//! * `roll` — a whole host taken out and stopped, three ways ([`roll`]);
//! * `failover` — a host's primary killed under load ([`failover`]).

mod client_ip;
mod failover;
pub mod host;
mod roll;
mod sticky;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use nginx_helper::{Nginx, Site};
use redis_helper::Redis;
use supervisor::EventsFormat;
use supervisor::peer::OtherPrimary;

/// The two hosts' addresses, and the proxy's: nginx listens on 127.0.0.1
/// and connects to the hosts from it (`proxy_bind`), which is how a host
/// knows a request came through the proxy.
pub const HOST_A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const HOST_B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const PROXY: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The response header nginx adds: the upstream(s) it tried, in order
/// (`127.0.0.2:P, 127.0.0.3:P` when it retried on the second).
pub const UPSTREAM_HEADER: &str = "x-upstream";

/// Workers per host, and nginx worker processes.
const HOST_WORKERS: usize = 2;
const NGINX_WORKERS: usize = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which question to run
    run: Run,
    /// Clients sending at once (roll, failover)
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=200))]
    clients: u16,
    /// Also write the markdown table to this file
    #[arg(long)]
    out: Option<PathBuf>,
    /// The events format, for the table (the runner passes --events json)
    #[arg(long, default_value_t = EventsFormat::Human)]
    events: EventsFormat,
    /// Ignored: the hosts listen on 127.0.0.2 and 127.0.0.3, one free port
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Ignored: nginx listens on 127.0.0.1
    #[arg(long)]
    host: Option<IpAddr>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Run {
    /// ip_hash against hash $remote_addr consistent: 200 clients of one /24
    Sticky,
    /// A rate limit behind a proxy: whose address, and who may say it
    ClientIp,
    /// A whole host rolled three ways under load: requests failed per way
    Roll,
    /// A host's primary killed under load: what clients see, and for how long
    Failover,
}

pub async fn primary(args: Args) -> anyhow::Result<()> {
    let redis = Redis::from_env_or_start().await?;
    let reporter = supervisor::report::Reporter::new(args.events);
    let mut hosts = Hosts::start(&redis).await?;
    reporter.custom(
        "hosts_up",
        &serde_json::json!({
            "proxy": hosts.proxy(),
            "a": hosts.host_a(),
            "b": SocketAddr::from((HOST_B, hosts.port)),
            "nginx_pid": hosts.nginx.master_pid(),
        }),
        &format!(
            "nginx on {} (pid {}) in front of host A {} and host B {}:{}; Redis at {}",
            hosts.proxy(),
            hosts.nginx.master_pid().unwrap_or(0),
            hosts.host_a(),
            HOST_B,
            hosts.port,
            redis.url()
        ),
    );
    let outcome = match args.run {
        Run::Sticky => sticky::run(&mut hosts, &args, &reporter).await,
        Run::ClientIp => client_ip::run(&mut hosts, &args, &reporter).await,
        Run::Roll => roll::run(&mut hosts, &args, &reporter).await,
        Run::Failover => failover::run(&mut hosts, &args, &reporter).await,
    };
    hosts.stop().await;
    outcome
}

/// How nginx spreads requests over the hosts, and what it does on failure.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The balancing line: empty (round robin), `ip_hash;`, `hash ... ;`.
    pub balance: &'static str,
    /// Host A marked `down`: taken out of the rotation.
    pub a_down: bool,
    /// `proxy_next_upstream`: nginx's default, `error timeout`, or `off`.
    pub next_upstream: &'static str,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            balance: "",
            a_down: false,
            next_upstream: "error timeout",
        }
    }
}

// ANCHOR: config
/// The `http { }` body nginx runs: the two hosts as one upstream, and a
/// server that proxies to it, says which host answered, and tells the host
/// who the client is. `max_fails=1 fail_timeout=10s` are nginx's defaults,
/// written out.
fn http_config(site: &Site, port: u16, upstream: &Upstream) -> String {
    let down = if upstream.a_down { " down" } else { "" };
    format!(
        "    log_format timed '$msec $status $upstream_addr';
    upstream hosts {{
        {balance}
        server {HOST_A}:{port} max_fails=1 fail_timeout=10s{down};
        server {HOST_B}:{port} max_fails=1 fail_timeout=10s;
    }}
    server {{
        listen {listen};
        access_log {logs}/access.log timed;
        location / {{
            proxy_pass http://hosts;
            proxy_bind {PROXY};
            proxy_next_upstream {next};
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            add_header X-Upstream $upstream_addr always;
        }}
    }}",
        balance = upstream.balance,
        listen = site.listen,
        logs = site.logs.display(),
        next = upstream.next_upstream,
    )
}
// ANCHOR_END: config

/// Two hosts and the nginx in front of them.
pub struct Hosts {
    a: Option<OtherPrimary>,
    b: Option<OtherPrimary>,
    port: u16,
    nginx: Nginx,
    redis_url: String,
}

impl Hosts {
    async fn start(redis: &Redis) -> anyhow::Result<Hosts> {
        let redis_url = redis.url().to_owned();
        // Host A takes any free port; host B the same one on its own
        // address. Another socket may hold that port on 127.0.0.3: a few
        // tries.
        let mut last = None;
        for _ in 0..4 {
            let a = start_host(&redis_url, SocketAddr::from((HOST_A, 0))).await?;
            let port = a.addr.port();
            match start_host(&redis_url, SocketAddr::from((HOST_B, port))).await {
                Ok(b) => {
                    let upstream = Upstream::default();
                    let nginx = Nginx::start(PROXY, NGINX_WORKERS, |site| {
                        http_config(site, port, &upstream)
                    })
                    .await
                    .context("starting nginx in front of the hosts")?;
                    return Ok(Hosts {
                        a: Some(a),
                        b: Some(b),
                        port,
                        nginx,
                        redis_url,
                    });
                }
                Err(error) => {
                    a.stop().await;
                    last = Some(error);
                }
            }
        }
        Err(last.map_or_else(|| anyhow::anyhow!("no port"), anyhow::Error::from))
            .context("starting host B on host A's port")
    }

    /// Where clients send: nginx.
    pub fn proxy(&self) -> SocketAddr {
        self.nginx.addr()
    }

    /// Host A's own address, bypassing nginx.
    pub fn host_a(&self) -> SocketAddr {
        SocketAddr::from((HOST_A, self.port))
    }

    /// `A` or `B` for an upstream address nginx named; the last one, if
    /// it tried several.
    pub fn name_of(&self, upstream: &str) -> &'static str {
        let last = upstream.rsplit(", ").next().unwrap_or("").trim();
        match last.parse::<SocketAddr>().map(|addr| addr.ip()) {
            Ok(ip) if ip == IpAddr::V4(HOST_A) => "A",
            Ok(ip) if ip == IpAddr::V4(HOST_B) => "B",
            _ => "?",
        }
    }

    /// Reloads nginx with `upstream` and waits until only it serves.
    pub async fn configure(&mut self, upstream: &Upstream) -> anyhow::Result<()> {
        self.reload(upstream)
            .await?
            .settled(std::time::Duration::from_secs(30))
            .await?;
        Ok(())
    }

    /// Reloads nginx with `upstream`; the old workers may still serve.
    pub async fn reload(&mut self, upstream: &Upstream) -> anyhow::Result<nginx_helper::Reload> {
        let site = Site {
            listen: self.nginx.addr(),
            logs: self.nginx.logs().to_owned(),
        };
        let text = http_config(&site, self.port, upstream);
        Ok(self.nginx.reload(&text).await?)
    }

    /// nginx's access log so far: `(epoch seconds, status, upstreams)`.
    pub fn access_log(&self) -> Vec<(f64, u16, String)> {
        let text =
            std::fs::read_to_string(self.nginx.logs().join("access.log")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let at = parts.next()?.parse().ok()?;
                let status = parts.next()?.parse().ok()?;
                Some((at, status, parts.next().unwrap_or("").to_owned()))
            })
            .collect()
    }

    /// Host A, taken out of this value (to stop or kill it).
    pub fn take_a(&mut self) -> Option<OtherPrimary> {
        self.a.take()
    }

    /// Starts host A again on its port (a new release of it).
    pub async fn restart_a(&mut self) -> anyhow::Result<()> {
        let a = start_host(&self.redis_url, self.host_a()).await?;
        self.a = Some(a);
        Ok(())
    }

    async fn stop(mut self) {
        let (a, b) = (self.a.take(), self.b.take());
        tokio::join!(
            async {
                if let Some(a) = a {
                    a.stop().await;
                }
            },
            async {
                if let Some(b) = b {
                    b.stop().await;
                }
            }
        );
        self.nginx.stop().await;
    }
}

/// One host: a cluster of this program on `at`, with the shared Redis.
async fn start_host(redis_url: &str, at: SocketAddr) -> anyhow::Result<OtherPrimary> {
    let workers = HOST_WORKERS.to_string();
    let proxy = PROXY.to_string();
    // One run's hosts share it; another run's differ.
    let run_id = format!("hosts-{}", std::process::id());
    OtherPrimary::start_on(
        &[
            "host",
            "--workers",
            &workers,
            "--trusted-proxy",
            &proxy,
            "--run-id",
            &run_id,
        ],
        &[(redis_helper::REDIS_URL_VAR, redis_url)],
        HOST_WORKERS,
        at,
    )
    .await
    .with_context(|| format!("starting the host on {at}"))
}

/// Client number `n` (1 to 254) of the /24 `127.0.<block>.0`.
pub fn client(block: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, block, n))
}

/// The source addresses of `count` clients under load: 127.0.1.1 onwards,
/// never the proxy's own 127.0.0.1.
pub fn load_sources(count: u16) -> Vec<IpAddr> {
    (1..=count.min(254))
        .filter_map(|n| u8::try_from(n).ok())
        .map(|n| client(1, n))
        .collect()
}
