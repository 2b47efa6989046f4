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

use super::life::Life;
use super::registry::Registry;
use crate::role::WorkerId;

/// The earliest moment something is due: a backoff ending, a worker's
/// ready deadline, a drain deadline.
/// A stopping cluster refills nothing.
pub(super) fn next_timer(
    registry: &Registry,
    ready_timeout: Duration,
    stopping: bool,
) -> Option<Instant> {
    let refills = registry
        .slots
        .iter()
        .filter(|(id, _)| !registry.is_filled(**id))
        .filter_map(|(_, slot)| slot.refill_at);
    let deadlines = registry
        .workers
        .values()
        .filter_map(|entry| entry.life.deadline(entry.forked_at + ready_timeout));
    if stopping {
        deadlines.min()
    } else {
        refills.chain(deadlines).min()
    }
}

/// What came due for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Due {
    /// Still not ready `ready_timeout` after its fork: killed.
    NotReady,
    /// Still running at its drain deadline: killed.
    DrainOverrun,
}

/// Marks every worker whose deadline has passed at `now` as killed, and
/// says which they are (with their pids), for the caller to signal.
pub(super) fn overdue(
    registry: &mut Registry,
    ready_timeout: Duration,
    now: Instant,
) -> Vec<(WorkerId, u32, Due)> {
    registry
        .workers
        .iter_mut()
        .filter_map(|(id, entry)| {
            let ready_by = entry.forked_at + ready_timeout;
            due(&mut entry.life, ready_by, now).map(|due| (*id, entry.pid, due))
        })
        .collect()
}

/// What is due for one worker's `life` at `now`, if anything; it is marked
/// killed, so the same deadline never fires twice.
fn due(life: &mut Life, ready_by: Instant, now: Instant) -> Option<Due> {
    if life.deadline(ready_by).is_none_or(|at| at > now) {
        None
    } else if life.give_up_on_start() {
        Some(Due::NotReady)
    } else if life.cut_drain() {
        Some(Due::DrainOverrun)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ExitReason;

    #[test]
    fn a_deadline_fires_once_and_only_when_passed() {
        let t0 = Instant::now();
        let ready_by = t0 + Duration::from_secs(10);
        let mut starting = Life::Starting;
        assert_eq!(due(&mut starting, ready_by, t0), None);
        assert_eq!(due(&mut starting, ready_by, ready_by), Some(Due::NotReady));
        assert_eq!(due(&mut starting, ready_by, ready_by), None, "killed once");

        let mut ready = Life::Starting;
        ready.ready();
        assert_eq!(
            due(&mut ready, ready_by, ready_by),
            None,
            "ready: no deadline"
        );

        let drain_by = t0 + Duration::from_secs(30);
        ready.depart(ExitReason::Replaced, drain_by);
        assert_eq!(
            due(&mut ready, ready_by, ready_by),
            None,
            "the drain's own deadline"
        );
        assert_eq!(due(&mut ready, ready_by, drain_by), Some(Due::DrainOverrun));
        assert_eq!(due(&mut ready, ready_by, drain_by), None);
        assert_eq!(ready.exit_reason(), ExitReason::Replaced);
    }

    #[test]
    fn a_worker_told_to_go_while_starting_gets_the_drain_deadline() {
        let t0 = Instant::now();
        let ready_by = t0 + Duration::from_secs(10);
        let mut life = Life::Starting;
        life.depart(ExitReason::ScaledDown, t0 + Duration::from_secs(30));
        assert_eq!(due(&mut life, ready_by, ready_by), None);
        assert_eq!(life.deadline(ready_by), Some(t0 + Duration::from_secs(30)));
    }
}
