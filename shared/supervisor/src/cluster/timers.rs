//! Deadlines: the moments something is due, and what happens then.
//!
//! Nothing here runs on a timer of its own. Each turn of the supervising
//! loop asks the registry for the earliest deadline and sleeps until then
//! at most: a backoff ending (an empty slot to fill), a new worker's ready
//! deadline (`ready_timeout` after its fork), a departing worker's drain
//! deadline (`grace` after it was told to leave). Deadlines are data in the
//! registry, so a worker that goes away takes its deadline with it.

use std::time::Duration;

use tokio::time::Instant;

use super::registry::Registry;
use super::stop::sigkill;
use super::supervise::Supervisor;
use crate::event::{Event, HealthReason};

/// The earliest moment something is due: a backoff ending, a worker's
/// ready deadline, a drain deadline.
pub(super) fn next_timer(registry: &Registry, ready_timeout: Duration) -> Option<Instant> {
    let refills = registry
        .slots
        .iter()
        .filter(|(id, _)| !registry.is_filled(**id))
        .filter_map(|(_, slot)| slot.refill_at);
    let deadlines = registry
        .workers
        .values()
        .filter_map(|entry| entry.life.deadline(entry.forked_at + ready_timeout));
    if registry.stopping {
        deadlines.min()
    } else {
        refills.chain(deadlines).min()
    }
}

impl Supervisor {
    /// Kills the workers that overran a deadline.
    pub(super) fn on_timers(&mut self) {
        let cluster = self.cluster.clone();
        if let Some(stop) = &mut self.stopping {
            stop.closing_overdue(&cluster);
        }
        let ready_timeout = cluster.inner.options.ready_timeout;
        let now = Instant::now();
        let (not_ready, overdue) = cluster.update(|registry| {
            let mut not_ready = Vec::new();
            let mut overdue = Vec::new();
            for (id, entry) in &mut registry.workers {
                let ready_by = entry.forked_at + ready_timeout;
                if entry.life.deadline(ready_by).is_none_or(|at| at > now) {
                    continue;
                }
                if entry.life.give_up_on_start() {
                    not_ready.push((*id, entry.pid));
                } else if entry.life.cut_drain() {
                    overdue.push((*id, entry.pid));
                }
            }
            (not_ready, overdue)
        });
        for (id, pid) in not_ready {
            cluster.publish_now(Event::Unhealthy {
                id,
                reason: HealthReason::NotReady,
                detail: format!(
                    "not ready {:.1}s after its fork: killed",
                    ready_timeout.as_secs_f64()
                ),
                rss_mib: 0,
            });
            sigkill(pid);
        }
        for (id, pid) in overdue {
            cluster.note_line(&format!(
                "worker {id} did not finish within the grace period: killed"
            ));
            sigkill(pid);
            if let Some(stop) = &mut self.stopping {
                stop.forced.push(id);
            }
        }
    }
}
