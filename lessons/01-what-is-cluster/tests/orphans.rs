//! No orphans: when the primary is killed with SIGKILL — no handler runs, no
//! cleanup — every worker must still be gone within 2 seconds.
//!
//! Each worker exits when its IPC channel reaches end-of-file, and the
//! kernel sends it SIGKILL (`PR_SET_PDEATHSIG`) as a backstop. The test
//! watches each worker with a pidfd, which becomes readable when the process
//! exits: an event to await, so no polling and no sleeps.

use std::io::{BufRead, BufReader};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Opens a pidfd for `pid`; `None` if the process is already gone.
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

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
    let watched: Vec<(i32, OwnedFd)> = pids
        .iter()
        .filter_map(|&pid| pidfd(pid).map(|fd| (pid, fd)))
        .collect();
    assert_eq!(watched.len(), 3, "every worker was alive before the kill");

    kill(Pid::from_raw(primary.id() as i32), Signal::SIGKILL)?;
    primary.wait()?;

    // Each pidfd turns readable when its process exits; give them 2 s in all.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut alive = Vec::new();
    for (pid, fd) in &watched {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(fd), PollFlags::POLLIN)];
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO),
        )?;
        if ready == 0 {
            alive.push(*pid);
        }
    }
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
