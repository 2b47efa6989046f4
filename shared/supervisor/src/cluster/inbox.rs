//! The supervising loop's inbox: everything the rest of the cluster tells it.
//!
//! One queue carries the workers' notes (read from their channels by their
//! watchers), the commands callers give (fork, disconnect, replace, stop,
//! scale, roll) and the events to publish, so that all of them are handled
//! in the order they were sent: a lesson's `report` made before `shutdown`
//! is printed before the `shutdown` event. Since the loop alone owns the
//! registry, a command is the only way to change it; one that has an
//! answer carries a one-shot channel for it, answered after the loop has
//! published the snapshot that shows the change. The types live apart from
//! the loop so that the files that send (`spawn`, `bus`, `rollout`,
//! `health`) need not import the loop that receives.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::oneshot;

use super::error::{ClusterError, ReplaceError, RolloutError};
use super::rollout::Rollout;
use crate::event::{Event, ExitReason, GaveUpCause, StopReason};
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

/// Where an answer goes.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// What a caller asks of the cluster.
#[derive(Debug)]
pub(crate) enum Command {
    /// One more worker, in a new slot (Node's `cluster.fork()`).
    Fork(Reply<Result<WorkerId, ClusterError>>),
    /// Worker `id` is to go, for `reason` (Node's `worker.disconnect()`).
    Depart {
        id: WorkerId,
        reason: ExitReason,
        reply: Option<Reply<Result<(), ClusterError>>>,
    },
    /// Start a replacement for worker `old` in its slot; the caller waits
    /// for it to be ready, then sends `Depart` for the old one.
    Replace {
        old: WorkerId,
        reason: ExitReason,
        reply: Reply<Result<WorkerId, ReplaceError>>,
    },
    /// Begin a rolling restart: raise the generation, name the workers to
    /// replace. The caller does the replacing.
    BeginRollout(Reply<Result<Rollout, RolloutError>>),
    /// A rollout failed: new workers run this generation again.
    RestoreGeneration(u32),
    /// The rollout is over: another may begin.
    EndRollout,
    Stop(StopReason),
    Scale(usize),
    /// A budget is spent: say so, and stop.
    GiveUp {
        restarts: u32,
        window: Duration,
        cause: GaveUpCause,
    },
}

/// A rolling restart the loop has begun.
#[derive(Debug)]
pub(crate) struct Begun {
    /// The generation it installs.
    pub generation: u32,
    /// The one before, to go back to if it fails.
    pub previous: u32,
    /// The workers it replaces, in id order.
    pub olds: Vec<WorkerId>,
}
