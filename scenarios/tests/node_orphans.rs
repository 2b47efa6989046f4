//! No Node process outlives its test, `kill -9` included.
//!
//! Two links hold the promise. The runner starts a twin's primary with
//! `PR_SET_PDEATHSIG`, so the primary dies with the runner; and
//! `shared/node-twin` starts every worker under `setpriv --pdeathsig
//! SIGKILL`, so a worker dies with its primary even when its event loop is
//! stuck and cannot see its IPC channel close. Each test breaks one link's
//! upstream end with SIGKILL and waits, on pidfds, for everything below it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use scenarios::gone::{children_of, still_running_after, watch};
use serde_json::Value;

/// How long the dead's descendants get to follow.
const FOLLOW_WITHIN: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> PathBuf {
    scenarios::workspace_root()
        .join("scenarios/tests/fixtures")
        .join(name)
}

/// Kills `child` and whatever pids are given, for a test that fails early.
fn cleanup(child: &mut Child, pids: &[i32]) {
    let _ = child.kill();
    let _ = child.wait();
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[test]
fn workers_stuck_in_a_busy_loop_die_with_their_primary() -> Result<(), Box<dyn std::error::Error>> {
    let node = scenarios::node::node()?;
    let mut primary = Command::new(node)
        .arg(fixture("stuck-workers.js"))
        .args(["--workers", "2", "--port", "0", "--events", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = primary.stdout.take().ok_or("no stdout")?;

    // Each worker sends one message, then blocks for good.
    let mut pids = Vec::new();
    let mut stuck = 0;
    for line in BufReader::new(stdout).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        match event["event"].as_str() {
            Some("fork") => pids.push(event["pid"].as_i64().ok_or("fork without pid")? as i32),
            Some("message") => stuck += 1,
            _ => {}
        }
        if stuck == 2 {
            break;
        }
    }
    let watched: Vec<_> = pids.iter().filter_map(|&pid| watch(pid)).collect();
    if watched.len() != 2 {
        cleanup(&mut primary, &pids);
        return Err(format!("expected 2 live workers, watched {}", watched.len()).into());
    }

    kill(Pid::from_raw(primary.id() as i32), Signal::SIGKILL)?;
    primary.wait()?;

    let alive = still_running_after(&watched, FOLLOW_WITHIN);
    for &pid in &alive {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(
        alive.is_empty(),
        "stuck workers still running {FOLLOW_WITHIN:?} after their primary's SIGKILL: {alive:?}"
    );
    Ok(())
}

#[test]
fn a_twin_and_its_workers_die_with_the_runner() -> Result<(), Box<dyn std::error::Error>> {
    let mut runner = Command::new(env!("CARGO_BIN_EXE_scenario"))
        .arg("01")
        .arg("--script")
        .arg(fixture("01-runner-killed.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = runner.stdout.take().ok_or("no stdout")?;

    // The live transcript says when both workers listen.
    let mut listening = false;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with("wait  2 × listening ✓") {
            listening = true;
            break;
        }
    }
    let primaries = children_of(runner.id() as i32);
    let workers: Vec<i32> = primaries.iter().flat_map(|&p| children_of(p)).collect();
    let everyone: Vec<i32> = primaries.iter().chain(&workers).copied().collect();
    if !listening || primaries.len() != 1 || workers.len() != 2 {
        cleanup(&mut runner, &everyone);
        return Err(format!(
            "expected the twin's primary and 2 workers under the runner (listening: {listening}), found {primaries:?} and {workers:?}"
        )
        .into());
    }
    let watched: Vec<_> = everyone.iter().filter_map(|&pid| watch(pid)).collect();

    let begun = Instant::now();
    kill(Pid::from_raw(runner.id() as i32), Signal::SIGKILL)?;
    runner.wait()?;

    let alive = still_running_after(&watched, FOLLOW_WITHIN);
    for &pid in &alive {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    assert!(
        alive.is_empty(),
        "node processes still running {:?} after the runner's SIGKILL: {alive:?}",
        begun.elapsed()
    );
    Ok(())
}
