//! A circuit breaker: stop calling an upstream that is failing, and find
//! out, carefully, when it is back.
//!
//! Three states:
//!
//! * **Closed** — calls go through. Each outcome is kept for `window`; once
//!   at least `min_calls` are kept and the share of failures reaches
//!   `failure_rate`, the breaker opens. A rate over a window, not "N in a
//!   row": five failures among a thousand successes are noise, and three
//!   failures in three calls are not. But a rate alone opens late after
//!   busy healthy traffic — 3 s at 13,000 calls a second leave 39,000
//!   successes in a 10 s window, and as many failures must pass before
//!   the rate reaches one half — and never opens on an upstream that fails
//!   every other fifth of a second. So `trip_after` failures in a row open
//!   it too, whatever the window holds.
//! * **Open** — calls fail at once, without touching the upstream, for
//!   `reset_timeout`: the upstream gets room to recover, the callers get a
//!   fast answer instead of a slow failure.
//! * **Half-open** — after the timeout, at most `probes` calls at a time are
//!   let through to test the upstream; every other call fails at once as if
//!   open. `probes` successes close the breaker; one failure opens it again.
//!
//! The usual answer gets half-open wrong: it lets *every* call through
//! while half-open, so the moment the timeout ends, all the traffic that
//! piled up hits an upstream that may still be struggling.
//! [`Breaker::usual`] keeps that behaviour (and counts failures in a row)
//! so the lesson can measure the difference.
//!
//! A call that times out is a failure — and it must be *cancelled*, not
//! merely abandoned: see the lesson's worker, which drops the call's
//! future at the deadline. Time comes from tokio, so tests pause it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// When to open, and how to come back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// How far back outcomes count.
    pub window: Duration,
    /// Outcomes needed in the window before the rate means anything.
    pub min_calls: u32,
    /// The share of failures (0 to 1) that opens the breaker.
    pub failure_rate: f64,
    /// How long the breaker stays open before it probes.
    pub reset_timeout: Duration,
    /// Calls let through at once while half-open; as many successes close it.
    pub probes: u32,
    /// Failures in a row that open the breaker whatever the window says.
    pub trip_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            window: Duration::from_secs(10),
            min_calls: 5,
            failure_rate: 0.5,
            reset_timeout: Duration::from_secs(2),
            probes: 2,
            trip_after: 20,
        }
    }
}

/// The state, as a client of the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// The answer to "may I call?".
#[derive(Debug)]
pub enum Admission {
    /// Call, then report the outcome through the permit.
    Call(Permit),
    /// Do not call: fail now. `retry_in` is how long the breaker stays open.
    Refuse { state: State, retry_in: Duration },
}

#[derive(Debug)]
enum Inner {
    Closed { window: Box<Window>, streak: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, succeeded: u32 },
}

// ANCHOR: window
/// Outcomes over the last `window`, in ten buckets of a tenth each: the
/// memory is fixed whatever the call rate, and so is the cost of a
/// decision. (A list of every outcome would grow with the traffic.)
#[derive(Debug)]
struct Window {
    width: Duration,
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which tenth of time since `origin` this bucket counts.
    number: u64,
    ok: u64,
    failed: u64,
}

impl Window {
    fn new(window: Duration) -> Self {
        Window {
            width: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            origin: Instant::now(),
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn number(&self, at: Instant) -> u64 {
        (at.duration_since(self.origin).as_nanos() / self.width.as_nanos().max(1)) as u64
    }

    fn record(&mut self, now: Instant, ok: bool) {
        let number = self.number(now);
        let bucket = &mut self.buckets[(number % BUCKETS as u64) as usize];
        if bucket.number != number {
            *bucket = Bucket {
                number,
                ..Bucket::default()
            };
        }
        if ok {
            bucket.ok += 1;
        } else {
            bucket.failed += 1;
        }
    }

    /// (calls, failures) in the buckets still inside the window.
    fn counts(&self, now: Instant) -> (u64, u64) {
        let newest = self.number(now);
        self.buckets
            .iter()
            .filter(|b| b.number + (BUCKETS as u64) > newest && b.number <= newest)
            .fold((0, 0), |(calls, failed), b| {
                (calls + b.ok + b.failed, failed + b.failed)
            })
    }
}
// ANCHOR_END: window

/// A circuit breaker. Cheap to clone; clones share one state.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: Policy,
    /// The usual answer: failures in a row, and a half-open state that
    /// lets everything through.
    usual: bool,
    inner: Arc<Mutex<Inner>>,
}

impl Breaker {
    pub fn new(policy: Policy) -> Self {
        Breaker {
            policy,
            usual: false,
            inner: Arc::new(Mutex::new(Inner::Closed {
                window: Box::new(Window::new(policy.window)),
                streak: 0,
            })),
        }
    }

    /// The usual answer's breaker: opens after `min_calls` failures in a
    /// row; half-open admits every call.
    pub fn usual(policy: Policy) -> Self {
        Breaker {
            usual: true,
            ..Breaker::new(policy)
        }
    }

    pub fn state(&self) -> State {
        match &*self.lock() {
            Inner::Closed { .. } => State::Closed,
            Inner::Open { until } if Instant::now() < *until => State::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => State::HalfOpen,
        }
    }

    // ANCHOR: admit
    /// May a call go through now?
    pub fn admit(&self) -> Admission {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Inner::Open { until } = *inner {
            if now < until {
                return Admission::Refuse {
                    state: State::Open,
                    retry_in: until - now,
                };
            }
            // The timeout is over: time to find out.
            *inner = Inner::HalfOpen {
                in_flight: 0,
                succeeded: 0,
            };
        }
        if let Inner::HalfOpen { in_flight, .. } = &mut *inner {
            if *in_flight >= self.policy.probes && !self.usual {
                return Admission::Refuse {
                    state: State::HalfOpen,
                    retry_in: Duration::ZERO,
                };
            }
            *in_flight += 1;
        }
        Admission::Call(Permit {
            breaker: self.clone(),
            settled: false,
        })
    }
    // ANCHOR_END: admit

    // ANCHOR: settle
    fn settle(&self, success: bool) {
        let now = Instant::now();
        let policy = self.policy;
        let mut inner = self.lock();
        let next = match &mut *inner {
            Inner::Closed { window, streak } => {
                window.record(now, success);
                *streak = if success { 0 } else { *streak + 1 };
                let should_open = if self.usual {
                    // Failures in a row, whatever came before them.
                    *streak >= policy.min_calls
                } else {
                    let (calls, failures) = window.counts(now);
                    let rate = calls >= u64::from(policy.min_calls)
                        && failures as f64 / calls as f64 >= policy.failure_rate;
                    rate || *streak >= policy.trip_after
                };
                should_open.then_some(Inner::Open {
                    until: now + policy.reset_timeout,
                })
            }
            Inner::HalfOpen {
                in_flight,
                succeeded,
            } => {
                *in_flight = in_flight.saturating_sub(1);
                if !success {
                    Some(Inner::Open {
                        until: now + policy.reset_timeout,
                    })
                } else {
                    *succeeded += 1;
                    // The usual answer closes on the first success.
                    let enough = if self.usual { 1 } else { policy.probes };
                    (*succeeded >= enough).then(|| Inner::Closed {
                        window: Box::new(Window::new(policy.window)),
                        streak: 0,
                    })
                }
            }
            // A call that started before the breaker opened: its outcome
            // is old news.
            Inner::Open { .. } => None,
        };
        if let Some(next) = next {
            *inner = next;
        }
    }
    // ANCHOR_END: settle

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// ANCHOR: permit
/// Leave to make one call. Report how it went; a permit dropped without a
/// report — the call was cancelled, or panicked — counts as a failure.
#[derive(Debug)]
pub struct Permit {
    breaker: Breaker,
    settled: bool,
}

impl Permit {
    pub fn succeeded(mut self) {
        self.settled = true;
        self.breaker.settle(true);
    }

    pub fn failed(mut self) {
        self.settled = true;
        self.breaker.settle(false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.settle(false);
        }
    }
}
// ANCHOR_END: permit

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            window: Duration::from_secs(10),
            min_calls: 4,
            failure_rate: 0.5,
            reset_timeout: Duration::from_secs(2),
            probes: 2,
            trip_after: 20,
        }
    }

    fn call(breaker: &Breaker, ok: bool) -> bool {
        match breaker.admit() {
            Admission::Call(permit) => {
                if ok {
                    permit.succeeded();
                } else {
                    permit.failed();
                }
                true
            }
            Admission::Refuse { .. } => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_failure_rate_not_on_a_streak() {
        let breaker = Breaker::new(policy());
        // Alternating: never two failures in a row, yet half fail.
        for ok in [true, false, true, false] {
            assert!(call(&breaker, ok));
        }
        assert_eq!(breaker.state(), State::Open);
        // The usual breaker counts a streak, and stays closed.
        let usual = Breaker::usual(policy());
        for ok in [true, false, true, false, true, false] {
            assert!(call(&usual, ok));
        }
        assert_eq!(usual.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_open_it_after_busy_healthy_traffic() {
        let breaker = Breaker::new(policy());
        // A busy healthy stretch fills the window with successes ...
        for _ in 0..40_000 {
            assert!(call(&breaker, true));
        }
        // ... so the rate would need 40,000 failures; the streak needs 20.
        for _ in 0..19 {
            assert!(call(&breaker, false));
        }
        assert_eq!(breaker.state(), State::Closed);
        assert!(call(&breaker, false));
        assert_eq!(breaker.state(), State::Open);
        assert!(!call(&breaker, false), "open: the next call is refused");
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_that_flaps_opens_it_once_failing_long_enough() {
        let breaker = Breaker::new(policy());
        // Healthy and failing by turns, 400 calls each; a success resets
        // the streak, and with successes a bit more than half the rate stays
        // under one half.
        let mut opened_after = None;
        for round in 0..10 {
            for _ in 0..420 {
                call(&breaker, true);
            }
            for n in 0..400 {
                if !call(&breaker, false) {
                    opened_after = Some((round, n));
                    break;
                }
            }
            if opened_after.is_some() {
                break;
            }
        }
        // The first failing stretch opens it, 20 calls in.
        assert_eq!(opened_after, Some((0, 20)));
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_leave_the_window() {
        let breaker = Breaker::new(policy());
        for _ in 0..3 {
            call(&breaker, false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        // Three failures eleven seconds ago no longer count.
        call(&breaker, false);
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn open_refuses_then_half_open_admits_only_the_probes() {
        let breaker = Breaker::new(policy());
        for _ in 0..4 {
            call(&breaker, false);
        }
        assert!(matches!(
            breaker.admit(),
            Admission::Refuse {
                state: State::Open,
                ..
            }
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        // Ten callers at once: two probes, eight refused.
        let admissions: Vec<Admission> = (0..10).map(|_| breaker.admit()).collect();
        let probes = admissions
            .iter()
            .filter(|a| matches!(a, Admission::Call(_)))
            .count();
        assert_eq!(probes, 2);
        for admission in admissions {
            if let Admission::Call(permit) = admission {
                permit.succeeded();
            }
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_usual_half_open_lets_everyone_through() {
        let usual = Breaker::usual(policy());
        for _ in 0..4 {
            call(&usual, false);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        // Ten callers at once (their permits held, calls in flight).
        let admissions: Vec<Admission> = (0..10).map(|_| usual.admit()).collect();
        let admitted = admissions
            .iter()
            .filter(|a| matches!(a, Admission::Call(_)))
            .count();
        assert_eq!(admitted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_dropped_permit_is_a_failure() {
        let breaker = Breaker::new(policy());
        for _ in 0..4 {
            call(&breaker, false);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        match breaker.admit() {
            // Cancelled: dropped without a report.
            Admission::Call(permit) => drop(permit),
            Admission::Refuse { .. } => panic!("the first probe was refused"),
        }
        assert_eq!(breaker.state(), State::Open);
    }
}
