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
//! | `registry`    | the slots and the workers the primary runs                    |
//! | `life`        | one worker's life: its stage, and what was decided about it   |
//! | `start`       | bind, start the loop and the dispatcher, fork the first ones  |
//! | `spawn`       | start a worker process in a slot, and watch it                |
//! | `dispatch`    | round-robin: accept and hand connections to ready workers     |
//! | `inbox`       | what the loop is told: workers' notes, commands, events       |
//! | `supervise`   | the one loop: notes (and commands), timers, reconcile         |
//! | `exits`       | what a worker's exit means: budget, backoff, refill           |
//! | `signals`     | the signal table: stop, fast stop, roll, scale                |
//! | `stop`        | one worker leaving, or the whole cluster, with a deadline     |
//! | `timers`      | deadlines: backoff, ready timeout, drain; and what they do     |
//! | `ask`         | request/response over IPC, with correlation ids               |
//! | `bus`         | publish events in one order; subscribe, wait, `report`        |
//! | `rollout`     | replace one worker safely; a rolling restart of all of them   |
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
mod dispatch;
mod error;
mod exits;
mod health;
mod inbox;
mod life;
mod options;
mod registry;
mod rollout;
mod signals;
mod spawn;
mod start;
mod stop;
mod supervise;
mod timers;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

pub use self::ask::{AskError, Gathered};
pub use self::bus::{Events, WaitError};
pub use self::error::ClusterError;
pub use self::health::Vitals;
use self::inbox::{Command, Note};
pub use self::life::WorkerState;
pub use self::options::{ClusterOptions, HealthPolicy, Judge, Verdict};
use self::registry::Registry;
use self::registry::lock;
pub use self::rollout::{ReplaceError, ReplaceStep, RolloutError, RolloutReport};
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
    registry: Mutex<Registry>,
    /// Bumped after every change to the registry; state-based waits watch it.
    changed: watch::Sender<u64>,
    /// Watchers, the rollout and the health monitor → the supervising task.
    notes: mpsc::UnboundedSender<Note>,
    /// Events for anyone who subscribed.
    bus: broadcast::Sender<Event>,
    /// Round-robin: the workers that take connections now.
    routes: watch::Sender<dispatch::Routes>,
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
    /// desired count grows by one. Returns its id.
    pub fn fork(&self) -> Result<WorkerId, ClusterError> {
        self.update(|registry| {
            if registry.stopping {
                return Err(ClusterError::Stopping);
            }
            let slot = self.new_slot(registry)?;
            self.spawn_into(registry, slot)
        })
    }

    /// The ids of the worker processes running now, in every state (Node's
    /// `cluster.workers` drops a worker as soon as it is told to disconnect;
    /// see [`Cluster::state`] for where each one is).
    pub fn workers(&self) -> Vec<WorkerId> {
        self.view(|registry| registry.workers.keys().copied().collect())
    }

    /// Where worker `id` is in its life, if it is still running.
    pub fn state(&self, id: WorkerId) -> Option<WorkerState> {
        self.view(|registry| registry.workers.get(&id).map(|entry| entry.life.state()))
    }

    /// The pid of a running worker.
    pub fn pid(&self, id: WorkerId) -> Option<u32> {
        self.view(|registry| registry.workers.get(&id).map(|entry| entry.pid))
    }

    /// The workers that take traffic now.
    pub fn ready_workers(&self) -> Vec<WorkerId> {
        self.view(|registry| registry.ready().collect())
    }

    /// How many workers the cluster wants running.
    pub fn desired(&self) -> usize {
        self.view(|registry| registry.slots.len())
    }

    /// Waits until at least `count` workers are ready, at most `within`.
    /// It looks at the workers' state, not at events, so it cannot miss a
    /// `ready` that happened before the call.
    pub async fn wait_ready(&self, count: usize, within: Duration) -> Result<(), WaitError> {
        // A stop during start-up (Ctrl-C) ends the wait at once: no more
        // workers will get ready, and waiting out `within` only delayed the
        // exit (by the whole ready timeout, 10 s by default).
        self.wait_until(within, |registry| {
            if registry.stopping {
                Some(Err(WaitError::Stopping))
            } else {
                (registry.ready().count() >= count).then_some(Ok(()))
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
            .view(|registry| registry.workers.get(&id).map(|e| e.to_worker.clone()))
            .ok_or(ClusterError::NoSuchWorker(id))?;
        Ok(to_worker.send_message(body)?)
    }

    /// Node's `worker.disconnect()`: stop sending the worker connections,
    /// then tell it to finish and exit. It is not replaced: the desired
    /// count shrinks by one.
    pub fn disconnect(&self, id: WorkerId) -> Result<(), ClusterError> {
        self.depart(id, ExitReason::Left)
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
        self.command(Command::Scale(workers.max(1)));
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

    /// Publishes an event in order with every other (through the
    /// supervising task).
    fn publish(&self, event: Event) {
        self.note(Note::Publish(event));
    }
}
