//! Passing accepted connections from the primary to a worker (round-robin).
//!
//! In round-robin mode the primary owns the listening socket, accepts every
//! connection, and gives each to the next worker. A socket is a kernel
//! object, so "giving" means sending its descriptor in an `SCM_RIGHTS`
//! control message; the worker receives a new descriptor for the same
//! connection and the primary closes its own.
//!
//! Why a second socketpair, of type `SOCK_SEQPACKET`, instead of attaching
//! descriptors to the JSON stream? On a stream socket, control messages ride
//! on whichever bytes happen to be read with them, so the reader would have to
//! match descriptors to lines itself. A seqpacket socket keeps message
//! boundaries: one `recvmsg` returns exactly one connection — its descriptor
//! and, as the payload, the client's address. The JSON channel stays plain
//! text.
//!
//! The same socket carries acknowledgements back: the worker answers each
//! connection it takes with one byte. The primary counts what is handed out
//! and not yet acknowledged, and skips a worker at its bound (see
//! [`crate::cluster`]'s dispatcher): a worker that is stopped, blocked or
//! slow holds at most that many connections, and never the dispatcher.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A fresh pair for one worker: (the primary's end, the worker's end). Both
/// are close-on-exec; the worker's end is kept across exec explicitly.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        flags,
    )?)
}

/// The primary's end: sends connections, reads acknowledgements.
#[derive(Debug)]
pub struct HandleSender {
    fd: AsyncFd<OwnedFd>,
}

impl HandleSender {
    /// Wraps the primary's end of a [`pair`]. Must run inside the runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: we own `fd` and never close or replace it while the
        // AsyncFd holds it (it is dropped with the AsyncFd).
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(HandleSender { fd })
    }

    /// Sends `conn` (and the client's address) to the worker without
    /// waiting: `WouldBlock` when its queue is full, another error when it
    /// is gone. The caller closes its own copy of `conn` afterwards.
    pub fn try_send(&self, conn: RawFd, peer: SocketAddr) -> io::Result<()> {
        let mut payload = [0u8; 64];
        let len = {
            use std::io::Write;
            let mut cursor = io::Cursor::new(&mut payload[..]);
            // An address always fits in 64 bytes; a failure would only
            // shorten the text, which the worker then reads as unknown.
            let _ = write!(cursor, "{peer}");
            cursor.position() as usize
        };
        let fds = [conn];
        let iov = [IoSlice::new(&payload[..len])];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
        sendmsg::<()>(self.fd.as_raw_fd(), &iov, &cmsg, flags, None)
            .map(drop)
            .map_err(io::Error::from)
    }

    /// Waits for acknowledgements and returns how many arrived (at least
    /// one); `Ok(0)` once the worker has closed its end.
    pub async fn acks(&self) -> io::Result<u32> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| read_acks(inner.as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Tells the worker no more connections will come: it reads
    /// end-of-stream after the ones already queued. Acknowledgements can
    /// still arrive.
    pub fn close(&self) {
        // An error means the worker is gone already: nothing to tell.
        let _ = nix::sys::socket::shutdown(self.fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    }
}

/// Reads every acknowledgement waiting (one byte each, one per message).
fn read_acks(fd: RawFd) -> io::Result<u32> {
    let mut count = 0;
    let mut buf = [0u8; 16];
    loop {
        match nix::sys::socket::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(count),
            Ok(_) => count += 1,
            Err(nix::errno::Errno::EAGAIN) if count > 0 => return Ok(count),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The worker's end: receives connections.
#[derive(Debug)]
pub struct HandleReceiver {
    fd: AsyncFd<OwnedFd>,
}

impl HandleReceiver {
    /// Wraps the worker's inherited end. Must run inside the runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
        // SAFETY: as in `HandleSender::new`: owned, never closed underneath.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(HandleReceiver { fd })
    }

    /// The next connection the primary sent; `Ok(None)` once the primary
    /// closed its end (it has stopped dispatching to us, or died).
    pub async fn recv(&self) -> io::Result<Option<(std::net::TcpStream, SocketAddr)>> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| receive_one(inner.as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn receive_one(channel: RawFd) -> io::Result<Option<(std::net::TcpStream, SocketAddr)>> {
    let mut payload = [0u8; 128];
    let mut space = cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut payload)];
    let msg = recvmsg::<()>(
        channel,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    // The kernel could not give us the descriptor (we have no free one:
    // EMFILE): it closed the connection, and only the message is left.
    // Acknowledge it anyway — the primary must not count it as waiting for
    // ever — and say plainly that a connection was lost.
    let Ok(cmsgs) = msg.cmsgs() else {
        acknowledge(channel);
        return Err(io::Error::other(LostConnection));
    };
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just created this descriptor for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                // Keep the first; any extra (never sent by us) closes on drop.
                received.get_or_insert(owned);
            }
        }
    }
    let len = msg.bytes;
    let Some(fd) = received else {
        if len == 0 {
            return Ok(None); // end of stream: the primary closed its end
        }
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a handle message arrived without a descriptor",
        ));
    };
    let peer = std::str::from_utf8(&payload[..len])
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let stream = std::net::TcpStream::from(fd);
    stream.set_nonblocking(true)?;
    acknowledge(channel);
    Ok(Some((stream, peer)))
}

/// A connection handed to a worker with no free descriptor: the kernel
/// closed it on the way.
#[derive(Debug, thiserror::Error)]
#[error(
    "a connection handed to this worker was lost: it had no free file descriptor (EMFILE), so the kernel closed it"
)]
pub struct LostConnection;

impl LostConnection {
    /// True if `error` is this one.
    pub fn is(error: &io::Error) -> bool {
        error
            .get_ref()
            .is_some_and(|inner| inner.is::<LostConnection>())
    }
}

/// One more free place in our queue. If it cannot be sent (the primary is
/// gone), the primary has no count to keep anyway.
fn acknowledge(channel: RawFd) {
    let _ = nix::sys::socket::send(
        channel,
        &[1],
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_crosses_the_pair_and_still_works() -> io::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, peer) = listener.accept().await?;

        let (primary_end, worker_end) = pair()?;
        let sender = HandleSender::new(primary_end)?;
        let receiver = HandleReceiver::new(worker_end)?;
        sender.try_send(accepted.as_raw_fd(), peer)?;
        drop(accepted); // the primary's copy closes; the worker's lives on

        let (stream, got_peer) = receiver
            .recv()
            .await?
            .ok_or_else(|| io::Error::other("no handle"))?;
        assert_eq!(got_peer, peer);
        let mut stream = tokio::net::TcpStream::from_std(stream)?;
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");

        // The worker acknowledged the one connection it took.
        assert_eq!(sender.acks().await?, 1);
        // Closing says "no more": the worker reads end-of-stream, and the
        // primary sees the worker's end close when it lets go.
        sender.close();
        assert!(receiver.recv().await?.is_none());
        drop(receiver);
        assert_eq!(sender.acks().await?, 0);
        Ok(())
    }
}
