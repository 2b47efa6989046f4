//! # Lesson 11 — How do you stop calling a failing dependency?
//!
//! **The short answer.** Put a circuit breaker around the call. Closed, it
//! counts failures; past a failure rate it *opens* and fails calls at once,
//! sparing the dependency and the callers' time; after a timeout it lets a
//! few *probe* calls through (half-open); they succeed and it closes, one
//! fails and it opens again. Every call has a deadline that cancels it.
//!
//! Run on its own, the lesson starts a flaky upstream beside the cluster and
//! tells the story: healthy, failing (the breakers open), half-open (only
//! the probes get through, and time out — cancelled), healthy again (they
//! close). Each worker has its own breaker, and the lesson shows them all.
//!
//! ```text
//! just lesson 11                  # the whole story
//! just lesson 11 --usual          # the usual answer: a timer race, and a half-open that lets all through
//! just lesson 11 --serve          # then flip the upstream yourself:
//! curl -X POST 'localhost:UPSTREAM/mode?set=fail'   # (the start-up line names UPSTREAM)
//! curl localhost:8000/            # 502 a few times per worker, then 503 at once
//! ```
//!
//! **What the usual answer gets wrong.** `Promise.race([call, timeout])`
//! abandons the call, it does not cancel it: the dependency keeps working
//! on requests nobody waits for. And its half-open state lets every
//! concurrent request through the moment the timeout ends.
//!
//! | Node                                              | Rust (this workbook)                                  |
//! |---------------------------------------------------|-------------------------------------------------------|
//! | `Promise.race([fetch(url), timeout(ms)])`         | `tokio::time::timeout(ms, call)`: dropped = cancelled |
//! | `fetch(url, { signal: AbortSignal.timeout(ms) })` | the same, which is the fix in Node too                |
//! | a breaker object per process (`opossum`)          | `circuit::Breaker`, one per worker                    |
//! | `breaker.fire()` / `breaker.opened`               | `breaker.admit()` → `Call(permit)` or `Refuse`        |

mod demo;
mod upstream;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use circuit::{Admission, Breaker, Policy, State};
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use supervisor::cli::parse_seconds;
use supervisor::http::{Response, json, serve};
use supervisor::{Cluster, ClusterArgs, Worker, WorkerId};

/// Where workers find the upstream.
const UPSTREAM_VAR: &str = "LESSON_UPSTREAM";

/// Lesson 11: a circuit breaker that cancels, and probes with care.
#[derive(Debug, Parser)]
#[command(name = "lesson-11", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// The usual answer: calls raced against a timer (not cancelled), and a
    /// half-open state that lets every call through
    #[arg(long)]
    usual: bool,

    /// Serve and wait, instead of telling the story
    #[arg(long)]
    serve: bool,

    /// A call's deadline: past it, the call is cancelled and counts as failed
    #[arg(long, default_value = "300ms", value_parser = parse_seconds)]
    timeout: Duration,

    /// How long the upstream takes in slow mode
    #[arg(long, default_value = "2s", value_parser = parse_seconds)]
    slow: Duration,

    /// Outcomes needed before the failure rate counts (the usual answer: failures in a row)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    min_calls: u32,

    /// The share of failed calls, 0 to 1, that opens the breaker
    #[arg(long, default_value_t = 0.5)]
    failure_rate: f64,

    /// How long an open breaker waits before it probes
    #[arg(long, default_value = "1s", value_parser = parse_seconds)]
    reset_timeout: Duration,

    /// Calls let through at once while half-open
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1000))]
    probes: u32,

    /// Failures in a row that open a breaker whatever its window holds
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    trip_after: u32,
}

impl Args {
    fn policy(&self) -> Policy {
        Policy {
            window: Duration::from_secs(10),
            min_calls: self.min_calls,
            failure_rate: self.failure_rate.clamp(0.0, 1.0),
            reset_timeout: self.reset_timeout,
            probes: self.probes,
            trip_after: self.trip_after,
        }
    }
}

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, worker)
}

// ANCHOR: primary
async fn primary(args: Args) -> anyhow::Result<()> {
    let upstream = upstream::Upstream::start(args.slow)
        .await
        .context("starting the upstream")?;
    let mut options = args.cluster.options();
    options
        .worker_env
        .push((UPSTREAM_VAR.into(), upstream.addr.to_string()));
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    cluster
        .wait_ready(workers, Duration::from_secs(30))
        .await
        .context("waiting for the workers")?;
    cluster.report(
        "upstream",
        &json!({ "addr": upstream.addr }),
        &format!(
            "the flaky upstream serves on http://{0}: POST /mode?set=fail|slow|healthy, GET /stats",
            upstream.addr
        ),
    );
    if args.serve {
        cluster.run().await?;
        return Ok(());
    }
    let told = demo::tell(&cluster, &upstream, &args).await;
    cluster.shutdown();
    cluster.run().await?;
    told
}
// ANCHOR_END: primary

// ANCHOR: worker
async fn worker(args: Args, id: WorkerId) -> anyhow::Result<()> {
    let upstream: SocketAddr = std::env::var(UPSTREAM_VAR)
        .context("the primary did not say where the upstream is")?
        .parse()
        .context("the upstream's address")?;
    // One breaker per worker: each learns about the upstream on its own.
    let breaker = if args.usual {
        Breaker::usual(args.policy())
    } else {
        Breaker::new(args.policy())
    };
    let worker = Arc::new(Worker::connect().await?);
    answer_state_questions(&worker, &breaker)?;
    let listener = worker.listen().await?;
    worker.ready()?;

    let (deadline, usual) = (args.timeout, args.usual);
    let handler = move |_request| {
        let breaker = breaker.clone();
        async move {
            let permit = match breaker.admit() {
                Admission::Call(permit) => permit,
                Admission::Refuse { state, retry_in } => return refused(state, retry_in, id),
            };
            let outcome = if usual {
                race_against_a_timer(upstream, deadline).await
            } else {
                // Past the deadline the call's future is dropped: its
                // connection closes, and the upstream stops working on it.
                tokio::time::timeout(deadline, call(upstream)).await
            };
            settle(permit, outcome, deadline, id)
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}

/// The usual answer's timeout: the call runs on its own (a spawned task,
/// like a promise), and only our wait for it ends at the deadline.
async fn race_against_a_timer(
    upstream: SocketAddr,
    deadline: Duration,
) -> Result<anyhow::Result<u16>, tokio::time::error::Elapsed> {
    let call = tokio::spawn(call(upstream));
    match tokio::time::timeout(deadline, call).await {
        Ok(joined) => Ok(joined.unwrap_or_else(|e| Err(e.into()))),
        Err(elapsed) => Err(elapsed), // the task goes on, for nobody
    }
}
// ANCHOR_END: worker

/// 503 at once, without calling: the body says why, `Retry-After` when.
fn refused(state: State, retry_in: Duration, id: WorkerId) -> Response {
    let error = match state {
        State::HalfOpen => {
            "circuit half-open: only a few probe calls reach the upstream, and this was not one"
        }
        _ => "circuit open: the upstream is failing, so it was not called",
    };
    let mut response = json(
        503,
        &json!({
            "error": error,
            "state": state,
            "retry_in_ms": retry_in.as_millis() as u64,
            "worker": id,
        }),
    );
    let seconds = retry_in.as_millis().div_ceil(1000).max(1);
    if let Ok(value) = hyper::header::HeaderValue::from_str(&seconds.to_string()) {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, value);
    }
    response
}

/// Reports the call's outcome to the breaker and answers the client.
fn settle(
    permit: circuit::Permit,
    outcome: Result<anyhow::Result<u16>, tokio::time::error::Elapsed>,
    deadline: Duration,
    id: WorkerId,
) -> Response {
    match outcome {
        Ok(Ok(status)) if (200..300).contains(&status) => {
            permit.succeeded();
            json(200, &json!({ "upstream": "ok", "worker": id }))
        }
        Ok(Ok(status)) => {
            permit.failed();
            json(
                502,
                &json!({ "error": format!("the upstream answered {status}"), "worker": id }),
            )
        }
        Ok(Err(error)) => {
            permit.failed();
            json(
                502,
                &json!({ "error": format!("the upstream failed: {error:#}"), "worker": id }),
            )
        }
        Err(_) => {
            permit.failed();
            json(
                504,
                &json!({
                    "error": format!("the upstream did not answer within {} ms", deadline.as_millis()),
                    "worker": id,
                }),
            )
        }
    }
}

// ANCHOR: call
/// One GET of the upstream's `/work`, to the end of its body.
async fn call(upstream: SocketAddr) -> anyhow::Result<u16> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/work")
        .header(hyper::header::HOST, "upstream")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok(status)
}
// ANCHOR_END: call

// ANCHOR: state
/// Answers the primary's "what state is your breaker in?".
fn answer_state_questions(worker: &Arc<Worker>, breaker: &Breaker) -> anyhow::Result<()> {
    let mut questions = worker.questions().context("questions taken twice")?;
    let (me, breaker) = (Arc::clone(worker), breaker.clone());
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            let state: State = breaker.state();
            let _ = me.reply(&question, &json!({ "state": state }));
        }
    });
    Ok(())
}
// ANCHOR_END: state
