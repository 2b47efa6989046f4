//! The load generator: C clients sending GETs to a lesson, counted.
//!
//! It answers the questions the lessons ask of load — did every request get
//! a response, which worker gave it (the `x-worker-id` header), how were
//! they spread, how fast — and nothing else, so it stays small enough to
//! read. Two shapes matter for a cluster: a new connection per request
//! (every request is a fresh `accept`, so it shows how connections are
//! spread) and keep-alive (one connection carries many requests, so it
//! shows how little connection spreading says about request spreading).
//!
//! Every run is bounded twice, by a request count and by a time limit, and
//! refuses any address that is not loopback: the generator must never be
//! pointed at somebody else's machine by a typo. [`run_until`] can also be
//! stopped early, when something else is done (a rollout, say).
//!
//! It never retries: a request that fails is counted as failed, by how it
//! failed, so a reset during a restart cannot hide behind a second try.
//! Each client counts on its own and the counts are added up at the end, so
//! the clients never wait on each other.

pub mod one;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST};
use hyper_util::rt::TokioIo;
use indicatif::ProgressBar;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// The response header that names the worker that answered.
pub const WORKER_HEADER: &str = "x-worker-id";

/// What load to put on a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSpec {
    /// How many requests in all, across every connection.
    pub requests: u64,
    /// How many clients send at once.
    pub connections: usize,
    /// One connection per client for all its requests, or a new one each time.
    pub keep_alive: bool,
    pub path: String,
    /// The run stops here even if requests are left.
    pub max_time: Duration,
    /// One request's limit, connect to last byte.
    pub timeout: Duration,
    /// `GET`, or `POST` with an empty body: a non-idempotent request,
    /// which a proxy does not send a second time once it has sent it.
    pub method: hyper::Method,
    /// Where clients connect from: client `i` binds `sources[i % len]`
    /// before it connects. Every address in 127.0.0.0/8 is this machine,
    /// so `127.0.1.1` … `127.0.1.200` are 200 clients to a server that
    /// keys on the address (a sticky load balancer). Empty: the kernel
    /// picks, 127.0.0.1 for a loopback server.
    pub sources: Vec<IpAddr>,
    /// The response header [`LoadReport::by_worker`] counts by: the worker
    /// (`x-worker-id`), or another, such as the host behind a load
    /// balancer.
    pub count_by: String,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            requests: 100,
            connections: 4,
            keep_alive: false,
            path: "/".into(),
            max_time: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            method: hyper::Method::GET,
            sources: Vec::new(),
            count_by: WORKER_HEADER.into(),
        }
    }
}

/// Why the generator would not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("refusing to send load to {0}: the load generator only talks to 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    #[error(
        "the load never got going: {done} of {count} requests finished within {within:?}; \
         is the server answering?"
    )]
    NeverFlowing {
        done: u64,
        count: u64,
        within: Duration,
    },
}

/// One response, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The header the run counts by ([`LoadSpec::count_by`], `x-worker-id`
    /// unless it says otherwise), if the server sent one.
    pub worker: Option<String>,
    pub body: String,
    /// The server asked to close the connection after this response.
    pub closing: bool,
}

/// The ways a request fails, named as a client sees them.
pub type Failure = &'static str;

/// Everything one load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub sent: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    /// Requests with no response, or a non-2xx one.
    pub failed: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Requests with no response, by what went wrong (`refused`, `reset`,
    /// `closed`, `timeout`, `error`).
    pub errors: BTreeMap<Failure, u64>,
    /// Responses by the worker that gave them (the header
    /// [`LoadSpec::count_by`] names; `?` when a response has none).
    pub by_worker: BTreeMap<String, u64>,
    /// Each answered request's time, sorted.
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn refused(&self) -> u64 {
        self.errors.get("refused").copied().unwrap_or(0)
    }

    /// The `q`-quantile (0.5 for the median) of the answered requests' times.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((self.latencies.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        self.latencies.get(rank).copied()
    }

    /// `(max - min) / mean` of responses per worker, in percent — the same
    /// measure lesson 04's table prints. 0 % is a perfectly even spread.
    pub fn spread_pct(&self) -> f64 {
        supervisor::spread::spread_pct(self.by_worker.values().copied())
    }

    pub fn requests_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds == 0.0 {
            0.0
        } else {
            (self.ok + self.failed) as f64 / seconds
        }
    }

    /// Adds another client's counts to these.
    pub fn merge(&mut self, other: LoadReport) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed += other.failed;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (failure, n) in other.errors {
            *self.errors.entry(failure).or_default() += n;
        }
        for (worker, n) in other.by_worker {
            *self.by_worker.entry(worker).or_default() += n;
        }
        self.latencies.extend(other.latencies);
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    fn record(&mut self, outcome: Result<(Response, Duration), Failure>) {
        self.sent += 1;
        match outcome {
            Ok((response, took)) => {
                *self.statuses.entry(response.status).or_default() += 1;
                if (200..300).contains(&response.status) {
                    self.ok += 1;
                } else {
                    self.failed += 1;
                }
                let worker = response.worker.unwrap_or_else(|| "?".into());
                *self.by_worker.entry(worker).or_default() += 1;
                self.latencies.push(took);
            }
            Err(failure) => {
                self.failed += 1;
                *self.errors.entry(failure).or_default() += 1;
            }
        }
    }
}

/// Told once per finished request: a progress bar to draw, or a
/// [`Finished`] count to wait on.
pub trait Tick: Clone + Send + 'static {
    /// One more request has finished, answered or failed.
    fn tick(&self);
}

impl Tick for ProgressBar {
    fn tick(&self) {
        self.inc(1);
    }
}

/// How many requests of a run have finished, for code that must wait until
/// the load is flowing before it breaks something.
///
/// It is a `watch` channel rather than a counter read in a loop: the waiter
/// wakes on the tick that reaches its figure, so it neither sleeps past it
/// nor spins before it.
#[derive(Clone, Debug, Default)]
pub struct Finished(Arc<tokio::sync::watch::Sender<u64>>);

impl Finished {
    /// Resolves once `count` requests have finished, or fails once
    /// `within` has passed without: a run that stops short, or a server
    /// that never answers, must not hold its caller forever.
    pub async fn reached(&self, count: u64, within: Duration) -> Result<(), LoadError> {
        let mut finished = self.0.subscribe();
        // The sender lives in `self`, so the channel cannot close while
        // this waits: the only ways out are the count and the time.
        let reached = finished.wait_for(|done| *done >= count);
        match tokio::time::timeout(within, reached).await {
            Ok(_) => Ok(()),
            Err(_) => Err(LoadError::NeverFlowing {
                done: *self.0.borrow(),
                count,
                within,
            }),
        }
    }
}

impl Tick for Finished {
    fn tick(&self) {
        self.0.send_modify(|done| *done += 1);
    }
}

/// Runs `spec` against `addr`, ticking `progress` once per finished request.
pub async fn run(
    addr: SocketAddr,
    spec: &LoadSpec,
    progress: &impl Tick,
) -> Result<LoadReport, LoadError> {
    run_until(addr, spec, progress, std::future::pending()).await
}

/// Like [`run`], but stops sending once `stop` resolves; requests already
/// sent are still awaited and counted.
pub async fn run_until(
    addr: SocketAddr,
    spec: &LoadSpec,
    progress: &impl Tick,
    stop: impl Future<Output = ()>,
) -> Result<LoadReport, LoadError> {
    if !addr.ip().is_loopback() {
        return Err(LoadError::NotLoopback(addr));
    }
    let started = Instant::now();
    let deadline = started + spec.max_time;
    let tickets = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(AtomicBool::new(false));

    let mut clients: JoinSet<LoadReport> = JoinSet::new();
    for client in 0..spec.connections.max(1) {
        let (spec, tickets, halt, progress) = (
            spec.clone(),
            tickets.clone(),
            halt.clone(),
            progress.clone(),
        );
        let from = match spec.sources.len() {
            0 => None,
            n => spec.sources.get(client % n).copied(),
        };
        clients.spawn(async move {
            let mut mine = LoadReport::default();
            let mut connection: Option<SendRequest<Empty<Bytes>>> = None;
            let client = Client {
                addr,
                from,
                spec: &spec,
            };
            while !halt.load(Ordering::Relaxed)
                && tickets.fetch_add(1, Ordering::Relaxed) < spec.requests
                && Instant::now() < deadline
            {
                let begun = Instant::now();
                let outcome = if spec.keep_alive {
                    client.keep_alive_request(&mut connection).await
                } else {
                    client.request().await
                };
                mine.record(outcome.map(|response| (response, begun.elapsed())));
                progress.tick();
            }
            mine
        });
    }
    let mut report = LoadReport::default();
    let mut all_done = std::pin::pin!(async {
        let mut reports = Vec::new();
        while let Some(joined) = clients.join_next().await {
            // A client task only fails if the runtime is going away; the
            // others' counts still stand.
            if let Ok(mine) = joined {
                reports.push(mine);
            }
        }
        reports
    });
    let reports = tokio::select! {
        reports = &mut all_done => reports,
        () = stop => {
            halt.store(true, Ordering::Relaxed);
            all_done.await
        }
    };
    for mine in reports {
        report.merge(mine);
    }
    report.elapsed = started.elapsed();
    report.latencies.sort();
    Ok(report)
}

/// One GET on a new connection, closed afterwards.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Failure> {
    let spec = LoadSpec {
        path: path.to_owned(),
        timeout,
        ..LoadSpec::default()
    };
    Client {
        addr,
        from: None,
        spec: &spec,
    }
    .request()
    .await
}

/// One client of a run: where it sends, from where, what.
struct Client<'a> {
    addr: SocketAddr,
    from: Option<IpAddr>,
    spec: &'a LoadSpec,
}

impl Client<'_> {
    /// One request on a new connection, closed afterwards.
    async fn request(&self) -> Result<Response, Failure> {
        let attempt = async {
            let mut sender = self.connect().await?;
            self.send(&mut sender, false).await
        };
        tokio::time::timeout(self.spec.timeout, attempt)
            .await
            .unwrap_or(Err("timeout"))
    }

    /// One request on the client's kept-alive connection, opening a new
    /// one when there is none or the server closed it (as a draining
    /// server does).
    async fn keep_alive_request(
        &self,
        connection: &mut Option<SendRequest<Empty<Bytes>>>,
    ) -> Result<Response, Failure> {
        let attempt = async {
            let reusable = match connection.take() {
                Some(mut sender) => sender.ready().await.is_ok().then_some(sender),
                None => None,
            };
            let mut sender = match reusable {
                Some(sender) => sender,
                None => self.connect().await?,
            };
            let response = self.send(&mut sender, true).await?;
            if !response.closing {
                *connection = Some(sender);
            }
            Ok(response)
        };
        tokio::time::timeout(self.spec.timeout, attempt)
            .await
            .unwrap_or(Err("timeout"))
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, Failure> {
        let stream = match self.from {
            None => TcpStream::connect(self.addr).await,
            Some(from) => {
                let socket = match from {
                    IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                }
                .map_err(|error| io_failure(&error))?;
                socket
                    .bind(SocketAddr::new(from, 0))
                    .map_err(|error| io_failure(&error))?;
                socket.connect(self.addr).await
            }
        }
        .map_err(|error| io_failure(&error))?;
        // Small requests, answered at once: don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| hyper_failure(&error))?;
        tokio::spawn(async move {
            // Errors here show up again on the request, where they are counted.
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        sender: &mut SendRequest<Empty<Bytes>>,
        keep_alive: bool,
    ) -> Result<Response, Failure> {
        let mut request = hyper::Request::builder()
            .method(self.spec.method.clone())
            .uri(self.spec.path.as_str())
            .header(HOST, "127.0.0.1")
            .header(CONNECTION, if keep_alive { "keep-alive" } else { "close" });
        if self.spec.method == hyper::Method::POST {
            request = request.header(CONTENT_LENGTH, "0");
        }
        let request = request.body(Empty::new()).map_err(|_| "error")?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| hyper_failure(&error))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let worker = header(&self.spec.count_by);
        let closing =
            header(CONNECTION.as_str()).is_some_and(|value| value.eq_ignore_ascii_case("close"));
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| hyper_failure(&error))?
            .to_bytes();
        Ok(Response {
            status,
            worker,
            body: String::from_utf8_lossy(&body).into_owned(),
            closing,
        })
    }
}

fn io_failure(error: &std::io::Error) -> Failure {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "refused",
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => "reset",
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionAborted => "closed",
        _ => "error",
    }
}

/// Hyper wraps the socket's error; the io error underneath says more.
fn hyper_failure(error: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return io_failure(io);
        }
        source = inner.source();
    }
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        "closed"
    } else if error.is_timeout() {
        "timeout"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(counts: &[u64]) -> LoadReport {
        let mut report = LoadReport::default();
        for (worker, &n) in counts.iter().enumerate() {
            report.by_worker.insert((worker + 1).to_string(), n);
        }
        report
    }

    #[test]
    fn spread_matches_lesson_04() {
        assert_eq!(report(&[50, 50, 50, 50]).spread_pct(), 0.0);
        assert_eq!(report(&[56, 2, 2]).spread_pct(), 270.0);
        assert_eq!(report(&[]).spread_pct(), 0.0);
    }

    #[test]
    fn quantiles_pick_a_measured_time() {
        let report = LoadReport {
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..LoadReport::default()
        };
        assert_eq!(report.quantile(0.5), Some(Duration::from_millis(51)));
        assert_eq!(report.quantile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(LoadReport::default().quantile(0.5), None);
    }

    #[tokio::test]
    async fn load_is_only_sent_to_loopback() {
        let elsewhere: SocketAddr = ([192, 0, 2, 1], 80).into();
        let refused = run(elsewhere, &LoadSpec::default(), &ProgressBar::hidden()).await;
        assert!(matches!(refused, Err(LoadError::NotLoopback(_))));
    }

    #[tokio::test]
    async fn a_closed_port_counts_as_refused() -> std::io::Result<()> {
        // Bind then drop: the port is free and nothing listens on it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let spec = LoadSpec {
            requests: 3,
            connections: 1,
            ..LoadSpec::default()
        };
        let report = run(addr, &spec, &ProgressBar::hidden())
            .await
            .expect("loopback");
        assert_eq!((report.sent, report.failed, report.refused()), (3, 3, 3));
        Ok(())
    }

    #[tokio::test]
    async fn finished_wakes_its_waiter_on_the_tick_that_reaches_the_count() {
        // One thread: `yield_now` lets the waiter run before the test goes
        // on, so "still waiting" is a fact, not a race.
        let finished = Finished::default();
        let waiter = tokio::spawn({
            let finished = finished.clone();
            async move { finished.reached(3, Duration::from_secs(5)).await }
        });
        for _ in 0..2 {
            finished.tick();
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "woke after 2 of 3");
        finished.tick();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("not woken by the third tick")
            .expect("the waiter panicked")
            .expect("reached in time");
    }

    #[tokio::test]
    async fn finished_gives_up_when_the_count_never_comes() {
        let finished = Finished::default();
        finished.tick();
        let gave_up = finished.reached(2, Duration::from_millis(1)).await;
        assert!(
            matches!(
                gave_up,
                Err(LoadError::NeverFlowing {
                    done: 1,
                    count: 2,
                    ..
                })
            ),
            "{gave_up:?}"
        );
    }

    #[tokio::test]
    async fn a_run_ticks_once_per_request_failed_ones_too() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port");
        let spec = LoadSpec {
            requests: 4,
            connections: 2,
            ..LoadSpec::default()
        };
        let finished = Finished::default();
        run(addr, &spec, &finished).await.expect("loopback");
        assert_eq!(*finished.0.borrow(), 4);
    }
}
