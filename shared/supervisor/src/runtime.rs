//! Which tokio runtime a process runs on: sized by its role.
//!
//! `#[tokio::main]` gives every process a thread per core. For one server
//! that is right; for a cluster it multiplies. Four workers on two cores
//! would run eight runtime threads (plus the primary's), all competing for
//! the same two cores: every wake-up may land on another thread, and the
//! kernel spends its time switching between them. Node never has the
//! problem, because a Node process runs one event loop — one worker per
//! core is the whole rule.
//!
//! So the primary decides how many threads each worker's runtime gets: the
//! cores this process may use divided by the desired number of workers, at
//! least one ([`worker_threads`]), or what `--worker-threads` says. It
//! passes the figure in the worker's environment ([`WorkerEnv::threads`]), and a
//! worker with one thread runs tokio's current-thread runtime: no thread
//! hand-offs at all, like Node's loop.
//!
//! The primary runs one thread too, like Node's primary: its jobs —
//! events, IPC, restarts, the lesson's own code — are coordination, and on
//! a multi-threaded runtime each message from a worker crossed from the
//! thread that read it to the thread waiting for it. The one job that
//! needs a core's worth of room, round-robin's accept loop, has a thread
//! of its own (see `cluster/dispatch.rs`).
//!
//! Measured here (two cores), each against its limit in the same run:
//! workers moved from a thread per core to one thread took lesson 04's
//! new-connection ratio from about 0.68 to 0.8–0.9 of one plain process
//! (four workers); the one-thread primary took a 64-byte IPC round trip
//! from about 3 times a bare socketpair's to about 1.2 times.

use std::future::Future;
use std::io;
use std::process::ExitCode;

use tokio::runtime::{Builder, Runtime};

use crate::role::{BadWorkerId, Role, WorkerId, role};
use crate::worker_env::WorkerEnv;

/// Threads per worker so that `workers` workers fill `cores` cores and no
/// more: `cores / workers`, at least one.
pub fn worker_threads(workers: usize, cores: usize) -> usize {
    (cores / workers.max(1)).max(1)
}

/// Builds the runtime this process's role calls for: the primary gets one
/// thread; a worker gets the threads its primary gave it (one thread
/// means the current-thread runtime, and a worker started by hand, with no
/// figure, gets tokio's default of a thread per core).
pub fn build() -> io::Result<Runtime> {
    let threads = match role() {
        Ok(Role::Worker(_)) => WorkerEnv::threads(),
        _ => Some(1),
    };
    match threads {
        Some(1) => Builder::new_current_thread().enable_all().build(),
        Some(threads) => Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
        None => Runtime::new(),
    }
}

/// What a lesson's `main` does instead of `#[tokio::main]`: runs `run` on
/// the runtime [`build`] picks and turns its result into the exit status,
/// an error printed as one line.
pub fn block_on<E: std::fmt::Display>(run: impl Future<Output = Result<(), E>>) -> ExitCode {
    match build() {
        Ok(runtime) => crate::exit_code(runtime.block_on(run)),
        Err(error) => crate::exit_code(Err(format!(
            "cannot start the async runtime: {error} (the system may be out of threads or memory)"
        ))),
    }
}

/// The `main` of a lesson whose answer has two halves: builds the runtime
/// this process's role calls for, runs `primary`, or `worker` with the
/// worker's id, and turns the result into the exit status (as
/// [`block_on`]). Lessons 01 and 02 write the branch out in their own
/// `main`, because there the branch is the lesson.
pub fn lesson_main<A, E, P, W>(
    args: A,
    primary: impl FnOnce(A) -> P,
    worker: impl FnOnce(A, WorkerId) -> W,
) -> ExitCode
where
    P: Future<Output = Result<(), E>>,
    W: Future<Output = Result<(), E>>,
    E: std::fmt::Display + From<BadWorkerId>,
{
    block_on(async move {
        match role()? {
            Role::Primary => primary(args).await,
            Role::Worker(id) => worker(args, id).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_share_the_cores_and_never_get_none() {
        assert_eq!(worker_threads(1, 2), 2);
        assert_eq!(worker_threads(2, 2), 1);
        assert_eq!(worker_threads(4, 2), 1);
        assert_eq!(worker_threads(2, 8), 4);
        assert_eq!(worker_threads(3, 8), 2);
        assert_eq!(worker_threads(0, 8), 8);
    }
}
