//! What can go wrong running a cluster, each failure named for what
//! happened and saying what to do about it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::ipc::SendError;
use crate::role::WorkerId;

/// What can go wrong running a cluster.
///
/// The underlying OS error is a field called `cause`, shown in the message,
/// not a `source`: anyhow prints a chain of sources after the message, and
/// the same "Address already in use" would otherwise appear twice.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot listen on {addr}: {cause}{}", bind_hint(cause))]
    Bind { addr: SocketAddr, cause: io::Error },
    #[error("cannot find this program's own executable to start workers: {0}")]
    CurrentExe(io::Error),
    #[error("cannot start worker {id}: {cause}")]
    Spawn { id: WorkerId, cause: io::Error },
    #[error(
        "cannot start the round-robin dispatcher's thread: {0} (the system may be out of threads or memory)"
    )]
    Dispatcher(io::Error),
    #[error("cannot watch for signals: {0}")]
    Signals(io::Error),
    #[error("worker {0} is not running")]
    NoSuchWorker(WorkerId),
    #[error("the cluster is stopping")]
    Stopping,
    #[error(
        "sticky routing needs --sched rr: with {0} the kernel picks the worker, not the primary"
    )]
    StickyNeedsRoundRobin(crate::listen::Sched),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot signal worker {id}: {cause}")]
    Kill { id: WorkerId, cause: nix::Error },
    #[error(
        "gave up: a worker crashed again after {restarts} restarts within {}s, so the cluster stopped instead of restarting it in a loop; fix the crash reported above and start again",
        window.as_secs()
    )]
    CrashLoop { restarts: u32, window: Duration },
    #[error(
        "gave up: a worker failed its health checks again after {restarts} replacements within {}s, so the cluster stopped instead of replacing workers in a loop; see the unhealthy lines above",
        window.as_secs()
    )]
    HealthLoop { restarts: u32, window: Duration },
    #[error("{} within the {}s grace period, so killed: still serving (a request longer than the grace), or unable to drain at all (stopped, or its event loop blocked)", forced(ids), grace.as_secs_f32())]
    ForcedStop { ids: Vec<WorkerId>, grace: Duration },
    #[error(
        "{how} asked to stop at once: {} killed before draining; requests in flight on them were cut",
        workers(ids)
    )]
    CutShort {
        ids: Vec<WorkerId>,
        how: &'static str,
    },
    #[error("the supervising task ended unexpectedly")]
    SupervisorGone,
}

fn bind_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            " (another process uses this port: choose another with --port, or --port 0 for any free port)"
        }
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose a port above 1024, or --port 0)"
        }
        io::ErrorKind::AddrNotAvailable => " (this machine has no such address: use 127.0.0.1)",
        _ => "",
    }
}

fn forced(ids: &[WorkerId]) -> String {
    format!("{} did not stop", workers(ids))
}

/// "worker 3" or "workers 3, 4".
fn workers(ids: &[WorkerId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    match ids {
        [_] => format!("worker {}", names.join(", ")),
        _ => format!("workers {}", names.join(", ")),
    }
}

/// Why a worker could not be replaced.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("worker {0} is not in service (gone, or already leaving)")]
    NotInService(WorkerId),
    #[error("worker {0} is already being replaced")]
    AlreadyReplacing(WorkerId),
    #[error("the cluster is stopping")]
    Stopping,
    #[error("cannot start a replacement: {0}")]
    Spawn(ClusterError),
    #[error("replacement worker {new} failed ({why}); worker {old} keeps serving")]
    Failed {
        old: WorkerId,
        new: WorkerId,
        why: String,
    },
}

/// Why a rolling restart did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("a rolling restart to generation {running} is running already: this one is ignored")]
    AlreadyRunning { running: u32 },
    #[error("the cluster is stopping")]
    Stopping,
}
