//! `fd-limit --unguarded` in shared mode: every worker meets EMFILE, retries
//! with backoff many times, and says so once per burst — not once per
//! failed `accept`. The scenario `10-limitations-fd-limit-unguarded` checks
//! the numbers; this test counts the lines, which a scenario cannot.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn emfile_is_said_once_per_burst_however_often_accept_fails() {
    let mut child = match Command::new(env!("CARGO_BIN_EXE_lesson-10"))
        .args([
            "fd-limit",
            "--workers",
            "2",
            "--sched",
            "shared",
            "--unguarded",
            "--limit",
            "64",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--events",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!("starting lesson-10: {error}"),
    };
    // Bounded: the demo ends by itself in a few seconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fd-limit did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = match child.wait_with_output() {
        Ok(output) => output,
        Err(error) => panic!("{error}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines = |what: &str| {
        stderr
            .lines()
            .filter(|l| l.contains(what))
            .collect::<Vec<_>>()
    };
    // One line per worker: each had one burst.
    let failed = lines("accept failed: Too many open files");
    assert_eq!(failed.len(), 2, "{stderr}");
    assert!(
        failed.iter().any(|l| l.starts_with("[worker 1]")),
        "{stderr}"
    );
    assert!(
        failed.iter().any(|l| l.starts_with("[worker 2]")),
        "{stderr}"
    );
    // The worker that took the next connection closed its burst with one
    // line, which counts the attempts the single line stood for.
    let again = lines("accepting again after");
    assert!(!again.is_empty(), "{stderr}");
    for line in again {
        let attempts: u64 = line
            .split("after ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(attempts >= 3, "one line for {attempts} failures: {line}");
    }
}
