//! The primary's side of listening: binding the port (one socket for
//! round-robin and shared, one per slot for reuseport), and making sure the
//! port is this cluster's alone before any worker starts.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use super::BACKLOG;

/// Binds the cluster's listening socket in the primary (round-robin and
/// shared). `SO_REUSEADDR` lets a restarted lesson rebind a port that still
/// has connections in TIME_WAIT.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// `SO_REUSEPORT`: a socket bound to `addr` with the option set. The primary
/// keeps one that never listens, to resolve port 0 and hold the port, and
/// binds one per worker slot, which the slot's worker listens on once ready.
pub(crate) fn bind_reuse_port(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Fails with `AddrInUse` if another process serves `addr` already.
///
/// Any number of processes of one user may bind a port with `SO_REUSEPORT`,
/// so a second cluster started on a busy port would start silently and take
/// half the traffic. A socket bound *without* `SO_REUSEPORT` cannot join
/// them: its bind fails while anyone listens there. (`SO_REUSEADDR` is set,
/// as for the real sockets, so connections of an earlier run still in
/// TIME_WAIT do not count as "in use".)
pub(crate) fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(()); // the kernel picks a free one
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())
}

/// A reuseport cluster's claim on its address, held for the cluster's life.
///
/// [`check_port_free`] sees a port as busy only once somebody *listens*
/// there, and a reuseport slot listens only when its first worker is ready:
/// two clusters started at the same instant both passed the check and split
/// the traffic (19 runs in 20). A check followed by a bind can always race,
/// so the claim is one atomic act instead: binding a Unix socket in Linux's
/// abstract namespace, named after the address. Only one process can hold
/// a name; the kernel frees it when that process ends, `kill -9` included,
/// so nothing is left behind to clean up. It guards against clusters of this
/// workbook; any other program on the port is still found by
/// [`check_port_free`].
#[derive(Debug)]
pub(crate) struct PortClaim(#[allow(dead_code)] std::os::unix::net::UnixListener);

/// Claims `addr` for one reuseport cluster, or fails with `AddrInUse`.
/// Port 0 needs no claim: the kernel gives every cluster its own port.
pub(crate) fn claim_port(addr: SocketAddr) -> io::Result<Option<PortClaim>> {
    use std::os::linux::net::SocketAddrExt;
    if addr.port() == 0 {
        return Ok(None);
    }
    let name = format!("cluster-workbook/reuseport/{addr}");
    let unix = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    match std::os::unix::net::UnixListener::bind_addr(&unix) {
        Ok(claim) => Ok(Some(PortClaim(claim))),
        Err(error) if error.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "Address already in use by another cluster of this workbook",
        )),
        Err(error) => Err(error),
    }
}
