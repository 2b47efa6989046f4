//! Waiting for processes to end, without polling: the no-orphans checks.
//!
//! A pidfd (Linux 5.3+) turns readable when its process exits — zombie or
//! not, so it works under an init that never reaps — and `poll` waits on it.
//! Tests open one per process while it is still alive, then wait on all of
//! them with one deadline.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// A process to wait for.
#[derive(Debug)]
pub struct Watched {
    pub pid: i32,
    fd: OwnedFd,
}

/// Opens a pidfd for `pid`; `None` if the process is already gone.
pub fn watch(pid: i32) -> Option<Watched> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor we now own.
    (fd >= 0).then(|| Watched {
        pid,
        fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
    })
}

/// Waits until every watched process has exited or `within` has passed;
/// returns the pids still running then.
pub fn still_running_after(watched: &[Watched], within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    let mut alive = Vec::new();
    for process in watched {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(process.fd.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
        if !matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            alive.push(process.pid);
        }
    }
    alive
}

/// The pids whose parent is `parent`, read from `/proc`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // The fourth field, after the `(comm)` that may hold spaces.
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
