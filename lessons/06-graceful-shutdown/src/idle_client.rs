//! A keep-alive client that goes quiet, to watch what a drain does to it.
//!
//! The client a drain is most likely to treat badly is the one doing
//! nothing: it holds an open keep-alive connection and has no request in
//! flight, so a server that counts requests does not see it at all. The
//! scenario runner's load generator only sends, so it cannot play that
//! client; `--idle-client` makes the primary play it instead. It connects
//! to the cluster's own port like any client, makes one request on a
//! keep-alive connection, reports `idle_client`, and then sends nothing
//! more. When the connection ends it reports `idle_client_closed` with how
//! it ended: `"end of file"` (the server closed it cleanly), `"reset"` (the
//! server's kernel threw it away), or `"still open"` if nothing happened
//! within the time it was given.
//!
//! It uses a plain socket and reads the response by hand, because an HTTP
//! client library would hide the one thing it is here to see: a clean end
//! of file and a reset look alike once a library has retried.

use std::io;
use std::time::Duration;

use supervisor::{Cluster, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

// ANCHOR: idle
/// Opens one keep-alive connection, makes one request, stays idle, and
/// reports how the connection ended (waiting at most `within`).
pub async fn watch(cluster: Cluster, within: Duration) -> io::Result<()> {
    let mut events = cluster.subscribe();
    let mut stream = TcpStream::connect(cluster.addr()).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let worker = read_response(&mut stream).await?;
    let fields = serde_json::json!({ "worker": worker });
    let says = format!("idle client: one request answered by worker {worker}; now silent");
    cluster.report("idle_client", &fields, &says);

    // Silence, until the server ends the connection. Note when the cluster
    // began to stop, to say how long after that the connection closed.
    let mut stopping_at = None;
    let mut rest = [0u8; 1024];
    let deadline = Instant::now() + within;
    let how = loop {
        tokio::select! {
            // Events first: the cluster says it is stopping before any
            // worker starts to drain, so the note is taken before the close.
            biased;
            event = events.next(), if stopping_at.is_none() => {
                if let Ok(Event::Shutdown { .. }) = event {
                    stopping_at = Some(Instant::now());
                }
            }
            read = stream.read(&mut rest) => break match read {
                Ok(0) => "end of file",
                Ok(_) => "more bytes (not a close)",
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => "reset",
                Err(_) => "error",
            },
            () = tokio::time::sleep_until(deadline) => break "still open",
        }
    };
    let after_ms = stopping_at.map(|at| at.elapsed().as_millis() as u64);
    let fields = serde_json::json!({ "how": how, "after_ms": after_ms });
    let says = match after_ms {
        Some(ms) => format!("idle client: {how}, {ms} ms after the cluster began to stop"),
        None => format!("idle client: {how}"),
    };
    cluster.report("idle_client_closed", &fields, &says);
    Ok(())
}
// ANCHOR_END: idle

/// Reads one response (headers, then a `Content-Length` body) and returns
/// the worker that sent it.
async fn read_response(stream: &mut TcpStream) -> io::Result<String> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&bytes, b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|value| value.trim().to_owned())
    };
    let length: usize = header("content-length:")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    Ok(header("x-worker-id:").unwrap_or_else(|| "?".into()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
