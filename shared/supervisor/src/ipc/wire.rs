//! What goes on the wire: the two directions' messages and the encoding of
//! one line.
//!
//! Each message is a JSON object tagged by `type` (`{"type":"ready"}`,
//! `{"type":"message","body":…}`), one per line, so a person can read a
//! captured channel and a peer in another language could speak it. The
//! enums are the whole protocol: anything else on a line is malformed.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use super::{SendError, Sender};

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
    /// The answer to [`ToWorker::Heartbeat`] number `seq`.
    Heartbeat { seq: u64, beat: Beat },
    /// The worker wants to leave (Node: `worker.disconnect()` in the worker).
    /// The primary stops sending it connections, then answers
    /// [`ToWorker::Disconnect`].
    Disconnect,
    /// The worker was sent SIGTERM on its own (not the whole group): the
    /// primary replaces it the safe way, then lets it drain.
    Terminated,
    /// The worker's listening socket is closed: the answer to
    /// [`ToWorker::StopAccepting`].
    NotAccepting,
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
    /// The cluster is stopping: close your listening socket now (taking
    /// what is queued on it), but serve your connections as usual until
    /// [`ToWorker::Disconnect`] follows. Shared and reuseport only.
    StopAccepting,
    /// Prove the request path is alive: the worker's HTTP server serves one
    /// request to itself and answers with a [`ToPrimary::Heartbeat`]
    /// carrying `seq`. A blocked runtime cannot answer.
    Heartbeat { seq: u64 },
}

/// A worker's answer to a heartbeat: what its server made of one request
/// to itself, and its counters. Typed, unlike a lesson's replies, because
/// the primary decides on it: a field the health check reads cannot go
/// missing or change its name on one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// The status the lesson's own handler gave the health request; 0 if
    /// the request failed before it got one.
    pub status: u16,
    /// Requests served so far, heartbeats not counted.
    pub requests: u64,
    /// Connections open now.
    pub connections: u64,
}

impl Beat {
    /// The handler answered the health request with a 2xx.
    pub fn healthy(&self) -> bool {
        (200..300).contains(&self.status)
    }
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

/// A worker's answer as it goes on the wire, `{"type":"reply","seq":…,"body":…}`
/// — the form of [`ToPrimary::Reply`] — serialised straight from the
/// worker's value, for the same reason as [`MessageOut`].
#[derive(Serialize)]
#[serde(tag = "type", rename = "reply")]
struct ReplyOut<'a, B: ?Sized> {
    seq: u64,
    body: &'a B,
}

impl Sender<ToPrimary> {
    /// Sends the answer to question `seq`, encoded once.
    pub fn send_reply(&self, seq: u64, body: &(impl Serialize + ?Sized)) -> Result<(), SendError> {
        self.send_serialized(&ReplyOut { seq, body })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(parsed, ToPrimary::Message { body: body.clone() });

        let reply = serde_json::to_string(&ReplyOut {
            seq: 7,
            body: &body,
        })?;
        let via_enum = serde_json::to_string(&ToPrimary::Reply {
            seq: 7,
            body: body.clone(),
        })?;
        assert_eq!(reply, via_enum);
        Ok(())
    }
}
