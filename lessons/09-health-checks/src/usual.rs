//! The usual sample's restart budget, kept as it is written, to show why it
//! never trips.
//!
//! ```js
//! const history = {};                       // worker.id → restart times
//! function canRestart(worker) {
//!   const times = (history[worker.id] ||= []).filter(t => Date.now() - t < HOUR);
//!   if (times.length >= MAX) return false;
//!   times.push(Date.now());
//!   return true;
//! }
//! ```
//!
//! The history is keyed by the sick worker's id, and every replacement has
//! a new id — so every worker starts with an empty history, and however
//! often workers fail, no id ever reaches the limit. The supervisor keeps
//! one history for the whole cluster ([`supervisor::restart`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use supervisor::WorkerId;

/// Restart times by worker id, as the usual sample keeps them.
#[derive(Debug, Default)]
pub struct UsualHistory {
    by_worker: BTreeMap<WorkerId, Vec<Instant>>,
}

// ANCHOR: usual
impl UsualHistory {
    /// The usual `canRestart(worker)`: false once this id has `max` restarts
    /// within `window`.
    pub fn can_restart(
        &mut self,
        id: WorkerId,
        max: usize,
        window: Duration,
        now: Instant,
    ) -> bool {
        let times = self.by_worker.entry(id).or_default();
        times.retain(|&t| now.saturating_duration_since(t) < window);
        if times.len() >= max {
            return false;
        }
        times.push(now);
        true
    }

    /// The longest history any one id has: what the limit is compared with.
    pub fn longest(&self) -> usize {
        self.by_worker.values().map(Vec::len).max().unwrap_or(0)
    }
}
// ANCHOR_END: usual

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_per_replacement_means_the_limit_is_never_reached() {
        let mut usual = UsualHistory::default();
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        // Worker 1 fails, its replacement 2 fails, then 3, … 100 failures
        // within a minute: the usual sample allows every one of them.
        for n in 1..=100u32 {
            let now = t0 + Duration::from_millis(u64::from(n) * 500);
            assert!(usual.can_restart(WorkerId(n), 3, hour, now));
        }
        assert_eq!(usual.longest(), 1);
    }

    #[test]
    fn the_same_id_would_trip_it() {
        let mut usual = UsualHistory::default();
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(usual.can_restart(WorkerId(1), 3, hour, now));
        }
        assert!(!usual.can_restart(WorkerId(1), 3, hour, now));
    }
}
