//! The supervising task: the one loop that owns the cluster's life.
//!
//! It reads as Gunicorn's arbiter does: take what happened (a worker's
//! note, a signal, a command, a timer), bring the registry up to date, then
//! *reconcile* — fork into every slot that has no worker and whose backoff
//! has passed. Nothing else forks on its own, so there is one answer to "how
//! many workers should be running", and a crash, a failed replacement and a
//! scale-up all end in the same place.
//!
//! What an exit means lives in `exits`, what a signal means in `signals`,
//! and how a worker leaves in `stop`.
//!
//! Timers, all derived from the registry each time round: a worker not
//! ready within `ready_timeout` is killed; a departing worker still running
//! at its drain deadline (`grace`) is killed; an empty slot is filled when
//! its backoff ends.
//!
//! The loop is the registry's only owner. Everyone else reads the snapshot
//! it publishes (`snapshot`) and changes things by sending it a command
//! (`inbox`): there is no lock, so no change can happen beside the loop's
//! back, and "is the cluster stopping" has one answer, [`Supervisor::stopping`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::inbox::Note;
use super::owner::Supervisor;
use super::registry::SlotId;
pub(super) use super::signals::Signals;
use super::stop::sigkill;
use super::stopping::Stopping;
use super::timers::{Due, next_timer, overdue};
use super::{ClusterError, Stopped};
use crate::event::{Event, ExitReason, GaveUpCause, HealthReason, StopReason};

type Outcome = watch::Sender<Option<Result<Stopped, Arc<ClusterError>>>>;

pub(super) async fn supervise(
    mut me: Supervisor,
    mut notes: mpsc::UnboundedReceiver<Note>,
    mut signals: Option<Signals>,
    outcome: Outcome,
) {
    loop {
        me.flush();
        // Done when stopping and the last worker is gone.
        if me.stopping.is_some() && me.registry.workers.is_empty() {
            break;
        }
        if me.stopping.is_none() {
            me.reconcile().await;
        }
        let ready_timeout = me.cluster.inner.options.ready_timeout;
        let closing = me.stopping.as_ref().and_then(Stopping::closing_deadline);
        let stopping = me.stopping.is_some();
        let wake = next_timer(&me.registry, ready_timeout, stopping)
            .into_iter()
            .chain(closing)
            .min();
        let caught = async {
            match &mut signals {
                Some(signals) => signals.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(note) = notes.recv() => me.on_note(note).await,
            caught = caught => me.on_signal(caught).await,
            () = sleep_until_opt(wake) => me.on_timers(),
        }
        me.watch_capacity();
    }
    // Whatever was said before the end still goes out, in order; closing
    // first means a later `report` finds the queue closed and prints
    // directly, instead of queueing where nobody will read.
    notes.close();
    while let Ok(note) = notes.try_recv() {
        me.on_note(note).await;
    }
    me.flush();
    let _ = outcome.send(Some(me.result()));
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Fills every empty slot whose backoff has passed.
    async fn reconcile(&mut self) {
        let now = Instant::now();
        let registry = &self.registry;
        let due: Vec<SlotId> = (registry.slots.iter())
            .filter(|(id, slot)| {
                !registry.is_filled(**id) && slot.refill_at.is_none_or(|at| at <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for slot in due {
            // A failure can spend the budget, and the cluster stops.
            if self.stopping.is_some() {
                break;
            }
            if let Err(error) = self.spawn_into(slot) {
                (self.cluster).note_line(&format!("could not start a worker: {error}"));
                self.after_failure(None, slot).await;
            }
        }
    }

    async fn on_note(&mut self, note: Note) {
        let cluster = self.cluster.clone();
        match note {
            Note::Publish(event) => self.publish_now(event),
            Note::Worker(event) => {
                self.apply(&event);
                self.publish_now(event);
            }
            Note::WantsToLeave(id) => {
                // The worker asked; answer like `worker.disconnect()` would.
                let _ = self.depart(id, ExitReason::Left);
            }
            Note::Terminated(id) if self.stopping.is_none() => {
                // Signalled alone: keep the desired count, the safe way.
                cluster.note_line(&format!(
                    "worker {id} got SIGTERM on its own: replacing it, then letting it drain"
                ));
                tokio::spawn(async move {
                    if let Err(error) = cluster.replace(id, ExitReason::Replaced).await {
                        // No replacement (it failed, or one is on its way):
                        // the signal still asked this worker to go.
                        cluster.note_line(&format!("worker {id}: {error}; it drains anyway"));
                        let _ = cluster.disconnect(id).await;
                    }
                });
            }
            // Stopping: it is draining with the others already.
            Note::Terminated(_) => {}
            Note::NotAccepting(id) => self.socket_closed(id),
            Note::Malformed { id, reason } => cluster.note_line(&format!(
                "worker {id} sent a message that is not valid ({reason}); dropped it"
            )),
            Note::Exited { id, pid, status } => self.on_exit(id, pid, status).await,
            Note::Command(command) => self.on_command(command).await,
            Note::Report {
                kind,
                fields,
                human,
            } => cluster.inner.reporter.custom(&kind, &fields, &human),
        }
    }

    pub(super) async fn give_up(&mut self, restarts: u32, window: Duration, cause: GaveUpCause) {
        if self.stopping.is_some() {
            return;
        }
        self.publish_now(Event::GaveUp {
            restarts,
            window_ms: window.as_millis() as u64,
            cause,
        });
        let reason = match cause {
            GaveUpCause::Crashes => StopReason::CrashLoop,
            GaveUpCause::Health => StopReason::HealthBudget,
        };
        self.stop(reason, Some((restarts, window, cause))).await;
    }

    /// Sets the desired count, never below one (a cluster of none would
    /// serve nothing and never refill).
    pub(super) fn scale(&mut self, to: usize) {
        let to = to.max(1);
        let from = self.registry.slots.len();
        while self.registry.slots.len() < to {
            if let Err(error) = self.new_slot() {
                (self.cluster).note_line(&format!("cannot add a worker: {error}"));
                break;
            }
        }
        // The newest slots go first: their workers have served least.
        let registry = &mut self.registry;
        let mut surplus = Vec::new();
        while registry.slots.len() > to {
            let Some((slot, _)) = registry.slots.pop_last() else {
                break;
            };
            surplus.extend(
                (registry.workers.iter())
                    .filter(|(_, entry)| entry.slot == slot && entry.life.in_service())
                    .map(|(id, _)| *id),
            );
        }
        let to = registry.slots.len();
        // Said before the workers it sends away say they drain.
        if to != from {
            self.publish_now(Event::Scale { from, to });
        }
        for id in surplus {
            let _ = self.depart(id, ExitReason::ScaledDown);
        }
    }

    /// Kills the workers that overran a deadline (see `timers`).
    pub(super) fn on_timers(&mut self) {
        let cluster = self.cluster.clone();
        self.closing_overdue();
        let ready_timeout = cluster.inner.options.ready_timeout;
        let now = Instant::now();
        let due = overdue(&mut self.registry, ready_timeout, now);
        for (id, pid, due) in due {
            match due {
                Due::NotReady => self.publish_now(Event::Unhealthy {
                    id,
                    reason: HealthReason::NotReady,
                    detail: format!(
                        "not ready {:.1}s after its fork: killed",
                        ready_timeout.as_secs_f64()
                    ),
                    rss_mib: 0,
                }),
                Due::DrainOverrun => {
                    cluster.note_line(&format!(
                        "worker {id} did not finish within the grace period: killed"
                    ));
                    if let Some(stop) = &mut self.stopping {
                        stop.forced.push(id);
                    }
                }
            }
            sigkill(pid);
        }
    }

    /// Says so when no worker is ready any more, and when one is again:
    /// meanwhile clients wait in the accept queue, and silence would make
    /// that look like a hang.
    fn watch_capacity(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let (ready, desired) = (self.registry.ready().count(), self.registry.slots.len());
        let now = ready > 0;
        if self.serving.is_some_and(|before| before != now) {
            self.publish_now(Event::Capacity { ready, desired });
        }
        if now || self.serving.is_some() {
            self.serving = Some(now);
        }
    }

    pub(super) fn kill_now(&mut self, why: &'static str) {
        if let Some(stop) = &mut self.stopping {
            self.cluster
                .note_line(&format!("{why}: killing the remaining workers now"));
            stop.cut_short.get_or_insert(why);
            self.kill_all();
        }
    }

    fn result(self) -> Result<Stopped, Arc<ClusterError>> {
        match self.stopping {
            Some(Stopping {
                gave_up: Some((restarts, window, cause)),
                ..
            }) => Err(Arc::new(match cause {
                GaveUpCause::Crashes => ClusterError::CrashLoop { restarts, window },
                GaveUpCause::Health => ClusterError::HealthLoop { restarts, window },
            })),
            Some(stop) => Ok(Stopped {
                reason: stop.reason,
                forced: stop.forced,
                cut_short: stop.cut_short,
                took: stop.since.elapsed(),
            }),
            None => Err(Arc::new(ClusterError::SupervisorGone)),
        }
    }
}

impl Supervisor {
    /// Moves the event's worker along its life, if the event is one of its
    /// own lifecycle events, and round-robin's rotation with it. Events only
    /// move a worker forward: a draining worker that reports ready late
    /// stays draining (see [`super::life::Life::ready`]).
    fn apply(&mut self, event: &Event) {
        let Some(id) = event.worker() else { return };
        let Some(entry) = self.registry.workers.get_mut(&id) else {
            return;
        };
        let moved = match event {
            Event::Listening { .. } => entry.life.listening(),
            Event::Ready { .. } => entry.life.ready(),
            Event::Disconnect { .. } => entry.life.channel_closed(),
            _ => false,
        };
        if let (true, Some(round_robin)) = (moved, &mut self.round_robin) {
            match event {
                Event::Ready { .. } => round_robin.add(id),
                // Its channel closed: nothing more reaches it.
                Event::Disconnect { .. } => round_robin.remove(id),
                _ => {}
            }
        }
    }
}
