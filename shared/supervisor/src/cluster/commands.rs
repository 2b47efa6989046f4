//! What the supervising loop does when a caller asks: the only way anyone
//! but the loop changes the cluster.
//!
//! Each command runs to its end inside one turn of the loop, so nothing
//! can change the registry between a check and the change it allows: a
//! replacement refused because one is already starting cannot be started
//! twice by two callers at once. A command with an answer gets it after
//! the snapshot shows the change (see `Supervisor::answer`), so a caller
//! that forks and then asks for the new worker's state finds it.

use super::ClusterError;
use super::error::{ReplaceError, RolloutError};
use super::inbox::{Begun, Command};
use super::owner::Supervisor;
use super::registry::SlotId;
use crate::event::{Event, ExitReason};
use crate::role::WorkerId;

impl Supervisor {
    pub(super) async fn on_command(&mut self, command: Command) {
        let stopping = self.stopping.is_some();
        match command {
            Command::Fork(reply) => {
                let forked = self.fork();
                self.answer(reply, forked);
            }
            Command::Depart { id, reason, reply } => {
                let departed = self.depart(id, reason);
                if let Some(reply) = reply {
                    self.answer(reply, departed);
                }
            }
            Command::Replace { old, reason, reply } => {
                let started = self.start_replacement(old, reason);
                self.answer(reply, started);
            }
            Command::BeginRollout(reply) => {
                let begun = self.begin_rollout();
                let rollout = begun.map(|begun| self.cluster.rollout(begun));
                self.answer(reply, rollout);
            }
            Command::RestoreGeneration(generation) => self.registry.generation = generation,
            Command::EndRollout => self.registry.rollout = None,
            Command::Stop(reason) => self.stop(reason, None).await,
            Command::Scale(to) if !stopping => self.scale(to),
            Command::Scale(_) => {}
            Command::GiveUp {
                restarts,
                window,
                cause,
            } => self.give_up(restarts, window, cause).await,
        }
    }

    /// Node's `cluster.fork()`: a new slot, and a worker in it.
    fn fork(&mut self) -> Result<WorkerId, ClusterError> {
        if self.stopping.is_some() {
            return Err(ClusterError::Stopping);
        }
        let slot = self.new_slot()?;
        self.spawn_into(slot)
    }

    /// The first step of [`super::Cluster::replace`]: a new worker in the
    /// slot of `old`, which must be in service and not being replaced
    /// already. A worker replaced for its health counts as a restart of its
    /// slot (lesson 09's table shows it).
    fn start_replacement(
        &mut self,
        old: WorkerId,
        reason: ExitReason,
    ) -> Result<WorkerId, ReplaceError> {
        if self.stopping.is_some() {
            return Err(ReplaceError::Stopping);
        }
        let registry = &mut self.registry;
        let slot: SlotId = (registry.workers.get(&old))
            .filter(|entry| entry.life.in_service())
            .map(|entry| entry.slot)
            .filter(|slot| registry.slots.contains_key(slot))
            .ok_or(ReplaceError::NotInService(old))?;
        let busy = (registry.workers.iter())
            .any(|(id, e)| *id != old && e.slot == slot && e.life.in_service());
        if busy {
            return Err(ReplaceError::AlreadyReplacing(old));
        }
        let for_health = matches!(reason, ExitReason::Hung | ExitReason::OverMemory);
        if let (true, Some(slot)) = (for_health, registry.slots.get_mut(&slot)) {
            slot.restarts += 1;
        }
        self.spawn_into(slot).map_err(ReplaceError::Spawn)
    }

    /// Raises the generation and names the workers a rolling restart is to
    /// replace; refused (and said so) while another one runs.
    pub(super) fn begin_rollout(&mut self) -> Result<Begun, RolloutError> {
        if self.stopping.is_some() {
            return Err(RolloutError::Stopping);
        }
        let registry = &mut self.registry;
        if let Some(running) = registry.rollout {
            self.publish_now(Event::RolloutIgnored { running });
            return Err(RolloutError::AlreadyRunning { running });
        }
        let previous = registry.generation;
        registry.generation += 1;
        let generation = registry.generation;
        registry.rollout = Some(generation);
        let olds: Vec<WorkerId> = (registry.workers.iter())
            .filter(|(_, e)| e.life.in_service() && e.generation < generation)
            .map(|(id, _)| *id)
            .collect();
        self.publish_now(Event::RolloutStarted {
            generation,
            workers: olds.len(),
        });
        Ok(Begun {
            generation,
            previous,
            olds,
        })
    }
}
