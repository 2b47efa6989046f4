//! Handing file descriptors from the primary to a worker across `exec`.
//!
//! Every descriptor std, tokio and socket2 open is close-on-exec, which is
//! what we want almost always: a descriptor that leaks into an unrelated child
//! (a test's `redis-server`, say) keeps a socket open that should have closed.
//! So the flag is cleared only in the child, between fork and exec
//! (`keep_across_exec`, called from `pre_exec`), and the worker sets it
//! again as soon as it has taken the descriptor (`take_inherited`), so its
//! own children do not inherit it either. The descriptor's number travels in
//! an environment variable.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::libc;

/// Clears close-on-exec on `fd`. For use between fork and exec only: it calls
/// nothing but `fcntl`, which is async-signal-safe.
pub(crate) fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor number has no memory-safety preconditions;
    // a bad number is reported as EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Something the worker's environment should have carried, and did not.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("{var} is not set: this process was not started by a cluster primary")]
    Missing { var: &'static str },
    #[error("{var}={value:?} is not a file descriptor number")]
    NotANumber { var: &'static str, value: String },
    #[error("{var}={fd} is not an open file descriptor in this process: {cause}")]
    NotOpen {
        var: &'static str,
        fd: RawFd,
        cause: io::Error,
    },
}

/// Takes ownership of the descriptor named by environment variable `var`,
/// after checking it is open, and marks it close-on-exec again.
pub(crate) fn take_inherited(var: &'static str) -> Result<OwnedFd, InheritError> {
    let value = std::env::var(var).map_err(|_| InheritError::Missing { var })?;
    let fd: RawFd = value
        .parse()
        .map_err(|_| InheritError::NotANumber { var, value })?;
    // SAFETY: fcntl on a number is harmless; it tells us whether it is open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        let cause = io::Error::last_os_error();
        return Err(InheritError::NotOpen { var, fd, cause });
    }
    // SAFETY: the descriptor is open, and the primary gave it to this process
    // alone; nothing else in this process owns it (we take each variable once).
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: see above: open, and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
