//! Who am I? The primary and its workers run the same binary.
//!
//! Node marks a worker by putting `NODE_UNIQUE_ID` in its environment before
//! it forks; `cluster.isPrimary` is simply "that variable is absent". We do the
//! same with [`WORKER_ID_VAR`]. The primary does not call `fork()` and carry on
//! in the child, as C servers do: a tokio process is multi-threaded, and a
//! child of `fork()` gets only the calling thread, with every lock another
//! thread held frozen forever. Spawning (fork immediately followed by exec) is
//! safe, so the primary re-executes its own binary and the environment tells
//! the new process what it is.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A worker's id: 1 for the first fork, then 2, 3 … in fork order, never
/// reused (Node's `worker.id`). A replacement gets a new id, so "worker 3
/// died and worker 5 took its place" stays unambiguous in every log. It
/// lives here, with the role, because it is what makes a process a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub u32);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Set by the primary in each worker's environment: the worker's id.
pub const WORKER_ID_VAR: &str = "CLUSTER_WORKER_ID";
/// The generation the worker belongs to: 1 at start, one more for each
/// rolling restart (see [`crate::Cluster::rolling_restart`]).
pub const GENERATION_VAR: &str = "CLUSTER_GENERATION";
/// The worker's end of its IPC socketpair (newline-delimited JSON).
pub const IPC_FD_VAR: &str = "CLUSTER_IPC_FD";
/// Which scheduling strategy the primary chose (`rr`, `shared`).
pub const SCHED_VAR: &str = "CLUSTER_SCHED";
/// Shared strategy: the inherited listening socket. Reuseport: the socket
/// of the worker's slot, bound by the primary (see [`crate::listen`]).
pub const LISTEN_FD_VAR: &str = "CLUSTER_LISTEN_FD";
/// Round-robin strategy: the socket accepted connections arrive on.
pub const HANDLES_FD_VAR: &str = "CLUSTER_HANDLES_FD";

/// Which side of the cluster this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started by a person (or a test): owns the workers.
    Primary,
    /// Started by the primary, with this id.
    Worker(WorkerId),
}

impl Role {
    /// Node's `cluster.isPrimary` (formerly `isMaster`, deprecated since 16).
    pub fn is_primary(self) -> bool {
        self == Role::Primary
    }

    /// Node's `cluster.isWorker`.
    pub fn is_worker(self) -> bool {
        !self.is_primary()
    }
}

/// The environment said this is a worker, but not in a way we can read.
#[derive(Debug, thiserror::Error)]
#[error("{WORKER_ID_VAR}={0:?} is not a worker id; unset it to start a primary")]
pub struct BadWorkerId(String);

/// Reads this process's role from its environment.
pub fn role() -> Result<Role, BadWorkerId> {
    match std::env::var(WORKER_ID_VAR) {
        Err(_) => Ok(Role::Primary),
        Ok(raw) => raw
            .parse()
            .map(|id| Role::Worker(WorkerId(id)))
            .map_err(|_| BadWorkerId(raw)),
    }
}
/// The address the cluster serves on (port 0 already resolved).
pub const ADDR_VAR: &str = "CLUSTER_ADDR";
