//! The supervising loop's state: the registry's only owner, and what only
//! the loop decides (is the cluster stopping, the restart budget, the
//! rotation round-robin hands connections to).
//!
//! The struct lives apart from the loop (`supervise`) and from the files
//! that give it methods (`commands`, `exits`, `signals`, `spawn`, `stop`),
//! so that each of those imports it without importing the loop. Here too
//! are the three things every change ends with: publish the snapshot,
//! publish an event, answer the caller, in that order.

use tokio::sync::watch;

use super::Cluster;
use super::dispatch;
use super::inbox::Reply;
use super::registry::Registry;
use super::round_robin::RoundRobin;
use super::snapshot::Snapshot;
use super::stopping::Stopping;
use crate::event::Event;
use crate::restart::RestartBudget;

/// The loop's state: the registry, and what only the loop decides.
pub(super) struct Supervisor {
    pub cluster: Cluster,
    /// The slots and workers; nobody else holds it.
    pub registry: Registry,
    pub crashes: Option<RestartBudget>,
    /// Set once the cluster begins to stop: no more forks, no more dispatch.
    pub stopping: Option<Stopping>,
    pub dispatcher: Option<dispatch::Stopped>,
    /// Round-robin: the rotation the dispatcher hands connections to.
    pub round_robin: Option<RoundRobin>,
    /// Whether some worker was ready at the last look; `None` before the
    /// first ever was.
    pub serving: Option<bool>,
    /// Where readers find the registry as it was last published.
    pub snapshot: watch::Sender<Snapshot>,
}

impl Supervisor {
    pub(super) fn new(
        cluster: Cluster,
        registry: Registry,
        round_robin: Option<RoundRobin>,
        snapshot: watch::Sender<Snapshot>,
    ) -> Self {
        Supervisor {
            crashes: cluster.inner.options.restart.map(RestartBudget::new),
            cluster,
            registry,
            stopping: None,
            dispatcher: None,
            round_robin,
            serving: None,
            snapshot,
        }
    }

    /// Publishes the registry for readers, if it changed since the last
    /// time. Called after every turn of the loop, and before every event,
    /// so that whoever reads an event finds the state it speaks of.
    pub(super) fn flush(&mut self) {
        let stopping = self.stopping.is_some();
        if !self.registry.shown_by(&self.snapshot.borrow(), stopping) {
            self.snapshot.send_replace(self.registry.snapshot(stopping));
        }
    }

    /// Prints and broadcasts an event. Only the loop calls it, which is
    /// what gives every reader the same order.
    pub(super) fn publish_now(&mut self, event: Event) {
        self.flush();
        self.cluster.inner.reporter.event(&event);
        let _ = self.cluster.inner.bus.send(event);
    }

    /// Answers a command, once the snapshot shows what it changed.
    pub(super) fn answer<T>(&mut self, reply: Reply<T>, answer: T) {
        self.flush();
        // The caller stopped waiting: nothing to tell.
        let _ = reply.send(answer);
    }
}
