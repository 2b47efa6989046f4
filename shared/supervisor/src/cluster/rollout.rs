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
//! A rolling restart is a loop over `replace`, and that loop is a lesson's
//! (lesson 08 writes it, beside the usual answer's): what the supervisor
//! keeps is the bookkeeping around it, a [`Rollout`]. Beginning one raises
//! the generation and names the workers to replace; only one exists at a
//! time, and a second request is reported and refused; [`Rollout::go_back`]
//! makes the release before the one that refills a crashed slot again.
//! SIGHUP and SIGUSR2 begin one and hand it to the lesson's loop, if the
//! lesson gave one (`ClusterOptions::rolling_restart`) — as in Node, where
//! the loop is whatever you hang on `process.on('SIGUSR2', …)`.

use std::future::Future;
use std::pin::Pin;
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
}

// ANCHOR: rollout
/// A rolling restart the supervising loop has begun: the generation is
/// raised, so every worker forked from now on is of the new release, and
/// the workers to replace are named. One exists at a time; while it does,
/// another request (a second SIGHUP) gets [`RolloutError::AlreadyRunning`].
///
/// The loop that replaces the workers is the caller's (lesson 08 writes it
/// over [`Cluster::replace`]); this is only the bookkeeping around it. It
/// ends with [`Rollout::finish`], or when dropped, so a loop that panics or
/// is cancelled does not leave a rollout marked as running.
#[derive(Debug)]
pub struct Rollout {
    cluster: Cluster,
    generation: u32,
    previous: u32,
    olds: Vec<WorkerId>,
    begun: Instant,
    over: bool,
}

/// What SIGHUP and SIGUSR2 run, handed the rollout the loop has begun
/// ([`ClusterOptions::rolling_restart`](super::ClusterOptions::rolling_restart)).
pub type RollingRestart = fn(Rollout) -> Pin<Box<dyn Future<Output = RolloutReport> + Send>>;

impl Rollout {
    /// The cluster it rolls.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The generation it installs.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The workers of older generations when it began, in id order.
    pub fn olds(&self) -> &[WorkerId] {
        &self.olds
    }

    /// The new release failed: from now on a worker forked into an empty
    /// slot is of the release before again. Replacing back the workers
    /// already moved is the caller's loop.
    pub fn go_back(&self) {
        self.cluster
            .command(Command::RestoreGeneration(self.previous));
    }

    /// Ends the rollout, publishes how it went (`rollout_finished`) and
    /// returns the report; another rollout may begin from here on.
    pub fn finish(
        mut self,
        outcome: RolloutOutcome,
        steps: Vec<ReplaceStep>,
        restored: Vec<ReplaceStep>,
        failure: Option<String>,
    ) -> RolloutReport {
        self.over = true;
        self.cluster.command(Command::EndRollout);
        let took = self.begun.elapsed();
        self.cluster.publish(Event::RolloutFinished {
            generation: self.generation,
            outcome,
            replaced: steps.iter().map(|s| [s.old, s.new]).collect(),
            restored: restored.iter().map(|s| [s.old, s.new]).collect(),
            took_ms: millis(took),
        });
        RolloutReport {
            generation: self.generation,
            outcome,
            steps,
            restored,
            failure,
            took,
        }
    }
}

impl Drop for Rollout {
    fn drop(&mut self) {
        if !self.over {
            self.cluster.command(Command::EndRollout);
        }
    }
}
// ANCHOR_END: rollout

impl Cluster {
    /// Begins a rolling restart: raises the generation and names the
    /// workers to replace. Refused (and published, `rollout_ignored`) while
    /// another one runs.
    pub async fn begin_rollout(&self) -> Result<Rollout, RolloutError> {
        (self.request(Command::BeginRollout).await).ok_or(RolloutError::Stopping)?
    }

    /// A rollout the loop has begun (SIGHUP begins one in the loop itself).
    pub(super) fn rollout(&self, begun: Begun) -> Rollout {
        Rollout {
            cluster: self.clone(),
            generation: begun.generation,
            previous: begun.previous,
            olds: begun.olds,
            begun: Instant::now(),
            over: false,
        }
    }
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
