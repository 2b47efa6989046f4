//! The usual answer's sequence, written with the supervisor's API, so that
//! what it does can be measured beside the supervisor's rollout.
//!
//! ```js
//! for (const old of Object.values(cluster.workers)) {
//!   const next = cluster.fork();
//!   await once(next, 'listening');   // "listening" taken for "ready"
//!   old.disconnect();                // its server.close() closes idle connections
//!   await once(old, 'exit');         // no timeout: a busy worker holds the loop
//! }
//! ```
//!
//! Two things differ from the lesson's own loop (`rolling_restart` in
//! `main.rs`): the wait ends at `listening`, and the old worker closes its
//! connections the way Node 20's `server.close()` does
//! ([`crate::node_close`], the worker side of `--naive`): idle ones at
//! once, busy ones not at all while their clients keep sending. That is
//! the loop of the Node twin `node/disconnect.js`, and
//! `tests/naive_like_node.rs` checks that clients see the same from both.
//! What remains of the supervisor: `disconnect` kills a worker still
//! draining after `--grace`, and the wait for `exit` is bounded so that the
//! demo cannot hang; the Node loop has neither.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use supervisor::{Cluster, Event, ExitReason, ReplaceStep, RolloutOutcome, RolloutReport};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long the demo waits where the usual code waits for ever.
const PATIENCE: Duration = Duration::from_secs(60);

// ANCHOR: naive
pub async fn rolling_restart(cluster: &Cluster) -> anyhow::Result<RolloutReport> {
    let begun = Instant::now();
    let mut events = cluster.subscribe();
    let old_workers = cluster.workers();
    say(
        cluster,
        "rollout_started",
        json!({ "workers": old_workers.len() }),
    );
    let mut steps = Vec::new();
    for old in old_workers {
        // EXERCISE 08.1: a worker of this list may have crashed since the
        // list was taken (its slot refilled by the restart policy). Carry
        // the rollout on past it, rather than stopping halfway.
        let forked = Instant::now();
        let new = cluster.fork().await?;
        let listening = |e: &Event| matches!(e, Event::Listening { id, .. } if *id == new);
        if events.wait_for(PATIENCE, listening).await.is_err() {
            bail!("worker {new} never listened: the usual code would wait here for ever");
        }
        // Recorded as `ready_after`, though it is only `listening`: the
        // report says which one it waited for.
        let ready_after = forked.elapsed();
        let drain = Instant::now();
        cluster.disconnect(old).await?;
        let exited = |e: &Event| matches!(e, Event::Exit { id, .. } if *id == old);
        events
            .wait_for(PATIENCE, exited)
            .await
            .with_context(|| format!("worker {old} did not exit"))?;
        say(cluster, "replaced", json!({ "old": old, "new": new }));
        steps.push(ReplaceStep {
            old,
            new,
            reason: ExitReason::Left,
            ready_after,
            drained_after: drain.elapsed(),
        });
    }
    let replaced: Vec<_> = steps.iter().map(|s| [s.old, s.new]).collect();
    let done = json!({ "outcome": "completed", "replaced": replaced });
    say(cluster, "rollout_finished", done);
    Ok(RolloutReport {
        generation: 1,
        outcome: RolloutOutcome::Completed,
        steps,
        restored: Vec::new(),
        failure: None,
        took: begun.elapsed(),
    })
}
// ANCHOR_END: naive

/// One of the usual answer's log lines, as an event named like the
/// supervisor's own (`rollout_started`, `replaced`, `rollout_finished`), so
/// that the same scenario checks read both.
fn say(cluster: &Cluster, kind: &str, fields: serde_json::Value) {
    let human = format!("the usual sequence: {kind} {fields}");
    cluster.report(kind, &fields, &human);
}

/// `--serve --naive`: the usual answer's `process.on('SIGUSR2', …)`. Each
/// SIGUSR2 (or SIGHUP) starts the loop — a second one while a loop runs
/// starts a second loop beside it, as in Node; SIGINT or SIGTERM stops the
/// cluster (the supervisor's graceful stop). Made before the cluster starts,
/// so that no signal finds the process without its handler.
#[derive(Debug)]
pub struct UsualSignals {
    roll: [Signal; 2],
    stop: [Signal; 2],
}

impl UsualSignals {
    pub fn new() -> std::io::Result<Self> {
        Ok(UsualSignals {
            roll: [
                signal(SignalKind::user_defined2())?,
                signal(SignalKind::hangup())?,
            ],
            stop: [
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ],
        })
    }

    pub async fn serve(self, cluster: Cluster) {
        let UsualSignals {
            roll: [mut usr2, mut hup],
            stop: [mut term, mut int],
        } = self;
        loop {
            tokio::select! {
                _ = usr2.recv() => {}
                _ = hup.recv() => {}
                _ = term.recv() => { cluster.shutdown(); continue; }
                _ = int.recv() => { cluster.shutdown(); continue; }
            }
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Err(error) = rolling_restart(&cluster).await {
                    cluster.note_line(&format!("the usual sequence stopped: {error:#}"));
                }
            });
        }
    }
}
