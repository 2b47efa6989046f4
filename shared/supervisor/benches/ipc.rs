//! What the supervisor's moving parts cost, measured with real processes.
//!
//! * `ipc/round_trip/{64B,64KiB}`: the primary sends a message to a worker,
//!   which sends it straight back; one iteration is the whole trip, including
//!   the primary's event loop and subscription, which is the path a lesson
//!   uses.
//! * `ipc/pipelined_200/{64B,64KiB}`: 200 messages out, 200 echoes back, so
//!   the channel stays busy: the figure to read is messages per second.
//! * `fork/to_listening`: from `Cluster::fork` to the worker's `listening`
//!   event: spawning the process, exec, runtime start-up, joining the channel.
//!
//! Like the supervisor's tests, this binary is its own worker: when the
//! cluster re-executes it, `main` sees the worker role and echoes messages.
//! Run with `cargo bench -p supervisor`; compare runs side by side on the
//! same machine, never against a number from elsewhere.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use supervisor::http::{serve, text};
use supervisor::{Cluster, ClusterOptions, Event, Events, EventsFormat, Role, Worker, WorkerId};
use tokio::runtime::Runtime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    if supervisor::role()? != Role::Primary {
        return Runtime::new()?.block_on(echo_worker());
    }
    let runtime = Runtime::new()?;
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    round_trip(&mut criterion, &runtime)?;
    fork_to_listening(&mut criterion, &runtime)?;
    criterion.final_summary();
    Ok(())
}

/// The worker: listens (for the fork bench) and echoes every message.
async fn echo_worker() -> Result<(), BoxError> {
    let worker = Worker::connect().await?;
    let listener = worker.listen().await?;
    worker.ready()?;
    let mut messages = worker.messages().ok_or("messages taken twice")?;
    let disconnected = worker.disconnected();
    let echo = async {
        while let Some(body) = messages.recv().await {
            if worker.send(&body).is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = serve(listener, |_| async { text(200, "") }, disconnected) => {}
        () = echo => {}
    }
    Ok(())
}

fn options(workers: usize) -> ClusterOptions {
    ClusterOptions {
        workers,
        events: EventsFormat::Quiet,
        handle_signals: false,
        worker_args: Some(Vec::new()),
        ..ClusterOptions::default()
    }
}

/// The next event that matches, or an error after ten seconds.
async fn next_matching(
    events: &mut Events,
    pred: impl Fn(&Event) -> bool,
) -> Result<Event, BoxError> {
    Ok(events.wait_for(Duration::from_secs(10), pred).await?)
}

fn round_trip(criterion: &mut Criterion, runtime: &Runtime) -> Result<(), BoxError> {
    let (cluster, mut events) = runtime.block_on(async {
        let cluster = Cluster::start(options(1)).await?;
        cluster.wait_ready(1, Duration::from_secs(10)).await?;
        let events = cluster.subscribe();
        Ok::<_, BoxError>((cluster, events))
    })?;
    let id = WorkerId(1);
    let mut group = criterion.benchmark_group("ipc");
    for (name, size) in [("64B", 64), ("64KiB", 64 * 1024)] {
        // A JSON string of `size` bytes: what a lesson's payload costs,
        // serialised on one side and parsed on the other, both ways.
        let payload = serde_json::Value::String("x".repeat(size));
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("round_trip", name), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    cluster.send(id, &payload)?;
                    next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await
                })
            })
        });
        // Many messages in flight at once: messages per second, not latency.
        const BATCH: u64 = 200;
        group.throughput(Throughput::Elements(BATCH));
        group.bench_function(BenchmarkId::new("pipelined_200", name), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    for _ in 0..BATCH {
                        cluster.send(id, &payload)?;
                    }
                    for _ in 0..BATCH {
                        next_matching(&mut events, |e| matches!(e, Event::Message { .. })).await?;
                    }
                    Ok::<_, BoxError>(())
                })
            })
        });
    }
    group.finish();
    runtime.block_on(async {
        cluster.shutdown();
        cluster.run().await
    })?;
    Ok(())
}

fn fork_to_listening(criterion: &mut Criterion, runtime: &Runtime) -> Result<(), BoxError> {
    let (cluster, mut events) = runtime.block_on(async {
        let cluster = Cluster::start(options(0)).await?;
        let events = cluster.subscribe();
        Ok::<_, BoxError>((cluster, events))
    })?;
    let mut group = criterion.benchmark_group("fork");
    group.sample_size(10);
    group.bench_function("to_listening", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let measured = runtime.block_on(async {
                    let started = Instant::now();
                    let id = cluster.fork()?;
                    next_matching(
                        &mut events,
                        |e| matches!(e, Event::Listening { id: got, .. } if *got == id),
                    )
                    .await?;
                    let took = started.elapsed();
                    // Retire it outside the measurement.
                    cluster.disconnect(id)?;
                    next_matching(
                        &mut events,
                        |e| matches!(e, Event::Exit { id: got, .. } if *got == id),
                    )
                    .await?;
                    Ok::<_, BoxError>(took)
                });
                match measured {
                    Ok(took) => total += took,
                    Err(error) => panic!("fork bench failed: {error}"),
                }
            }
            total
        })
    });
    group.finish();
    runtime.block_on(async {
        cluster.shutdown();
        cluster.run().await
    })?;
    Ok(())
}
