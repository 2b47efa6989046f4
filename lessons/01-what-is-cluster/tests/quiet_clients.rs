//! Clients that connect and send nothing must not lock everyone else out.
//!
//! A worker serves at most its file limit less a reserve (64 with `ulimit
//! -n 128`), and hyper closes a connection that sends no request only after
//! 30 s. Before, 100 quiet connections made every new client wait those
//! 30 s. Now a full worker closes the connections that have been quiet
//! longest: a real request gets its answer within seconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::resource::{Resource, setrlimit};
use serde_json::Value;

/// Far below hyper's 30 s header timeout, far above the second a full
/// worker waits before it may close a quiet connection.
const PATIENCE: Duration = Duration::from_secs(10);

struct Lesson(Child);

impl Drop for Lesson {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn quiet_clients_do_not_lock_out_a_real_one(sched: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lesson-01"));
    command
        .args([
            "--workers",
            "1",
            "--port",
            "0",
            "--events",
            "json",
            "--sched",
            sched,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and changes only the child.
    unsafe {
        command.pre_exec(|| {
            setrlimit(Resource::RLIMIT_NOFILE, 128, 128).map_err(std::io::Error::from)
        });
    }
    let mut lesson = Lesson(command.spawn()?);
    let stdout = lesson.0.stdout.take().ok_or("no stdout")?;
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        match event["event"].as_str() {
            Some("start") => addr = event["addr"].as_str().map(str::to_owned),
            Some("ready") => break,
            _ => {}
        }
    }
    let addr = addr.ok_or("no start event")?;

    // More quiet connections than the worker may hold.
    let quiet: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr))
        .collect::<Result<_, _>>()?;

    let mut client = TcpStream::connect(&addr)?;
    client.set_read_timeout(Some(PATIENCE))?;
    write!(
        client,
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    let read = client.read_to_string(&mut response);
    drop(quiet);
    read.map_err(|error| format!("no answer within {PATIENCE:?} ({sched}): {error}"))?;
    assert!(response.starts_with("HTTP/1.1 200"), "{sched}: {response}");
    Ok(())
}

#[test]
fn quiet_clients_do_not_lock_out_a_real_one_round_robin() -> Result<(), Box<dyn std::error::Error>>
{
    quiet_clients_do_not_lock_out_a_real_one("rr")
}

#[test]
fn quiet_clients_do_not_lock_out_a_real_one_shared() -> Result<(), Box<dyn std::error::Error>> {
    quiet_clients_do_not_lock_out_a_real_one("shared")
}

#[test]
fn quiet_clients_do_not_lock_out_a_real_one_reuseport() -> Result<(), Box<dyn std::error::Error>> {
    quiet_clients_do_not_lock_out_a_real_one("reuseport")
}
