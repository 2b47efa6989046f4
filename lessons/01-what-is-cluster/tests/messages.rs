//! What a user who gets something wrong reads: one line that says what
//! happened and what to do, each cause said once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const LESSON: &str = env!("CARGO_BIN_EXE_lesson-01");

#[test]
fn a_ready_timeout_of_zero_is_refused_before_anything_starts()
-> Result<(), Box<dyn std::error::Error>> {
    let mut lesson = Command::new(LESSON)
        .args(["--ready-timeout", "0", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    // Accepted, 0 would start a cluster that kills its workers and stays
    // up: bound the wait, so a regression fails instead of hanging.
    if let Some(watched) = scenarios::gone::watch(lesson.id() as i32) {
        let running = scenarios::gone::still_running_after(&[watched], Duration::from_secs(10));
        if !running.is_empty() {
            let _ = lesson.kill();
        }
    }
    let output = lesson.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("would kill every worker before it could be ready"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn a_worker_environment_with_a_bad_channel_says_its_cause_once()
-> Result<(), Box<dyn std::error::Error>> {
    // fd 0 is open (stdin) but is no socket a primary made.
    let output = Command::new(LESSON)
        .env("CLUSTER_WORKER_ID", "1")
        .env("CLUSTER_IPC_FD", "0")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CLUSTER_IPC_FD"), "{stderr}");
    let cause = "Operation not permitted";
    assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    Ok(())
}

#[test]
fn a_forced_stop_of_a_stopped_worker_does_not_blame_a_request()
-> Result<(), Box<dyn std::error::Error>> {
    let mut primary = Command::new(LESSON)
        .args(["--workers", "1", "--port", "0", "--events", "json"])
        .args(["--grace", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = primary.stdout.take().ok_or("no stdout")?;
    let mut worker = None;
    for line in BufReader::new(stdout).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        match event["event"].as_str() {
            Some("fork") => worker = event["pid"].as_i64(),
            Some("ready") => break,
            _ => {}
        }
    }
    let worker = Pid::from_raw(worker.ok_or("no fork event")? as i32);
    // A stopped worker cannot drain: no request is running on it.
    kill(worker, Signal::SIGSTOP)?;
    kill(Pid::from_raw(primary.id() as i32), Signal::SIGTERM)?;
    let output = primary.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = kill(worker, Signal::SIGKILL);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("did not stop within the 0.5s grace period"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unable to drain at all (stopped"),
        "{stderr}"
    );
    Ok(())
}
