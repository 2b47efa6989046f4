//! No orphans: when the primary is killed with SIGKILL — no handler runs, no
//! cleanup — every worker must still be gone within 2 seconds.
//!
//! Each worker exits when its IPC channel reaches end-of-file, and the
//! kernel sends it SIGKILL (`PR_SET_PDEATHSIG`) as a backstop. The test
//! watches each worker with a pidfd, which becomes readable when the process
//! exits: an event to await, so no polling and no sleeps.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use scenarios::gone::{still_running_after, watch};
use serde_json::Value;

// Round-robin workers also lose their handle channel when the primary dies;
// shared-socket workers have only the IPC channel and PR_SET_PDEATHSIG. Both
// must end.
#[test]
fn sigkill_of_the_primary_leaves_no_worker_alive_round_robin()
-> Result<(), Box<dyn std::error::Error>> {
    sigkill_primary_then_expect_no_workers("rr")
}

#[test]
fn sigkill_of_the_primary_leaves_no_worker_alive_shared() -> Result<(), Box<dyn std::error::Error>>
{
    sigkill_primary_then_expect_no_workers("shared")
}

fn sigkill_primary_then_expect_no_workers(sched: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut primary = Command::new(env!("CARGO_BIN_EXE_lesson-01"))
        .args([
            "--workers",
            "3",
            "--port",
            "0",
            "--events",
            "json",
            "--sched",
            sched,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = primary.stdout.take().ok_or("no stdout")?;

    // Read events until all three workers listen, noting their pids.
    let mut pids = Vec::new();
    let mut listening = 0;
    for line in BufReader::new(stdout).lines() {
        let event: Value = serde_json::from_str(&line?)?;
        match event["event"].as_str() {
            Some("fork") => pids.push(event["pid"].as_i64().ok_or("fork without pid")? as i32),
            Some("listening") => listening += 1,
            _ => {}
        }
        if listening == 3 {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "expected 3 forks before 3 listening events");
    let watched: Vec<_> = pids.iter().filter_map(|&pid| watch(pid)).collect();
    assert_eq!(watched.len(), 3, "every worker was alive before the kill");

    kill(Pid::from_raw(primary.id() as i32), Signal::SIGKILL)?;
    primary.wait()?;

    // Each pidfd turns readable when its process exits; give them 2 s in all.
    let alive = still_running_after(&watched, Duration::from_secs(2));
    for pid in &alive {
        // Do not leave them behind either way.
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        alive.is_empty(),
        "workers still alive 2 s after the primary's SIGKILL: {alive:?}"
    );
    Ok(())
}
