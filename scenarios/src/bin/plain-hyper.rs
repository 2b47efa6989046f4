//! The limit `bench-lb` measures the cluster against: one multi-threaded
//! hyper process serving the same answer, with no supervisor at all.
//!
//! A cluster's requests per second mean little alone — this machine's
//! figure moves by a fifth from one run to the next — but their ratio to
//! what one plain process does on the same machine, in the same run, says
//! what the cluster costs. This program is that process: it accepts on
//! its own socket, serves every connection with hyper's HTTP/1 on tokio's
//! default runtime (a thread per core), and answers like lesson 04's
//! workers do (`hello from worker 1`, with `x-worker-id: 1`).
//!
//! It speaks the scenario runner's protocol just enough to be driven like
//! a lesson: it takes `--port`, `--host` (and ignores `--events`), prints
//! `start`, `listening` and `ready` as JSON lines, and exits on SIGTERM.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// One plain hyper process: the limit a cluster is measured against.
#[derive(Debug, Parser)]
#[command(name = "plain-hyper", version)]
struct Args {
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Accepted for the runner's sake; events are always JSON.
    #[arg(long, default_value = "json")]
    events: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    scenarios::exit_code(run(Args::parse()).await)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    let addr = listener.local_addr()?;
    let mut term = signal(SignalKind::terminate())?;
    println!(
        "{}",
        serde_json::json!({ "event": "start", "pid": std::process::id(), "addr": addr })
    );
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "id": 1, "addr": addr })
    );
    // Nothing to warm up: the socket is accepting, so it is ready now.
    println!("{}", serde_json::json!({ "event": "ready", "id": 1 }));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept:
                // pause a moment rather than spin on the same error.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = term.recv() => return Ok(()),
        };
        tokio::spawn(async move {
            let service = service_fn(|_request| async {
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from_static(b"hello from worker 1\n")));
                response
                    .headers_mut()
                    .insert("x-worker-id", hyper::header::HeaderValue::from_static("1"));
                Ok::<_, Infallible>(response)
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
