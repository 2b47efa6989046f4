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

mod outbox;

use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedReadHalf;

pub use outbox::Sender;

/// A line longer than this is not a message we sent: it is dropped, and the
/// reader stays usable. It bounds the memory one bad peer can make us hold.
pub const MAX_LINE: usize = 1 << 20;

/// How much the receiving half reads from the socket at a time. Big
/// enough that a 64 KiB message comes in one read instead of eight; small
/// enough not to matter beside a worker's few megabytes.
const READ_BUFFER: usize = 64 * 1024;

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

/// A lesson's message as it goes on the wire, `{"type":"message","body":…}`
/// — the form of both [`ToWorker::Message`] and [`ToPrimary::Message`] —
/// serialised straight from the caller's value. Building the enum first
/// would mean turning the body into a `serde_json::Value`: a copy of the
/// whole payload before it is encoded.
#[derive(Serialize)]
#[serde(tag = "type", rename = "message")]
struct MessageOut<'a, B: ?Sized> {
    body: &'a B,
}

/// The two directions whose enums have a `message` variant of that form.
pub trait CarriesMessages {}
impl CarriesMessages for ToWorker {}
impl CarriesMessages for ToPrimary {}

impl<T: CarriesMessages> Sender<T> {
    /// Sends a lesson's message with `body`, encoded once.
    pub fn send_message(&self, body: &(impl Serialize + ?Sized)) -> Result<(), SendError> {
        self.send_serialized(&MessageOut { body })
    }
}

/// One message's wire form: its JSON, then the newline that ends it.
///
/// Why not `serde_json::to_vec`: profiled with 64 KiB messages, serde_json's
/// string escaping, which inspects every byte on its own, was the largest
/// single cost of a round trip (27 % of all samples, more than the kernel's
/// copies). sonic-rs checks 16 bytes at a time with SIMD instructions and
/// writes the same bytes (a test below holds it to serde_json's output): on
/// this machine it encoded a 64 KiB string about eight times faster.
/// Parsing stays with serde_json: there the two were close, and serde_json's
/// errors are the ones a malformed line is reported with.
pub fn encode_line(message: &(impl Serialize + ?Sized)) -> Result<Vec<u8>, sonic_rs::Error> {
    let mut line = sonic_rs::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Sending failed because the other side is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the channel to {peer} is closed: it has exited or is exiting")]
pub struct SendError {
    /// Who we tried to reach ("worker 3", "the primary").
    pub peer: String,
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

    /// The encoder is a speed choice only: every value a lesson can send
    /// must come out byte for byte as serde_json would write it, escapes
    /// and number formats included, or a reader in another language (or a
    /// snapshot) would see the difference.
    #[test]
    fn lines_are_written_as_serde_json_writes_them() -> Result<(), Box<dyn std::error::Error>> {
        let awkward = serde_json::json!({
            "escapes": "quote \" backslash \\ newline \n tab \t nul \u{0} esc \u{1b} del \u{7f}",
            "unicode": "é 😀 \u{2028}",
            "long": "x".repeat(100_000),
            "numbers": [0, -1, u64::MAX, i64::MIN, 0.1, 1.5, 100.0, 1e-7, 1e21, 5e-324, f64::MAX],
            "nested": { "empty": {}, "list": [null, true, false, []] },
        });
        let lines = [
            encode_line(&ToWorker::Message {
                body: awkward.clone(),
            })?,
            encode_line(&ToPrimary::Reply {
                seq: 7,
                body: awkward.clone(),
            })?,
            encode_line(&MessageOut { body: &awkward })?,
            encode_line(&(f64::NAN, f32::INFINITY, 'q', (), Some(0.3f32)))?,
        ];
        let expected = [
            serde_json::to_vec(&ToWorker::Message {
                body: awkward.clone(),
            })?,
            serde_json::to_vec(&ToPrimary::Reply {
                seq: 7,
                body: awkward.clone(),
            })?,
            serde_json::to_vec(&MessageOut { body: &awkward })?,
            serde_json::to_vec(&(f64::NAN, f32::INFINITY, 'q', (), Some(0.3f32)))?,
        ];
        for (line, mut json) in lines.into_iter().zip(expected) {
            json.push(b'\n');
            assert!(
                line == json,
                "{}",
                String::from_utf8_lossy(&line[..200.min(line.len())])
            );
        }
        Ok(())
    }

    #[test]
    fn a_message_encoded_once_has_the_enum_s_wire_form() -> Result<(), serde_json::Error> {
        let body = serde_json::json!({ "config": 2, "name": "x\ny" });
        let direct = serde_json::to_string(&MessageOut { body: &body })?;
        let via_enum = serde_json::to_string(&ToWorker::Message { body: body.clone() })?;
        assert_eq!(direct, via_enum);
        let parsed: ToPrimary = serde_json::from_str(&direct)?;
        assert_eq!(parsed, ToPrimary::Message { body });
        Ok(())
    }

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
