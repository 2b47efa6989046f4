//! Starting a worker process in a slot, and watching it until it ends.
//!
//! Workers are started by re-executing this binary (see [`crate::role`] for
//! why not `fork()`). Each child gets, across exec: its id and generation,
//! its end of the IPC socketpair, and its way to connections (the handle
//! channel, the shared listening socket, or its slot's reuseport socket).
//! A watcher task per worker turns its channel and its exit status into
//! notes for the supervising task, in order: everything the worker said,
//! then (at end-of-file) `disconnect`, then `exit`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::net::UnixStream;
use tokio::time::Instant;

use super::ask::Answer;
use super::inbox::Note;
use super::life::Life;
use super::owner::Supervisor;
use super::registry::{Entry, Registry, Slot, SlotId};
use super::round_robin::Target;
use super::{Cluster, ClusterError};
use crate::event::Event;
use crate::handles;
use crate::inherit::keep_across_exec;
use crate::ipc::{self, Incoming, ToPrimary, ToWorker};
use crate::listen::{self, Sched};
use crate::role::WorkerId;
use crate::runtime;
use crate::worker_env::{Connections, WorkerEnv};

/// What the child must refuse to start with: a message built before the
/// fork, because nothing may allocate between fork and exec.
const PRIMARY_GONE: &str = "the primary exited during the fork";

impl Supervisor {
    /// A new, empty slot (reuseport: with its own socket bound).
    pub(super) fn new_slot(&mut self) -> Result<SlotId, ClusterError> {
        let socket = match self.cluster.inner.options.sched {
            Sched::ReusePort => {
                let addr = self.cluster.inner.addr;
                let socket = listen::bind_reuse_port(addr)
                    .map_err(|cause| ClusterError::Bind { addr, cause })?;
                Some(OwnedFd::from(socket))
            }
            Sched::RoundRobin | Sched::Shared => None,
        };
        Ok(self.registry.add_slot(Slot {
            socket,
            ..Slot::default()
        }))
    }

    /// Starts a worker of the current generation in `slot`. The loop runs
    /// it, so the worker is registered before anything it says can be read.
    pub(super) fn spawn_into(&mut self, slot: SlotId) -> Result<WorkerId, ClusterError> {
        if self.stopping.is_some() {
            return Err(ClusterError::Stopping);
        }
        let cluster = self.cluster.clone();
        let options = &cluster.inner.options;
        let registry = &mut self.registry;
        let id = registry.next_worker_id();
        let generation = registry.generation;
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
        let connections =
            connections_for(registry, slot, handles_worker.as_ref()).ok_or_else(|| {
                spawn_error(io::Error::other(
                    "no listening socket left to give a worker",
                ))
            })?;

        // Sized for the desired count now: after a scale-up, new workers
        // get fewer threads each (see `crate::runtime`).
        let threads = options.worker_threads.unwrap_or_else(|| {
            runtime::worker_threads(registry.slots.len(), crate::default_workers())
        });
        let env = WorkerEnv {
            id,
            generation,
            ipc_fd: worker_ipc.as_raw_fd(),
            sched: options.sched,
            addr: cluster.inner.addr,
            threads,
            connections,
        };
        let mut command = cluster.command_for(&env);
        let inherited = match connections {
            Connections::Handles(fd) | Connections::Listener(fd) => [worker_ipc.as_raw_fd(), fd],
        };
        prepare_child(&mut command, inherited, options.worker_memory_limit);

        let child = command.spawn().map_err(|cause| {
            if cause.kind() == io::ErrorKind::BrokenPipe {
                spawn_error(io::Error::other(PRIMARY_GONE))
            } else {
                spawn_error(cause)
            }
        })?;
        // The child has its copies; ours close now.
        drop(worker_ipc);
        drop(handles_worker);
        let pid = child.id().unwrap_or(0);
        primary_ipc.set_nonblocking(true).map_err(spawn_error)?;
        let stream = UnixStream::from_std(primary_ipc).map_err(spawn_error)?;
        let (from_worker, to_worker) =
            ipc::channel::<ToPrimary, ToWorker>(stream, format!("worker {id}"));
        self.register(id, slot, pid, handles_primary, to_worker)
            .map_err(spawn_error)?;
        tokio::spawn(watch_worker(cluster, id, pid, child, from_worker));
        Ok(id)
    }

    /// Puts the new worker in the registry (round-robin: its hand-off
    /// channel in the rotation's keeping) and publishes `fork`, before the
    /// loop reads anything its watcher reports about it.
    fn register(
        &mut self,
        id: WorkerId,
        slot: SlotId,
        pid: u32,
        handles_primary: Option<OwnedFd>,
        to_worker: ipc::Sender<ToWorker>,
    ) -> io::Result<()> {
        let cluster = &self.cluster;
        if let (Some(fd), Some(round_robin)) = (handles_primary, &mut self.round_robin) {
            let target = cluster.on_dispatcher(|| {
                let target = Arc::new(Target::new(slot.0, fd)?);
                tokio::spawn(Arc::clone(&target).count_acks(cluster.clone()));
                Ok::<_, io::Error>(target)
            })?;
            round_robin.join(id, target);
        }
        let registry = &mut self.registry;
        let generation = registry.generation;
        registry.workers.insert(
            id,
            Entry {
                pid,
                slot,
                generation,
                life: Life::Starting,
                to_worker,
                forked_at: Instant::now(),
            },
        );
        if let Some(slot) = registry.slots.get_mut(&slot) {
            slot.refill_at = None;
        }
        self.publish_now(Event::Fork {
            id,
            pid,
            generation,
        });
        Ok(())
    }
}

/// The descriptor a new worker in `slot` takes its connections from: the
/// round-robin pair's end, or the listening socket (shared, or the slot's
/// own with reuseport). `None` once the sockets are closed: a stop.
fn connections_for(
    registry: &Registry,
    slot: SlotId,
    handles_worker: Option<&OwnedFd>,
) -> Option<Connections> {
    if let Some(fd) = handles_worker {
        return Some(Connections::Handles(fd.as_raw_fd()));
    }
    let listening = match registry.slots.get(&slot).and_then(|s| s.socket.as_ref()) {
        Some(own) => Some(own),
        None => registry.shared_listener.as_ref(),
    };
    listening.map(|fd| Connections::Listener(fd.as_raw_fd()))
}

impl Cluster {
    /// The worker's command line: this binary again, with the lesson's
    /// arguments (or the options' own), and `env` in its environment.
    fn command_for(&self, env: &WorkerEnv) -> tokio::process::Command {
        let options = &self.inner.options;
        let mut command = tokio::process::Command::new(&self.inner.exe);
        match &options.worker_args {
            Some(args) => command.args(args),
            None => command.args(std::env::args_os().skip(1)),
        };
        env.write_to(&mut command);
        command
            .envs(options.worker_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            // stdout is the primary's event stream (JSON in --events json):
            // a worker's prints go to stderr so they cannot corrupt it.
            .stdout(Stdio::from(io::stderr()))
            .kill_on_drop(false);
        command
    }
}

/// What the child does between fork and exec: keep `inherited` open across
/// exec, die with the primary, ignore the terminal's signals, and take the
/// hard memory limit.
fn prepare_child(
    command: &mut tokio::process::Command,
    inherited: [RawFd; 2],
    memory_limit: Option<u64>,
) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, and
    // calls only async-signal-safe functions (fcntl, prctl, getppid,
    // signal, setrlimit); it allocates nothing: the descriptors were
    // listed before the fork, and its one error is a static message.
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
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            // Ctrl-C (and a closing terminal's SIGHUP) signal the whole
            // process group. The primary decides how workers stop, so
            // they ignore both (an ignored signal stays ignored across
            // exec).
            nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn)?;
            nix::sys::signal::signal(Signal::SIGHUP, nix::sys::signal::SigHandler::SigIgn)?;
            // The hard memory limit, inherited by the program exec runs.
            if let Some(limit) = memory_limit {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_DATA,
                    limit,
                    limit,
                )?;
            }
            Ok(())
        });
    }
}

/// Turns one worker's channel and exit into notes, in order. Replies to
/// questions skip the queue: they go straight to whoever asked.
async fn watch_worker(
    cluster: Cluster,
    id: WorkerId,
    pid: u32,
    mut child: tokio::process::Child,
    mut from_worker: ipc::Receiver<ToPrimary>,
) {
    loop {
        let note = match from_worker.recv().await {
            Ok(Some(Incoming::Message(message))) => match message {
                ToPrimary::Online => Note::Worker(Event::Online { id }),
                ToPrimary::Listening { addr } => Note::Worker(Event::Listening { id, addr }),
                ToPrimary::Ready => Note::Worker(Event::Ready { id }),
                ToPrimary::Message { body } => Note::Worker(Event::Message { id, body }),
                ToPrimary::Disconnect => Note::WantsToLeave(id),
                ToPrimary::Terminated => Note::Terminated(id),
                ToPrimary::NotAccepting => Note::NotAccepting(id),
                ToPrimary::Reply { seq, body } => {
                    cluster.answer(seq, Answer::Reply(body));
                    continue;
                }
                ToPrimary::Heartbeat { seq, beat } => {
                    cluster.answer(seq, Answer::Beat(beat));
                    continue;
                }
            },
            Ok(Some(Incoming::Malformed { reason })) => Note::Malformed { id, reason },
            Ok(None) | Err(_) => break,
        };
        cluster.note(note);
    }
    // Questions it will never answer fail now, not at their timeout.
    cluster.forget_questions(id);
    cluster.note(Note::Worker(Event::Disconnect { id }));
    let status: io::Result<ExitStatus> = child.wait().await;
    cluster.note(Note::Exited { id, pid, status });
}
