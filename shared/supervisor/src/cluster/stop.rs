//! Departures: one worker leaving, or the whole cluster stopping.
//!
//! A worker leaves the same way whatever the reason ([`Cluster::depart`]):
//! out of rotation first, then told to disconnect, with `grace` to finish
//! before it is killed. The reason is recorded once, the first time, and
//! its exit reports it.
//!
//! Stopping the cluster is every worker leaving, after the door is shut.
//! The order matters. First no new connection may reach a worker: the
//! primary closes its listening sockets (round-robin: the dispatcher stops
//! and the socket closes, so a new client is refused at once). Only then is
//! `shutdown` published, and every worker told to disconnect, each with the
//! `grace` deadline after which it is killed. The primary is done when the
//! last worker has exited — not after a fixed sleep — and it reports the
//! workers it had to kill, so a failed drain cannot pass for a clean one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::inbox::Command;
use super::owner::Supervisor;
use super::stopping::{CLOSE_WITHIN, Closing, Stopping};
use super::{Cluster, ClusterError};
use crate::event::{Event, ExitReason, GaveUpCause, StopReason};
use crate::ipc::ToWorker;
use crate::listen::Sched;
use crate::role::WorkerId;

/// How a cluster ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// Why it stopped.
    pub reason: StopReason,
    /// Workers that were killed: still running at the deadline, or cut
    /// short by a fast stop.
    pub forced: Vec<WorkerId>,
    /// Set when somebody asked to stop at once (SIGQUIT, a second Ctrl-C):
    /// what they asked with. Then `forced` is not a drain that overran.
    pub cut_short: Option<&'static str>,
    /// How long the stop took, from the signal to the last exit.
    pub took: Duration,
}

impl Cluster {
    /// Starts stopping the cluster, as SIGTERM would. Returns at once; await
    /// [`Cluster::wait`] for the end.
    pub fn shutdown(&self) {
        self.stop(StopReason::Requested);
    }

    pub(super) fn stop(&self, reason: StopReason) {
        self.command(Command::Stop(reason));
    }

    /// Waits until the cluster has stopped. `Ok` says how (check
    /// [`Stopped::forced`], or use [`Cluster::run`]); `Err` when it gave up.
    pub async fn wait(&self) -> Result<Stopped, Arc<ClusterError>> {
        let mut outcome = self.inner.outcome.clone();
        let result = match outcome.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        result.unwrap_or_else(|| Err(Arc::new(ClusterError::SupervisorGone)))
    }

    /// Waits for the cluster to stop, and turns a stop that had to kill
    /// workers into an error: a failed drain must not exit 0.
    pub async fn run(&self) -> Result<Stopped, Arc<ClusterError>> {
        let stopped = self.wait().await?;
        let ids = stopped.forced.clone();
        match (ids.is_empty(), stopped.cut_short) {
            (true, _) => Ok(stopped),
            (false, Some(how)) => Err(Arc::new(ClusterError::CutShort { ids, how })),
            (false, None) => Err(Arc::new(ClusterError::ForcedStop {
                ids,
                grace: self.inner.options.grace,
            })),
        }
    }
}

impl Supervisor {
    /// Tells every worker to leave: the drain, with its `grace` deadline.
    fn drain_all(&mut self) {
        let ids: Vec<WorkerId> = self.registry.workers.keys().copied().collect();
        for id in ids {
            // A worker whose channel is already closed is exiting anyway.
            let _ = self.depart(id, ExitReason::Shutdown);
        }
    }

    /// Worker `id` closed its listening socket (or exited): when it was
    /// the last, the drain begins.
    pub(super) fn socket_closed(&mut self, id: WorkerId) {
        if self
            .stopping
            .as_mut()
            .is_some_and(|stop| stop.socket_closed(id))
        {
            self.drain_all();
        }
    }

    /// The wait for sockets is over: drain whoever is left.
    pub(super) fn closing_overdue(&mut self) {
        let now = Instant::now();
        if (self.stopping.as_mut()).is_some_and(|stop| stop.closing_overdue(now)) {
            self.drain_all();
        }
    }

    /// Begins stopping the cluster, once; a second call changes nothing.
    pub(super) async fn stop(
        &mut self,
        reason: StopReason,
        gave_up: Option<(u32, Duration, GaveUpCause)>,
    ) {
        if self.stopping.is_some() {
            return;
        }
        // From here on the cluster is stopping, and every snapshot says so.
        self.stopping = Some(Stopping {
            reason,
            since: std::time::Instant::now(),
            forced: Vec::new(),
            gave_up,
            cut_short: None,
            closing: None,
        });
        let never_ready = self.shut_the_door();
        self.flush();
        for (_, pid) in &never_ready {
            sigkill(*pid);
        }
        if let Some(round_robin) = &mut self.round_robin {
            round_robin.close();
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            // It returns as soon as it sees the rotation closed; the bound
            // is a backstop.
            let _ = tokio::time::timeout(Duration::from_secs(1), dispatcher).await;
        }
        self.publish_now(Event::Shutdown { reason });
        if !never_ready.is_empty() {
            let names: Vec<String> = never_ready.iter().map(|(id, _)| id.to_string()).collect();
            self.cluster.note_line(&format!(
                "killed worker(s) {} at once: never ready, so nothing to drain",
                names.join(", ")
            ));
        }
        let closing = self.close_sockets(&never_ready);
        let drain_now = closing.is_none();
        if let Some(stop) = &mut self.stopping {
            stop.closing = closing;
        }
        if drain_now {
            self.drain_all();
        }
    }

    /// Closes the primary's copies of the listening sockets and kills the
    /// workers that were never ready; returns those (id, pid).
    fn shut_the_door(&mut self) -> Vec<(WorkerId, u32)> {
        let registry = &mut self.registry;
        // Shared and reuseport: our copies of the listening sockets close
        // now; each closes for good when the last worker lets go of its copy.
        registry.shared_listener = None;
        registry.reserved_port = None;
        for slot in registry.slots.values_mut() {
            slot.socket = None;
        }
        // A worker that never said it was ready has taken no connection,
        // so it has nothing to drain: it is killed now, not waited for.
        // Waiting would hold the stop for the rest of its warm-up, and its
        // copy of a listening socket with it: the kernel would go on
        // queueing clients there that nobody takes, and reset them all when
        // it finally closed (a rollout's replacement, warming up when
        // SIGTERM came, cost each keep-alive client one request).
        let mut never_ready = Vec::new();
        for (id, entry) in &mut registry.workers {
            if !entry.life.ever_ready() && entry.life.kill(ExitReason::Shutdown) {
                never_ready.push((*id, entry.pid));
            }
        }
        never_ready
    }

    /// Round-robin: the primary's socket, the only one, is closed already.
    /// Shared and reuseport: each worker holds a listening socket, and a
    /// socket that closes resets the clients queued on it. Telling workers
    /// to drain sends their keep-alive clients off to reconnect, so first
    /// every socket closes, then the drain begins: a client that reconnects
    /// now finds the port closed (refused, before it sent anything) rather
    /// than a queue about to be thrown away. A worker killed for never
    /// being ready counts as open until its exit: SIGKILL closes its copy
    /// of the socket only once the process is gone, and a client that
    /// reconnected into that copy meanwhile would be reset with it.
    fn close_sockets(&self, never_ready: &[(WorkerId, u32)]) -> Option<Closing> {
        match self.cluster.inner.options.sched {
            Sched::RoundRobin => None,
            Sched::Shared | Sched::ReusePort => {
                let open: BTreeSet<WorkerId> = (self.registry.workers.iter())
                    .filter(|(_, entry)| !entry.life.killed())
                    .filter(|(_, entry)| entry.to_worker.send(&ToWorker::StopAccepting).is_ok())
                    .map(|(id, _)| *id)
                    .chain(never_ready.iter().map(|(id, _)| *id))
                    .collect();
                (!open.is_empty()).then(|| Closing {
                    open,
                    until: Instant::now() + CLOSE_WITHIN,
                })
            }
        }
    }

    /// Kills every worker still running (a second Ctrl-C, SIGQUIT).
    pub(super) fn kill_all(&mut self) {
        let pids: Vec<(WorkerId, u32)> = (self.registry.workers.iter_mut())
            .filter_map(|(id, entry)| {
                // One that was told to go keeps its reason; one still in
                // service (a fast stop while sockets close) goes for the stop.
                (entry.life.kill(ExitReason::Shutdown)).then_some((*id, entry.pid))
            })
            .collect();
        for (id, pid) in pids {
            sigkill(pid);
            if let Some(stop) = &mut self.stopping {
                stop.forced.push(id);
            }
        }
    }
}

pub(super) fn sigkill(pid: u32) {
    // An error means it is gone already: its exit is on its way.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
}

impl Supervisor {
    /// Asks worker `id` to go, for `reason`: out of rotation first, then
    /// told to disconnect, with a deadline of `grace` to finish. The first
    /// reason given is the one its exit reports.
    pub(super) fn depart(&mut self, id: WorkerId, reason: ExitReason) -> Result<(), ClusterError> {
        let deadline = Instant::now() + self.cluster.inner.options.grace;
        let stopping = self.stopping.is_some();
        let registry = &mut self.registry;
        let entry = registry
            .workers
            .get_mut(&id)
            .ok_or(ClusterError::NoSuchWorker(id))?;
        let first = entry.life.depart(reason, deadline);
        let (slot, to_worker) = (entry.slot, entry.to_worker.clone());
        // Leaving for good gives up its place in the desired count at
        // once (Node drops it from `cluster.workers` at once, too),
        // unless a replacement already holds that place.
        let mut scaled = None;
        if first && reason == ExitReason::Left && !stopping {
            let taken = (registry.workers.values()).any(|e| e.slot == slot && e.life.in_service());
            if !taken && registry.slots.remove(&slot).is_some() {
                scaled = Some((registry.slots.len() + 1, registry.slots.len()));
            }
        }
        if first {
            self.publish_now(Event::Draining { id, reason });
        }
        if let Some((from, to)) = scaled {
            // Said once, here, because nothing else would say it: the flag
            // asked for `from` workers and the cluster now runs fewer.
            self.cluster.note_line(&format!(
                "worker {id} leaves for good, so nothing replaces it (as Node does after disconnect()): {to} of the {from} workers from now on; SIGTTIN adds one"
            ));
            self.publish_now(Event::Scale { from, to });
        }
        // Out of the rotation, and its hand-off channel closed: no more
        // connections will come. Then it is told to finish.
        if let Some(round_robin) = &mut self.round_robin {
            round_robin.remove(id);
        }
        // A worker told by the closed hand-off channel (or by its own
        // crash) may be gone before this arrives: it is leaving, as asked,
        // so a refused send here is no error for the caller.
        let _ = to_worker.send(&ToWorker::Disconnect);
        Ok(())
    }
}
