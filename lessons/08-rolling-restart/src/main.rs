//! # Lesson 08 — How do you restart every worker without dropping a request?
//!
//! **The short answer.** One worker at a time: fork its replacement, wait
//! until the replacement is *ready* — not merely listening — then take the
//! old worker out of rotation and let it finish what it has, telling each
//! keep-alive client `Connection: close` on its next response. Only then move
//! on to the next. If a replacement never gets ready, kill it, keep the
//! old one serving, and replace back the workers already moved to the new
//! release: a bad release is rolled back, not left halfway.
//!
//! Run on its own, the lesson shows all of it: four workers, keep-alive and
//! new-connection clients on 127.0.0.1, every worker rolled, and a report of
//! what the clients saw.
//!
//! ```text
//! just lesson 08                   # roll 4 workers under load; 0 failed
//! just lesson 08 --bad-release     # new workers never get ready: rolled back
//! just lesson 08 --naive           # the usual answer's sequence, measured
//! just lesson 08 --serve --crash-after-ready 500ms   # ready, then down: what ready cannot see
//! just lesson 08 --serve --crash-after-ready 500ms --bake 2s   # seen while baking: rolled back
//! just lesson 08 --serve           # serve; roll with kill -HUP <primary pid>
//! ```
//!
//! **What the usual answer gets wrong.** It treats `listening` as ready; a
//! replacement that never listens hangs its loop forever; and the old
//! worker's `server.close()` (Node 20) closes the keep-alive connections
//! idle at that instant — under clients that may be sending on them, so
//! those requests fail — while a connection busy with a request goes on
//! serving its client with keep-alive for as long as the client sends, and
//! the loop waits on it. `--naive` runs that sequence, closing connections
//! as Node does, and counts what it loses.
//!
//! | Node                                             | Rust (this workbook)                                   |
//! |--------------------------------------------------|--------------------------------------------------------|
//! | `process.on('SIGUSR2', rollEveryWorker)`         | `ClusterOptions { rolling_restart: Some(..), .. }`     |
//! | `cluster.fork()` then `worker.on('listening')`   | `cluster.replace(old, ..)` waits for `ready`           |
//! | `process.send('ready')` (PM2's `wait_ready`)     | `worker.ready()`                                       |
//! | `worker.disconnect()` + `server.close()`         | the drain: `Connection: close`, idle timeout, `--grace` |
//! | (a slow handler)                                 | `--handler-ms`: every response waits this long          |
//! | (hand-written, if at all) a ready timeout        | `--ready-timeout`: kill the replacement, keep the old  |

mod naive;
mod node_close;
mod report;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use report::Loads;
use supervisor::cli::parse_seconds;
use supervisor::http::{Server, text};
use supervisor::{
    Cluster, ClusterArgs, ExitReason, ReplaceError, RestartPolicy, Rollout, RolloutOutcome,
    RolloutReport, Worker,
};

/// Lesson 08: a rolling restart that loses no request.
#[derive(Debug, Parser)]
#[command(name = "lesson-08", version, about)]
struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,

    /// Serve and wait: roll with SIGHUP or SIGUSR2 (no built-in load, no report)
    #[arg(long)]
    serve: bool,

    /// Workers of the new generation never say they are ready: every one,
    /// or from the NTH replacement on (`--bad-release 3`: two replacements
    /// work, the third fails, and the rollout is rolled back)
    #[arg(long, num_args = 0..=1, default_missing_value = "1", value_name = "NTH",
          value_parser = clap::value_parser!(u32).range(1..))]
    bad_release: Option<u32>,

    /// Workers of the new generation crash this long after they said
    /// ready: a release that starts well and fails once it serves
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds)]
    crash_after_ready: Option<Duration>,

    /// Bake time: how long a ready replacement must keep running, its
    /// predecessor still serving, before the predecessor leaves; a crash in
    /// it rolls the rollout back [default: 0, the old worker leaves at ready]
    #[arg(long, default_value = "0s", value_name = "DURATION", value_parser = parse_seconds)]
    bake: Duration,

    /// The usual answer: wait for `listening`, not `ready`; the old worker
    /// closes connections as Node 20's `server.close()` does (idle ones at
    /// once, busy ones only after 5 s idle). With --serve, SIGHUP or SIGUSR2
    /// runs it
    #[arg(long)]
    naive: bool,

    /// Milliseconds each response waits before it is sent: with a few
    /// hundred, a keep-alive client nearly always has a request in progress
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    handler_ms: u64,

    /// How long a worker warms up between listening and ready
    #[arg(long, default_value = "200ms", value_parser = parse_seconds)]
    warmup: Duration,

    /// Clients of each kind (keep-alive, new connection) during the demo
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    clients: u16,
}

/// Without `--workers`, this lesson runs four: enough to watch a rollout.
const DEFAULT_WORKERS: u16 = 4;

fn main() -> ExitCode {
    // Not `#[tokio::main]`: the supervisor sizes each process's runtime —
    // one thread for the primary, the cores shared out among the workers
    // (see `supervisor::runtime`) — and runs this process's half.
    supervisor::lesson_main(Args::parse(), primary, |args, _| worker(args))
}

// ANCHOR: primary
async fn primary(mut args: Args) -> anyhow::Result<()> {
    let workers = *args.cluster.workers.get_or_insert(DEFAULT_WORKERS);
    // `--serve --naive`: the usual answer's own SIGUSR2 handler rolls.
    let usual_signals = args.serve && args.naive;
    let options = supervisor::ClusterOptions {
        restart: Some(RestartPolicy::default()),
        handle_signals: !usual_signals,
        // SIGHUP and SIGUSR2 run this lesson's loop (below).
        rolling_restart: Some(|rollout| Box::pin(rolling_restart(rollout))),
        bake: args.bake,
        ..args.cluster.options()
    };
    let ready_timeout = options.ready_timeout;
    let usual_signals = match usual_signals {
        true => Some(naive::UsualSignals::new().context("catching SIGUSR2")?),
        false => None,
    };
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    cluster
        .wait_ready(usize::from(workers), ready_timeout)
        .await
        .context("waiting for the first workers to be ready")?;

    if args.serve {
        cluster.note_line(&format!(
            "serving on http://{}; roll every worker with: kill -HUP {}",
            cluster.addr(),
            std::process::id()
        ));
        if let Some(signals) = usual_signals {
            tokio::spawn(signals.serve(cluster.clone()));
        }
    } else {
        let shown = demo(&cluster, &args).await;
        cluster.shutdown();
        cluster.run().await?;
        return shown;
    }
    cluster.run().await?;
    Ok(())
}

/// Measures the cluster at rest, then rolls every worker under the same
/// load and reports what the clients saw.
async fn demo(cluster: &Cluster, args: &Args) -> anyhow::Result<()> {
    let target = report::loopback(cluster.addr())?;
    let clients = usize::from(args.clients);
    // At rest, for comparison: one second of the same load.
    let rest = tokio::time::sleep(Duration::from_secs(1));
    let at_rest = Loads::measure(target, clients, rest, report::hidden()).await;

    // The same clients again, sending until the rollout is over.
    let (over, rollout_over) = tokio::sync::oneshot::channel::<()>();
    let progress = report::progress(cluster, args.cluster.events);
    let until_over = async move {
        let _ = rollout_over.await;
    };
    let during = tokio::spawn(Loads::measure(
        target,
        clients,
        until_over,
        progress.clone(),
    ));
    let rollout = if args.naive {
        naive::rolling_restart(cluster).await
    } else {
        match cluster.begin_rollout().await {
            Ok(rollout) => Ok(rolling_restart(rollout).await),
            Err(refused) => Err(refused.into()),
        }
    };
    let _ = over.send(());
    let during = during.await.unwrap_or_default();
    progress.finish_and_clear();
    report::show(cluster, &rollout, &at_rest, &during, args.naive);
    rollout.map(drop)
}
// ANCHOR_END: primary

// ANCHOR: rolling_restart
/// The answer: replace the workers of the old release one at a time, each
/// with `Cluster::replace` — fork into its slot, wait for *ready* (and the
/// bake time), only then drain the old one. The first replacement that
/// fails stops the loop, and the workers already moved are replaced back
/// with the release before: a bad release never stays half-installed.
async fn rolling_restart(rollout: Rollout) -> RolloutReport {
    let cluster = rollout.cluster().clone();
    let mut steps = Vec::new();
    let mut outcome = RolloutOutcome::Completed;
    let mut failure = None;
    for &old in rollout.olds() {
        match cluster.replace(old, ExitReason::Replaced).await {
            Ok(step) => steps.push(step),
            // It crashed since the rollout began, and the restart policy
            // refilled its slot with the new release already: nothing to do.
            Err(ReplaceError::NotInService(_) | ReplaceError::AlreadyReplacing(_)) => {}
            Err(ReplaceError::Stopping) => {
                outcome = RolloutOutcome::Aborted;
                break;
            }
            // The replacement never got ready, or died baking: the old
            // worker was never touched and serves on.
            Err(error @ (ReplaceError::Failed { .. } | ReplaceError::Spawn(_))) => {
                outcome = RolloutOutcome::RolledBack;
                failure = Some(error.to_string());
                break;
            }
        }
    }
    let mut restored = Vec::new();
    if outcome == RolloutOutcome::RolledBack {
        // The release before runs from now on: a crash is refilled with
        // it, and each worker moved is replaced back, newest first, the
        // same safe way. A worker that cannot be moved back keeps the new
        // release, and the report says so.
        rollout.go_back();
        for step in steps.iter().rev() {
            match cluster.replace(step.new, ExitReason::Replaced).await {
                Ok(back) => restored.push(back),
                Err(ReplaceError::NotInService(_) | ReplaceError::AlreadyReplacing(_)) => {}
                Err(error) => {
                    cluster.note_line(&format!(
                        "could not replace worker {} back: {error}; it keeps the new release",
                        step.new
                    ));
                    break;
                }
            }
        }
    }
    rollout.finish(outcome, steps, restored, failure)
}
// ANCHOR_END: rolling_restart

// ANCHOR: worker
async fn worker(args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let (id, generation) = (worker.id(), worker.generation());
    if args.naive {
        // A Node worker listens once its start-up is done and takes
        // connections from then on: `listening` is all the usual answer
        // waits for. Here too, with --naive: start-up first, then listen.
        // (Listening first, the usual loop's steps came 10 ms apart, and
        // clients that had just reconnected, their first request not yet
        // read, held the next old worker in most runs; a Node worker takes
        // a few hundred ms to listen, time enough for those requests.)
        tokio::time::sleep(args.warmup).await;
    }
    let listener = worker.listen().await?;

    // The NTH replacement of a first rollout: workers 1..=W start, and the
    // rollout forks W + 1, W + 2, … in turn.
    let first_workers = u32::from(args.cluster.workers.unwrap_or(DEFAULT_WORKERS));
    let bad = args
        .bad_release
        .is_some_and(|nth| generation > 1 && id.0 >= first_workers + nth);
    if bad {
        // A release that cannot start: it listens, but never gets ready.
        // The primary kills it at --ready-timeout and keeps the old worker.
        supervisor::report::stderr_line(&format!(
            "[worker {id}] --bad-release: generation {generation} never gets ready"
        ));
        worker.disconnected().await;
        return Ok(());
    }
    if !args.naive {
        // Listening is not ready: caches to load, connections to open.
        tokio::time::sleep(args.warmup).await;
    }
    worker.ready()?;
    if let Some(after) = args.crash_after_ready.filter(|_| generation > 1) {
        // Ready, serving, and then down: a release that fails only once it
        // takes traffic (a bad config read late, a dependency it cannot
        // reach, a leak). Readiness cannot see it coming.
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            supervisor::report::stderr_line(&format!(
                "[worker {id}] --crash-after-ready: generation {generation} crashes {} ms after it was ready",
                after.as_millis()
            ));
            std::process::exit(1);
        });
    }

    let delay = Duration::from_millis(args.handler_ms);
    let hello = move |_| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        text(
            200,
            format!("hello from worker {id} (generation {generation})\n"),
        )
    };
    if args.naive {
        // As Node 20's `server.close()`: idle connections closed at once,
        // busy ones served on with keep-alive (see `node_close.rs`).
        node_close::serve(listener, hello, worker.disconnected()).await;
    } else {
        Server::new()
            .serve(listener, hello, worker.disconnected())
            .await;
    }
    Ok(())
}
// ANCHOR_END: worker
