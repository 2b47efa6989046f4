//! A worker's life, as one value: where it is, and what was decided about it.
//!
//! The primary used to keep a [`WorkerState`] plus five flags beside it (why
//! it leaves, whether it was told to, its drain deadline, whether it was
//! killed, whether it was ever ready), and each place that cared put them
//! back together its own way. Here the data lives in the variant it belongs
//! to, so a combination that cannot happen cannot be written: a worker in
//! service has no exit reason, a killed worker always has one, a deadline
//! exists only for a worker that was told to go.
//!
//! Moves are methods. Those driven by the worker's own events (`listening`,
//! `ready`, its channel closing) only go forward and never undo a decision:
//! a draining worker that reports ready late stays draining. Those driven by
//! the primary (`depart`, `kill`, `give_up_on_start`) keep the first reason
//! given and say whether anything changed, so a second signal cannot send a
//! second SIGKILL or rename an exit. Time is passed in, never read, so the
//! tests below need no clock and no process (like `restart.rs`).

use serde::Serialize;
use tokio::time::Instant;

use crate::event::ExitReason;

/// Where a worker is in its life. Each state follows the one before; a
/// crash can end any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Forked; its code has not yet taken its listener.
    Starting,
    /// Holds its way to connections, takes none yet (Node's `listening`).
    Listening,
    /// Said it is ready: it gets connections.
    Ready,
    /// Told to leave: out of rotation, finishing what it has.
    Draining,
    /// Its channel closed: the process is ending.
    Leaving,
}

/// Where a worker is in its life, with what each stage needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    /// Forked; its code has not yet taken its listener.
    Starting,
    /// Holds its way to connections, takes none yet (Node's `listening`).
    Listening,
    /// Said it is ready: it gets connections.
    Ready,
    /// Somebody decided it should go; its channel is still open.
    Departing(Departure),
    /// Its channel closed: the process is ending. `departure` is `None`
    /// when nobody had asked it to go (a crash on its way).
    Leaving {
        departure: Option<Departure>,
        was_ready: bool,
    },
}

/// What was decided about a worker that is to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Departure {
    /// Why it goes; the first reason given is the one its exit reports.
    pub reason: ExitReason,
    /// It said `ready` at some point (before or after it was asked to go).
    pub was_ready: bool,
    /// Told to disconnect (Node's `exitedAfterDisconnect`), and killed if
    /// still running at this deadline. `None`: it was killed without a word.
    pub told_until: Option<Instant>,
    /// A SIGKILL has been sent; do not send another.
    pub killed: bool,
}

impl Departure {
    fn new(reason: ExitReason, was_ready: bool) -> Self {
        Departure {
            reason,
            was_ready,
            told_until: None,
            killed: false,
        }
    }
}

impl Life {
    /// The stage a reader sees ([`crate::Cluster::state`], the health table).
    pub fn state(&self) -> WorkerState {
        match self {
            Life::Starting => WorkerState::Starting,
            Life::Listening => WorkerState::Listening,
            Life::Ready => WorkerState::Ready,
            Life::Departing(_) => WorkerState::Draining,
            Life::Leaving { .. } => WorkerState::Leaving,
        }
    }

    /// Starting, listening or ready, and nobody has asked it to go.
    pub fn in_service(&self) -> bool {
        matches!(self, Life::Starting | Life::Listening | Life::Ready)
    }

    /// Ready and in service: the only stage that gets connections.
    pub fn is_ready(&self) -> bool {
        matches!(self, Life::Ready)
    }

    /// What was decided about it, once somebody decided it should go.
    pub fn departure(&self) -> Option<&Departure> {
        match self {
            Life::Departing(departure) => Some(departure),
            Life::Leaving { departure, .. } => departure.as_ref(),
            Life::Starting | Life::Listening | Life::Ready => None,
        }
    }

    fn departure_mut(&mut self) -> Option<&mut Departure> {
        match self {
            Life::Departing(departure) => Some(departure),
            Life::Leaving { departure, .. } => departure.as_mut(),
            Life::Starting | Life::Listening | Life::Ready => None,
        }
    }

    /// It said `ready` at some point: an exit is then a crash, not a failed
    /// start, and a stop drains it rather than killing it.
    pub fn ever_ready(&self) -> bool {
        match self {
            Life::Starting | Life::Listening => false,
            Life::Ready => true,
            Life::Departing(departure) => departure.was_ready,
            Life::Leaving {
                departure,
                was_ready,
            } => departure.map_or(*was_ready, |d| d.was_ready),
        }
    }

    /// A SIGKILL has been sent to it.
    pub fn killed(&self) -> bool {
        self.departure().is_some_and(|d| d.killed)
    }

    /// The worker said it is listening. Only a starting worker moves.
    pub fn listening(&mut self) -> bool {
        let moved = *self == Life::Starting;
        if moved {
            *self = Life::Listening;
        }
        moved
    }

    /// The worker said it is ready. A worker already asked to go stays
    /// where it is (it gets no connections), but its exit will be counted
    /// as that of a worker that did start.
    pub fn ready(&mut self) -> bool {
        match self {
            Life::Starting | Life::Listening => {
                *self = Life::Ready;
                true
            }
            Life::Ready => false,
            Life::Departing(departure) => {
                departure.was_ready = true;
                false
            }
            Life::Leaving {
                departure,
                was_ready,
            } => {
                *was_ready = true;
                if let Some(departure) = departure {
                    departure.was_ready = true;
                }
                false
            }
        }
    }

    /// Its channel closed: whatever it was doing, it is ending now.
    pub fn channel_closed(&mut self) -> bool {
        let next = match *self {
            Life::Leaving { .. } => return false,
            Life::Departing(departure) => Life::Leaving {
                departure: Some(departure),
                was_ready: departure.was_ready,
            },
            Life::Starting | Life::Listening | Life::Ready => Life::Leaving {
                departure: None,
                was_ready: self.ever_ready(),
            },
        };
        *self = next;
        true
    }

    /// Asks it to go for `reason`, with `deadline` to finish. Returns true
    /// the first time it is asked; later calls keep the first reason and
    /// deadline (a worker told to go is not told again differently).
    pub fn depart(&mut self, reason: ExitReason, deadline: Instant) -> bool {
        let first = self.departure().is_none();
        self.decide(reason);
        if let Some(departure) = self.departure_mut() {
            departure.told_until.get_or_insert(deadline);
        }
        first
    }

    /// Records that it goes for `reason` unless a reason was given before:
    /// a worker in service becomes `Departing`, a leaving one keeps leaving.
    fn decide(&mut self, reason: ExitReason) {
        let was_ready = self.ever_ready();
        match self {
            Life::Starting | Life::Listening | Life::Ready => {
                *self = Life::Departing(Departure::new(reason, was_ready));
            }
            Life::Leaving {
                departure: departure @ None,
                ..
            } => *departure = Some(Departure::new(reason, was_ready)),
            Life::Departing(_) | Life::Leaving { .. } => {}
        }
    }

    /// Marks it killed, for `reason` if none was given before. Returns
    /// false if it was killed already: send no second SIGKILL.
    pub fn kill(&mut self, reason: ExitReason) -> bool {
        if self.killed() {
            return false;
        }
        self.decide(reason);
        if let Some(departure) = self.departure_mut() {
            departure.killed = true;
        }
        true
    }

    /// Kills a worker still starting or listening at its ready deadline.
    /// Refused (false) for a worker that got ready or is already going.
    pub fn give_up_on_start(&mut self) -> bool {
        matches!(self, Life::Starting | Life::Listening) && self.kill(ExitReason::NotReady)
    }

    /// Kills a worker that was told to go and is still running at its
    /// drain deadline. Refused (false) for one never told, or killed.
    pub fn cut_drain(&mut self) -> bool {
        match self.departure_mut() {
            Some(departure) if departure.told_until.is_some() && !departure.killed => {
                departure.killed = true;
                true
            }
            _ => false,
        }
    }

    /// When something is next due for it: its ready deadline while it
    /// starts, its drain deadline once told to go; nothing once killed.
    pub fn deadline(&self, ready_by: Instant) -> Option<Instant> {
        match self {
            Life::Starting | Life::Listening => Some(ready_by),
            Life::Ready => None,
            Life::Departing(_) | Life::Leaving { .. } => {
                self.departure().filter(|d| !d.killed)?.told_until
            }
        }
    }

    /// Why its exit happened, decided or not: a worker nobody asked to go
    /// crashed, or failed to start if it never got ready.
    pub fn exit_reason(&self) -> ExitReason {
        match self.departure() {
            Some(departure) => departure.reason,
            None if self.ever_ready() => ExitReason::Crashed,
            None => ExitReason::FailedStart,
        }
    }

    /// Node's `worker.exitedAfterDisconnect`: it was told to go.
    pub fn exited_after_disconnect(&self) -> bool {
        self.departure().is_some_and(|d| d.told_until.is_some())
    }
}

#[cfg(test)]
mod tests;
