//! Signals, each with one meaning, the way Gunicorn documents its table.
//!
//! | signal          | meaning                                                    |
//! |-----------------|------------------------------------------------------------|
//! | SIGINT, SIGTERM | stop gracefully: drain every worker, kill at `grace`       |
//! | SIGTERM again   | nothing more: the stop is already graceful                 |
//! | SIGINT again    | stop now: kill the workers still draining                  |
//! | SIGQUIT         | stop now, without a drain                                  |
//! | SIGHUP, SIGUSR2 | rolling restart (Gunicorn's reload; Node's convention)     |
//! | SIGTTIN, SIGTTOU| one worker more, one fewer                                 |
//!
//! Workers ignore SIGINT and SIGHUP (see `spawn`): a terminal sends them to
//! the whole process group, and the primary decides how workers stop.
//! A SIGTERM sent to a worker alone makes the primary replace it (a new
//! worker ready first), then drain it: the desired count holds.

use std::io;

use tokio::signal::unix::{SignalKind, signal};

use super::owner::Supervisor;
use crate::event::{Event, StopReason};

/// The signals a primary answers, each with one meaning (the book's signal
/// table lists them).
#[derive(Debug)]
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    ttin: tokio::signal::unix::Signal,
    ttou: tokio::signal::unix::Signal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caught {
    Int,
    Term,
    Quit,
    Roll(&'static str),
    MoreWorkers,
    FewerWorkers,
}

impl Signals {
    pub fn new() -> io::Result<Self> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
            ttin: signal(SignalKind::from_raw(nix::libc::SIGTTIN))?,
            ttou: signal(SignalKind::from_raw(nix::libc::SIGTTOU))?,
        })
    }

    pub(super) async fn recv(&mut self) -> Caught {
        tokio::select! {
            _ = self.int.recv() => Caught::Int,
            _ = self.term.recv() => Caught::Term,
            _ = self.quit.recv() => Caught::Quit,
            _ = self.hup.recv() => Caught::Roll("SIGHUP"),
            _ = self.usr2.recv() => Caught::Roll("SIGUSR2"),
            _ = self.ttin.recv() => Caught::MoreWorkers,
            _ = self.ttou.recv() => Caught::FewerWorkers,
        }
    }
}

// ANCHOR: on_signal
impl Supervisor {
    pub(super) async fn on_signal(&mut self, caught: Caught) {
        let cluster = self.cluster.clone();
        let stopping = self.stopping.is_some();
        match (caught, stopping) {
            (Caught::Int, false) => self.stop(StopReason::Sigint, None).await,
            (Caught::Term, false) => self.stop(StopReason::Sigterm, None).await,
            (Caught::Quit, false) => {
                self.stop(StopReason::Sigquit, None).await;
                self.kill_now("SIGQUIT");
            }
            (Caught::Int, true) => self.kill_now("SIGINT again"),
            (Caught::Quit, true) => self.kill_now("SIGQUIT"),
            (Caught::Term, true) => cluster.note_line(
                "SIGTERM again: already stopping gracefully (Ctrl-C again or SIGQUIT stops at once)",
            ),
            (Caught::Roll(name), false) => match cluster.inner.options.rolling_restart {
                // Node's `cluster` has no rolling restart: a program without
                // a loop of its own has nothing to run.
                None => self.publish_now(Event::NoRollingRestart {
                    signal: name.to_string(),
                }),
                Some(roll) => {
                    // Refused while another runs: `rollout_ignored` says so,
                    // and this line is only for a rollout that really starts.
                    if self.registry.rollout.is_none() {
                        cluster.note_line(&format!("{name}: rolling restart"));
                    }
                    if let Ok(begun) = self.begin_rollout() {
                        tokio::spawn(roll(cluster.rollout(begun)));
                    }
                }
            },
            (Caught::MoreWorkers, false) => self.scale(self.registry.slots.len() + 1),
            (Caught::FewerWorkers, false) => self.scale(self.registry.slots.len().saturating_sub(1)),
            (Caught::Roll(_) | Caught::MoreWorkers | Caught::FewerWorkers, true) => {}
        }
    }
}
// ANCHOR_END: on_signal
