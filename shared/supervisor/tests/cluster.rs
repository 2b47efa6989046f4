//! The supervisor with real worker processes: lifecycle, IPC, routing,
//! scaling, rolling restarts. The worker they run is in `common`.

mod common;

use std::time::Duration;

use common::{WITHIN, get, options};
use supervisor::{Cluster, ClusterError, ClusterOptions, Event, ExitReason, Sched, WorkerId};

/// Plays a worker when re-executed by a test's cluster. Not a test of its
/// own: ignored in a normal run, so it is not counted as one that passed.
#[test]
#[ignore = "a worker's entry point, run by the test clusters with --ignored"]
fn worker_main() -> Result<(), Box<dyn std::error::Error>> {
    common::play_worker()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_channel_does_not_take_the_primary_down()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(1, "garbage")).await?;
    // The worker wrote three bad lines before its first good one; the
    // primary dropped them and still sees it come up.
    cluster.wait_ready(1, WITHIN).await?;
    let response = get(cluster.addr()).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-worker-id: 1"), "{response}");

    cluster.shutdown();
    let stopped = cluster.wait().await?;
    assert!(stopped.forced.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_new_connections_evenly() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        sched: Sched::RoundRobin,
        ..options(3, "plain")
    })
    .await?;
    cluster.wait_ready(3, WITHIN).await?;

    let mut per_worker = [0usize; 3];
    for _ in 0..30 {
        let response = get(cluster.addr()).await?;
        let id: usize = response
            .rsplit("\r\n\r\n")
            .next()
            .and_then(|body| body.trim().parse().ok())
            .ok_or("no worker id in the body")?;
        per_worker[id - 1] += 1;
    }
    // Sequential new connections, three workers all ready: exactly even.
    assert_eq!(per_worker, [10, 10, 10]);
    assert_eq!(cluster.connections_handed_out(), 30);

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_worker_is_not_restarted_and_a_gone_one_cannot_be_sent_to()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        restart: Some(supervisor::RestartPolicy::default()),
        ..options(2, "plain")
    })
    .await?;
    cluster.wait_ready(2, WITHIN).await?;
    let mut events = cluster.subscribe();

    cluster.disconnect(WorkerId(1)).await?;
    let exit = events
        .wait_for(WITHIN, |e| matches!(e, Event::Exit { .. }))
        .await?;
    assert!(matches!(
        exit,
        Event::Exit {
            id: WorkerId(1),
            code: Some(0),
            exited_after_disconnect: true,
            reason: ExitReason::Left,
            ..
        }
    ));
    assert_eq!(cluster.workers(), vec![WorkerId(2)]);
    assert!(matches!(
        cluster.send(WorkerId(1), &"hello?"),
        Err(ClusterError::NoSuchWorker(WorkerId(1)))
    ));

    cluster.shutdown();
    cluster.run().await?;
    // Everything the stream carried after the disconnect: no restart, no fork.
    let mut rest = Vec::new();
    while let Some(event) = events.try_next() {
        rest.push(event);
    }
    assert!(
        !rest
            .iter()
            .any(|e| matches!(e, Event::RestartScheduled { .. } | Event::Fork { .. })),
        "{rest:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_a_clear_error() -> Result<(), Box<dyn std::error::Error>> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let error = Cluster::start(ClusterOptions {
        addr: taken.local_addr()?,
        ..options(1, "plain")
    })
    .await
    .err()
    .ok_or("start succeeded on a port in use")?;
    let message = error.to_string();
    assert!(message.contains("cannot listen on 127.0.0.1:"), "{message}");
    assert!(message.contains("--port 0"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reuseport_cluster_on_a_busy_port_is_refused()
-> Result<(), Box<dyn std::error::Error>> {
    let reuseport = |addr| ClusterOptions {
        sched: Sched::ReusePort,
        addr,
        ..options(1, "plain")
    };
    let first = Cluster::start(reuseport("127.0.0.1:0".parse()?)).await?;
    first.wait_ready(1, WITHIN).await?;
    // SO_REUSEPORT would let the second bind and steal half the traffic.
    let second = Cluster::start(reuseport(first.addr())).await;
    let message = second
        .err()
        .ok_or("a second cluster started on a busy port")?
        .to_string();
    assert!(message.contains("Address already in use"), "{message}");
    first.shutdown();
    first.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reuseport_clusters_started_together_cannot_both_serve()
-> Result<(), Box<dyn std::error::Error>> {
    let reuseport = |addr| ClusterOptions {
        sched: Sched::ReusePort,
        addr,
        ..options(1, "plain")
    };
    // A free port, given back: both clusters are told to use it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // The second starts before the first has a ready worker — before any
    // socket listens there, which is what the busy-port check looks for.
    let first = Cluster::start(reuseport(port)).await?;
    let second = Cluster::start(reuseport(port)).await;
    let message = match second {
        Ok(second) => {
            second.shutdown();
            second.run().await?;
            first.shutdown();
            first.run().await?;
            return Err("two reuseport clusters started on one port".into());
        }
        Err(error) => error.to_string(),
    };
    assert!(message.contains("Address already in use"), "{message}");
    first.wait_ready(1, WITHIN).await?;
    let response = get(first.addr()).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    first.shutdown();
    first.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_all_gathers_answers_and_names_the_worker_that_stalled()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(3, "stall")).await?;
    cluster.wait_ready(3, WITHIN).await?;

    let timeout = Duration::from_millis(300);
    let gathered = cluster.ask_all(&"stats?", timeout).await;
    let answered: Vec<_> = gathered.answers.keys().copied().collect();
    assert_eq!(answered, [WorkerId(1), WorkerId(3)]);
    // Each answer is the one to its own question: the correlation id works.
    for (id, body) in &gathered.answers {
        assert_eq!(body["id"], id.0);
        assert_eq!(body["echo"], "stats?");
    }
    assert_eq!(
        gathered.missing.into_iter().collect::<Vec<_>>(),
        [(
            WorkerId(2),
            supervisor::AskError::Timeout {
                id: WorkerId(2),
                after: timeout
            }
        )]
    );

    // A question with no JSON form reaches no one, and each worker's entry
    // says why (not a `null` sent in its place, not "gone").
    let no_json_form = std::collections::BTreeMap::from([((1, 2), "a")]);
    let gathered = cluster.ask_all(&no_json_form, timeout).await;
    assert!(gathered.answers.is_empty());
    assert_eq!(gathered.missing.len(), 3);
    for (id, why) in gathered.missing {
        assert_eq!(
            why.to_string(),
            format!(
                "the question for worker {id} cannot be sent: it has no JSON form (key must be a string)"
            )
        );
    }

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_ready_is_killed_and_spends_the_crash_budget()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        ready_timeout: Duration::from_millis(300),
        restart: Some(supervisor::RestartPolicy {
            base_delay: Duration::from_millis(10),
            budget: 1,
            ..supervisor::RestartPolicy::default()
        }),
        ..options(1, "never_ready")
    })
    .await?;
    let mut events = cluster.subscribe();
    // The first is killed at the timeout and replaced once; the second too,
    // and that is one failure more than the budget allows.
    let gave_up = events
        .wait_for(WITHIN, |e| matches!(e, Event::GaveUp { .. }))
        .await?;
    assert!(matches!(
        gave_up,
        Event::GaveUp {
            restarts: 1,
            cause: supervisor::GaveUpCause::Crashes,
            ..
        }
    ));
    let error = cluster
        .wait()
        .await
        .err()
        .ok_or("the cluster did not give up")?;
    assert!(matches!(
        *error,
        ClusterError::CrashLoop { restarts: 1, .. }
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_forks_to_the_desired_count_and_drains_the_surplus()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(1, "plain")).await?;
    cluster.wait_ready(1, WITHIN).await?;
    let mut events = cluster.subscribe();

    cluster.scale(3);
    cluster.wait_ready(3, WITHIN).await?;
    assert_eq!(cluster.desired(), 3);

    cluster.scale(1);
    // The two newest leave, drained, and are not replaced.
    let exits = events
        .wait_for_all(2, WITHIN, |e| matches!(e, Event::Exit { .. }))
        .await?;
    for exit in &exits {
        assert!(
            matches!(
                exit,
                Event::Exit {
                    id: WorkerId(2 | 3),
                    code: Some(0),
                    reason: ExitReason::ScaledDown,
                    ..
                }
            ),
            "{exit:?}"
        );
    }
    assert_eq!(cluster.workers(), vec![WorkerId(1)]);
    assert_eq!(cluster.desired(), 1);

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_one_at_a_time_and_its_replacements_are_of_the_new_generation()
-> Result<(), Box<dyn std::error::Error>> {
    use supervisor::{ExitReason, RolloutError, RolloutOutcome};
    let cluster = Cluster::start(options(2, "plain")).await?;
    cluster.wait_ready(2, WITHIN).await?;

    let mut events = cluster.subscribe();
    let rollout = cluster.begin_rollout().await?;
    assert_eq!(rollout.generation(), 2);
    assert_eq!(rollout.olds(), [WorkerId(1), WorkerId(2)]);
    // A second one while the first exists is refused.
    let second = cluster.begin_rollout().await;
    assert_eq!(
        second.err(),
        Some(RolloutError::AlreadyRunning { running: 2 })
    );
    let mut steps = Vec::new();
    for &old in rollout.olds() {
        steps.push(cluster.replace(old, ExitReason::Replaced).await?);
    }
    let pairs: Vec<_> = steps.iter().map(|s| (s.old, s.new)).collect();
    assert_eq!(
        pairs,
        [(WorkerId(1), WorkerId(3)), (WorkerId(2), WorkerId(4))]
    );
    assert_eq!(cluster.workers(), [WorkerId(3), WorkerId(4)]);
    let forks: Vec<_> = std::iter::from_fn(|| events.try_next())
        .filter_map(|event| match event {
            supervisor::Event::Fork { id, generation, .. } => Some((id, generation)),
            _ => None,
        })
        .collect();
    assert_eq!(forks, [(WorkerId(3), 2), (WorkerId(4), 2)]);
    let report = rollout.finish(RolloutOutcome::Completed, steps, Vec::new(), None);
    assert_eq!(report.generation, 2);
    // Both new workers take connections.
    let response = get(cluster.addr()).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Finished, or dropped unfinished: another may begin.
    drop(cluster.begin_rollout().await?);
    let third = cluster.begin_rollout().await?;
    assert_eq!(third.generation(), 4);
    assert_eq!(third.olds(), [WorkerId(3), WorkerId(4)]);
    drop(third);

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}
