//! When to replace a crashed worker, and when to stop trying.
//!
//! The usual answer — "on `exit`, fork again" — turns a worker that crashes
//! at start-up (a bad config, a missing file) into a fork storm: hundreds of
//! processes a second, logs flooded, the machine busy doing nothing. Two
//! rules fix it:
//!
//! * **backoff**: each restart within the window waits twice as long as the
//!   one before (from `base_delay`, capped at `max_delay`);
//! * **budget**: more than `budget` restarts within `window` means the
//!   problem is not transient, so the primary gives up with a clear message
//!   and a non-zero exit, and lets a human (or an orchestrator) decide.
//!
//! The history is the cluster's, not one worker's. Keying it by worker id, as
//! a common sample does, resets it on every restart, since the replacement
//! has a new id; then the budget never triggers.
//!
//! This module is pure (time is passed in), so its tests need no clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restart rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart in a quiet window.
    pub base_delay: Duration,
    /// The longest wait, however many restarts came before.
    pub max_delay: Duration,
    /// Restarts allowed within `window`; one more crash and we give up.
    pub budget: u32,
    /// How far back crashes count against the budget.
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            budget: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// What to do about one crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fork a replacement after this delay.
    Restart { delay: Duration },
    /// The budget is spent: `restarts` happened within the window already.
    GiveUp { restarts: u32 },
}

/// The restart history of one cluster.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            recent: VecDeque::new(),
        }
    }

    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// A worker crashed at `now`: restart it (after how long), or give up?
    pub fn on_crash(&mut self, now: Instant) -> Decision {
        while let Some(&oldest) = self.recent.front() {
            if now.saturating_duration_since(oldest) >= self.policy.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let so_far = self.recent.len() as u32;
        if so_far >= self.policy.budget {
            return Decision::GiveUp { restarts: so_far };
        }
        self.recent.push_back(now);
        // 2^so_far, without overflow for silly budgets.
        let factor = 1u32.checked_shl(so_far).unwrap_or(u32::MAX);
        let delay = self
            .policy
            .base_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay);
        Decision::Restart { delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(budget: u32) -> RestartPolicy {
        RestartPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            budget,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        let mut budget = RestartBudget::new(policy(10));
        let t0 = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| match budget.on_crash(t0 + Duration::from_secs(i)) {
                Decision::Restart { delay } => delay.as_millis(),
                Decision::GiveUp { .. } => 0,
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn gives_up_after_the_budget_within_the_window() {
        let mut budget = RestartBudget::new(policy(3));
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(matches!(
                budget.on_crash(t0 + Duration::from_secs(i)),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(
            budget.on_crash(t0 + Duration::from_secs(3)),
            Decision::GiveUp { restarts: 3 }
        );
    }

    #[test]
    fn crashes_older_than_the_window_are_forgiven() {
        let mut budget = RestartBudget::new(policy(2));
        let t0 = Instant::now();
        budget.on_crash(t0);
        budget.on_crash(t0 + Duration::from_secs(1));
        // 61 s later both have left the window: a fresh start, short delay.
        assert_eq!(
            budget.on_crash(t0 + Duration::from_secs(62)),
            Decision::Restart {
                delay: Duration::from_millis(100)
            }
        );
    }

    #[test]
    fn a_zero_budget_never_restarts() {
        let mut budget = RestartBudget::new(policy(0));
        assert_eq!(
            budget.on_crash(Instant::now()),
            Decision::GiveUp { restarts: 0 }
        );
    }
}
