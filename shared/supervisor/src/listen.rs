//! How connections reach workers: the scheduling strategies behind one
//! `listen()`.
//!
//! Node lets workers call `server.listen(port)` as if each owned the port; the
//! primary makes that true in one of two ways, chosen once, before the first
//! fork (`cluster.schedulingPolicy`, or `NODE_CLUSTER_SCHED_POLICY`):
//!
//! * [`Sched::RoundRobin`] — the primary owns the listening socket, accepts
//!   every connection and passes each to the next worker (see
//!   [`crate::handles`]). Node's default everywhere but Windows. Note what it
//!   means: the primary *does* handle traffic, at accept time.
//! * [`Sched::Shared`] — every worker inherits the same listening socket and
//!   calls `accept` on it; the kernel decides who wins each connection, and on
//!   Linux it tends to favour a few processes.
//!
//! * [`Sched::ReusePort`] — every worker binds its *own* listening socket
//!   to the same port with `SO_REUSEPORT`, and the kernel hashes each new
//!   connection to one of them. What nginx and most Rust servers use; Node
//!   does not offer it.
//!
//! All three distribute *connections*, not requests: a keep-alive client
//! stays with the worker that accepted it. The primary binds the address
//! itself before forking, so port 0 resolves to one port that every worker
//! shares, and the strategy cannot change afterwards. (For `SO_REUSEPORT` the
//! primary's socket is bound but never listens: it reserves the port, and
//! the kernel only hands connections to sockets that listen.)

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::event::WorkerId;
use crate::handles::HandleReceiver;
use crate::inherit::{InheritError, take_inherited};
use crate::role::{HANDLES_FD_VAR, LISTEN_FD_VAR};

// ANCHOR: sched
/// Who accepts connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sched {
    /// The primary accepts and hands each connection to the next worker.
    #[default]
    #[serde(rename = "rr")]
    RoundRobin,
    /// Workers accept on one inherited socket; the kernel picks the winner.
    #[serde(rename = "shared")]
    Shared,
    /// Each worker listens on its own `SO_REUSEPORT` socket; the kernel
    /// hashes connections across them.
    #[serde(rename = "reuseport")]
    ReusePort,
}
// ANCHOR_END: sched

impl FromStr for Sched {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rr" | "round-robin" => Ok(Sched::RoundRobin),
            "shared" | "none" => Ok(Sched::Shared),
            "reuseport" | "reuse-port" => Ok(Sched::ReusePort),
            other => Err(format!(
                "unknown scheduling strategy {other:?}: use rr (round-robin), shared or reuseport"
            )),
        }
    }
}

impl fmt::Display for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sched::RoundRobin => "rr",
            Sched::Shared => "shared",
            Sched::ReusePort => "reuseport",
        })
    }
}

/// Binds the cluster's listening socket in the primary (round-robin and
/// shared). `SO_REUSEADDR` lets a restarted lesson rebind a port that still
/// has connections in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// `SO_REUSEPORT`: a socket bound to `addr` with the option set. The primary
/// keeps one that never listens, to resolve port 0 and hold the port; each
/// worker makes one and listens on it.
pub(crate) fn bind_reuse_port(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A worker's accept stream, whatever the strategy.
#[derive(Debug)]
pub struct Listener {
    id: WorkerId,
    addr: SocketAddr,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Connections passed by the primary (round-robin).
    Handles(HandleReceiver),
    /// A listening socket: a copy of the shared one, or our own (reuseport).
    Socket(TcpListener),
}

/// The worker could not set up its listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(transparent)]
    Inherit(#[from] InheritError),
    #[error("cannot use the inherited socket: {0}")]
    Io(#[from] io::Error),
}

impl Listener {
    /// Builds the worker's listener from what the primary put in the
    /// environment. Must run inside the runtime.
    pub(crate) fn from_env(
        id: WorkerId,
        sched: Sched,
        addr: SocketAddr,
    ) -> Result<Self, ListenError> {
        let source = match sched {
            Sched::RoundRobin => {
                Source::Handles(HandleReceiver::new(take_inherited(HANDLES_FD_VAR)?)?)
            }
            Sched::Shared => {
                let std_listener = std::net::TcpListener::from(take_inherited(LISTEN_FD_VAR)?);
                // from_std requires non-blocking mode (else a blocked runtime).
                std_listener.set_nonblocking(true)?;
                Source::Socket(TcpListener::from_std(std_listener)?)
            }
            Sched::ReusePort => {
                let socket = bind_reuse_port(addr)?;
                socket.listen(1024)?;
                socket.set_nonblocking(true)?;
                Source::Socket(TcpListener::from_std(socket.into())?)
            }
        };
        Ok(Listener { id, addr, source })
    }

    /// The worker this listener belongs to.
    pub fn worker_id(&self) -> WorkerId {
        self.id
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next connection; `Ok(None)` when no more will come (round-robin:
    /// the primary closed our handle channel).
    pub async fn accept(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        match &self.source {
            Source::Socket(listener) => listener.accept().await.map(Some),
            Source::Handles(handles) => match handles.recv().await? {
                None => Ok(None),
                Some((stream, peer)) => Ok(Some((TcpStream::from_std(stream)?, peer))),
            },
        }
    }

    /// True when connections are handed to us by the primary (round-robin):
    /// after a stop signal, keep accepting until the primary closes the
    /// channel, since it may have sent one just before telling us to stop.
    pub fn is_handed_connections(&self) -> bool {
        matches!(self.source, Source::Handles(_))
    }
}
