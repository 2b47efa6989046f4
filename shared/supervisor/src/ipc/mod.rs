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
//!
//! The messages and the encoding of a line are in `wire`; the sending half
//! in `outbox`; the receiving half, and the channel's tests, here.

mod outbox;
mod wire;

use std::io;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

pub use outbox::Sender;
pub use wire::{Beat, CarriesMessages, ToPrimary, ToWorker, encode_line};

/// A line longer than this is not a message we sent: it is dropped, and the
/// reader stays usable. It bounds the memory one bad peer can make us hold.
pub const MAX_LINE: usize = 1 << 20;

/// How much the receiving half reads from the socket at a time. Big
/// enough that a 64 KiB message comes in one read instead of eight; small
/// enough not to matter beside a worker's few megabytes.
const READ_BUFFER: usize = 64 * 1024;

/// Why a message was not sent. `peer` names who we tried to reach
/// ("worker 3", "the primary").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The other side is gone, or going.
    #[error("the channel to {peer} is closed: it has exited or is exiting")]
    Closed { peer: String },
    /// The message has no JSON form (a map whose keys are not strings, a
    /// `Serialize` impl that fails): nothing was sent, and the channel
    /// still works. Node's `process.send` would throw here too.
    #[error("a message to {peer} cannot be sent: it has no JSON form ({reason})")]
    NotJson { peer: String, reason: String },
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
    let receiver = Receiver {
        reader: BufReader::with_capacity(READ_BUFFER, read),
        buf: Vec::new(),
        _type: PhantomData,
    };
    (receiver, outbox::sender(write, peer))
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

    /// A value with no JSON form is the sender's mistake, not a dead peer:
    /// the error says so, nothing reaches the wire, and the channel goes on.
    #[tokio::test]
    async fn a_message_with_no_json_form_is_refused_and_the_channel_goes_on() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (_a_rx, a_tx) = channel::<ToWorker, ToPrimary>(a, "the primary".into());
        let (mut b_rx, _b_tx) = channel::<ToPrimary, ToWorker>(b, "worker 1".into());

        let keyed_by_pairs = std::collections::BTreeMap::from([((1, 2), "a")]);
        // The reason is the encoder's own words; the rest is ours.
        let refused = a_tx.send_message(&keyed_by_pairs);
        let Err(refused @ SendError::NotJson { .. }) = refused else {
            panic!("sent, or refused for the wrong reason: {refused:?}");
        };
        let said = refused.to_string();
        assert!(
            said.starts_with("a message to the primary cannot be sent: it has no JSON form ("),
            "{said}"
        );
        a_tx.send_message(&"still here").map_err(io::Error::other)?;
        let got = b_rx.recv().await?;
        assert!(
            matches!(&got, Some(Incoming::Message(ToPrimary::Message { body })) if body == "still here"),
            "{got:?}"
        );
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

    /// More than the socket buffer holds, sent while nobody reads: the
    /// sends do not wait, the overflow is queued, and once the peer reads,
    /// every message arrives whole and in order. Dropping the sender first
    /// loses nothing queued: the peer reads everything, then end-of-file.
    #[tokio::test]
    async fn what_the_socket_cannot_take_is_queued_in_order() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        let (_a_rx, a_tx) = channel::<ToPrimary, ToWorker>(a, "worker 1".into());
        let (mut b_rx, _b_tx) = channel::<ToWorker, ToPrimary>(b, "the primary".into());
        let filler = "x".repeat(64 * 1024);
        const COUNT: u64 = 64; // 4 MiB: far past any socket buffer
        for n in 0..COUNT {
            a_tx.send_message(&(n, &filler)).map_err(io::Error::other)?;
        }
        let flushed = {
            let a_tx = a_tx.clone();
            tokio::spawn(async move { a_tx.flush().await })
        };
        drop(a_tx);
        for n in 0..COUNT {
            match b_rx.recv().await? {
                Some(Incoming::Message(ToWorker::Message { body })) => {
                    assert_eq!(body[0], n);
                    assert_eq!(body[1].as_str().map(str::len), Some(filler.len()));
                }
                other => panic!("message {n}: got {other:?}"),
            }
        }
        assert!(b_rx.recv().await?.is_none(), "end-of-file after the last");
        flushed.await?.map_err(io::Error::other)?;
        Ok(())
    }

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
