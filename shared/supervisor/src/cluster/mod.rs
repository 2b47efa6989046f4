//! The primary: Node's `cluster.fork()`, `cluster.workers` and the events,
//! plus what Node leaves to you — a desired worker count, readiness,
//! graceful replacement, rolling restarts and health checks.
//!
//! [`Cluster::start`] binds the address, forks the workers and spawns one
//! supervising task that owns the cluster's life. Like Gunicorn's arbiter,
//! that task does not "fork once per crash": every path (a crash, a scale
//! signal, a replacement that failed) changes either the *desired* state —
//! the worker slots — or the *actual* one — the running workers — and one
//! reconcile step closes the gap.
//!
//! # Layout
//!
//! | file          | its one job                                                   |
//! |---------------|---------------------------------------------------------------|
//! | `registry`    | the slots and the workers the primary runs (the loop's alone) |
//! | `snapshot`    | the registry as readers see it, published by the loop         |
//! | `life`        | one worker's life: its stage, and what was decided about it   |
//! | `start`       | bind, start the loop and the dispatcher, fork the first ones  |
//! | `spawn`       | start a worker process in a slot, and watch it                |
//! | `round_robin` | the rotation: which workers get connections (Node's handle)   |
//! | `dispatch`    | round-robin: accept and hand connections to ready workers     |
//! | `inbox`       | what the loop is told: workers' notes, commands, events       |
//! | `owner`       | the loop's state: the registry's only owner, and what it says |
//! | `supervise`   | the one loop: notes, timers, reconcile                        |
//! | `commands`    | what the loop does for a caller: fork, disconnect, replace    |
//! | `exits`       | what a worker's exit means: budget, backoff, refill           |
//! | `signals`     | the signal table: stop, fast stop, roll, scale                |
//! | `stop`        | one worker leaving, or the whole cluster, with a deadline     |
//! | `stopping`    | what a stop in progress remembers                             |
//! | `timers`      | deadlines: backoff, ready timeout, drain; and what they do     |
//! | `ask`         | request/response over IPC, with correlation ids               |
//! | `bus`         | publish events in one order; subscribe, wait, `report`        |
//! | `rollout`     | replace one worker safely; a rolling restart's bookkeeping    |
//! | `health`      | heartbeats, memory and CPU, and replacing a sick worker       |
//!
//! # Invariants
//!
//! * A worker gets connections only once it is ready ([`WorkerState::Ready`]).
//! * Every exit says why ([`ExitReason`]); only crashes, and fresh workers
//!   that never got ready, spend the restart budget (a replacement that
//!   fails does not: the worker it was to replace still holds its place).
//! * One rollout at a time; a replacement is ready before its predecessor
//!   is taken out of service, and a failed replacement changes nothing.
//! * A worker never outlives the primary: it exits when its channel reaches
//!   end-of-file, and `PR_SET_PDEATHSIG` kills it if the primary dies while
//!   the worker cannot run that code.

mod ask;
mod bus;
mod commands;
mod dispatch;
mod error;
mod exits;
mod health;
mod inbox;
mod life;
mod options;
mod owner;
mod registry;
mod rollout;
mod round_robin;
mod signals;
mod snapshot;
mod spawn;
mod start;
mod stop;
mod stopping;
mod supervise;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

pub use self::ask::{AskError, Gathered};
pub use self::bus::{Events, WaitError};
pub use self::error::{ClusterError, ReplaceError, RolloutError};
pub use self::health::Vitals;
use self::inbox::{Command, Note, Reply};
pub use self::life::WorkerState;
pub use self::options::{ClusterOptions, HealthPolicy, Judge, Verdict};
pub use self::rollout::{ReplaceStep, RollingRestart, Rollout, RolloutReport};
use self::snapshot::Snapshot;
pub use self::stop::Stopped;
use crate::event::{Event, ExitReason};
use crate::listen;
use crate::report::Reporter;
use crate::role::WorkerId;

/// A handle to the running cluster. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: ClusterOptions,
    addr: SocketAddr,
    exe: PathBuf,
    reporter: Reporter,
    /// The registry as the supervising loop, its only owner, last
    /// published it.
    snapshot: watch::Receiver<Snapshot>,
    /// Watchers, callers, the rollout and the health monitor → the loop.
    notes: mpsc::UnboundedSender<Note>,
    /// Events for anyone who subscribed.
    bus: broadcast::Sender<Event>,
    /// Round-robin: the dispatcher's runtime, on its own thread.
    dispatcher: OnceLock<tokio::runtime::Handle>,
    /// Round-robin: a worker acknowledged a connection (it has room again).
    capacity: Notify,
    /// Questions waiting for their reply, by correlation id.
    pending: Mutex<HashMap<u64, (WorkerId, oneshot::Sender<ask::Answer>)>>,
    next_seq: AtomicU64,
    /// Connections the primary accepted and handed to a worker (round-robin).
    handed_out: AtomicU64,
    /// What the health monitor last measured, by worker.
    vitals: Mutex<BTreeMap<WorkerId, Vitals>>,
    /// The outcome, once the cluster has stopped.
    outcome: watch::Receiver<Option<Result<Stopped, Arc<ClusterError>>>>,
    /// Reuseport: this cluster's claim on its address, kept while it lives.
    _port_claim: Option<listen::PortClaim>,
}

impl Cluster {
    /// The address the cluster serves on (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Node's `cluster.fork()`: one more worker, in a new slot, so the
    /// desired count grows by one. Returns its id once it is forked (its
    /// `fork` event is out), not once it is ready.
    pub async fn fork(&self) -> Result<WorkerId, ClusterError> {
        self.request(Command::Fork)
            .await
            .unwrap_or(Err(ClusterError::Stopping))
    }

    /// The ids of the worker processes running now, in every state (Node's
    /// `cluster.workers` drops a worker as soon as it is told to disconnect;
    /// see [`Cluster::state`] for where each one is).
    pub fn workers(&self) -> Vec<WorkerId> {
        self.view(|snapshot| snapshot.workers.keys().copied().collect())
    }

    /// Where worker `id` is in its life, if it is still running.
    pub fn state(&self, id: WorkerId) -> Option<WorkerState> {
        self.view(|snapshot| snapshot.workers.get(&id).map(|seen| seen.state))
    }

    /// The pid of a running worker.
    pub fn pid(&self, id: WorkerId) -> Option<u32> {
        self.view(|snapshot| snapshot.workers.get(&id).map(|seen| seen.pid))
    }

    /// The workers that take traffic now.
    pub fn ready_workers(&self) -> Vec<WorkerId> {
        self.view(|snapshot| snapshot.ready().collect())
    }

    /// How many workers the cluster wants running.
    pub fn desired(&self) -> usize {
        self.view(|snapshot| snapshot.desired)
    }

    /// Waits until at least `count` workers are ready, at most `within`.
    /// It looks at the workers' state, not at events, so it cannot miss a
    /// `ready` that happened before the call.
    pub async fn wait_ready(&self, count: usize, within: Duration) -> Result<(), WaitError> {
        // A stop during start-up (Ctrl-C) ends the wait at once: no more
        // workers will get ready, and waiting out `within` only delayed the
        // exit (by the whole ready timeout, 10 s by default).
        self.wait_until(within, |snapshot| {
            if snapshot.stopping {
                Some(Err(WaitError::Stopping))
            } else {
                (snapshot.ready().count() >= count).then_some(Ok(()))
            }
        })
        .await?
    }

    /// How many connections the primary itself accepted and handed to a
    /// worker. Zero with [`Sched::Shared`](crate::Sched::Shared); every connection with
    /// [`Sched::RoundRobin`](crate::Sched::RoundRobin), where the primary is on the path of all traffic.
    pub fn connections_handed_out(&self) -> u64 {
        self.inner.handed_out.load(Ordering::Relaxed)
    }

    /// Sends a message to one worker (Node's `worker.send`). The body is
    /// serialised: the worker gets a copy.
    pub fn send(&self, id: WorkerId, body: &impl serde::Serialize) -> Result<(), ClusterError> {
        let to_worker = self
            .view(|snapshot| snapshot.workers.get(&id).map(|seen| seen.to_worker.clone()))
            .ok_or(ClusterError::NoSuchWorker(id))?;
        Ok(to_worker.send_message(body)?)
    }

    /// Node's `worker.disconnect()`: stop sending the worker connections,
    /// then tell it to finish and exit. It is not replaced: the desired
    /// count shrinks by one. Returns once its `draining` event is out.
    pub async fn disconnect(&self, id: WorkerId) -> Result<(), ClusterError> {
        let depart = |reply| Command::Depart {
            id,
            reason: ExitReason::Left,
            reply: Some(reply),
        };
        (self.request(depart).await).unwrap_or(Err(ClusterError::Stopping))
    }

    /// Node's `worker.kill(signal)` / `process.kill(pid, signal)`. A worker
    /// killed this way was not asked to leave: its exit is a crash.
    pub fn kill(&self, id: WorkerId, signal: Signal) -> Result<(), ClusterError> {
        let pid = self.pid(id).ok_or(ClusterError::NoSuchWorker(id))?;
        kill(Pid::from_raw(pid as i32), signal).map_err(|cause| ClusterError::Kill { id, cause })
    }

    /// Sets the desired number of workers (at least one): new slots are
    /// filled at once; surplus workers, newest first, drain and leave.
    pub fn scale(&self, workers: usize) {
        self.command(Command::Scale(workers));
    }

    /// Hands a note to the supervising task. It holds the receiver for the
    /// cluster's whole life; a failed send means it is gone, and nobody is
    /// left to tell.
    fn note(&self, note: Note) {
        let _ = self.inner.notes.send(note);
    }

    /// Asks the supervising task to do something. Commands travel with the
    /// notes, in one queue, so a lesson's `report` made before `shutdown`
    /// is printed before the `shutdown` event, not after it.
    fn command(&self, command: Command) {
        self.note(Note::Command(command));
    }

    /// Asks the supervising task for something that has an answer, and
    /// waits for it; `None` if the task is gone (the cluster has stopped).
    async fn request<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.command(command(reply));
        answer.await.ok()
    }

    /// Publishes an event in order with every other (through the
    /// supervising task).
    fn publish(&self, event: Event) {
        self.note(Note::Publish(event));
    }
}

/// Locks `mutex`. A panic while holding one of ours leaves plain data
/// behind, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
