//! A stop in progress: what the loop remembers between the signal and the
//! last worker's exit.
//!
//! Kept apart from `stop`, which does the stopping, so that the loop's own
//! state can name it without importing the code that acts on it.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::event::{GaveUpCause, StopReason};
use crate::role::WorkerId;

/// A stop in progress.
#[derive(Debug)]
pub(super) struct Stopping {
    pub reason: StopReason,
    pub since: std::time::Instant,
    /// Workers killed because they overran the deadline (or a fast stop).
    pub forced: Vec<WorkerId>,
    /// Set when the stop is the primary giving up.
    pub gave_up: Option<(u32, Duration, GaveUpCause)>,
    /// Set by a fast stop: what asked for it.
    pub cut_short: Option<&'static str>,
    /// Shared and reuseport: the first step, until every worker has closed
    /// its listening socket; only then are they told to drain.
    pub closing: Option<Closing>,
}

/// The workers whose listening sockets are still open, and how long the
/// stop waits for them before it drains anyway.
#[derive(Debug)]
pub(super) struct Closing {
    pub open: BTreeSet<WorkerId>,
    pub until: Instant,
}

/// How long a stop waits for the workers to close their sockets. A worker
/// answers within milliseconds; one that does not (stopped, blocked, not
/// serving through `http::Server`) only delays the drain by this much.
pub(super) const CLOSE_WITHIN: Duration = Duration::from_secs(1);

impl Stopping {
    pub(super) fn closing_deadline(&self) -> Option<Instant> {
        self.closing.as_ref().map(|closing| closing.until)
    }

    /// Worker `id` closed its socket (or exited). True when it was the
    /// last: every worker is to be told to drain now.
    pub(super) fn socket_closed(&mut self, id: WorkerId) -> bool {
        let Some(closing) = &mut self.closing else {
            return false;
        };
        closing.open.remove(&id);
        let last = closing.open.is_empty();
        if last {
            self.closing = None;
        }
        last
    }

    /// True when the wait for sockets is over at `now`: whoever is left is
    /// to be told to drain.
    pub(super) fn closing_overdue(&mut self, now: Instant) -> bool {
        let overdue = (self.closing.as_ref()).is_some_and(|closing| closing.until <= now);
        if overdue {
            self.closing = None;
        }
        overdue
    }
}
