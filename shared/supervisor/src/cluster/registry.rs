//! What the primary knows: the slots it wants filled and the workers it runs.
//!
//! A *slot* is one place in the desired worker count: `--workers 4` is four
//! slots. A worker always runs in a slot; a replacement runs in the slot of
//! the worker it replaces, so for a moment a slot has two workers, the old
//! one serving and the new one starting. That is what makes "a worker that
//! crashes during a rollout is not forked twice" a property of the data, not
//! of careful code: a slot whose replacement is already starting is filled.
//! With reuseport the slot also owns its listening socket, which outlives
//! the workers that accept on it (see [`crate::listen`]).
//!
//! A worker's life is one [`Life`], not a set of flags whose combinations
//! mean different things: *why* it is leaving ([`crate::event::ExitReason`])
//! is part of the stage it is in, set once, when somebody decides it should
//! go.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::dispatch::Target;
use super::life::Life;
use super::{Cluster, WaitError};
use crate::event::ExitReason;
use crate::ipc::{self, ToWorker};
use crate::role::WorkerId;

/// One place in the desired count.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Reuseport: the socket this slot's workers accept on, held by the
    /// primary so that queued connections survive any one worker.
    pub socket: Option<OwnedFd>,
    /// An empty slot is filled no earlier than this (restart backoff).
    pub refill_at: Option<Instant>,
    /// How many times a worker of this slot was replaced after a failure.
    pub restarts: u32,
}

/// The number of a slot. Slots are numbered from 1 in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotId(pub u32);

/// One running worker.
#[derive(Debug)]
pub(crate) struct Entry {
    pub pid: u32,
    pub slot: SlotId,
    pub generation: u32,
    /// Where it is in its life, and what was decided about it.
    pub life: Life,
    pub to_worker: ipc::Sender<ToWorker>,
    /// Round-robin: where its connections go.
    pub target: Option<Arc<Target>>,
    pub forked_at: Instant,
}

/// How a worker ended, kept a while for whoever waited on it.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub reason: ExitReason,
}

/// Ended workers remembered, for a rollout that asks why its replacement
/// went. Old ones are forgotten.
const REMEMBERED_EXITS: usize = 256;

/// The primary's view of its workers.
#[derive(Debug)]
pub(crate) struct Registry {
    next_id: u32,
    next_slot: u32,
    /// The release new workers run: 1, then one more per rolling restart.
    pub generation: u32,
    pub slots: BTreeMap<SlotId, Slot>,
    pub workers: BTreeMap<WorkerId, Entry>,
    pub ended: BTreeMap<WorkerId, Ended>,
    /// Set once the cluster stops: no more forks, no more dispatch.
    pub stopping: bool,
    /// The generation a rolling restart is installing, while one runs.
    pub rollout: Option<u32>,
    /// Shared strategy: the listening socket every worker inherits. Closed
    /// when the cluster stops, so new connections are refused.
    pub shared_listener: Option<OwnedFd>,
    /// Reuseport strategy: the primary's bound, never-listening socket that
    /// holds the port while there are no slots.
    pub reserved_port: Option<socket2::Socket>,
}

impl Registry {
    pub fn new(shared_listener: Option<OwnedFd>, reserved_port: Option<socket2::Socket>) -> Self {
        Registry {
            next_id: 0,
            next_slot: 0,
            generation: 1,
            slots: BTreeMap::new(),
            workers: BTreeMap::new(),
            ended: BTreeMap::new(),
            stopping: false,
            rollout: None,
            shared_listener,
            reserved_port,
        }
    }

    pub fn next_worker_id(&mut self) -> WorkerId {
        self.next_id += 1;
        WorkerId(self.next_id)
    }

    pub fn add_slot(&mut self, slot: Slot) -> SlotId {
        self.next_slot += 1;
        let id = SlotId(self.next_slot);
        self.slots.insert(id, slot);
        id
    }

    /// True if some worker still runs in `slot`: nothing needs forking
    /// there yet. A worker holds its slot until its exit is handled, even
    /// while it leaves, because its exit decides what comes next: a crash
    /// spends the budget and waits out a backoff; a worker that was
    /// replaced leaves its slot to the replacement.
    pub fn is_filled(&self, slot: SlotId) -> bool {
        self.workers.values().any(|entry| entry.slot == slot)
    }

    /// Ready workers, in id order.
    pub fn ready(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers
            .iter()
            .filter(|(_, entry)| entry.life.is_ready())
            .map(|(id, _)| *id)
    }

    /// The round-robin targets of the ready workers, in id order.
    pub fn routes(&self) -> Vec<Arc<Target>> {
        self.workers
            .values()
            .filter(|entry| entry.life.is_ready())
            .filter_map(|entry| entry.target.clone())
            .collect()
    }

    /// Remembers how a worker ended.
    pub fn remember_exit(&mut self, id: WorkerId, ended: Ended) {
        self.ended.insert(id, ended);
        while self.ended.len() > REMEMBERED_EXITS {
            self.ended.pop_first();
        }
    }
}

/// Every read and change of the registry goes through these three, so that
/// no change can forget to tell the dispatcher and the waiters.
impl Cluster {
    /// Reads the registry.
    pub(super) fn view<R>(&self, f: impl FnOnce(&Registry) -> R) -> R {
        f(&lock(&self.inner.registry))
    }

    /// Changes the registry, then tells everyone who watches it: the
    /// dispatcher gets the new set of ready workers, waiters wake up.
    pub(super) fn update<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let (result, routes) = {
            let mut registry = lock(&self.inner.registry);
            let result = f(&mut registry);
            (result, registry.routes())
        };
        self.inner
            .routes
            .send_if_modified(|current| current.replace_if_changed(routes));
        self.inner.changed.send_modify(|version| *version += 1);
        result
    }

    /// Waits, at most `within`, until `check` finds what it wants in the
    /// registry. Checked at once, then after every change.
    pub(super) async fn wait_until<T>(
        &self,
        within: Duration,
        mut check: impl FnMut(&Registry) -> Option<T>,
    ) -> Result<T, WaitError> {
        let mut changes = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            changes.borrow_and_update();
            if let Some(found) = self.view(&mut check) {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(WaitError::Closed),
                Err(_) => return Err(WaitError::Timeout { within }),
            }
        }
    }
}

/// Locks `mutex`. A panic while holding one of ours leaves plain data
/// behind, so a poisoned lock is used as it is.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
