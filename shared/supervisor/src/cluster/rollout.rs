//! Replacing a worker without losing a request, and a rolling restart of all
//! of them.
//!
//! [`Cluster::replace`] is the one safe way to swap a worker, used by the
//! rolling restart and by the health monitor alike:
//!
//! 1. fork the replacement into the old worker's slot;
//! 2. wait until it is *ready* (not merely listening) — or until it fails:
//!    it exits, or the supervisor kills it at `ready_timeout`;
//! 3. only then take the old worker out of rotation and drain it (lesson
//!    06's drain: `Connection: close` on each connection's next response,
//!    idle connections closed after a short timeout, killed at `grace`);
//! 4. if the replacement failed, the old worker was never touched: it keeps
//!    serving, and one line says why the replacement failed (a rollback).
//!
//! At every moment at least as many workers are ready as before the swap.
//! With reuseport the slot's socket belongs to the slot, so connections
//! queued on it when the old worker stops accepting are taken by the new
//! one, never reset.
//!
//! A rolling restart ([`Cluster::rolling_restart`], SIGHUP, SIGUSR2) raises
//! the generation and replaces every older worker, one at a time. Only one
//! runs at a time: a second request is reported and ignored. The first
//! failed replacement ends it, and the generation goes back, so that a
//! crashed worker is replaced by the release that works.

use std::time::{Duration, Instant};

use super::Cluster;
use super::error::{ReplaceError, RolloutError};
use super::inbox::{Begun, Command};
use crate::event::{Event, ExitReason, RolloutOutcome};
use crate::role::WorkerId;

/// One worker replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaceStep {
    pub old: WorkerId,
    pub new: WorkerId,
    /// Why the old one went.
    pub reason: ExitReason,
    /// From the fork to the replacement's `ready`.
    pub ready_after: Duration,
    /// From taking the old worker out of rotation to its exit.
    pub drained_after: Duration,
}

/// How a rolling restart went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutReport {
    /// The generation it installed (or tried to).
    pub generation: u32,
    pub outcome: RolloutOutcome,
    /// The replacements done, in order.
    pub steps: Vec<ReplaceStep>,
    /// After a failure: the replaced workers replaced back by the previous
    /// release, newest first.
    pub restored: Vec<ReplaceStep>,
    /// Why it stopped early, if it did.
    pub failure: Option<String>,
    pub took: Duration,
}

impl Cluster {
    // ANCHOR: replace
    /// Replaces worker `old` with a new one in its slot, safely (see the
    /// module doc); `reason` is what the old worker's exit will say.
    pub async fn replace(
        &self,
        old: WorkerId,
        reason: ExitReason,
    ) -> Result<ReplaceStep, ReplaceError> {
        let begun = Instant::now();
        let start = |reply| Command::Replace { old, reason, reply };
        let new = (self.request(start).await).unwrap_or(Err(ReplaceError::Stopping))?;

        // The supervisor kills a replacement that is not ready in time; the
        // extra margin only guards against a wait that could never end.
        let options = &self.inner.options;
        let ready = self
            .wait_until(options.ready_timeout + Duration::from_secs(5), |s| {
                if s.stopping {
                    return Some(Err(None));
                }
                match s.workers.get(&new) {
                    Some(_) if s.is_ready(new) => Some(Ok(())),
                    Some(_) => None,
                    None => Some(Err(Some(s.ended.get(&new).map_or_else(
                        || "it exited before it was ready".to_string(),
                        |ended| why_it_failed(ended, options.ready_timeout),
                    )))),
                }
            })
            .await;
        let why = match ready {
            Ok(Ok(())) => self.bake(new).await?,
            Ok(Err(None)) => return Err(ReplaceError::Stopping),
            Ok(Err(Some(why))) => Some(why),
            Err(_) => {
                let _ = self.kill(new, nix::sys::signal::Signal::SIGKILL);
                Some("it never became ready".to_string())
            }
        };
        if let Some(why) = why {
            self.publish(Event::RolledBack {
                old,
                new,
                why: why.clone(),
            });
            return Err(ReplaceError::Failed { old, new, why });
        }
        let ready_after = begun.elapsed();

        // The new one serves: now, and only now, the old one goes. It may
        // have crashed meanwhile; then there is nothing to drain.
        let drain_begun = Instant::now();
        self.command(Command::Depart {
            id: old,
            reason,
            reply: None,
        });
        let _ = self
            .wait_until(options.grace + Duration::from_secs(5), |s| {
                (!s.workers.contains_key(&old)).then_some(())
            })
            .await;
        let step = ReplaceStep {
            old,
            new,
            reason,
            ready_after,
            drained_after: drain_begun.elapsed(),
        };
        self.publish(Event::Replaced {
            old,
            new,
            reason,
            ready_ms: millis(step.ready_after),
            drained_ms: millis(step.drained_after),
        });
        Ok(step)
    }
    // ANCHOR_END: replace

    /// Watches a ready replacement for the bake time while its predecessor
    /// still serves: why it failed (it ended), or `None` if it held.
    async fn bake(&self, new: WorkerId) -> Result<Option<String>, ReplaceError> {
        let bake = self.inner.options.bake;
        if bake.is_zero() {
            return Ok(None);
        }
        let ready_at = Instant::now();
        let ended = self
            .wait_until(bake, |s| {
                if s.stopping {
                    Some(Err(ReplaceError::Stopping))
                } else {
                    (!s.workers.contains_key(&new)).then(|| {
                        Ok(s.ended.get(&new).map_or_else(String::new, |ended| {
                            match (ended.code, &ended.signal) {
                                (_, Some(signal)) => format!(", killed by {signal}"),
                                (Some(code), None) => format!(", exit code {code}"),
                                (None, None) => String::new(),
                            }
                        }))
                    })
                }
            })
            .await;
        match ended {
            // It held for the whole bake time.
            Err(_) => Ok(None),
            Ok(Err(stopping)) => Err(stopping),
            Ok(Ok(how)) => Ok(Some(format!(
                "it ended {} ms after it was ready{how}, within the {} ms bake time",
                ready_at.elapsed().as_millis(),
                bake.as_millis()
            ))),
        }
    }

    // ANCHOR: rolling_restart
    /// Replaces every worker, one at a time, with one of a new generation,
    /// and reports how it went. Node: the loop you write on SIGUSR2.
    pub async fn rolling_restart(&self) -> Result<RolloutReport, RolloutError> {
        // The work runs in its own task: dropping this future does not
        // leave a rollout half-done and marked as running.
        self.start_rollout()
            .await?
            .await
            .map_err(|_| RolloutError::Lost)
    }

    /// Starts a rolling restart in the background. A second one while the
    /// first runs is published and refused.
    pub async fn start_rollout(
        &self,
    ) -> Result<tokio::task::JoinHandle<RolloutReport>, RolloutError> {
        let begun = (self.request(Command::BeginRollout).await).ok_or(RolloutError::Stopping)??;
        Ok(self.spawn_rollout(begun))
    }

    /// Runs a rollout the loop has begun (SIGHUP and SIGUSR2 begin one in
    /// the loop itself), in a task of its own.
    pub(super) fn spawn_rollout(&self, begun: Begun) -> tokio::task::JoinHandle<RolloutReport> {
        let cluster = self.clone();
        tokio::spawn(async move { cluster.roll(begun).await })
    }

    async fn roll(&self, begun: Begun) -> RolloutReport {
        let Begun {
            generation,
            previous,
            olds,
        } = begun;
        let begun = Instant::now();
        let mut steps = Vec::new();
        let mut outcome = RolloutOutcome::Completed;
        let mut failure = None;
        for old in olds {
            match self.replace(old, ExitReason::Replaced).await {
                Ok(step) => steps.push(step),
                // It crashed meanwhile, and its slot was refilled with the
                // new generation already: nothing to do.
                Err(ReplaceError::NotInService(_) | ReplaceError::AlreadyReplacing(_)) => {}
                Err(ReplaceError::Stopping) => {
                    outcome = RolloutOutcome::Aborted;
                    break;
                }
                Err(error @ (ReplaceError::Failed { .. } | ReplaceError::Spawn(_))) => {
                    outcome = RolloutOutcome::RolledBack;
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        let mut restored = Vec::new();
        if outcome == RolloutOutcome::RolledBack {
            // The release before is the one that runs from now on: a crash
            // is refilled with it, and the workers this rollout replaced
            // are replaced back, one at a time, the same safe way.
            self.command(Command::RestoreGeneration(previous));
            restored = self.restore(&steps).await;
        }
        self.command(Command::EndRollout);
        let took = begun.elapsed();
        self.publish(Event::RolloutFinished {
            generation,
            outcome,
            replaced: steps.iter().map(|s| [s.old, s.new]).collect(),
            restored: restored.iter().map(|s| [s.old, s.new]).collect(),
            took_ms: millis(took),
        });
        RolloutReport {
            generation,
            outcome,
            steps,
            restored,
            failure,
            took,
        }
    }

    /// Replaces each worker a failed rollout had started, newest first,
    /// with one of the release before. Stops at the first that cannot be
    /// replaced back (the cluster stops, or the old release fails too):
    /// what is left then runs the new release, and the report says so.
    async fn restore(&self, steps: &[ReplaceStep]) -> Vec<ReplaceStep> {
        let mut restored = Vec::new();
        for step in steps.iter().rev() {
            match self.replace(step.new, ExitReason::Replaced).await {
                Ok(back) => restored.push(back),
                // It crashed meanwhile and its slot was refilled with the
                // old release already.
                Err(ReplaceError::NotInService(_) | ReplaceError::AlreadyReplacing(_)) => {}
                Err(error) => {
                    self.note_line(&format!(
                        "could not replace worker {} back: {error}; it keeps the new release",
                        step.new
                    ));
                    break;
                }
            }
        }
        restored
    }
    // ANCHOR_END: rolling_restart
}

fn why_it_failed(ended: &super::snapshot::Ended, ready_timeout: Duration) -> String {
    match (ended.reason, ended.code, &ended.signal) {
        (ExitReason::NotReady, _, _) => format!(
            "not ready within {:.1}s: killed",
            ready_timeout.as_secs_f64()
        ),
        (_, _, Some(signal)) => format!("killed by {signal} before it was ready"),
        (_, Some(code), None) => format!("exited with code {code} before it was ready"),
        (_, None, None) => "it exited before it was ready".to_string(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
