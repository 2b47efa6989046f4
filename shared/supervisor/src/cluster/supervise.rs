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

use std::sync::Arc;
use std::time::Duration;

use super::dispatch;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::inbox::{Command, Note};
use super::registry::{Registry, SlotId};
pub(super) use super::signals::Signals;
use super::stop::{Stopping, begin_stop, kill_all, sigkill};
use super::timers::{Due, next_timer, overdue};
use super::{Cluster, ClusterError, Stopped};
use crate::event::{Event, ExitReason, GaveUpCause, HealthReason, StopReason};
use crate::restart::RestartBudget;

/// The loop's own state, beside the registry.
pub(super) struct Supervisor {
    pub cluster: Cluster,
    pub crashes: Option<RestartBudget>,
    pub stopping: Option<Stopping>,
    pub dispatcher: Option<dispatch::Stopped>,
    /// Whether some worker was ready at the last look; `None` before the
    /// first ever was.
    pub serving: Option<bool>,
}

type Outcome = watch::Sender<Option<Result<Stopped, Arc<ClusterError>>>>;

pub(super) async fn supervise(
    cluster: Cluster,
    mut notes: mpsc::UnboundedReceiver<Note>,
    mut signals: Option<Signals>,
    dispatcher: Option<dispatch::Stopped>,
    outcome: Outcome,
) {
    let mut me = Supervisor {
        crashes: cluster.inner.options.restart.map(RestartBudget::new),
        cluster,
        stopping: None,
        dispatcher,
        serving: None,
    };
    loop {
        // Done when stopping and the last worker is gone.
        if me.stopping.is_some() && me.cluster.view(|r| r.workers.is_empty()) {
            break;
        }
        if me.stopping.is_none() {
            me.reconcile().await;
        }
        let ready_timeout = me.cluster.inner.options.ready_timeout;
        let closing = me.stopping.as_ref().and_then(Stopping::closing_deadline);
        let wake = me
            .cluster
            .view(|r| next_timer(r, ready_timeout))
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
        let cluster = self.cluster.clone();
        let now = Instant::now();
        let due = |registry: &Registry| -> Vec<SlotId> {
            registry
                .slots
                .iter()
                .filter(|(id, slot)| {
                    !registry.is_filled(**id) && slot.refill_at.is_none_or(|at| at <= now)
                })
                .map(|(id, _)| *id)
                .collect()
        };
        // Looked at first, changed only if needed: most turns of the loop
        // have nothing to fork, and a change wakes everyone who watches.
        if cluster.view(|registry| due(registry).is_empty()) {
            return;
        }
        let failed: Vec<(SlotId, ClusterError)> = cluster.update(|registry| {
            due(registry)
                .into_iter()
                .filter_map(|slot| cluster.spawn_into(registry, slot).err().map(|e| (slot, e)))
                .collect()
        });
        for (slot, error) in failed {
            cluster.note_line(&format!("could not start a worker: {error}"));
            self.after_failure(None, slot).await;
        }
    }

    async fn on_note(&mut self, note: Note) {
        let cluster = self.cluster.clone();
        match note {
            Note::Publish(event) => cluster.publish_now(event),
            Note::Worker(event) => {
                if is_lifecycle(&event) {
                    cluster.update(|registry| apply(registry, &event));
                }
                cluster.publish_now(event);
            }
            Note::WantsToLeave(id) => {
                // The worker asked; answer like `worker.disconnect()` would.
                let _ = cluster.depart(id, ExitReason::Left);
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
                        let _ = cluster.depart(id, ExitReason::Left);
                    }
                });
            }
            // Stopping: it is draining with the others already.
            Note::Terminated(_) => {}
            Note::NotAccepting(id) => {
                if let Some(stop) = &mut self.stopping {
                    stop.socket_closed(&cluster, id);
                }
            }
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

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Stop(reason) => self.stop(reason, None).await,
            Command::Scale(to) if self.stopping.is_none() => self.scale(to),
            Command::Scale(_) => {}
            Command::GiveUp {
                restarts,
                window,
                cause,
            } => self.give_up(restarts, window, cause).await,
        }
    }

    pub(super) async fn give_up(&mut self, restarts: u32, window: Duration, cause: GaveUpCause) {
        if self.stopping.is_some() {
            return;
        }
        self.cluster.publish_now(Event::GaveUp {
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

    fn scale(&mut self, to: usize) {
        let cluster = self.cluster.clone();
        let (from, surplus, error) = cluster.update(|registry| {
            let from = registry.slots.len();
            let mut error = None;
            while registry.slots.len() < to {
                if let Err(e) = cluster.new_slot(registry) {
                    error = Some(e);
                    break;
                }
            }
            // The newest slots go first: their workers have served least.
            let mut surplus = Vec::new();
            while registry.slots.len() > to {
                let Some((slot, _)) = registry.slots.pop_last() else {
                    break;
                };
                surplus.extend(
                    registry
                        .workers
                        .iter()
                        .filter(|(_, entry)| entry.slot == slot && entry.life.in_service())
                        .map(|(id, _)| *id),
                );
            }
            (from, surplus, error)
        });
        if let Some(error) = error {
            cluster.note_line(&format!("cannot add a worker: {error}"));
        }
        for id in surplus {
            let _ = cluster.depart(id, ExitReason::ScaledDown);
        }
        let to = cluster.desired();
        if to != from {
            cluster.publish_now(Event::Scale { from, to });
        }
    }

    /// Kills the workers that overran a deadline (see `timers`).
    pub(super) fn on_timers(&mut self) {
        let cluster = self.cluster.clone();
        if let Some(stop) = &mut self.stopping {
            stop.closing_overdue(&cluster);
        }
        let ready_timeout = cluster.inner.options.ready_timeout;
        let now = Instant::now();
        let due = cluster.update(|registry| overdue(registry, ready_timeout, now));
        for (id, pid, due) in due {
            match due {
                Due::NotReady => cluster.publish_now(Event::Unhealthy {
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
        let (ready, desired) = self.cluster.view(|r| (r.ready().count(), r.slots.len()));
        let now = ready > 0;
        if self.serving.is_some_and(|before| before != now) {
            self.cluster.publish_now(Event::Capacity { ready, desired });
        }
        if now || self.serving.is_some() {
            self.serving = Some(now);
        }
    }

    pub(super) async fn stop(
        &mut self,
        reason: StopReason,
        gave_up: Option<(u32, Duration, GaveUpCause)>,
    ) {
        begin_stop(
            &self.cluster,
            &mut self.stopping,
            &mut self.dispatcher,
            reason,
            gave_up,
        )
        .await;
    }

    pub(super) fn kill_now(&mut self, why: &'static str) {
        if let Some(stop) = &mut self.stopping {
            self.cluster
                .note_line(&format!("{why}: killing the remaining workers now"));
            stop.cut_short.get_or_insert(why);
            kill_all(&self.cluster, stop);
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

/// Moves the event's worker along its life, if the event is one of its
/// own lifecycle events. Events only move a worker forward: a draining
/// worker that reports ready late stays draining (see [`super::life::Life::ready`]).
fn apply(registry: &mut Registry, event: &Event) -> bool {
    let Some(entry) = event.worker().and_then(|id| registry.workers.get_mut(&id)) else {
        return false;
    };
    match event {
        Event::Listening { .. } => entry.life.listening(),
        Event::Ready { .. } => entry.life.ready(),
        Event::Disconnect { .. } => entry.life.channel_closed(),
        _ => false,
    }
}

/// Whether `event` is one that [`apply`] may act on.
fn is_lifecycle(event: &Event) -> bool {
    matches!(
        event,
        Event::Listening { .. } | Event::Ready { .. } | Event::Disconnect { .. }
    )
}
