//! The usual answer, written with the same API, to measure what it loses.
//!
//! ```js
//! for (const old of Object.values(cluster.workers)) {
//!   const next = cluster.fork();
//!   await once(next, 'listening');   // "listening" taken for "ready"
//!   old.disconnect();                // its server.close() drops idle sockets
//!   await once(old, 'exit');         // no timeout: a stuck worker hangs here
//! }
//! ```
//!
//! Two things differ from [`supervisor::Cluster::rolling_restart`]: the wait
//! ends at `listening`, and the old worker's drain closes idle keep-alive
//! connections at once (the worker side of `--naive`, in `main.rs`). The
//! wait for `exit` is bounded here only so the demo cannot hang; the usual
//! code would wait for ever.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use supervisor::{Cluster, Event, ExitReason, ReplaceStep, RolloutOutcome, RolloutReport};

/// How long the demo waits where the usual code waits for ever.
const PATIENCE: Duration = Duration::from_secs(30);

// ANCHOR: naive
pub async fn rolling_restart(cluster: &Cluster) -> anyhow::Result<RolloutReport> {
    let begun = Instant::now();
    let mut events = cluster.subscribe();
    let mut steps = Vec::new();
    for old in cluster.workers() {
        let forked = Instant::now();
        let new = cluster.fork()?;
        let listening = |e: &Event| matches!(e, Event::Listening { id, .. } if *id == new);
        if events.wait_for(PATIENCE, listening).await.is_err() {
            bail!("worker {new} never listened: the usual code would wait here for ever");
        }
        // Recorded as `ready_after`, though it is only `listening`: the
        // report says which one it waited for.
        let ready_after = forked.elapsed();
        let drain = Instant::now();
        cluster.disconnect(old)?;
        let exited = |e: &Event| matches!(e, Event::Exit { id, .. } if *id == old);
        events
            .wait_for(PATIENCE, exited)
            .await
            .with_context(|| format!("worker {old} did not exit"))?;
        steps.push(ReplaceStep {
            old,
            new,
            reason: ExitReason::Left,
            ready_after,
            drained_after: drain.elapsed(),
        });
    }
    Ok(RolloutReport {
        generation: 1,
        outcome: RolloutOutcome::Completed,
        steps,
        failure: None,
        took: begun.elapsed(),
    })
}
// ANCHOR_END: naive
