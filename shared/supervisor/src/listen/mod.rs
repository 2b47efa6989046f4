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
//! A third is not a `cluster` policy at all:
//!
//! * [`Sched::ReusePort`] — every worker accepts on its *own* socket, all
//!   bound to the same port with `SO_REUSEPORT`, and the kernel hashes each
//!   new connection to one of them. nginx offers it as an opt-in
//!   (`listen … reuseport`; its default is one inherited socket), and Node's
//!   `net` has `listen({ reusePort: true })` since v22.12/v23.1, but
//!   `cluster` has no such scheduling policy.
//!
//! All three distribute *connections*, not requests: a keep-alive client
//! stays with the worker that accepted it. The primary binds the address
//! itself before forking, so port 0 resolves to one port that every worker
//! shares, and the strategy cannot change afterwards.
//!
//! # Who owns the reuseport sockets
//!
//! With `SO_REUSEPORT`, closing a listening socket resets every connection
//! still queued on it (unless `net.ipv4.tcp_migrate_req` is set, Linux 5.14+,
//! which needs root). If each worker bound its own socket, a worker that
//! dies or is replaced would take its queue with it. So the primary binds
//! one socket per worker *slot* and keeps its copy; the worker in the slot
//! inherits it, and so does its replacement. The queue outlives any one
//! worker, and a replacement drains it.
//!
//! # Ready gates accepting
//!
//! A worker takes no connection before it says it is ready
//! ([`crate::Worker::ready`]): its [`Listener::accept`] waits until then.
//! What that buys differs by strategy. Round-robin: the primary hands
//! connections only to ready workers, so none waits on a worker that is
//! still warming up. Shared: connections wait in the one queue, where ready
//! workers take them. Reuseport: a slot's socket starts *listening* only
//! when its first worker is ready — the kernel never hashes a connection to
//! a socket that does not listen — but once it listens, connections hashed
//! to it wait for whichever worker of that slot accepts.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use socket2::Socket;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

use tokio::sync::{mpsc, watch};

use crate::handles::HandleReceiver;
use crate::ipc::{self, ToPrimary};
use crate::role::WorkerId;

mod bind;
pub(crate) use self::bind::{PortClaim, bind, bind_reuse_port, check_port_free, claim_port};

/// The accept queue of every listening socket we make.
const BACKLOG: i32 = 1024;

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

/// A worker's accept stream, whatever the strategy.
#[derive(Debug)]
pub struct Listener {
    id: WorkerId,
    addr: SocketAddr,
    source: Source,
    /// Becomes true when the worker says it is ready; no accept before.
    ready: watch::Receiver<bool>,
    /// Becomes true when the primary asks every worker to close its
    /// listening socket, the first step of stopping the cluster.
    stop_accepting: watch::Receiver<bool>,
    /// Tells the primary when the socket is closed.
    to_primary: ipc::Sender<ToPrimary>,
    /// Heartbeats from the primary, answered by [`crate::http::Server`].
    probes: Option<Probes>,
}

#[derive(Debug)]
enum Source {
    /// Connections passed by the primary (round-robin).
    Handles(HandleReceiver),
    /// A listening socket: the shared one, or our slot's (reuseport).
    Socket(std::sync::Mutex<SocketState>),
}

/// Where a worker's own listening socket is in its life.
#[derive(Debug)]
enum SocketState {
    /// As inherited: made to listen at ready ([`Listener::socket_to_listen_on`]).
    Inherited(Socket),
    /// Handed to tokio at the first accept.
    Accepting(Arc<TcpListener>),
    /// Closed for good: the cluster is stopping ([`Listener::close_socket`]).
    Closed,
}

/// Heartbeats waiting to be answered: each is a correlation id to reply to.
#[derive(Debug)]
pub(crate) struct Probes {
    pub(crate) queue: mpsc::Receiver<u64>,
    pub(crate) reply: ipc::Sender<ToPrimary>,
}

/// The worker could not set up its listener.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot use the inherited socket: {0}")]
    Io(#[from] io::Error),
}

impl Listener {
    /// Builds the worker's listener on `inherited`, the descriptor the
    /// primary gave it for `sched` (see [`crate::worker_env`]). Must run
    /// inside the runtime.
    pub(crate) fn inherited(
        id: WorkerId,
        sched: Sched,
        addr: SocketAddr,
        inherited: OwnedFd,
        signals: ListenerSignals,
        probes: Option<Probes>,
    ) -> Result<Self, ListenError> {
        let source = match sched {
            Sched::RoundRobin => Source::Handles(HandleReceiver::new(inherited)?),
            Sched::Shared | Sched::ReusePort => Source::Socket(std::sync::Mutex::new(
                SocketState::Inherited(Socket::from(inherited)),
            )),
        };
        Ok(Listener {
            id,
            addr,
            source,
            ready: signals.ready,
            stop_accepting: signals.stop_accepting,
            to_primary: signals.to_primary,
            probes,
        })
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
    /// the primary closed our handle channel). Waits until the worker is
    /// ready before taking the first.
    pub async fn accept(&self) -> io::Result<Option<(TcpStream, SocketAddr)>> {
        let mut ready = self.ready.clone();
        // An error means the worker is going away; accepting then is moot.
        if ready.wait_for(|&yes| yes).await.is_err() {
            return Ok(None);
        }
        match &self.source {
            Source::Handles(handles) => match handles.recv().await? {
                None => Ok(None),
                Some((stream, peer)) => Ok(Some((TcpStream::from_std(stream)?, peer))),
            },
            Source::Socket(state) => {
                let listener = {
                    let mut state = lock(state)?;
                    match &*state {
                        SocketState::Accepting(listener) => Arc::clone(listener),
                        SocketState::Closed => return Ok(None),
                        SocketState::Inherited(_) => {
                            let SocketState::Inherited(socket) =
                                std::mem::replace(&mut *state, SocketState::Closed)
                            else {
                                unreachable!("matched just above");
                            };
                            let listener = Arc::new(start_listening(socket)?);
                            *state = SocketState::Accepting(Arc::clone(&listener));
                            listener
                        }
                    }
                };
                listener.accept().await.map(Some)
            }
        }
    }

    /// Takes every connection already waiting in the accept queue, without
    /// waiting for more: the last batch before a draining worker lets go
    /// of its listening socket.
    ///
    /// Closing a listening socket resets the connections queued on it, and
    /// under a stream of reconnecting clients the queue is seldom empty:
    /// a worker whose turn to run came late found dozens there (a stop
    /// under 32 keep-alive clients reset up to 27 requests at once, shared
    /// and reuseport alike). Each one taken here is answered instead, with
    /// `Connection: close`. What arrives between the last take and the
    /// close is still reset: microseconds, not the worker's whole delay.
    /// Round-robin's dispatcher does the same in the primary.
    pub fn accept_queued(&self) -> Vec<TcpStream> {
        let Source::Socket(state) = &self.source else {
            return Vec::new();
        };
        match lock(state).as_deref() {
            Ok(SocketState::Accepting(listener)) => take_queued(listener),
            _ => Vec::new(),
        }
    }

    /// Resolves when the primary asks this worker to close its listening
    /// socket: the cluster is stopping. Never, in round-robin, where the
    /// primary closes the only listening socket itself.
    pub async fn stop_requested(&self) {
        let mut stop = self.stop_accepting.clone();
        if matches!(self.source, Source::Handles(_)) || stop.wait_for(|&yes| yes).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Closes this worker's listening socket for good, after taking what is
    /// queued on it (returned, to be served as usual), and tells the
    /// primary. Its keep-alive connections are not touched: the primary
    /// tells every worker to drain only once every worker has closed its
    /// socket. Draining first — telling keep-alive clients to reconnect —
    /// sent them into sockets that were about to close, and under a stream
    /// of clients a stop reset a few requests in one run of ten.
    pub fn close_socket(&self) -> Vec<TcpStream> {
        let Source::Socket(state) = &self.source else {
            return Vec::new();
        };
        let taken = match lock(state) {
            Ok(mut state) => match std::mem::replace(&mut *state, SocketState::Closed) {
                SocketState::Accepting(listener) => take_queued(&listener),
                SocketState::Inherited(_) | SocketState::Closed => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        let _ = self.to_primary.send(&ToPrimary::NotAccepting);
        taken
    }

    /// True when connections are handed to us by the primary (round-robin):
    /// after a stop signal, keep accepting until the primary closes the
    /// channel, since it may have sent one just before telling us to stop.
    pub fn is_handed_connections(&self) -> bool {
        matches!(self.source, Source::Handles(_))
    }

    /// A second descriptor for the inherited socket, for [`crate::Worker::ready`]
    /// to make it listen *before* it tells the primary: then "ready" means
    /// the port takes connections. Without it a reuseport slot listened
    /// only at the first `accept`, a moment after the primary had heard
    /// "ready": a second cluster's busy-port check found the port free in
    /// that moment (a test caught it), and a client connecting then, with
    /// no other slot listening, would have been refused. (A shared socket listens already; listening again changes
    /// nothing.) `None` in round-robin, where connections come from the
    /// primary.
    pub(crate) fn socket_to_listen_on(&self) -> io::Result<Option<Socket>> {
        match &self.source {
            Source::Handles(_) => Ok(None),
            Source::Socket(state) => match &*lock(state)? {
                SocketState::Inherited(socket) => socket.try_clone().map(Some),
                SocketState::Accepting(_) | SocketState::Closed => Ok(None),
            },
        }
    }

    /// The heartbeat queue, for the server that answers it. Taken once.
    pub(crate) fn take_probes(&mut self) -> Option<Probes> {
        self.probes.take()
    }
}

/// `listen(2)` with the cluster's backlog. Safe to call again on a socket
/// that listens already.
pub(crate) fn start_listening_now(socket: &Socket) -> io::Result<()> {
    socket.listen(BACKLOG)
}

/// Makes the inherited socket listen (a shared socket listens already; a
/// reuseport slot's socket starts here, which puts it in the kernel's
/// hashing group) and hands it to tokio.
fn start_listening(socket: Socket) -> io::Result<TcpListener> {
    // Usually listening since `Worker::ready`; if that failed, this fails
    // again and says why, to the code that accepts.
    start_listening_now(&socket)?;
    // from_std requires non-blocking mode (else a blocked runtime).
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// Every connection waiting in `listener`'s queue, without waiting for more.
fn take_queued(listener: &TcpListener) -> Vec<TcpStream> {
    let mut taken = Vec::new();
    // A borrowed view of the non-blocking socket: `accept` returns
    // WouldBlock once the queue is empty.
    let socket = socket2::SockRef::from(listener);
    while let Ok((stream, _)) = socket.accept() {
        let stream: std::net::TcpStream = stream.into();
        if stream.set_nonblocking(true).is_ok()
            && let Ok(stream) = TcpStream::from_std(stream)
        {
            taken.push(stream);
        }
    }
    taken
}

fn lock(
    state: &std::sync::Mutex<SocketState>,
) -> io::Result<std::sync::MutexGuard<'_, SocketState>> {
    state
        .lock()
        .map_err(|_| io::Error::other("listener lock poisoned"))
}

/// What a worker's [`Listener`] hears from the rest of the worker.
#[derive(Debug)]
pub(crate) struct ListenerSignals {
    pub(crate) ready: watch::Receiver<bool>,
    pub(crate) stop_accepting: watch::Receiver<bool>,
    pub(crate) to_primary: ipc::Sender<ToPrimary>,
}
