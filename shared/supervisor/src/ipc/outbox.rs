//! The sending half of a channel: a line goes straight into the socket when
//! it can, and into a queue for the writer task only when it cannot.
//!
//! The first version queued every line for a writer task. That is simple,
//! and it costs a task wake-up per message — on a multi-threaded runtime
//! often a wake-up of *another thread*, which on a small virtual machine
//! costs more than the kernel's whole trip through the socket (the IPC
//! bench's profile: a third of the time in the scheduler). Most sends find
//! the socket with room to spare, so `send` now writes the line itself, a
//! non-blocking write under the outbox's lock. Only what the socket will not
//! take at once — a peer slow to read, a line bigger than the buffer left —
//! is queued, and the writer task finishes it when the socket has room.
//!
//! Order is kept by one rule: `send` writes directly only when nothing is
//! queued, and both `send` and the writer write with the lock held, so no
//! line ever overtakes or interleaves with another.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::Serialize;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};

use super::SendError;

/// The sending half. Cheap to clone; `send` never waits on a slow peer.
#[derive(Debug)]
pub struct Sender<T> {
    handle: Arc<Handle>,
    /// Shared, not copied: a sender is cloned for every message the
    /// primary sends.
    peer: Arc<str>,
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            handle: Arc::clone(&self.handle),
            peer: Arc::clone(&self.peer),
            _type: PhantomData,
        }
    }
}

/// What the senders hold. Dropped with the last clone, it tells the writer
/// to finish the queue and let go of the socket: queued lines are still
/// delivered, then the peer reads end-of-file.
#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.outbox().senders_gone = true;
        self.shared.wake_writer.notify_one();
    }
}

/// What the senders and the writer task share.
#[derive(Debug)]
struct Shared {
    socket: OwnedWriteHalf,
    outbox: Mutex<Outbox>,
    wake_writer: Notify,
}

impl Shared {
    /// The outbox, even if a thread panicked holding it: its fields are
    /// updated so that each step leaves them consistent.
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Default)]
struct Outbox {
    /// Lines the socket has not taken yet, oldest first.
    queue: VecDeque<Vec<u8>>,
    /// How much of the front line is already written.
    front_written: usize,
    /// Lines accepted by `send`, and lines completely written, ever: a
    /// flush waits for the second to reach what the first was.
    accepted: u64,
    written: u64,
    /// Flushes waiting, each for `written` to reach its number.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// A write failed: every later send fails too.
    closed: bool,
    senders_gone: bool,
}

impl Outbox {
    /// Writes queued bytes until the queue is empty or the socket is full;
    /// answers the flushes that are done. Called with the lock held.
    fn write_queued(&mut self, socket: &OwnedWriteHalf) -> io::Result<()> {
        while let Some(front) = self.queue.front() {
            match socket.try_write(&front[self.front_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.front_written += n;
                    if self.front_written == front.len() {
                        self.queue.pop_front();
                        self.front_written = 0;
                        self.written += 1;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        let written = self.written;
        let (done, waiting) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(wanted, _)| *wanted <= written);
        self.flushes = waiting;
        for (_, done) in done {
            let _ = done.send(());
        }
        Ok(())
    }

    /// A write failed: nothing queued will be delivered, and flushes hear
    /// so (their senders are dropped).
    fn close(&mut self) {
        self.closed = true;
        self.queue.clear();
        self.flushes.clear();
    }
}

/// Makes the sending half for `socket` and starts its writer task. Must
/// run inside a tokio runtime.
pub(super) fn sender<T>(socket: OwnedWriteHalf, peer: String) -> Sender<T> {
    let shared = Arc::new(Shared {
        socket,
        outbox: Mutex::new(Outbox::default()),
        wake_writer: Notify::new(),
    });
    tokio::spawn(write_queued(Arc::clone(&shared)));
    Sender {
        handle: Arc::new(Handle { shared }),
        peer: peer.into(),
        _type: PhantomData,
    }
}

/// The writer task: sleeps until something is queued, writes it as the
/// socket takes it, and stops when a write fails or when the senders are
/// gone and the queue is empty — dropping the last reference to the write
/// half then shuts the socket down for writing, which the peer reads as
/// end-of-file.
async fn write_queued(shared: Arc<Shared>) {
    loop {
        let notified = shared.wake_writer.notified();
        match shared.write_what_is_queued() {
            Writer::Stop => return,
            Writer::Sleep => notified.await,
            Writer::WaitForRoom => {
                if shared.socket.writable().await.is_err() {
                    shared.outbox().close();
                    return;
                }
            }
        }
    }
}

/// What the writer does next.
enum Writer {
    Stop,
    /// Nothing queued: wait for a sender to queue something.
    Sleep,
    /// The socket is full: wait until it takes bytes again.
    WaitForRoom,
}

impl Shared {
    /// One turn of the writer, with the lock held and nothing awaited.
    fn write_what_is_queued(&self) -> Writer {
        let mut outbox = self.outbox();
        if outbox.closed {
            return Writer::Stop;
        }
        if outbox.write_queued(&self.socket).is_err() {
            outbox.close();
            return Writer::Stop;
        }
        match (outbox.queue.is_empty(), outbox.senders_gone) {
            (true, true) => Writer::Stop,
            (true, false) => Writer::Sleep,
            (false, _) => Writer::WaitForRoom,
        }
    }
}

impl<T: Serialize> Sender<T> {
    /// Sends `message` to the peer, or queues what the socket cannot take
    /// at once. Fails if the channel is closed: a write failed, or the
    /// peer's end of the socket is gone.
    ///
    /// The second check is what makes a send to a worker that has *just*
    /// died an error. The queue alone cannot know: nothing has been written
    /// yet, so nothing has failed, and the message would be queued, written
    /// into a socket nobody reads, and lost without a word. The kernel knows
    /// at once — the moment a process exits, its descriptors close and our
    /// end of the pair is marked hung up — so `send` asks it first (a poll
    /// that does not wait). What no check can catch is a peer that dies
    /// *after* the message was accepted: a send is not a delivery, and a
    /// caller that must know asks for an answer ([`super::ToWorker::Request`]).
    pub fn send(&self, message: &T) -> Result<(), SendError> {
        self.send_serialized(message)
    }
}

impl<T> Sender<T> {
    /// Serialises `message` as one line and sends it. `message` must have
    /// `T`'s wire form; [`Sender::send`] and the typed wrappers in the
    /// parent module are the only callers.
    pub(super) fn send_serialized(&self, message: &impl Serialize) -> Result<(), SendError> {
        if self.peer_is_gone() {
            return Err(self.gone());
        }
        let line = super::encode_line(message).map_err(|error| SendError::NotJson {
            peer: self.peer.to_string(),
            reason: error.to_string(),
        })?;
        self.send_line(line)
    }

    fn send_line(&self, line: Vec<u8>) -> Result<(), SendError> {
        let shared = &self.handle.shared;
        let mut outbox = shared.outbox();
        if outbox.closed {
            return Err(self.gone());
        }
        outbox.accepted += 1;
        if !outbox.queue.is_empty() {
            // Behind others: the writer is on it, and order must hold.
            outbox.queue.push_back(line);
            return Ok(());
        }
        match shared.socket.try_write(&line) {
            Ok(n) if n == line.len() => {
                outbox.written += 1;
                return Ok(());
            }
            Ok(n) => outbox.front_written = n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                outbox.close();
                return Err(self.gone());
            }
        }
        outbox.queue.push_back(line);
        drop(outbox);
        shared.wake_writer.notify_one();
        Ok(())
    }

    /// Waits until everything sent so far has been written to the socket.
    /// A process about to exit calls this, or its last messages may still
    /// be queued when it goes.
    pub async fn flush(&self) -> Result<(), SendError> {
        let done = {
            let mut outbox = self.handle.shared.outbox();
            if outbox.closed {
                return Err(self.gone());
            }
            if outbox.written == outbox.accepted {
                return Ok(());
            }
            let (done_tx, done) = oneshot::channel();
            let wanted = outbox.accepted;
            outbox.flushes.push((wanted, done_tx));
            done
        };
        done.await.map_err(|_| self.gone())
    }

    /// True once a `send` would fail: a write has failed, or the peer's end
    /// of the socket is closed.
    pub fn is_closed(&self) -> bool {
        self.handle.shared.outbox().closed || self.peer_is_gone()
    }

    fn gone(&self) -> SendError {
        SendError::Closed {
            peer: self.peer.to_string(),
        }
    }

    /// Asks the kernel, without waiting, whether the other end has hung up.
    /// A Unix stream socket reports `POLLHUP` once the peer's socket is
    /// closed in both directions — when its last descriptor closed, which is
    /// when the process exited — and `POLLERR` if it closed with our data
    /// unread. A peer that only stopped writing is not gone: it may still
    /// read what we send.
    fn peer_is_gone(&self) -> bool {
        let stream: &tokio::net::UnixStream = self.handle.shared.socket.as_ref();
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            // EINTR or ENOMEM: no answer; a write will find out.
            Err(_) => false,
        }
    }
}
