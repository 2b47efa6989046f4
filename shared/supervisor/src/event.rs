//! The lifecycle events a primary sees, in the order Node names them, and
//! the ones Node leaves to you (rollouts, scaling, health).
//!
//! One stream serves two readers: the lesson's human log and the scenario
//! runner, which starts a lesson with `--events json` and reads these as JSON
//! lines on stdout. The JSON shape is therefore a contract with
//! `scenarios/`: field names are stable, and a new kind of event is added,
//! never renamed.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::listen::Sched;
pub use crate::role::WorkerId;

/// Something that happened to the cluster. Serialised with an `"event"` tag,
/// for example `{"event":"fork","id":1,"pid":4242,"generation":1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The primary bound its address (port 0 resolved) and is about to fork.
    Start {
        pid: u32,
        addr: SocketAddr,
        sched: Sched,
        workers: usize,
    },
    /// A worker process was spawned (Node: `fork`). `generation` counts
    /// releases: 1 at start, one more for each rolling restart, so a
    /// transcript tells old workers from new ones.
    Fork {
        id: WorkerId,
        pid: u32,
        generation: u32,
    },
    /// The worker's code is running and its channel is up (Node: `online`).
    Online { id: WorkerId },
    /// The worker holds its way to connections on `addr` (Node:
    /// `listening`). It takes none yet: see [`Event::Ready`].
    Listening { id: WorkerId, addr: SocketAddr },
    /// The worker said it is ready for traffic — more than listening: caches
    /// warm, connections to its dependencies open (PM2's `wait_ready`).
    /// Only from here on does it get connections, whatever the strategy.
    Ready { id: WorkerId },
    /// The worker was told to leave, for `reason`: it is out of rotation
    /// from now on and finishes what it has (Node: `worker.disconnect()`).
    Draining { id: WorkerId, reason: ExitReason },
    /// The worker sent the primary a message (Node: `message`).
    Message {
        id: WorkerId,
        body: serde_json::Value,
    },
    /// The worker's channel closed (Node: `disconnect`). It comes before
    /// [`Event::Exit`] for the same worker.
    Disconnect { id: WorkerId },
    /// The worker process ended (Node: `exit`): `code` when it exited,
    /// `signal` (a name like `"SIGKILL"`) when a signal ended it.
    Exit {
        id: WorkerId,
        pid: u32,
        code: Option<i32>,
        signal: Option<String>,
        /// True when the primary had told it to disconnect before it ended,
        /// as Node's `worker.exitedAfterDisconnect` (only `disconnect()` sets
        /// it; a kill does not).
        exited_after_disconnect: bool,
        /// Why it ended. Only a crash, a failed start and a fresh worker
        /// that never got ready count against the restart budget.
        reason: ExitReason,
    },
    /// A crashed worker's place will be filled after `delay_ms` (backoff).
    RestartScheduled { after: WorkerId, delay_ms: u64 },
    /// Workers failed more often than the budget allows in the window: the
    /// primary stops the cluster instead of replacing them in a loop.
    GaveUp {
        restarts: u32,
        window_ms: u64,
        cause: GaveUpCause,
    },
    /// The desired number of workers changed (SIGTTIN, SIGTTOU,
    /// [`crate::Cluster::scale`], or a worker that left for good).
    Scale { from: usize, to: usize },
    /// No worker is ready any more (`ready` 0), or one is again after
    /// none was: new connections wait in the accept queue meanwhile.
    Capacity { ready: usize, desired: usize },
    /// A worker failed a check and will be replaced (or, if it never became
    /// ready, killed). `detail` says what was measured.
    Unhealthy {
        id: WorkerId,
        reason: HealthReason,
        detail: String,
        /// Its resident memory when the check failed, in MiB (0 if unknown).
        rss_mib: u64,
    },
    /// A rolling restart began: every worker of an older generation will be
    /// replaced, one at a time, by one of `generation`.
    RolloutStarted { generation: u32, workers: usize },
    /// `new` is ready and `old` has left: one replacement done.
    Replaced {
        old: WorkerId,
        new: WorkerId,
        reason: ExitReason,
        ready_ms: u64,
        drained_ms: u64,
    },
    /// The replacement `new` failed (`why`), so it was stopped and `old`
    /// kept serving: the rollout ends here, and the workers it had already
    /// replaced are replaced back (see [`Event::RolloutFinished`]'s
    /// `restored`).
    RolledBack {
        old: WorkerId,
        new: WorkerId,
        why: String,
    },
    /// The end of a rolling restart, with its report.
    RolloutFinished {
        generation: u32,
        outcome: RolloutOutcome,
        /// `[old, new]` pairs, in the order they were replaced.
        replaced: Vec<[WorkerId; 2]>,
        /// After a failed replacement: `[new, restored]` pairs, each worker
        /// of the failed release replaced by one of the release before it,
        /// the same safe way, newest first.
        #[serde(default)]
        restored: Vec<[WorkerId; 2]>,
        took_ms: u64,
    },
    /// A rolling restart was asked for while one was running: ignored.
    RolloutIgnored { running: u32 },
    /// SIGHUP or SIGUSR2 came to a program that has no rolling restart
    /// (`ClusterOptions::rolling_restart` is `None`), as Node's `cluster`
    /// has none: ignored, every worker serves on.
    NoRollingRestart { signal: String },
    /// The primary began stopping the cluster. With round-robin the
    /// listening socket is already closed when this is published: from here
    /// on a new client is refused.
    Shutdown { reason: StopReason },
}

/// Why a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Nobody asked it to go: a crash (an exit, a panic, a signal).
    Crashed,
    /// It ended before it ever said it was ready: a failed start (a bad
    /// flag, a missing file, a panic in set-up). Counted as a crash.
    FailedStart,
    /// It asked to leave, or was asked ([`crate::Cluster::disconnect`]):
    /// not replaced, and the desired count shrinks by one.
    Left,
    /// A rolling restart replaced it with a newer worker.
    Replaced,
    /// The desired count went down.
    ScaledDown,
    /// The cluster stopped.
    Shutdown,
    /// It stopped answering heartbeats; replaced, then killed if it could
    /// not drain.
    Hung,
    /// Its memory stayed over the limit; replaced.
    OverMemory,
    /// It did not become ready in time: killed, never served.
    NotReady,
}

impl ExitReason {
    /// The worker left because of a failed check, not because somebody
    /// decided it should.
    pub fn is_health(self) -> bool {
        matches!(
            self,
            ExitReason::Hung | ExitReason::OverMemory | ExitReason::NotReady
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitReason::Crashed => "a crash",
            ExitReason::FailedStart => "a failed start: it never got ready",
            ExitReason::Left => "asked to leave: not replaced",
            ExitReason::Replaced => "replaced",
            ExitReason::ScaledDown => "scaled down",
            ExitReason::Shutdown => "shutdown",
            ExitReason::Hung => "hung: it stopped answering heartbeats",
            ExitReason::OverMemory => "over its memory limit",
            ExitReason::NotReady => "not ready in time",
        })
    }
}

/// The check a worker failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthReason {
    NotReady,
    Hung,
    OverMemory,
}

impl From<HealthReason> for ExitReason {
    fn from(reason: HealthReason) -> Self {
        match reason {
            HealthReason::NotReady => ExitReason::NotReady,
            HealthReason::Hung => ExitReason::Hung,
            HealthReason::OverMemory => ExitReason::OverMemory,
        }
    }
}

/// What the primary gave up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaveUpCause {
    /// Workers kept crashing (or never getting ready) at start.
    Crashes,
    /// Workers kept failing their health checks.
    Health,
}

/// How a rolling restart ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutOutcome {
    /// Every worker runs the new generation.
    Completed,
    /// A replacement failed: the workers not yet replaced keep serving,
    /// and those already replaced were replaced back by the release
    /// before.
    RolledBack,
    /// The cluster began to stop during the rollout.
    Aborted,
}

impl fmt::Display for RolloutOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RolloutOutcome::Completed => "completed",
            RolloutOutcome::RolledBack => "rolled back",
            RolloutOutcome::Aborted => "aborted (the cluster is stopping)",
        })
    }
}

/// Why the cluster stopped. Serialised as the name a person would say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    #[serde(rename = "SIGINT")]
    Sigint,
    #[serde(rename = "SIGTERM")]
    Sigterm,
    /// SIGQUIT: stop now, without a drain.
    #[serde(rename = "SIGQUIT")]
    Sigquit,
    /// [`crate::Cluster::shutdown`] was called.
    #[serde(rename = "requested")]
    Requested,
    /// The crash budget was spent.
    #[serde(rename = "crash loop")]
    CrashLoop,
    /// The health-restart budget was spent.
    #[serde(rename = "health budget")]
    HealthBudget,
    /// A worker could not be started at all.
    #[serde(rename = "start failed")]
    StartFailed,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopReason::Sigint => "SIGINT",
            StopReason::Sigterm => "SIGTERM",
            StopReason::Sigquit => "SIGQUIT",
            StopReason::Requested => "requested",
            StopReason::CrashLoop => "crash loop",
            StopReason::HealthBudget => "health budget",
            StopReason::StartFailed => "start failed",
        })
    }
}

impl Event {
    /// The worker this event is about, if it is about one.
    pub fn worker(&self) -> Option<WorkerId> {
        match self {
            Event::Fork { id, .. }
            | Event::Online { id }
            | Event::Listening { id, .. }
            | Event::Ready { id }
            | Event::Draining { id, .. }
            | Event::Message { id, .. }
            | Event::Disconnect { id }
            | Event::Exit { id, .. }
            | Event::Unhealthy { id, .. } => Some(*id),
            Event::RestartScheduled { after, .. } => Some(*after),
            Event::Replaced { new, .. } | Event::RolledBack { new, .. } => Some(*new),
            Event::Start { .. }
            | Event::GaveUp { .. }
            | Event::Scale { .. }
            | Event::Capacity { .. }
            | Event::RolloutStarted { .. }
            | Event::RolloutFinished { .. }
            | Event::RolloutIgnored { .. }
            | Event::NoRollingRestart { .. }
            | Event::Shutdown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_an_event_tag() -> Result<(), serde_json::Error> {
        let exit = Event::Exit {
            id: WorkerId(3),
            pid: 42,
            code: None,
            signal: Some("SIGKILL".into()),
            exited_after_disconnect: false,
            reason: ExitReason::Crashed,
        };
        let json = serde_json::to_string(&exit)?;
        assert_eq!(
            json,
            r#"{"event":"exit","id":3,"pid":42,"code":null,"signal":"SIGKILL","exited_after_disconnect":false,"reason":"crashed"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json)?, exit);
        Ok(())
    }

    #[test]
    fn names_are_snake_case_and_stop_reasons_read_as_said() -> Result<(), serde_json::Error> {
        let json = serde_json::to_string(&Event::RestartScheduled {
            after: WorkerId(1),
            delay_ms: 200,
        })?;
        assert_eq!(
            json,
            r#"{"event":"restart_scheduled","after":1,"delay_ms":200}"#
        );
        let json = serde_json::to_string(&Event::Shutdown {
            reason: StopReason::CrashLoop,
        })?;
        assert_eq!(json, r#"{"event":"shutdown","reason":"crash loop"}"#);
        assert_eq!(StopReason::Sigterm.to_string(), "SIGTERM");
        Ok(())
    }
}
