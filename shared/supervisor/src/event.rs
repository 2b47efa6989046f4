//! The lifecycle events a primary sees, in the order Node names them.
//!
//! One stream serves two readers: the lesson's human log and the scenario
//! runner, which starts a lesson with `--events json` and reads these as JSON
//! lines on stdout. The JSON shape is therefore a contract with
//! `scenarios/`: field names are stable, and a new kind of event is added,
//! never renamed.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::listen::Sched;

/// A worker's id: 1 for the first fork, then 2, 3 … in fork order, never
/// reused (Node's `worker.id`). A replacement gets a new id, so "worker 3
/// died and worker 5 took its place" stays unambiguous in every log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub u32);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Something that happened to the cluster. Serialised with an `"event"` tag,
/// for example `{"event":"fork","id":1,"pid":4242}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The primary bound its address (port 0 resolved) and is about to fork.
    Start {
        pid: u32,
        addr: SocketAddr,
        sched: Sched,
        workers: usize,
    },
    /// A worker process was spawned (Node: `fork`).
    Fork { id: WorkerId, pid: u32 },
    /// The worker's code is running and its channel is up (Node: `online`).
    Online { id: WorkerId },
    /// The worker can take connections on `addr` (Node: `listening`).
    Listening { id: WorkerId, addr: SocketAddr },
    /// The worker said it is ready for traffic — more than listening: caches
    /// warm, connections to its dependencies open (PM2's `wait_ready`).
    Ready { id: WorkerId },
    /// The worker sent the primary a message (Node: `message`).
    Message {
        id: WorkerId,
        body: serde_json::Value,
    },
    /// The worker's channel closed (Node: `disconnect`). It comes before
    /// [`Event::Exit`] for the same worker.
    Disconnect { id: WorkerId },
    /// The worker process ended (Node: `exit`): `code` when it exited,
    /// `signal` (a name like `"SIGKILL"`) when a signal ended it.
    Exit {
        id: WorkerId,
        pid: u32,
        code: Option<i32>,
        signal: Option<String>,
        /// True when somebody asked it to go ([`crate::Cluster::disconnect`]
        /// or [`crate::Worker::disconnect`]): such an exit is not a crash and
        /// is never restarted. Node: `worker.exitedAfterDisconnect`.
        exited_after_disconnect: bool,
    },
    /// A crashed worker will be replaced after `delay_ms` (backoff).
    RestartScheduled { after: WorkerId, delay_ms: u64 },
    /// Workers crashed more than the budget allows in the window: the
    /// primary stops the cluster instead of forking in a loop.
    GaveUp { restarts: u32, window_ms: u64 },
    /// The primary began stopping the cluster; `reason` says why
    /// (`SIGTERM`, `SIGINT`, `crash loop`). With round-robin the listening
    /// socket is already closed when this is published: from here on a new
    /// client is refused.
    Shutdown { reason: String },
}

impl Event {
    /// The worker this event is about, if it is about one.
    pub fn worker(&self) -> Option<WorkerId> {
        match self {
            Event::Fork { id, .. }
            | Event::Online { id }
            | Event::Listening { id, .. }
            | Event::Ready { id }
            | Event::Message { id, .. }
            | Event::Disconnect { id }
            | Event::Exit { id, .. } => Some(*id),
            Event::RestartScheduled { after, .. } => Some(*after),
            Event::Start { .. } | Event::GaveUp { .. } | Event::Shutdown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_an_event_tag() -> Result<(), serde_json::Error> {
        let exit = Event::Exit {
            id: WorkerId(3),
            pid: 42,
            code: None,
            signal: Some("SIGKILL".into()),
            exited_after_disconnect: false,
        };
        let json = serde_json::to_string(&exit)?;
        assert_eq!(
            json,
            r#"{"event":"exit","id":3,"pid":42,"code":null,"signal":"SIGKILL","exited_after_disconnect":false}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json)?, exit);
        Ok(())
    }

    #[test]
    fn restart_scheduled_is_snake_case() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&Event::RestartScheduled {
            after: WorkerId(1),
            delay_ms: 200,
        })?;
        assert_eq!(
            json,
            r#"{"event":"restart_scheduled","after":1,"delay_ms":200}"#
        );
        Ok(())
    }
}
