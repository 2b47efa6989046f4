//! Events out: one order for everybody, and a way to wait for one.
//!
//! Every event is published by the supervising task alone (the others send
//! it a note), so the human log, the JSON stream and every subscriber see
//! the same order: a worker's `exit` before the `replaced` that follows it.
//!
//! A subscription starts *now*: it sees what happens after
//! [`super::Cluster::subscribe`], never a replay. What happened before is
//! state, and state is asked for directly ([`super::Cluster::state`],
//! [`super::Cluster::wait_ready`]), so there is no ordering rule to
//! remember ("subscribe before you start") and no event to miss.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use super::Cluster;
use super::inbox::Note;
use crate::event::Event;

/// How many events a subscriber may fall behind before it misses some.
pub const CAPACITY: usize = 4096;

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("not within {}ms", within.as_millis())]
    Timeout { within: Duration },
    #[error("the cluster has stopped: no more events will come")]
    Closed,
    #[error("the cluster began to stop first (a signal, or a restart budget spent)")]
    Stopping,
    #[error("fell {0} events behind and missed them")]
    Lagged(u64),
}

/// A subscription to the cluster's events, from the moment it was made.
#[derive(Debug)]
pub struct Events {
    receiver: broadcast::Receiver<Event>,
}

impl Events {
    pub(super) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Events { receiver }
    }

    /// The next event.
    pub async fn next(&mut self) -> Result<Event, WaitError> {
        self.receiver.recv().await.map_err(|error| match error {
            broadcast::error::RecvError::Closed => WaitError::Closed,
            broadcast::error::RecvError::Lagged(n) => WaitError::Lagged(n),
        })
    }

    /// The next event already published, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next event that satisfies `wanted`, waiting at most `within`;
    /// the others are skipped.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, WaitError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.next()).await {
                Ok(Ok(event)) if wanted(&event) => return Ok(event),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error),
                Err(_) => return Err(WaitError::Timeout { within }),
            }
        }
    }

    /// The next `count` events that satisfy `wanted`, all within `within`.
    pub async fn wait_for_all(
        &mut self,
        count: usize,
        within: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Vec<Event>, WaitError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut found = Vec::with_capacity(count);
        while found.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.wait_for(left, &mut wanted).await {
                Ok(event) => found.push(event),
                Err(WaitError::Timeout { .. }) => return Err(WaitError::Timeout { within }),
                Err(error) => return Err(error),
            }
        }
        Ok(found)
    }
}

/// Events out, as a lesson sees them: subscribe, or add one of its own.
impl Cluster {
    /// A stream of the events from now on. A subscriber that falls more
    /// than `CAPACITY` (4,096) events behind misses the oldest and is told so.
    pub fn subscribe(&self) -> Events {
        Events::new(self.inner.bus.subscribe())
    }

    /// Prints a lesson's own event the way this cluster prints events: as
    /// `{"event": kind, ...fields}` with `--events json`, as `human` for
    /// people. It goes out in order with the cluster's own events.
    pub fn report(&self, kind: &str, fields: &impl serde::Serialize, human: &str) {
        let note = Note::Report {
            kind: kind.to_owned(),
            fields: serde_json::to_value(fields).unwrap_or(serde_json::Value::Null),
            human: human.to_owned(),
        };
        // After the cluster stopped nobody orders events: print directly.
        if let Err(mpsc::error::SendError(Note::Report {
            kind,
            fields,
            human,
        })) = self.inner.notes.send(note)
        {
            self.inner.reporter.custom(&kind, &fields, &human);
        }
    }

    /// Prints a line for people (stderr in JSON mode).
    pub fn note_line(&self, text: &str) {
        self.inner.reporter.note(text);
    }
}
