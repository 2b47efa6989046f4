//! What everyone but the loop sees of the cluster: a read-only copy of the
//! registry, published by the supervising loop whenever it changed.
//!
//! The loop alone owns the registry (see `supervise`); nobody else can lock
//! it, because there is no lock. The lesson's code, a rolling restart and
//! the health monitor read this snapshot instead, and change things only by
//! sending the loop a command. A snapshot is published before any event
//! about the change it shows, so whoever sees `exit` finds the worker gone,
//! and a wait on it ([`Cluster::wait_until`]) looks at state, never at
//! events, so it cannot miss one that came before the wait began.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::life::WorkerState;
use super::{Cluster, WaitError};
use crate::event::ExitReason;
use crate::ipc::{self, ToWorker};
use crate::role::WorkerId;

/// The cluster as the loop last published it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub workers: BTreeMap<WorkerId, Seen>,
    /// How many workers the cluster wants running (its slots).
    pub desired: usize,
    /// The cluster has begun to stop: no more forks, no more dispatch.
    pub stopping: bool,
    /// How recent workers ended, for a rollout that asks why its
    /// replacement went.
    pub ended: Arc<BTreeMap<WorkerId, Ended>>,
}

/// One running worker, as readers see it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub pid: u32,
    pub generation: u32,
    pub state: WorkerState,
    /// Failures replaced in its slot so far.
    pub restarts: u32,
    /// Its channel: sending needs no turn of the loop.
    pub to_worker: ipc::Sender<ToWorker>,
}

/// How a worker ended, kept a while for whoever waited on it.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub reason: ExitReason,
}

impl Snapshot {
    /// Ready workers, in id order.
    pub fn ready(&self) -> impl Iterator<Item = WorkerId> + '_ {
        (self.workers.iter())
            .filter(|(_, seen)| seen.state == WorkerState::Ready)
            .map(|(id, _)| *id)
    }

    /// Whether worker `id` runs and is ready.
    pub fn is_ready(&self, id: WorkerId) -> bool {
        self.workers
            .get(&id)
            .is_some_and(|seen| seen.state == WorkerState::Ready)
    }
}

impl Cluster {
    /// Reads the latest snapshot.
    pub(super) fn view<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        f(&self.inner.snapshot.borrow())
    }

    /// Waits, at most `within`, until `check` finds what it wants in a
    /// snapshot. Checked at once, then after every change.
    pub(super) async fn wait_until<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&Snapshot) -> Option<T>,
    ) -> Result<T, WaitError> {
        let mut snapshots = self.inner.snapshot.clone();
        let mut found = None;
        let wait = snapshots.wait_for(|snapshot| {
            found = check(snapshot);
            found.is_some()
        });
        // The guard `wait_for` returns holds the snapshot's lock: dropped here.
        let outcome = tokio::time::timeout(within, wait).await.map(|r| r.is_ok());
        match outcome {
            Ok(true) => found.ok_or(WaitError::Closed),
            // The loop is gone, and this was not in its last snapshot.
            Ok(false) => Err(WaitError::Closed),
            Err(_) => Err(WaitError::Timeout { within }),
        }
    }
}
