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
//! The supervising loop alone owns it: a plain value in the loop's state,
//! with no lock around it. Everyone else reads the snapshot the loop
//! publishes (`snapshot`) and asks for changes with a command (`inbox`).
//!
//! A worker's life is one [`Life`], not a set of flags whose combinations
//! mean different things: *why* it is leaving ([`crate::event::ExitReason`])
//! is part of the stage it is in, set once, when somebody decides it should
//! go.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::time::Instant;

use super::life::Life;
use super::snapshot::{Ended, Seen, Snapshot};
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
    pub forked_at: Instant,
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
    /// Shared with every snapshot: it changes only when a worker exits,
    /// so a snapshot copies a pointer, not 256 entries.
    pub ended: Arc<BTreeMap<WorkerId, Ended>>,
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
            ended: Arc::default(),
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

    /// Remembers how a worker ended.
    pub fn remember_exit(&mut self, id: WorkerId, ended: Ended) {
        let remembered = Arc::make_mut(&mut self.ended);
        remembered.insert(id, ended);
        while remembered.len() > REMEMBERED_EXITS {
            remembered.pop_first();
        }
    }

    /// How many failures were replaced in the slot worker `entry` runs in.
    pub fn restarts(&self, entry: &Entry) -> u32 {
        self.slots.get(&entry.slot).map_or(0, |slot| slot.restarts)
    }

    /// What readers may see of it now.
    pub fn snapshot(&self, stopping: bool) -> Snapshot {
        let seen = |entry: &Entry| Seen {
            pid: entry.pid,
            generation: entry.generation,
            state: entry.life.state(),
            restarts: self.restarts(entry),
            to_worker: entry.to_worker.clone(),
        };
        Snapshot {
            workers: (self.workers.iter())
                .map(|(id, entry)| (*id, seen(entry)))
                .collect(),
            desired: self.slots.len(),
            stopping,
            ended: Arc::clone(&self.ended),
        }
    }

    /// Whether `snapshot` still shows what this registry holds: checked on
    /// every turn of the loop, without building a new one, because most
    /// turns (a worker's message) change nothing a reader sees.
    pub fn shown_by(&self, snapshot: &Snapshot, stopping: bool) -> bool {
        snapshot.stopping == stopping
            && snapshot.desired == self.slots.len()
            && Arc::ptr_eq(&snapshot.ended, &self.ended)
            && snapshot.workers.len() == self.workers.len()
            && (self.workers.iter().zip(&snapshot.workers)).all(|((id, entry), (seen_id, seen))| {
                id == seen_id
                    && entry.pid == seen.pid
                    && entry.life.state() == seen.state
                    && self.restarts(entry) == seen.restarts
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExitReason;
    use crate::ipc::ToPrimary;

    /// One change to the registry, of the kind a reader would notice.
    type Change = fn(&mut Registry, WorkerId);

    /// A registry with one slot and one starting worker in it.
    fn one_worker() -> (Registry, WorkerId) {
        let mut registry = Registry::new(None, None);
        let slot = registry.add_slot(Slot::default());
        let id = registry.next_worker_id();
        let (primary, _worker) = tokio::net::UnixStream::pair().expect("a socketpair");
        let (_from_worker, to_worker) = ipc::channel::<ToPrimary, ToWorker>(primary, "test".into());
        let entry = Entry {
            pid: 4242,
            slot,
            generation: 1,
            life: Life::Starting,
            to_worker,
            forked_at: Instant::now(),
        };
        registry.workers.insert(id, entry);
        (registry, id)
    }

    #[tokio::test]
    async fn a_snapshot_shows_what_it_was_built_from_until_a_reader_would_see_a_change() {
        let (mut registry, id) = one_worker();
        let mut snapshot = registry.snapshot(false);
        assert!(registry.shown_by(&snapshot, false));
        assert!(!registry.shown_by(&snapshot, true), "stopping is shown");

        let mut changes: Vec<(&str, Change)> = vec![
            ("a stage", |r, id| {
                r.workers.get_mut(&id).map(|e| e.life.listening());
            }),
            ("a restart", |r, _| {
                r.slots.values_mut().for_each(|slot| slot.restarts += 1);
            }),
            ("a slot", |r, _| {
                r.add_slot(Slot::default());
            }),
            ("an exit", |r, id| {
                let ended = Ended {
                    code: Some(0),
                    signal: None,
                    reason: ExitReason::Left,
                };
                r.workers.remove(&id);
                r.remember_exit(id, ended);
            }),
        ];
        for (what, change) in changes.drain(..) {
            change(&mut registry, id);
            assert!(!registry.shown_by(&snapshot, false), "{what} is not shown");
            snapshot = registry.snapshot(false);
            assert!(registry.shown_by(&snapshot, false), "{what} is shown");
        }
        assert!(snapshot.ended.contains_key(&id) && snapshot.workers.is_empty());
    }
}
