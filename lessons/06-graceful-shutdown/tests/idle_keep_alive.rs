//! A client holding an idle keep-alive connection when the drain begins
//! must see a clean close (end-of-file), never a reset.
//!
//! This is the half of graceful shutdown a load test cannot see: no request
//! is in flight, so nothing "fails", yet a reset here is what makes a proxy
//! or an HTTP client library retry, log an error, or drop a request it was
//! just about to send. It is checked with a raw socket, because an HTTP
//! client library would hide the difference between the two.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use scenarios::lesson::Lesson;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_cleanly() -> Result<(), Box<dyn std::error::Error>>
{
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_lesson-06"));
    // A grace period far longer than the read below waits: if the worker
    // kept the idle connection open until it was killed at the deadline,
    // the read would time out and the test would fail.
    let args = ["--workers", "2", "--grace", "60"].map(String::from);
    let mut lesson = Lesson::start(bin, &args)?;
    let addr = lesson.addr().await?;
    let listening = lesson
        .wait_until(Duration::from_secs(20), |events| {
            events.iter().filter(|e| e["event"] == "listening").count() >= 2
        })
        .await;
    assert!(listening, "the workers did not start listening");

    // One request on a keep-alive connection, then silence.
    let mut stream = tokio::task::spawn_blocking(move || -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(addr)?;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = [0u8; 4096];
        let n = stream.read(&mut response)?;
        let head = String::from_utf8_lossy(&response[..n]);
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "unexpected response: {head}"
        );
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "the connection should stay open: {head}"
        );
        Ok(stream)
    })
    .await??;

    lesson.signal(Signal::SIGTERM)?;

    let read = tokio::task::spawn_blocking(move || {
        // Bounded, and far shorter than --grace: the drain must close idle
        // connections by itself, not leave them to the deadline's kill.
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut rest = [0u8; 1024];
        stream.read(&mut rest)
    })
    .await?;
    match read {
        Ok(0) => {}
        Ok(n) => panic!("expected end-of-file, got {n} more bytes"),
        Err(error) if error.kind() == ErrorKind::ConnectionReset => {
            panic!("the idle connection was reset, not closed: {error}")
        }
        Err(error) => panic!("reading the idle connection failed: {error}"),
    }

    let status = lesson.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the primary should exit 0"
    );
    lesson.kill_all().await;
    assert!(
        lesson.alive_workers().is_empty(),
        "a worker outlived the primary"
    );
    Ok(())
}
