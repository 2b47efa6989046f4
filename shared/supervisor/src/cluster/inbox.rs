//! The supervising loop's inbox: everything the rest of the cluster tells it.
//!
//! One queue carries the workers' notes (read from their channels by their
//! watchers), the commands callers give (stop, scale, give up) and the
//! events to publish, so that all of them are handled in the order they
//! were sent: a lesson's `report` made before `shutdown` is printed before
//! the `shutdown` event. The types live apart from the loop so that the
//! files that send (`spawn`, `stop`, `bus`, `health`) need not import the
//! loop that receives.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use crate::event::{Event, GaveUpCause, StopReason};
use crate::role::WorkerId;

/// What the rest of the cluster tells the supervising task.
#[derive(Debug)]
pub(crate) enum Note {
    /// Publish this event as it is.
    Publish(Event),
    /// A worker's lifecycle event: update its state, then publish.
    Worker(Event),
    /// The worker asked to leave (Node's `worker.disconnect()` in a worker).
    WantsToLeave(WorkerId),
    /// The worker was sent SIGTERM.
    Terminated(WorkerId),
    /// The worker closed its listening socket, as a stop asked.
    NotAccepting(WorkerId),
    Malformed {
        id: WorkerId,
        reason: String,
    },
    Exited {
        id: WorkerId,
        pid: u32,
        status: io::Result<ExitStatus>,
    },
    /// Something a caller asks for (stop, scale, give up).
    Command(Command),
    /// A lesson's own event, printed in order with the others.
    Report {
        kind: String,
        fields: serde_json::Value,
        human: String,
    },
}

/// What a caller asks of the cluster.
#[derive(Debug)]
pub(crate) enum Command {
    Stop(StopReason),
    Scale(usize),
    /// A budget is spent: say so, and stop.
    GiveUp {
        restarts: u32,
        window: Duration,
        cause: GaveUpCause,
    },
}
