//! The flaky upstream: a service the workers depend on, whose health the
//! learner switches over HTTP.
//!
//! ```text
//! curl -X POST 'localhost:PORT/mode?set=fail'     # every call: 500 at once
//! curl -X POST 'localhost:PORT/mode?set=slow'     # every call: a long answer
//! curl -X POST 'localhost:PORT/mode?set=healthy'  # every call: 200 at once
//! curl localhost:PORT/stats                       # what it saw
//! ```
//!
//! A slow answer is written in ten steps, the way real work reports
//! progress. If the caller goes away meanwhile, the next step cannot be
//! written and the upstream stops working on it: it counts the call as
//! *cancelled*. A caller that gives up without cancelling — racing its
//! call against a timer, as a promise-based client does — leaves the
//! upstream working to the end, for nobody: *completed*, though nobody
//! was waiting.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// How the upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Healthy,
    Fail,
    Slow,
}

/// What the upstream saw.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
}

/// The upstream's state, shared with its server task.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    mode: AtomicU8,
    pub stats: Stats,
    slow: Duration,
}

impl Upstream {
    /// Starts the upstream on a free port of 127.0.0.1; a slow answer takes
    /// `slow`.
    pub async fn start(slow: Duration) -> std::io::Result<Arc<Upstream>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let upstream = Arc::new(Upstream {
            addr: listener.local_addr()?,
            mode: AtomicU8::new(Mode::Healthy as u8),
            stats: Stats::default(),
            slow,
        });
        let serving = Arc::clone(&upstream);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let upstream = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let upstream = Arc::clone(&upstream);
                        async move { Ok::<_, Infallible>(upstream.answer(request)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(upstream)
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::Fail,
            2 => Mode::Slow,
            _ => Mode::Healthy,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// The counters, as JSON.
    pub fn stats_json(&self) -> serde_json::Value {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        serde_json::json!({
            "mode": self.mode(),
            "started": read(&self.stats.started),
            "completed": read(&self.stats.completed),
            "cancelled": read(&self.stats.cancelled),
            "failed": read(&self.stats.failed),
        })
    }

    fn answer(
        self: &Arc<Self>,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Chunks> {
        let path = request.uri().path();
        let query = request.uri().query().unwrap_or_default();
        match path {
            "/mode" => {
                let mode = match query.strip_prefix("set=") {
                    Some("healthy") => Mode::Healthy,
                    Some("fail") => Mode::Fail,
                    Some("slow") => Mode::Slow,
                    _ => return reply(400, "set=healthy|fail|slow\n"),
                };
                self.set_mode(mode);
                reply(200, &format!("{}\n", self.stats_json()))
            }
            "/stats" => reply(200, &format!("{}\n", self.stats_json())),
            _ => {
                self.stats.started.fetch_add(1, Ordering::Relaxed);
                match self.mode() {
                    Mode::Healthy => {
                        self.stats.completed.fetch_add(1, Ordering::Relaxed);
                        reply(200, "ok\n")
                    }
                    Mode::Fail => {
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        reply(500, "failing, as asked\n")
                    }
                    Mode::Slow => self.slowly(),
                }
            }
        }
    }

    // ANCHOR: slowly
    /// Ten steps of work, each written as it is done; a caller that goes
    /// away stops the work at the next step.
    fn slowly(self: &Arc<Self>) -> hyper::Response<Chunks> {
        let (steps, chunks) = mpsc::channel(1);
        let upstream = Arc::clone(self);
        tokio::spawn(async move {
            for step in 1..=10u8 {
                tokio::time::sleep(upstream.slow / 10).await;
                if steps
                    .send(Bytes::from(format!("step {step}\n")))
                    .await
                    .is_err()
                {
                    // hyper dropped the body: the caller has gone.
                    upstream.stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            upstream.stats.completed.fetch_add(1, Ordering::Relaxed);
        });
        hyper::Response::new(Chunks { chunks })
    }
    // ANCHOR_END: slowly
}

fn reply(status: u16, text: &str) -> hyper::Response<Chunks> {
    let (sender, chunks) = mpsc::channel(1);
    let _ = sender.try_send(Bytes::from(text.to_owned()));
    let mut response = hyper::Response::new(Chunks { chunks });
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// A body written as it is produced: each message on the channel is a
/// chunk, and the end of the channel is the end of the body.
#[derive(Debug)]
pub struct Chunks {
    chunks: mpsc::Receiver<Bytes>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}
