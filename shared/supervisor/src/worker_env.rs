//! What the primary tells a worker before its code runs: the environment.
//!
//! A worker is the primary's own binary, started again; the only way to
//! tell it who it is before it can read its channel is the environment
//! (Node does the same with `NODE_UNIQUE_ID` and `NODE_CHANNEL_FD`). Both
//! sides of that conversation are here, in one type: `WorkerEnv::write_to`
//! is what the primary sets, and the readers below are all a worker takes
//! from it, so a variable cannot be renamed or retyped on one side only.
//!
//! The worker reads each part when it needs it, not all at once: a process
//! started by hand with a stray `CLUSTER_WORKER_ID` should fail on the first
//! thing it really lacks (its channel), and a worker that never listens
//! never looks for a socket.

use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use crate::inherit::{InheritError, take_inherited};
use crate::listen::Sched;
pub use crate::role::WORKER_ID_VAR;
use crate::role::WorkerId;

/// The generation the worker belongs to: 1 at start, one more for each
/// rolling restart (see [`crate::Rollout`]).
const GENERATION_VAR: &str = "CLUSTER_GENERATION";
/// The worker's end of its IPC socketpair (newline-delimited JSON).
pub const IPC_FD_VAR: &str = "CLUSTER_IPC_FD";
/// Which scheduling strategy the primary chose (`rr`, `shared`, `reuseport`).
const SCHED_VAR: &str = "CLUSTER_SCHED";
/// The address the cluster serves on (port 0 already resolved).
const ADDR_VAR: &str = "CLUSTER_ADDR";
/// The threads the worker's runtime should have (see [`crate::runtime`]).
const THREADS_VAR: &str = "CLUSTER_WORKER_THREADS";
/// Shared: the inherited listening socket. Reuseport: the socket of the
/// worker's slot, bound by the primary (see [`crate::listen`]).
const LISTEN_FD_VAR: &str = "CLUSTER_LISTEN_FD";
/// Round-robin: the socket accepted connections arrive on.
const HANDLES_FD_VAR: &str = "CLUSTER_HANDLES_FD";

/// Everything the primary puts in one worker's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    pub id: WorkerId,
    pub generation: u32,
    /// The worker's end of the channel, as numbered in the worker.
    pub ipc_fd: RawFd,
    pub sched: Sched,
    pub addr: SocketAddr,
    /// Threads for the worker's runtime.
    pub threads: usize,
    /// How connections reach the worker.
    pub connections: Connections,
}

/// The descriptor a worker takes its connections from, by strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Round-robin: the socket the primary passes accepted ones on.
    Handles(RawFd),
    /// Shared and reuseport: a listening socket of its own copy.
    Listener(RawFd),
}

/// A variable the primary set that does not say what it should.
#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?} from the primary is not valid")]
pub struct BadEnv {
    pub var: &'static str,
    pub value: String,
}

/// Why a worker could not take something from its environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Inherit(#[from] InheritError),
    #[error(transparent)]
    Bad(#[from] BadEnv),
}

impl WorkerEnv {
    /// The primary's side: sets every variable on the worker's command.
    /// The descriptors named here must also be kept open across `exec`.
    pub(crate) fn write_to(&self, command: &mut tokio::process::Command) {
        command
            .env(WORKER_ID_VAR, self.id.to_string())
            .env(GENERATION_VAR, self.generation.to_string())
            .env(IPC_FD_VAR, self.ipc_fd.to_string())
            .env(SCHED_VAR, self.sched.to_string())
            .env(ADDR_VAR, self.addr.to_string())
            .env(THREADS_VAR, self.threads.to_string());
        match self.connections {
            Connections::Handles(fd) => command.env(HANDLES_FD_VAR, fd.to_string()),
            Connections::Listener(fd) => command.env(LISTEN_FD_VAR, fd.to_string()),
        };
    }

    /// The release this worker runs; 1 for a process started by hand.
    pub fn generation() -> u32 {
        std::env::var(GENERATION_VAR)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(1)
    }

    /// Threads for this worker's runtime, if the primary said (a worker
    /// started by hand gets tokio's default).
    pub fn threads() -> Option<usize> {
        std::env::var(THREADS_VAR)
            .ok()
            .and_then(|value| value.parse().ok())
            .filter(|&threads| threads > 0)
    }

    /// Takes the channel to the primary (once).
    pub(crate) fn take_ipc() -> Result<OwnedFd, InheritError> {
        take_inherited(IPC_FD_VAR)
    }

    /// The strategy and the address the cluster serves on.
    pub(crate) fn sched_and_addr() -> Result<(Sched, SocketAddr), EnvError> {
        Ok((parsed(SCHED_VAR)?, parsed(ADDR_VAR)?))
    }

    /// Takes the descriptor `sched` brings connections on (once).
    pub(crate) fn take_connections(sched: Sched) -> Result<OwnedFd, InheritError> {
        match sched {
            Sched::RoundRobin => take_inherited(HANDLES_FD_VAR),
            Sched::Shared | Sched::ReusePort => take_inherited(LISTEN_FD_VAR),
        }
    }
}

fn parsed<T: std::str::FromStr>(var: &'static str) -> Result<T, EnvError> {
    let value = std::env::var(var).map_err(|_| InheritError::Missing { var })?;
    Ok(value.parse().map_err(|_| BadEnv { var, value })?)
}
