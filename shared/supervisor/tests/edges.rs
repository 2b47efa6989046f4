//! The edges, with real processes: a stopped worker, a client that sends
//! half a request, a worker at its connection limit. Each test says what a
//! client sees, because that is the promise.

mod common;

use std::time::Duration;

use common::{WITHIN, get, options};
use nix::sys::signal::Signal;
use supervisor::{
    Cluster, ClusterOptions, Event, ExitReason, HealthPolicy, Sched, Verdict, WorkerId, WorkerState,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Plays a worker when re-executed by a test's cluster. Not a test of its
/// own: ignored in a normal run, so it is not counted as one that passed.
#[test]
#[ignore = "a worker's entry point, run by the test clusters with --ignored"]
fn worker_main() -> Result<(), Box<dyn std::error::Error>> {
    common::play_worker()
}

/// Waits (bounded) until every thread of `pid` is stopped ('T' in /proc).
/// Nothing announces it, so this polls.
async fn stopped(pid: u32) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))?
            .filter_map(Result::ok)
            .all(|task| {
                std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        // The state follows the command name in parentheses.
                        stat.rsplit_once(')')
                            .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
                    })
                    .is_some_and(|state| state == "T" || state == "t")
            });
        if all_stopped {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("worker {pid} did not stop").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The most a client should wait for an answer from a healthy worker here.
const PROMPT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_holds_a_few_connections_and_the_others_keep_serving()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        sched: Sched::RoundRobin,
        ..options(2, "plain")
    })
    .await?;
    cluster.wait_ready(2, WITHIN).await?;
    cluster.kill(WorkerId(1), Signal::SIGSTOP)?;
    // A stop takes effect when the process's threads next run, which on a
    // busy machine can be milliseconds after `kill` returns.
    let pid = cluster.pid(WorkerId(1)).ok_or("no worker 1")?;
    stopped(pid).await?;

    // Twelve clients at once: the stopped worker takes a few (its bound of
    // unacknowledged hand-offs), worker 2 answers the rest.
    let addr = cluster.addr();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..12 {
        clients.spawn(get(addr));
    }
    let mut answered = 0;
    while answered < 8 {
        let response = tokio::time::timeout(WITHIN, clients.join_next())
            .await?
            .ok_or("a client went missing")???;
        assert!(response.contains("x-worker-id: 2"), "{response}");
        answered += 1;
    }
    // The stopped worker is full now: every client from here on is
    // answered, and promptly, by worker 2.
    for _ in 0..20 {
        let response = tokio::time::timeout(PROMPT, get(addr)).await??;
        assert!(response.contains("x-worker-id: 2"), "{response}");
    }
    // The stopped worker's clients were not lost: they are served once it
    // runs again.
    cluster.kill(WorkerId(1), Signal::SIGCONT)?;
    while let Some(client) = tokio::time::timeout(WITHIN, clients.join_next()).await? {
        let response = client??;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        answered += 1;
    }
    assert_eq!(answered, 12);

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_half_a_request_is_cut_off() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(1, "short_headers")).await?;
    cluster.wait_ready(1, WITHIN).await?;

    let mut slow = TcpStream::connect(cluster.addr()).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: te").await?;
    // The worker closes it at its header timeout, not never. The bound is
    // the suite's patience, not a multiple of the timeout: this asserts
    // "closed", and on a loaded machine ten times 300 ms was once too few.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WITHIN, slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the half request held its connection");

    // An honest client is still served.
    let response = get(cluster.addr()).await?;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_at_its_connection_limit_makes_the_next_client_wait_not_fail()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(1, "max1")).await?;
    cluster.wait_ready(1, WITHIN).await?;

    // One keep-alive connection: answered, then held open, idle.
    let mut first = TcpStream::connect(cluster.addr()).await?;
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(WITHIN, first.read(&mut buf)).await??;
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The next client is not taken while the worker is at its limit …
    let second = tokio::spawn(get(cluster.addr()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past the limit"
    );
    // … and is served as soon as the first one goes.
    drop(first);
    let response = tokio::time::timeout(WITHIN, second).await???;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_last_ready_worker_is_said_and_so_is_getting_one_back()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        restart: Some(supervisor::RestartPolicy::default()),
        ..options(1, "plain")
    })
    .await?;
    cluster.wait_ready(1, WITHIN).await?;
    let mut events = cluster.subscribe();

    cluster.kill(WorkerId(1), Signal::SIGKILL)?;
    let none = events
        .wait_for(WITHIN, |e| matches!(e, Event::Capacity { .. }))
        .await?;
    assert_eq!(
        none,
        Event::Capacity {
            ready: 0,
            desired: 1
        }
    );
    let back = events
        .wait_for(WITHIN, |e| matches!(e, Event::Capacity { .. }))
        .await?;
    assert_eq!(
        back,
        Event::Capacity {
            ready: 1,
            desired: 1
        }
    );
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_before_it_is_ready_is_a_failed_start()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        ready_timeout: Duration::from_secs(30),
        ..options(1, "never_ready")
    })
    .await?;
    let mut events = cluster.subscribe();
    let pid = cluster.pid(WorkerId(1)).ok_or("no worker 1")?;
    // Wait until it listens, so the exit is surely after its start began.
    let listening = |e: &Event| matches!(e, Event::Listening { .. });
    if cluster.state(WorkerId(1)) == Some(supervisor::WorkerState::Starting) {
        events.wait_for(WITHIN, listening).await?;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL)?;
    let exit = events
        .wait_for(WITHIN, |e| matches!(e, Event::Exit { .. }))
        .await?;
    assert!(
        matches!(
            exit,
            Event::Exit {
                reason: ExitReason::FailedStart,
                exited_after_disconnect: false,
                ..
            }
        ),
        "{exit:?}"
    );
    cluster.shutdown();
    cluster.wait().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_sent_sigterm_alone_is_replaced_before_it_drains()
-> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(2, "plain")).await?;
    cluster.wait_ready(2, WITHIN).await?;
    let mut events = cluster.subscribe();

    cluster.kill(WorkerId(1), Signal::SIGTERM)?;
    let replaced = events
        .wait_for(WITHIN, |e| matches!(e, Event::Replaced { .. }))
        .await?;
    assert!(
        matches!(
            replaced,
            Event::Replaced {
                old: WorkerId(1),
                new: WorkerId(3),
                ..
            }
        ),
        "{replaced:?}"
    );
    // The desired count held: two workers, both ready, the signalled one gone.
    assert_eq!(cluster.desired(), 2);
    assert_eq!(cluster.ready_workers(), [WorkerId(2), WorkerId(3)]);
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

/// `disconnect` closes the hand-off channel first; a worker may read that
/// end-of-stream, drain and exit before the `disconnect` message arrives.
/// That is the worker leaving as asked, and must not make the caller's
/// `disconnect` fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_and_disconnect_again_and_again() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(options(0, "plain")).await?;
    let mut events = cluster.subscribe();
    for _ in 0..30 {
        let id = cluster.fork().await?;
        events
            .wait_for(
                WITHIN,
                |e| matches!(e, Event::Listening { id: got, .. } if *got == id),
            )
            .await?;
        cluster.disconnect(id).await?;
        events
            .wait_for(
                WITHIN,
                |e| matches!(e, Event::Exit { id: got, .. } if *got == id),
            )
            .await?;
    }
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

/// Round-robin's dispatcher runs on a thread of its own. A cluster whose
/// runtime goes away without a stop (a program that returns early, a test
/// that fails half-way) must not leave that thread accepting on the port:
/// it hears the runtime go and closes the listening socket.
#[test]
fn a_dropped_runtime_takes_the_round_robin_dispatcher_with_it()
-> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = runtime.block_on(async {
        let cluster = Cluster::start(ClusterOptions {
            sched: Sched::RoundRobin,
            ..options(1, "plain")
        })
        .await?;
        cluster.wait_ready(1, WITHIN).await?;
        Ok::<_, Box<dyn std::error::Error>>(cluster.addr())
    })?;
    drop(runtime);
    // Nothing to await from outside the process's threads: look until the
    // port refuses, bounded.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        match std::net::TcpStream::connect(addr) {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            _ if std::time::Instant::now() > deadline => {
                return Err(format!("{addr} still accepts after the runtime was dropped").into());
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The dashboard's rows are measured once per health interval, but who is
/// in the cluster, and in which state, is read when they are asked for: a
/// worker that has left is never shown, still draining, beside the event
/// that says it exited. Lesson 09's scenario caught that once in ten runs;
/// an interval of an hour makes the stale sample certain here: after the
/// first round of samples, there is no other.
#[tokio::test(flavor = "current_thread")]
async fn vitals_show_who_is_in_the_cluster_now() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::start(ClusterOptions {
        health: Some(HealthPolicy {
            interval: Duration::from_secs(3600),
            // Nobody is judged sick: this test is about the rows alone.
            ..HealthPolicy::new(|_, _| Verdict::Healthy)
        }),
        ..options(2, "plain")
    })
    .await?;
    let mut events = cluster.subscribe();
    cluster.wait_ready(2, WITHIN).await?;
    let rows = |cluster: &Cluster| {
        (cluster.vitals().into_iter())
            .map(|row| (row.id.0, row.state))
            .collect::<Vec<_>>()
    };
    // The first round ends when its heartbeats are answered, and nothing
    // announces it, so this polls (bounded).
    let deadline = tokio::time::Instant::now() + WITHIN;
    while rows(&cluster).len() < 2 {
        if tokio::time::Instant::now() > deadline {
            return Err("the health monitor sampled no workers".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        rows(&cluster),
        [(1, WorkerState::Ready), (2, WorkerState::Ready)]
    );

    cluster.kill(WorkerId(1), Signal::SIGKILL)?;
    events
        .wait_for(WITHIN, |e| {
            matches!(
                e,
                Event::Exit {
                    id: WorkerId(1),
                    ..
                }
            )
        })
        .await?;
    // Worker 1 is gone; its replacement has not been sampled yet.
    assert_eq!(rows(&cluster), [(2, WorkerState::Ready)]);

    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}
