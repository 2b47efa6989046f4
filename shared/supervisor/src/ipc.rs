//! The channel between the primary and one worker: JSON lines over a Unix
//! socketpair.
//!
//! Node's IPC channel is a pipe carrying serialised messages; ours is the same
//! idea, made explicit. Each side owns one end of a `socketpair`; the worker
//! inherits its end across exec (see [`crate::inherit`]). Every message is one
//! JSON object on one line, typed with serde on both sides ([`ToPrimary`],
//! [`ToWorker`]); the payload a lesson sends is a `serde_json::Value` inside.
//!
//! What the usual answer leaves out, and this module makes visible:
//! * a message is a *copy*, serialised and parsed — never shared memory;
//! * sending to a peer that is gone is an error value ([`SendError`]), not a
//!   crash and not a silent success — even in the instant after the peer
//!   died, before anyone has noticed its exit (see [`Sender::send`]);
//! * ordering holds per channel: two workers' messages may interleave in any
//!   order at the primary;
//! * a line that does not parse is reported and dropped; it never takes the
//!   reader down ([`Incoming::Malformed`]).
//!
//! Handles (accepted sockets) do not travel here; see [`crate::handles`].

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

/// A line longer than this is not a message we sent: it is dropped, and the
/// reader stays usable. It bounds the memory one bad peer can make us hold.
pub const MAX_LINE: usize = 1 << 20;

/// What a worker tells its primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToPrimary {
    /// The worker's code runs and its channel works.
    Online,
    /// The worker accepts connections on `addr`.
    Listening { addr: SocketAddr },
    /// The worker is ready for traffic.
    Ready,
    /// A message of the lesson's own.
    Message { body: serde_json::Value },
    /// The answer to [`ToWorker::Request`] number `seq`.
    Reply { seq: u64, body: serde_json::Value },
    /// The worker wants to leave (Node: `worker.disconnect()` in the worker).
    /// The primary stops sending it connections, then answers
    /// [`ToWorker::Disconnect`].
    Disconnect,
    /// The worker was sent SIGTERM on its own (not the whole group): the
    /// primary replaces it the safe way, then lets it drain.
    Terminated,
}

/// What the primary tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// A message of the lesson's own.
    Message { body: serde_json::Value },
    /// A question that expects a [`ToPrimary::Reply`] with the same `seq`:
    /// the correlation id that pairs each answer with its question.
    Request { seq: u64, body: serde_json::Value },
    /// Stop accepting, finish what is in flight, exit 0. No new connections
    /// will be sent after this one.
    Disconnect,
    /// Prove the request path is alive: the worker's HTTP server serves one
    /// request to itself and answers with a [`ToPrimary::Reply`] carrying
    /// `seq` and its counters. A blocked runtime cannot answer.
    Heartbeat { seq: u64 },
}

/// Sending failed because the other side is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the channel to {peer} is closed: it has exited or is exiting")]
pub struct SendError {
    /// Who we tried to reach ("worker 3", "the primary").
    pub peer: String,
}

/// The sending half. Cheap to clone; a background task writes the lines, so
/// `send` never waits on a slow peer.
#[derive(Debug)]
pub struct Sender<T> {
    lines: mpsc::UnboundedSender<Queued>,
    /// The socket the writer task writes to, shared so that `send` can ask
    /// the kernel whether the peer is still there.
    socket: Arc<OwnedWriteHalf>,
    peer: String,
    _type: PhantomData<fn(T)>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            lines: self.lines.clone(),
            socket: Arc::clone(&self.socket),
            peer: self.peer.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Serialize> Sender<T> {
    /// Queues `message` for the peer. Fails if the channel is closed: the
    /// writer saw an error, or the peer's end of the socket is gone.
    ///
    /// The second check is what makes a send to a worker that has *just*
    /// died an error. The queue alone cannot know: nothing has been written
    /// yet, so nothing has failed, and the message would be queued, written
    /// into a socket nobody reads, and lost without a word. The kernel knows
    /// at once — the moment a process exits, its descriptors close and our
    /// end of the pair is marked hung up — so `send` asks it first (a poll
    /// that does not wait). What no check can catch is a peer that dies
    /// *after* the message was accepted: a send is not a delivery, and a
    /// caller that must know asks for an answer ([`ToWorker::Request`]).
    pub fn send(&self, message: &T) -> Result<(), SendError> {
        if self.peer_is_gone() {
            return Err(self.gone());
        }
        let mut line = serde_json::to_vec(message).map_err(|_| self.gone())?;
        line.push(b'\n');
        self.lines.send(Queued::Line(line)).map_err(|_| self.gone())
    }

    /// Waits until everything queued so far has been written to the socket.
    /// A process about to exit calls this, or its last messages may still
    /// be in the queue when it goes.
    pub async fn flush(&self) -> Result<(), SendError> {
        let (done_tx, done) = tokio::sync::oneshot::channel();
        self.lines
            .send(Queued::Flush(done_tx))
            .map_err(|_| self.gone())?;
        done.await.map_err(|_| self.gone())
    }
}

impl<T> Sender<T> {
    /// True once a `send` would fail: the writer has stopped, or the peer's
    /// end of the socket is closed.
    pub fn is_closed(&self) -> bool {
        self.lines.is_closed() || self.peer_is_gone()
    }

    fn gone(&self) -> SendError {
        SendError {
            peer: self.peer.clone(),
        }
    }

    /// Asks the kernel, without waiting, whether the other end has hung up.
    /// A Unix stream socket reports `POLLHUP` once the peer's socket is
    /// closed in both directions — when its last descriptor closed, which is
    /// when the process exited — and `POLLERR` if it closed with our data
    /// unread. A peer that only stopped writing is not gone: it may still
    /// read what we send.
    fn peer_is_gone(&self) -> bool {
        let stream: &tokio::net::UnixStream = (*self.socket).as_ref();
        let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            // EINTR or ENOMEM: no answer; the writer will find out.
            Err(_) => false,
        }
    }
}

/// What the receiving half yields.
#[derive(Debug)]
pub enum Incoming<T> {
    Message(T),
    /// A line that is not a valid message; `reason` says why. Dropped.
    Malformed {
        reason: String,
    },
}

/// The receiving half.
#[derive(Debug)]
pub struct Receiver<T> {
    reader: BufReader<OwnedReadHalf>,
    buf: Vec<u8>,
    _type: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Receiver<T> {
    /// The next message, `None` at end of stream (the peer closed its end or
    /// exited), or an I/O error.
    pub async fn recv(&mut self) -> io::Result<Option<Incoming<T>>> {
        self.buf.clear();
        let limit = (MAX_LINE + 1) as u64;
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .await?;
        if read == 0 {
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            if read as u64 == limit {
                let skipped = self.skip_line().await?;
                return Ok(Some(Incoming::Malformed {
                    reason: format!(
                        "a line of {} bytes, longer than the {MAX_LINE}-byte limit",
                        read as u64 + skipped
                    ),
                }));
            }
            // The peer closed mid-line: what came is not a whole message.
            return Ok(Some(Incoming::Malformed {
                reason: "incomplete line at end of stream".into(),
            }));
        }
        Ok(Some(match serde_json::from_slice(&self.buf) {
            Ok(message) => Incoming::Message(message),
            Err(error) => Incoming::Malformed {
                reason: error.to_string(),
            },
        }))
    }
}

impl<T> Receiver<T> {
    /// Discards the rest of an oversized line, up to and including its
    /// newline, a buffer at a time: what is thrown away is never held, so a
    /// peer that sends gigabytes without a newline costs no memory. Returns
    /// how many bytes of the line were skipped (not counting its newline).
    async fn skip_line(&mut self) -> io::Result<u64> {
        let mut skipped = 0u64;
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(skipped); // end of stream inside the line
            }
            let (used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (at + 1, true),
                None => (available.len(), false),
            };
            self.reader.consume(used);
            if done {
                return Ok(skipped + used as u64 - 1);
            }
            skipped += used as u64;
        }
    }
}

/// Splits one end of the channel into its halves and starts the writer task.
/// `peer` names the other side in errors. Must run inside a tokio runtime.
pub fn channel<In, Out>(stream: UnixStream, peer: String) -> (Receiver<In>, Sender<Out>) {
    let (read, write) = stream.into_split();
    let socket = Arc::new(write);
    let (lines, queue) = mpsc::unbounded_channel();
    tokio::spawn(write_lines(Arc::clone(&socket), queue));
    let receiver = Receiver {
        reader: BufReader::new(read),
        buf: Vec::new(),
        _type: PhantomData,
    };
    let sender = Sender {
        lines,
        socket,
        peer,
        _type: PhantomData,
    };
    (receiver, sender)
}

/// What the writer task is given.
#[derive(Debug)]
enum Queued {
    Line(Vec<u8>),
    /// Answer once every earlier line is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Writes queued lines until the queue is dropped or a write fails; then
/// closing the queue makes every later `send` fail. The write half is
/// shared with the senders (they only look at it); when the last holder
/// lets go, dropping it shuts the socket down for writing, which the peer
/// reads as end-of-file.
async fn write_lines(socket: Arc<OwnedWriteHalf>, mut queue: mpsc::UnboundedReceiver<Queued>) {
    while let Some(queued) = queue.recv().await {
        match queued {
            Queued::Line(line) => {
                if write_all(&socket, &line).await.is_err() {
                    queue.close();
                    return;
                }
            }
            Queued::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// `write_all` through a shared reference: wait until the socket can take
/// bytes, write what it takes, repeat.
async fn write_all(socket: &OwnedWriteHalf, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn messages_cross_and_garbage_is_dropped() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (_a_rx, a_tx) = channel::<ToWorker, ToPrimary>(a, "worker 1".into());
        let (mut b_rx, _b_tx) = channel::<ToPrimary, ToWorker>(b, "the primary".into());

        a_tx.send(&ToPrimary::Online).map_err(io::Error::other)?;
        let got = b_rx.recv().await?;
        assert!(matches!(got, Some(Incoming::Message(ToPrimary::Online))));
        Ok(())
    }

    #[tokio::test]
    async fn a_malformed_line_is_reported_then_reading_goes_on() -> io::Result<()> {
        let (mut raw, b) = UnixStream::pair()?;
        let (mut rx, _tx) = channel::<ToPrimary, ToWorker>(b, "the primary".into());
        raw.write_all(b"this is not json\n{\"type\":\"ready\"}\n")
            .await?;
        assert!(matches!(rx.recv().await?, Some(Incoming::Malformed { .. })));
        assert!(matches!(
            rx.recv().await?,
            Some(Incoming::Message(ToPrimary::Ready))
        ));
        drop(raw);
        assert!(rx.recv().await?.is_none());
        Ok(())
    }

    #[tokio::test]
    async fn an_oversized_line_is_skipped_without_being_held() -> io::Result<()> {
        let (mut raw, b) = UnixStream::pair()?;
        let (mut rx, _tx) = channel::<ToPrimary, ToWorker>(b, "the primary".into());
        // Eight times the limit, then a good message on the same stream.
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..8 {
                raw.write_all(&chunk).await?;
            }
            raw.write_all(b"\n{\"type\":\"ready\"}\n").await?;
            Ok::<_, io::Error>(raw)
        });
        match rx.recv().await? {
            Some(Incoming::Malformed { reason }) => {
                assert!(reason.contains("8388608 bytes"), "{reason}");
            }
            other => panic!("expected a malformed line, got {other:?}"),
        }
        // Skipped a buffer at a time: the line was never held whole.
        assert!(rx.buf.capacity() <= 2 * MAX_LINE, "{}", rx.buf.capacity());
        assert!(matches!(
            rx.recv().await?,
            Some(Incoming::Message(ToPrimary::Ready))
        ));
        drop(writer.await.map_err(io::Error::other)??);
        Ok(())
    }

    #[tokio::test]
    async fn sending_to_a_closed_peer_is_an_error() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (_rx, tx) = channel::<ToPrimary, ToWorker>(a, "worker 7".into());
        tx.send(&ToWorker::Disconnect).map_err(io::Error::other)?;
        drop(b);
        // The very first send after the peer closed fails: no retry, no
        // message queued for nobody.
        let error = tx
            .send(&ToWorker::Disconnect)
            .err()
            .ok_or_else(|| io::Error::other("the send was accepted"))?;
        assert_eq!(
            error.to_string(),
            "the channel to worker 7 is closed: it has exited or is exiting"
        );
        assert!(tx.is_closed());
        Ok(())
    }

    // ANCHOR: send_to_dead
    /// A real process holds the other end and exits. Nobody has read its
    /// exit status, let alone told the channel: the first send after the
    /// exit is still refused.
    #[tokio::test]
    async fn a_send_to_a_process_that_just_exited_is_refused() -> io::Result<()> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (_rx, to_child) =
            channel::<ToPrimary, ToWorker>(UnixStream::from_std(ours)?, "worker 9".into());
        // The child's only copy of its end is its stdin.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 0"])
            .stdin(std::os::fd::OwnedFd::from(theirs))
            .spawn()?;
        child.wait()?; // it has exited; the channel has not been told

        let refused = to_child.send(&ToWorker::Message {
            body: serde_json::json!("anyone there?"),
        });
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("the channel to worker 9 is closed: it has exited or is exiting".into())
        );
        Ok(())
    }
    // ANCHOR_END: send_to_dead

    #[tokio::test]
    async fn a_live_peer_gets_what_is_sent() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (_a_rx, a_tx) = channel::<ToPrimary, ToWorker>(a, "worker 1".into());
        let (mut b_rx, _b_tx) = channel::<ToWorker, ToPrimary>(b, "the primary".into());
        for _ in 0..3 {
            a_tx.send(&ToWorker::Disconnect).map_err(io::Error::other)?;
        }
        a_tx.flush().await.map_err(io::Error::other)?;
        for _ in 0..3 {
            assert!(matches!(
                b_rx.recv().await?,
                Some(Incoming::Message(ToWorker::Disconnect))
            ));
        }
        assert!(!a_tx.is_closed());
        Ok(())
    }
}
