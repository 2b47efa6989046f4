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

/// Set by the primary in each worker's environment: the worker's id. The
/// rest of what it sets is in [`crate::worker_env`].
pub const WORKER_ID_VAR: &str = "CLUSTER_WORKER_ID";
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
