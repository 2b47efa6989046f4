//! The primary: Node's `cluster.fork()`, `cluster.workers` and the events.
//!
//! [`Cluster::start`] binds the address, forks the workers and spawns one
//! supervising task that owns the cluster's life:
//!
//! * every worker has a watcher task that turns its channel and its exit
//!   status into [`Event`]s, in order (`online` … `disconnect`, then `exit`);
//! * the supervising task updates the registry, prints each event (human or
//!   JSON), hands it to subscribers, and applies the restart policy;
//! * in round-robin mode a dispatcher task accepts connections and passes
//!   each to the next listening worker;
//! * SIGINT or SIGTERM stops the cluster: every worker is told to disconnect,
//!   and the primary returns as soon as the last one has exited — not after a
//!   fixed sleep — killing only those still running at the deadline.
//!
//! Workers are started by re-executing this binary (see [`crate::role`] for
//! why not `fork()`). Each child gets, across exec: its id, its end of the
//! IPC socketpair, and its way to connections (the handle channel or the
//! shared listening socket). A worker never outlives the primary: it exits
//! when its channel reaches end-of-file, and `PR_SET_PDEATHSIG` kills it if
//! the primary dies while the worker cannot run that code.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::{TcpListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};

use crate::event::{Event, WorkerId};
use crate::handles::{self, HandleSender};
use crate::inherit::keep_across_exec;
use crate::ipc::{self, Incoming, SendError, ToPrimary, ToWorker};
use crate::listen::{self, Sched};
use crate::report::{EventsFormat, Reporter};
use crate::restart::{Decision, RestartBudget, RestartPolicy};
use crate::role::{ADDR_VAR, HANDLES_FD_VAR, IPC_FD_VAR, LISTEN_FD_VAR, SCHED_VAR, WORKER_ID_VAR};

/// How to run a cluster. Start from `Default` and set what the lesson needs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many workers to fork at start.
    pub workers: usize,
    /// Where to listen; port 0 picks a free port that all workers share.
    pub addr: SocketAddr,
    /// Who accepts connections; fixed before the first fork.
    pub sched: Sched,
    /// How events are printed.
    pub events: EventsFormat,
    /// Restart crashed workers (with backoff and a budget), or not at all.
    pub restart: Option<RestartPolicy>,
    /// How long a stopping worker may take before it is killed.
    pub grace: Duration,
    /// Stop the cluster on SIGINT/SIGTERM. Off only in tests that stop it
    /// themselves.
    pub handle_signals: bool,
    /// The arguments workers are started with; by default the primary's own,
    /// as Node does, so a worker sees the same flags.
    pub worker_args: Option<Vec<OsString>>,
    /// Extra environment for workers.
    pub worker_env: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workers: crate::default_workers(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            sched: Sched::default(),
            events: EventsFormat::default(),
            restart: None,
            grace: Duration::from_secs(10),
            handle_signals: true,
            worker_args: None,
            worker_env: Vec::new(),
        }
    }
}

/// What can go wrong running a cluster.
#[derive(Debug, thiserror::Error)]
///
/// The underlying OS error is a field called `cause`, shown in the message,
/// not a `source`: anyhow prints a chain of sources after the message, and
/// the same "Address already in use" would otherwise appear twice.
pub enum ClusterError {
    #[error("cannot listen on {addr}: {cause}{}", bind_hint(cause))]
    Bind { addr: SocketAddr, cause: io::Error },
    #[error("cannot find this program's own executable to start workers: {0}")]
    CurrentExe(io::Error),
    #[error("cannot start worker {id}: {cause}")]
    Spawn { id: WorkerId, cause: io::Error },
    #[error("cannot watch for SIGINT/SIGTERM: {0}")]
    Signals(io::Error),
    #[error("worker {0} is not running")]
    NoSuchWorker(WorkerId),
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot signal worker {id}: {cause}")]
    Kill { id: WorkerId, cause: nix::Error },
    #[error(
        "gave up: workers crashed {restarts} times within {}s, so the cluster stopped instead of restarting them in a loop; fix the crash reported above and start again",
        window.as_secs()
    )]
    CrashLoop { restarts: u32, window: Duration },
    #[error("{} within the {}s grace period: killed (a request took longer than the grace allows)", forced(ids), grace.as_secs_f32())]
    ForcedStop { ids: Vec<WorkerId>, grace: Duration },
}

fn bind_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            " (another process uses this port: choose another with --port, or --port 0 for any free port)"
        }
        io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose a port above 1024, or --port 0)"
        }
        io::ErrorKind::AddrNotAvailable => " (this machine has no such address: use 127.0.0.1)",
        _ => "",
    }
}

fn forced(ids: &[WorkerId]) -> String {
    let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    match ids {
        [_] => format!("worker {} did not stop", names.join(", ")),
        _ => format!("workers {} did not stop", names.join(", ")),
    }
}

/// Why a question got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AskError {
    #[error("worker {id} did not answer within {}ms", after.as_millis())]
    Timeout { id: WorkerId, after: Duration },
    #[error("worker {id} is gone")]
    Gone { id: WorkerId },
}

/// The answers to [`Cluster::ask_all`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gathered {
    /// Who answered, and what.
    pub answers: BTreeMap<WorkerId, serde_json::Value>,
    /// Who did not, and why.
    pub missing: BTreeMap<WorkerId, AskError>,
}

/// How a cluster ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Why it stopped (`SIGTERM`, `SIGINT`, `requested`, `crash loop`).
    pub reason: String,
    /// Workers that were still running at the deadline and were killed.
    pub forced: Vec<WorkerId>,
    /// How long the stop took, from the signal to the last exit.
    pub took: Duration,
}

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
    state: Mutex<State>,
    /// Worker watchers and `fork` → the supervising task.
    notes: mpsc::UnboundedSender<Note>,
    /// Events for anyone who subscribed.
    subscribers: broadcast::Sender<Event>,
    /// A receiver created before the first event, for the first subscriber.
    first_subscriber: Mutex<Option<broadcast::Receiver<Event>>>,
    /// Wakes the dispatcher when the set of workers that take connections changes.
    dispatch_changed: Notify,
    /// Requests to stop, from [`Cluster::shutdown`].
    stop_requests: mpsc::UnboundedSender<String>,
    /// Questions waiting for their reply, by correlation id.
    pending: Mutex<HashMap<u64, (WorkerId, oneshot::Sender<serde_json::Value>)>>,
    next_seq: AtomicU64,
    /// Connections the primary accepted and handed to a worker (round-robin).
    handed_out: AtomicU64,
    /// The outcome, once the cluster has stopped.
    outcome: watch::Receiver<Option<Result<Stopped, Arc<ClusterError>>>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u32,
    workers: BTreeMap<WorkerId, Slot>,
    /// Round-robin position.
    cursor: usize,
    /// Set once the cluster stops: no more forks, no more dispatch.
    stopping: bool,
    /// Shared strategy: the listening socket every worker inherits. Closed
    /// when the cluster stops, so new connections are refused.
    shared_listener: Option<OwnedFd>,
    /// Reuseport strategy: the primary's bound, never-listening socket that
    /// holds the port while workers come and go.
    reserved_port: Option<socket2::Socket>,
    /// Round-robin strategy: the task that owns the listening socket. The
    /// stop waits for it to end, so that by the time the `shutdown` event is
    /// out, the socket is closed and a new client is refused.
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Debug)]
struct Slot {
    pid: u32,
    to_worker: ipc::Sender<ToWorker>,
    /// Round-robin: where to send connections, while the worker takes them.
    /// Dropped when the worker leaves, which closes the channel once any
    /// send in progress has finished; the worker then sees end-of-stream.
    handles: Option<Arc<HandleSender>>,
    listening: bool,
    /// Somebody asked this worker to go: its exit is not a crash.
    leaving: bool,
}

/// What watchers and `fork` tell the supervising task.
#[derive(Debug)]
enum Note {
    Event(Event),
    WantsToLeave(WorkerId),
    Malformed {
        id: WorkerId,
        reason: String,
    },
    Reply {
        seq: u64,
        body: serde_json::Value,
    },
    Exited {
        id: WorkerId,
        pid: u32,
        status: io::Result<ExitStatus>,
    },
}

impl Cluster {
    /// Binds `options.addr`, forks `options.workers` workers, and starts
    /// supervising them. Returns once they are forked, not once they listen:
    /// watch the events (or [`Cluster::subscribe`]) for that.
    pub async fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let exe = std::env::current_exe().map_err(ClusterError::CurrentExe)?;
        let bind = |addr| listen::bind(addr).map_err(|cause| ClusterError::Bind { addr, cause });
        let bind_error = |cause| ClusterError::Bind {
            addr: options.addr,
            cause,
        };
        // Round-robin and shared: one listening socket, the primary's. Reuseport:
        // a bound socket that never listens, to hold the port (see `listen`).
        let (listener, reserved) = match options.sched {
            Sched::RoundRobin | Sched::Shared => (Some(bind(options.addr)?), None),
            Sched::ReusePort => (
                None,
                Some(listen::bind_reuse_port(options.addr).map_err(bind_error)?),
            ),
        };
        let local = match (&listener, &reserved) {
            (Some(listener), _) => listener.local_addr(),
            (None, Some(socket)) => socket.local_addr().and_then(|a| {
                a.as_socket()
                    .ok_or_else(|| io::Error::other("not an IP socket"))
            }),
            (None, None) => Err(io::Error::other("nothing bound")),
        };
        let addr = local.map_err(bind_error)?;

        // Register signal handlers before the first fork, so a Ctrl-C during
        // start-up stops the cluster instead of killing the primary alone.
        let signals = if options.handle_signals {
            let int = signal(SignalKind::interrupt()).map_err(ClusterError::Signals)?;
            let term = signal(SignalKind::terminate()).map_err(ClusterError::Signals)?;
            Some((int, term))
        } else {
            None
        };

        let (notes, notes_rx) = mpsc::unbounded_channel();
        let (stop_requests, stop_rx) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = watch::channel(None);
        let (subscribers, first_subscriber) = broadcast::channel(1024);
        let (dispatch_from, shared_listener) = match options.sched {
            Sched::RoundRobin => (listener, None),
            Sched::Shared => (None, listener.map(OwnedFd::from)),
            Sched::ReusePort => (None, None),
        };
        let state = State {
            shared_listener,
            reserved_port: reserved,
            ..State::default()
        };
        let workers = options.workers;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                reporter: Reporter::new(options.events),
                options,
                addr,
                exe,
                state: Mutex::new(state),
                notes,
                subscribers,
                first_subscriber: Mutex::new(Some(first_subscriber)),
                dispatch_changed: Notify::new(),
                stop_requests,
                handed_out: AtomicU64::new(0),
                pending: Mutex::default(),
                next_seq: AtomicU64::new(1),
                outcome,
            }),
        };

        cluster.note(Note::Event(Event::Start {
            pid: std::process::id(),
            addr,
            sched: cluster.inner.options.sched,
            workers,
        }));
        if let Some(listener) = dispatch_from {
            listener
                .set_nonblocking(true)
                .map_err(|cause| ClusterError::Bind { addr, cause })?;
            let listener = TcpListener::from_std(listener)
                .map_err(|cause| ClusterError::Bind { addr, cause })?;
            let dispatcher = tokio::spawn(dispatch(cluster.clone(), listener));
            cluster.state().dispatcher = Some(dispatcher);
        }
        tokio::spawn(supervise(
            cluster.clone(),
            notes_rx,
            stop_rx,
            signals,
            outcome_tx,
        ));

        for _ in 0..workers {
            if let Err(error) = cluster.fork() {
                // Leave nothing half-started behind: stop what did start.
                cluster.shutdown("a worker failed to start");
                let _ = cluster.wait().await;
                return Err(error);
            }
        }
        Ok(cluster)
    }

    /// The address the cluster serves on (port 0 resolved).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Node's `cluster.fork()`: starts one more worker and returns its id.
    pub fn fork(&self) -> Result<WorkerId, ClusterError> {
        let options = &self.inner.options;
        let id = {
            let mut state = self.state();
            state.next_id += 1;
            WorkerId(state.next_id)
        };
        let spawn_error = |cause| ClusterError::Spawn { id, cause };

        let (primary_ipc, worker_ipc) =
            std::os::unix::net::UnixStream::pair().map_err(spawn_error)?;
        let (handles_primary, handles_worker) = match options.sched {
            Sched::RoundRobin => {
                let (p, w) = handles::pair().map_err(spawn_error)?;
                (Some(p), Some(w))
            }
            Sched::Shared | Sched::ReusePort => (None, None),
        };

        let mut command = tokio::process::Command::new(&self.inner.exe);
        match &options.worker_args {
            Some(args) => command.args(args),
            None => command.args(std::env::args_os().skip(1)),
        };
        command
            .env(WORKER_ID_VAR, id.to_string())
            .env(IPC_FD_VAR, worker_ipc.as_raw_fd().to_string())
            .env(SCHED_VAR, options.sched.to_string())
            .env(ADDR_VAR, self.inner.addr.to_string())
            .envs(options.worker_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // stdout is the primary's event stream (JSON in --events json):
            // a worker's prints go to stderr so they cannot corrupt it.
            .stdout(Stdio::from(io::stderr()))
            .kill_on_drop(false);
        let mut inherited = vec![worker_ipc.as_raw_fd()];
        if let Some(fd) = &handles_worker {
            command.env(HANDLES_FD_VAR, fd.as_raw_fd().to_string());
            inherited.push(fd.as_raw_fd());
        }
        if let Some(fd) = &self.state().shared_listener {
            command.env(LISTEN_FD_VAR, fd.as_raw_fd().to_string());
            inherited.push(fd.as_raw_fd());
        }
        let parent = nix::unistd::getpid();
        // SAFETY: the closure runs in the child between fork and exec, and
        // calls only async-signal-safe functions (fcntl, prctl, getppid,
        // signal); it allocates nothing (the Vec was built before the fork).
        unsafe {
            command.pre_exec(move || {
                for &fd in &inherited {
                    keep_across_exec(fd)?;
                }
                // Backstop for "no orphans": the kernel kills us when the
                // primary dies. It fires when the *thread* that spawned us
                // exits; we spawn from runtime worker threads, which live as
                // long as the primary does.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The primary may have died before prctl took effect.
                if nix::unistd::getppid() != parent {
                    return Err(io::Error::other("the primary exited during the fork"));
                }
                // Ctrl-C in a terminal signals the whole process group. The
                // primary decides how workers stop, so they ignore SIGINT
                // (an ignored signal stays ignored across exec).
                nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn)?;
                Ok(())
            });
        }

        let mut state = self.state();
        if state.stopping {
            return Err(spawn_error(io::Error::other("the cluster is stopping")));
        }
        let child = command.spawn().map_err(spawn_error)?;
        // The child has its copies; ours close now.
        drop(worker_ipc);
        drop(handles_worker);
        let pid = child.id().unwrap_or(0);
        primary_ipc.set_nonblocking(true).map_err(spawn_error)?;
        let stream = UnixStream::from_std(primary_ipc).map_err(spawn_error)?;
        let (from_worker, to_worker) =
            ipc::channel::<ToPrimary, ToWorker>(stream, format!("worker {id}"));
        let handles = match handles_primary {
            Some(fd) => Some(Arc::new(HandleSender::new(fd).map_err(spawn_error)?)),
            None => None,
        };
        state.workers.insert(
            id,
            Slot {
                pid,
                to_worker,
                handles,
                listening: false,
                leaving: false,
            },
        );
        // Sent while holding the lock, so `fork` precedes anything the
        // watcher reports about this worker.
        self.note(Note::Event(Event::Fork { id, pid }));
        drop(state);
        tokio::spawn(watch_worker(
            self.inner.notes.clone(),
            id,
            pid,
            child,
            from_worker,
        ));
        Ok(id)
    }

    /// The ids of the workers running now (Node's `cluster.workers`).
    pub fn workers(&self) -> Vec<WorkerId> {
        self.state().workers.keys().copied().collect()
    }

    /// The pid of a running worker.
    pub fn pid(&self, id: WorkerId) -> Option<u32> {
        self.state().workers.get(&id).map(|slot| slot.pid)
    }

    /// How many connections the primary itself accepted and handed to a
    /// worker. Zero with [`Sched::Shared`]; every connection with
    /// [`Sched::RoundRobin`], where the primary is on the path of all traffic.
    pub fn connections_handed_out(&self) -> u64 {
        self.inner.handed_out.load(Ordering::Relaxed)
    }

    /// Sends a message to one worker (Node's `worker.send`). The body is
    /// serialised: the worker gets a copy.
    pub fn send(&self, id: WorkerId, body: &impl serde::Serialize) -> Result<(), ClusterError> {
        let body = serde_json::to_value(body).map_err(|_| SendError {
            peer: format!("worker {id}"),
        })?;
        let state = self.state();
        let slot = state
            .workers
            .get(&id)
            .ok_or(ClusterError::NoSuchWorker(id))?;
        Ok(slot.to_worker.send(&ToWorker::Message { body })?)
    }

    /// Asks one worker a question and waits, at most `timeout`, for its
    /// answer. Node has no built-in for this: it is `worker.send` plus a
    /// correlation id that the reply carries back, so that answers cannot be
    /// mixed up when several questions are out at once.
    pub async fn ask(
        &self,
        id: WorkerId,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<serde_json::Value, AskError> {
        let body = serde_json::to_value(body).map_err(|_| AskError::Gone { id })?;
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer) = oneshot::channel();
        self.pending().insert(seq, (id, answer_tx));
        let sent = match self.state().workers.get(&id) {
            Some(slot) => slot
                .to_worker
                .send(&ToWorker::Request { seq, body })
                .is_ok(),
            None => false,
        };
        if !sent {
            self.pending().remove(&seq);
            return Err(AskError::Gone { id });
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(body)) => Ok(body),
            // The worker exited; its questions were dropped.
            Ok(Err(_)) => Err(AskError::Gone { id }),
            Err(_) => {
                self.pending().remove(&seq);
                Err(AskError::Timeout { id, after: timeout })
            }
        }
    }

    /// Asks every running worker the same question at once and gathers the
    /// answers that arrive within `timeout`; the rest are listed as missing,
    /// with the reason.
    pub async fn ask_all(&self, body: &impl serde::Serialize, timeout: Duration) -> Gathered {
        let body = serde_json::to_value(body).unwrap_or(serde_json::Value::Null);
        let mut asks = tokio::task::JoinSet::new();
        for id in self.workers() {
            let cluster = self.clone();
            let body = body.clone();
            asks.spawn(async move { (id, cluster.ask(id, &body, timeout).await) });
        }
        let mut gathered = Gathered::default();
        while let Some(Ok((id, answer))) = asks.join_next().await {
            match answer {
                Ok(body) => {
                    gathered.answers.insert(id, body);
                }
                Err(error) => {
                    gathered.missing.insert(id, error);
                }
            }
        }
        gathered
    }

    /// Node's `worker.disconnect()`: stop sending the worker connections,
    /// then tell it to finish and exit. Its exit will not be restarted.
    pub fn disconnect(&self, id: WorkerId) -> Result<(), ClusterError> {
        let mut state = self.state();
        let slot = state
            .workers
            .get_mut(&id)
            .ok_or(ClusterError::NoSuchWorker(id))?;
        slot.leaving = true;
        slot.listening = false;
        // Out of dispatch first (see `Slot::handles`), then the message.
        slot.handles = None;
        let sent = slot.to_worker.send(&ToWorker::Disconnect);
        drop(state);
        self.inner.dispatch_changed.notify_waiters();
        Ok(sent?)
    }

    /// Node's `worker.kill(signal)` / `process.kill(pid, signal)`.
    pub fn kill(&self, id: WorkerId, signal: Signal) -> Result<(), ClusterError> {
        let pid = self.pid(id).ok_or(ClusterError::NoSuchWorker(id))?;
        kill(Pid::from_raw(pid as i32), signal).map_err(|cause| ClusterError::Kill { id, cause })
    }

    /// A stream of events. The first call gets every event since
    /// [`Cluster::start`] (so a lesson or test that subscribes right after
    /// start misses nothing, not even `fork`); later calls get events from
    /// then on. A subscriber that falls more than 1024 events behind misses
    /// the oldest (`RecvError::Lagged` says so).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        let first = self
            .inner
            .first_subscriber
            .lock()
            .ok()
            .and_then(|mut first| first.take());
        first.unwrap_or_else(|| self.inner.subscribers.subscribe())
    }

    /// Prints a lesson's own event the way this cluster prints events: as
    /// `{"event": kind, ...fields}` with `--events json`, as `human` for people.
    pub fn report(&self, kind: &str, fields: &impl serde::Serialize, human: &str) {
        self.inner.reporter.custom(kind, fields, human);
    }

    /// Prints a line for people (stderr in JSON mode).
    pub fn note_line(&self, text: &str) {
        self.inner.reporter.note(text);
    }

    /// Starts stopping the cluster, as SIGTERM would. Returns at once; await
    /// [`Cluster::wait`] for the end.
    pub fn shutdown(&self, reason: &str) {
        let _ = self.inner.stop_requests.send(reason.to_string());
    }

    /// Waits until the cluster has stopped. `Ok` says how (check
    /// [`Stopped::forced`], or use [`Cluster::run`]); `Err` when it gave up
    /// on a crash loop.
    pub async fn wait(&self) -> Result<Stopped, Arc<ClusterError>> {
        let mut outcome = self.inner.outcome.clone();
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| {
            Err(Arc::new(ClusterError::Signals(io::Error::other(
                "the supervising task ended unexpectedly",
            ))))
        })
    }

    /// Waits for the cluster to stop, and turns a stop that had to kill
    /// workers into an error: a failed drain must not exit 0.
    pub async fn run(&self) -> Result<Stopped, Arc<ClusterError>> {
        let stopped = self.wait().await?;
        if stopped.forced.is_empty() {
            Ok(stopped)
        } else {
            Err(Arc::new(ClusterError::ForcedStop {
                ids: stopped.forced.clone(),
                grace: self.inner.options.grace,
            }))
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pending(
        &self,
    ) -> MutexGuard<'_, HashMap<u64, (WorkerId, oneshot::Sender<serde_json::Value>)>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn note(&self, note: Note) {
        // The supervising task holds the receiver for the cluster's whole
        // life; a failed send means it is gone, and nobody is left to tell.
        let _ = self.inner.notes.send(note);
    }

    /// The next worker to hand a connection to, round-robin.
    fn next_target(&self) -> Option<(WorkerId, Arc<HandleSender>)> {
        let mut state = self.state();
        if state.stopping {
            return None;
        }
        let ready: Vec<_> = state
            .workers
            .iter()
            .filter(|(_, slot)| slot.listening && !slot.leaving)
            .filter_map(|(id, slot)| slot.handles.clone().map(|h| (*id, h)))
            .collect();
        if ready.is_empty() {
            return None;
        }
        let pick = state.cursor % ready.len();
        state.cursor = state.cursor.wrapping_add(1);
        ready.into_iter().nth(pick)
    }
}

/// Turns one worker's channel and exit into notes, in order: everything the
/// worker said, then (at end-of-file) `disconnect`, then `exit`.
async fn watch_worker(
    notes: mpsc::UnboundedSender<Note>,
    id: WorkerId,
    pid: u32,
    mut child: tokio::process::Child,
    mut from_worker: ipc::Receiver<ToPrimary>,
) {
    loop {
        let note = match from_worker.recv().await {
            Ok(Some(Incoming::Message(message))) => match message {
                ToPrimary::Online => Note::Event(Event::Online { id }),
                ToPrimary::Listening { addr } => Note::Event(Event::Listening { id, addr }),
                ToPrimary::Ready => Note::Event(Event::Ready { id }),
                ToPrimary::Message { body } => Note::Event(Event::Message { id, body }),
                ToPrimary::Disconnect => Note::WantsToLeave(id),
                ToPrimary::Reply { seq, body } => Note::Reply { seq, body },
            },
            Ok(Some(Incoming::Malformed { reason })) => Note::Malformed { id, reason },
            Ok(None) | Err(_) => break,
        };
        let _ = notes.send(note);
    }
    let _ = notes.send(Note::Event(Event::Disconnect { id }));
    let status = child.wait().await;
    let _ = notes.send(Note::Exited { id, pid, status });
}

// ANCHOR: dispatch
/// Round-robin: accept every connection and pass it to the next worker.
async fn dispatch(cluster: Cluster, listener: TcpListener) {
    loop {
        // Accept only when some worker can take the connection; until then
        // clients wait in the kernel's accept queue, not in our memory.
        if !wait_for_target(&cluster).await {
            return;
        }
        // Race the accept with the stop: once the cluster stops, the
        // listening socket must close at once, so new clients are refused
        // instead of queueing for a primary that will never accept them.
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = until_stopping(&cluster) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                cluster.note_line(&format!("accept failed: {error}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // The worker we waited for may have left meanwhile: try each in turn.
        loop {
            let Some((id, handles)) = cluster.next_target() else {
                if !wait_for_target(&cluster).await {
                    return; // stopping: dropping `stream` closes it
                }
                continue;
            };
            match handles.send(stream.as_raw_fd(), peer).await {
                Ok(()) => {
                    cluster.inner.handed_out.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(_) => {
                    // The worker is gone; its exit will be reported. Take it
                    // out of dispatch and try the next one.
                    if let Some(slot) = cluster.state().workers.get_mut(&id) {
                        slot.handles = None;
                    }
                }
            }
        }
        // `stream` drops here: the worker holds the connection now.
    }
}

// ANCHOR_END: dispatch

/// Resolves once the cluster has begun to stop.
async fn until_stopping(cluster: &Cluster) {
    loop {
        let changed = cluster.inner.dispatch_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if cluster.state().stopping {
            return;
        }
        changed.await;
    }
}

/// Waits until a worker can take connections; false if the cluster stops.
async fn wait_for_target(cluster: &Cluster) -> bool {
    loop {
        let changed = cluster.inner.dispatch_changed.notified();
        tokio::pin!(changed);
        // Register interest before looking, so a change in between is not lost.
        changed.as_mut().enable();
        {
            let state = cluster.state();
            if state.stopping {
                return false;
            }
            if state
                .workers
                .values()
                .any(|slot| slot.listening && !slot.leaving && slot.handles.is_some())
            {
                return true;
            }
        }
        changed.await;
    }
}

/// A stop in progress.
#[derive(Debug)]
struct Stopping {
    reason: String,
    since: Instant,
    deadline: tokio::time::Instant,
    killed: bool,
    forced: Vec<WorkerId>,
    gave_up: Option<(u32, Duration)>,
}

/// The cluster's one supervising task.
async fn supervise(
    cluster: Cluster,
    mut notes: mpsc::UnboundedReceiver<Note>,
    mut stop_requests: mpsc::UnboundedReceiver<String>,
    mut signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    outcome: watch::Sender<Option<Result<Stopped, Arc<ClusterError>>>>,
) {
    let mut budget = cluster.inner.options.restart.map(RestartBudget::new);
    let mut stopping: Option<Stopping> = None;

    loop {
        // Done when stopping and the last worker is gone. A restart timer
        // still pending then finds `stopping` set and forks nothing.
        if stopping.is_some() && cluster.state().workers.is_empty() {
            break;
        }
        let deadline = stopping
            .as_ref()
            .filter(|stop| !stop.killed)
            .map(|stop| stop.deadline);
        let interrupt = async {
            match &mut signals {
                Some((int, term)) => tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(note) = notes.recv() => {
                handle_note(&cluster, note, &mut budget, &mut stopping).await;
            }
            reason = interrupt => {
                if let Some(stop) = &mut stopping {
                    // A second Ctrl-C: the person does not want to wait.
                    if !stop.killed {
                        cluster.note_line(&format!("{reason} again: killing the remaining workers now"));
                        kill_remaining(&cluster, stop);
                    }
                } else {
                    begin_stop(&cluster, &mut stopping, reason.to_string(), None).await;
                }
            }
            Some(reason) = stop_requests.recv() => {
                if stopping.is_none() {
                    begin_stop(&cluster, &mut stopping, reason, None).await;
                }
            }
            () = sleep_until_opt(deadline) => {
                if let Some(stop) = &mut stopping {
                    kill_remaining(&cluster, stop);
                }
            }
        }
    }

    let result = match stopping {
        Some(Stopping {
            gave_up: Some((restarts, window)),
            ..
        }) => Err(Arc::new(ClusterError::CrashLoop { restarts, window })),
        Some(stop) => Ok(Stopped {
            reason: stop.reason,
            forced: stop.forced,
            took: stop.since.elapsed(),
        }),
        None => Ok(Stopped {
            reason: "stopped".into(),
            forced: Vec::new(),
            took: Duration::ZERO,
        }),
    };
    let _ = outcome.send(Some(result));
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn publish(cluster: &Cluster, event: Event) {
    cluster.inner.reporter.event(&event);
    let _ = cluster.inner.subscribers.send(event);
}

async fn handle_note(
    cluster: &Cluster,
    note: Note,
    budget: &mut Option<RestartBudget>,
    stopping: &mut Option<Stopping>,
) {
    match note {
        Note::Event(event) => {
            if let Event::Listening { id, .. } = &event {
                if let Some(slot) = cluster.state().workers.get_mut(id)
                    && !slot.leaving
                {
                    slot.listening = true;
                }
                cluster.inner.dispatch_changed.notify_waiters();
            }
            if let Event::Disconnect { id } = &event {
                if let Some(slot) = cluster.state().workers.get_mut(id) {
                    slot.listening = false;
                    slot.handles = None;
                }
                cluster.inner.dispatch_changed.notify_waiters();
            }
            publish(cluster, event);
        }
        Note::Reply { seq, body } => {
            // No waiter means the question timed out already: drop it.
            if let Some((_, answer)) = cluster.pending().remove(&seq) {
                let _ = answer.send(body);
            }
        }
        Note::WantsToLeave(id) => {
            // The worker asked; answer like `worker.disconnect()` would.
            let _ = cluster.disconnect(id);
        }
        Note::Malformed { id, reason } => {
            cluster.note_line(&format!(
                "worker {id} sent a message that is not valid ({reason}); dropped it"
            ));
        }
        Note::Exited { id, pid, status } => {
            let slot = cluster.state().workers.remove(&id);
            // Questions it will never answer fail now, not at their timeout.
            cluster.pending().retain(|_, (asked, _)| *asked != id);
            cluster.inner.dispatch_changed.notify_waiters();
            let leaving = slot.is_some_and(|slot| slot.leaving);
            let (code, signal) = match &status {
                Ok(status) => (
                    status.code(),
                    status.signal().map(|n| {
                        Signal::try_from(n)
                            .map_or_else(|_| format!("signal {n}"), |s| s.as_str().to_string())
                    }),
                ),
                Err(_) => (None, None),
            };
            publish(
                cluster,
                Event::Exit {
                    id,
                    pid,
                    code,
                    signal,
                    exited_after_disconnect: leaving,
                },
            );
            if leaving || stopping.is_some() {
                return;
            }
            let Some(budget) = budget else { return };
            match budget.on_crash(Instant::now()) {
                Decision::Restart { delay } => {
                    publish(
                        cluster,
                        Event::RestartScheduled {
                            after: id,
                            delay_ms: delay.as_millis() as u64,
                        },
                    );
                    let cluster = cluster.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        if !cluster.state().stopping
                            && let Err(error) = cluster.fork()
                        {
                            cluster.note_line(&format!("could not replace worker {id}: {error}"));
                        }
                    });
                }
                Decision::GiveUp { restarts } => {
                    let window = budget.policy().window;
                    publish(
                        cluster,
                        Event::GaveUp {
                            restarts,
                            window_ms: window.as_millis() as u64,
                        },
                    );
                    begin_stop(
                        cluster,
                        stopping,
                        "crash loop".into(),
                        Some((restarts, window)),
                    )
                    .await;
                }
            }
        }
    }
}

async fn begin_stop(
    cluster: &Cluster,
    stopping: &mut Option<Stopping>,
    reason: String,
    gave_up: Option<(u32, Duration)>,
) {
    let (ids, dispatcher) = {
        let mut state = cluster.state();
        state.stopping = true;
        // Shared strategy: our copy of the listening socket closes now; it
        // closes for good when the last worker lets go of its copy.
        state.shared_listener = None;
        state.reserved_port = None;
        let ids = state.workers.keys().copied().collect::<Vec<_>>();
        (ids, state.dispatcher.take())
    };
    cluster.inner.dispatch_changed.notify_waiters();
    if let Some(dispatcher) = dispatcher {
        // It returns as soon as it sees `stopping`; the bound only guards
        // against a handle send stuck on a worker that stopped reading.
        let _ = tokio::time::timeout(Duration::from_secs(1), dispatcher).await;
    }
    publish(
        cluster,
        Event::Shutdown {
            reason: reason.clone(),
        },
    );
    for id in ids {
        // A worker whose channel is already closed is exiting anyway.
        let _ = cluster.disconnect(id);
    }
    *stopping = Some(Stopping {
        reason,
        since: Instant::now(),
        deadline: tokio::time::Instant::now() + cluster.inner.options.grace,
        killed: false,
        forced: Vec::new(),
        gave_up,
    });
}

fn kill_remaining(cluster: &Cluster, stop: &mut Stopping) {
    stop.killed = true;
    for id in cluster.workers() {
        if cluster.kill(id, Signal::SIGKILL).is_ok() {
            cluster.note_line(&format!(
                "worker {id} did not finish within the grace period: killed"
            ));
            stop.forced.push(id);
        }
    }
}
