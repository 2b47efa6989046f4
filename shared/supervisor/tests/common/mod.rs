//! The worker every supervisor test runs, and the helpers the tests share.
//!
//! A test needs a worker binary, and a test in this package cannot rely on
//! any other binary being built. So each test binary is its own worker: the
//! cluster re-executes it with `--exact worker_main --ignored`, which makes
//! the test harness run only `worker_main` (ignored in a normal run, so it
//! is not counted as a test); it calls [`play_worker`], which plays the
//! worker. `TEST_WORKER_MODE` picks the behaviour.

#![allow(dead_code)] // each test binary uses a different part of this

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::time::Duration;

use supervisor::http::{Server, text};
use supervisor::{ClusterOptions, EventsFormat, Role, Worker, WorkerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const MODE: &str = "TEST_WORKER_MODE";

/// Long enough for a slow CI machine; a bound, so no test can hang.
pub const WITHIN: Duration = Duration::from_secs(20);

/// The header timeout of workers in `short_headers` mode.
pub const SHORT_HEADERS: Duration = Duration::from_millis(300);

/// Plays a worker when re-executed by a test's cluster; a no-op otherwise.
pub fn play_worker() -> Result<(), Box<dyn std::error::Error>> {
    if supervisor::role()? == Role::Primary {
        return Ok(());
    }
    let mode = std::env::var(MODE).unwrap_or_default();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        if mode == "garbage" {
            write_garbage_on_the_channel()?;
        }
        let worker = std::sync::Arc::new(Worker::connect().await?);
        let listener = worker.listen().await?;
        if mode == "never_ready" {
            // Listens, never says ready: the primary's ready timeout must act.
            worker.disconnected().await;
            return Ok(());
        }
        worker.ready()?;
        let id = worker.id();
        // Answer questions with our id, except worker 2 in "stall" mode,
        // which reads them and never answers.
        let stall = mode == "stall" && id == WorkerId(2);
        let mut questions = worker.questions().ok_or("questions taken twice")?;
        let answering = std::sync::Arc::clone(&worker);
        tokio::spawn(async move {
            while let Some(question) = questions.recv().await {
                if !stall {
                    let _ = answering.reply(
                        &question,
                        &serde_json::json!({ "id": id, "echo": question.body }),
                    );
                }
            }
        });
        let server = match mode.as_str() {
            "max1" => Server::new().max_connections(1),
            "short_headers" => Server::new().header_timeout(SHORT_HEADERS),
            _ => Server::new(),
        };
        server
            .serve(
                listener,
                move |_| async move { text(200, format!("{id}")) },
                worker.disconnected(),
            )
            .await;
        Ok(())
    })
}

/// What a buggy worker might write: not JSON, JSON of no known message,
/// bytes that are not UTF-8. Written straight to the inherited descriptor,
/// before `Worker::connect` takes it over.
fn write_garbage_on_the_channel() -> io::Result<()> {
    let fd: i32 = std::env::var(supervisor::worker_env::IPC_FD_VAR)
        .map_err(io::Error::other)?
        .parse()
        .map_err(io::Error::other)?;
    // SAFETY: the descriptor is open (the primary put it there) and is only
    // borrowed here: ManuallyDrop keeps it open for Worker::connect.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.write_all(b"this is not json\n{\"type\":\"no_such_message\"}\n\xff\xfe\xfd\n")?;
    file.flush()
}

pub fn options(workers: usize, mode: &str) -> ClusterOptions {
    ClusterOptions {
        workers,
        events: EventsFormat::Quiet,
        handle_signals: false,
        grace: Duration::from_secs(5),
        worker_args: Some(
            [
                "--exact",
                "worker_main",
                "--ignored",
                "--nocapture",
                "--quiet",
            ]
            .map(OsString::from)
            .to_vec(),
        ),
        worker_env: vec![(MODE.to_string(), mode.to_string())],
        ..ClusterOptions::default()
    }
}

/// One GET on a new connection; the whole response as text.
pub async fn get(addr: std::net::SocketAddr) -> io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
