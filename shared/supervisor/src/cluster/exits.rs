//! What a worker's exit means for the cluster.
//!
//! The exit says *why* ([`ExitReason`]), and the why decides what follows:
//!
//! * a **crash** (or a start that never got ready) spends the restart
//!   budget: its slot is filled again after a backoff, or the primary gives
//!   up when the budget is spent — unless a replacement already holds the
//!   slot, as when a worker crashes during its own replacement;
//! * a worker that was **replaced**, was **sick**, or **left** needs
//!   nothing: its successor runs, or its slot went with it;
//! * without a restart policy a crashed worker's slot is given up, and the
//!   primary says how many workers it runs from now on.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::owner::Supervisor;
use super::registry::SlotId;
use super::snapshot::Ended;
use crate::event::{Event, ExitReason, GaveUpCause};
use crate::restart::Decision;
use crate::role::WorkerId;

impl Supervisor {
    pub(super) async fn on_exit(&mut self, id: WorkerId, pid: u32, status: io::Result<ExitStatus>) {
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
        let Some(entry) = self.registry.workers.remove(&id) else {
            return;
        };
        let (slot, reason) = (entry.slot, entry.life.exit_reason());
        let told = entry.life.exited_after_disconnect();
        self.registry.remember_exit(
            id,
            Ended {
                code,
                signal: signal.clone(),
                reason,
            },
        );
        if let Some(round_robin) = &mut self.round_robin {
            round_robin.remove(id);
        }
        // Published after the registry forgets the worker (and the snapshot
        // shows it), so whoever sees this event finds it gone; and before
        // the next note is handled, so whoever waited for it to go and then
        // publishes (a rollout's `replaced`) comes after it.
        self.publish_now(Event::Exit {
            id,
            pid,
            code,
            signal,
            exited_after_disconnect: told,
            reason,
        });
        if self.stopping.is_some() {
            // Gone: its socket is closed with it.
            self.socket_closed(id);
            return;
        }
        match reason {
            ExitReason::Crashed | ExitReason::FailedStart | ExitReason::NotReady => {
                self.after_failure(Some(id), slot).await;
            }
            // Its slot went when it was told to leave (see `depart`).
            ExitReason::Left => {}
            // Their replacement is running, or failed; reconcile fills the
            // slot if it is empty.
            ExitReason::Replaced
            | ExitReason::Hung
            | ExitReason::OverMemory
            | ExitReason::ScaledDown
            | ExitReason::Shutdown => {}
        }
    }

    /// A worker of `slot` crashed (or never started): fill the slot again
    /// after a backoff, or give up when the budget is spent.
    pub(super) async fn after_failure(&mut self, id: Option<WorkerId>, slot: SlotId) {
        let cluster = self.cluster.clone();
        let registry = &mut self.registry;
        let holder = (registry.workers.iter())
            .find(|(_, e)| e.slot == slot)
            .map(|(id, _)| *id);
        if !registry.slots.contains_key(&slot) {
            return;
        }
        // Its place is taken already: a replacement starting for it, or
        // the worker its failed replacement was meant to take over from.
        if let Some(holder) = holder {
            if let Some(id) = id {
                cluster.note_line(&format!(
                    "worker {id} is gone; worker {holder} holds its place, so nothing is forked"
                ));
            }
            return;
        }
        let Some(budget) = &mut self.crashes else {
            let from = registry.slots.len();
            registry.slots.remove(&slot);
            let to = registry.slots.len();
            cluster.note_line(&format!(
                "no restart policy: the cluster runs {to} of {from} workers from now on"
            ));
            self.publish_now(Event::Scale { from, to });
            return;
        };
        match budget.on_crash(std::time::Instant::now()) {
            Decision::Restart { delay } => {
                if let Some(slot) = registry.slots.get_mut(&slot) {
                    slot.refill_at = Some(Instant::now() + delay);
                    slot.restarts += 1;
                }
                if let Some(id) = id {
                    self.publish_now(Event::RestartScheduled {
                        after: id,
                        delay_ms: delay.as_millis() as u64,
                    });
                }
            }
            Decision::GiveUp { restarts } => {
                let window = budget.policy().window;
                self.give_up(restarts, window, GaveUpCause::Crashes).await;
            }
        }
    }
}
