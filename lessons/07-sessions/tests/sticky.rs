//! Two things chapter 07 says of `--sticky`, each checked against the real
//! cluster, with clients on many addresses (anything in 127.0.0.0/8 is this
//! machine, so `127.0.1.10` and `127.0.1.11` are two clients to the
//! primary):
//!
//! * a replacement keeps its predecessor's clients: after each worker in
//!   turn is killed (`kill -9`) and its slot refilled by the restart
//!   policy, each client is served by the worker that replaced the one it
//!   had — and, with sessions in memory, is logged out, because the map
//!   died with the old process;
//! * a first choice that has [`MAX_UNACKED`] hand-offs not yet taken is
//!   passed over: with the first choice stopped (SIGSTOP), the fifth and
//!   later connections of its client go to the second choice, and the four
//!   handed over are answered once it runs again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use hyper::Method;
use hyper::header::{COOKIE, SET_COOKIE};
use loadgen::one::{Answer, request};
use scenarios::lesson::Lesson;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_lesson-07");

/// What the dispatcher allows a worker to have been handed and not yet
/// taken (`supervisor::cluster::dispatch::MAX_UNACKED`).
const MAX_UNACKED: usize = 4;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// `kill -SIGNAL pid`, with the shell's tool.
fn signal(name: &str, pid: u32) -> Result<(), Failure> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    match status.success() {
        true => Ok(()),
        false => Err(format!("kill -{name} {pid}: {status}").into()),
    }
}

fn client(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, 10 + i))
}

async fn send(
    from: IpAddr,
    to: SocketAddr,
    method: Method,
    path: &str,
    cookie: Option<&str>,
) -> Result<Answer, Failure> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| (COOKIE.as_str(), c)).into_iter().collect();
    Ok(request(from, to, method, path, &headers, Duration::from_secs(10)).await?)
}

fn worker_of(answer: &Answer) -> Result<u64, Failure> {
    Ok(answer.worker().ok_or("no x-worker-id")?.parse()?)
}

fn count(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["event"] == kind).count()
}

/// A sticky cluster serving sessions from memory, with `workers` ready.
async fn sticky(workers: u32) -> Result<(Lesson, SocketAddr), Failure> {
    let n = workers.to_string();
    let args: Vec<String> = ["--serve", "--sticky", "--store", "memory", "--workers", &n]
        .map(str::to_owned)
        .into();
    let mut lesson = Lesson::start(BIN.as_ref(), &args)?;
    let addr = lesson.addr().await?;
    let all_ready = lesson
        .wait_until(Duration::from_secs(30), |events| {
            count(events, "ready") >= workers as usize
        })
        .await;
    if !all_ready {
        return Err(format!("{workers} workers were not ready:\n{}", lesson.stderr()).into());
    }
    Ok((lesson, addr))
}

async fn stop(mut lesson: Lesson) -> Result<(), Failure> {
    signal("TERM", lesson.pid())?;
    let exited = lesson.wait_exit(Duration::from_secs(20)).await;
    lesson.kill_all().await;
    match exited {
        Some(status) if status.success() => Ok(()),
        other => Err(format!("the primary did not exit cleanly: {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_keeps_its_predecessors_clients() -> Result<(), Failure> {
    let (mut lesson, addr) = sticky(4).await?;

    // Sixteen users log in, each from its own address, and come back once.
    let mut users = Vec::new();
    for i in 0..16 {
        let from = client(i);
        let login = send(from, addr, Method::POST, &format!("/login?user=u{i}"), None).await?;
        let cookie = login
            .header(SET_COOKIE.as_str())
            .and_then(|c| c.split(';').next())
            .ok_or("no cookie")?
            .to_owned();
        let me = send(from, addr, Method::GET, "/me", Some(&cookie)).await?;
        assert_eq!(me.status, 200, "user {i}: {}", me.body);
        assert_eq!(worker_of(&me)?, worker_of(&login)?, "user {i} moved");
        users.push((from, cookie, worker_of(&login)?));
    }
    let before: std::collections::BTreeSet<u64> = users.iter().map(|u| u.2).collect();
    assert!(
        before.len() >= 3,
        "16 addresses met only workers {before:?}"
    );

    // Each worker in turn crashes, and the restart policy forks a new one
    // into its slot: one at a time, so the next fork is the successor. Out
    // of id order, so that a key that follows the worker's place in the
    // dispatcher's list, not its slot, ends with the users moved too.
    let mut successor = BTreeMap::new();
    for (n, old) in [2u64, 4, 1, 3].into_iter().enumerate() {
        signal("KILL", lesson.worker_pid(u32::try_from(old)?)?)?;
        let forks = 4 + n + 1;
        let refilled = lesson
            .wait_until(Duration::from_secs(30), |events| {
                count(events, "fork") == forks && count(events, "ready") == forks
            })
            .await;
        assert!(
            refilled,
            "worker {old}'s slot was not refilled:\n{}",
            lesson.stderr()
        );
        let events = lesson.events();
        let new = events
            .iter()
            .rev()
            .find(|e| e["event"] == "fork")
            .and_then(|e| e["id"].as_u64())
            .ok_or("no fork")?;
        successor.insert(old, new);
    }

    // Each user now meets its old worker's successor, which never saw it.
    for (i, (from, cookie, old)) in users.iter().enumerate() {
        let me = send(*from, addr, Method::GET, "/me", Some(cookie)).await?;
        assert_eq!(
            Some(worker_of(&me)?),
            successor.get(old).copied(),
            "user {i} had worker {old}; replacements {successor:?}"
        );
        assert_eq!(
            me.status, 401,
            "user {i}'s memory session outlived its worker"
        );
    }
    stop(lesson).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_first_choice_holds_four_and_the_rest_go_to_the_second() -> Result<(), Failure> {
    let (lesson, addr) = sticky(2).await?;
    let from = client(0);
    let first = worker_of(&send(from, addr, Method::GET, "/", None).await?)?;
    let pid = lesson.worker_pid(u32::try_from(first)?)?;

    // The first choice stops: it can take no connection handed to it.
    // Eight connections from its client at once: four are handed to it and
    // wait; the other four find it full and go to the second choice.
    signal("STOP", pid)?;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..2 * MAX_UNACKED {
        requests.spawn(send(from, addr, Method::GET, "/", None));
    }
    let mut others = Vec::new();
    for _ in 0..MAX_UNACKED {
        let next = tokio::time::timeout(Duration::from_secs(10), requests.join_next()).await;
        let answer = next.map_err(
            |_| "fewer than four requests were answered while the first choice was stopped",
        )?;
        others.push(worker_of(&answer.ok_or("no request left")???)?);
    }
    // The four answered came from the second choice; the rest still wait.
    let still_waiting = requests.len();
    signal("CONT", pid)?;
    let mut answered_by_first = 0;
    while let Some(answer) = requests.join_next().await {
        answered_by_first += usize::from(worker_of(&answer??)? == first);
    }

    assert!(
        others.iter().all(|&w| w != first),
        "a request was answered by the stopped worker {first}: {others:?}"
    );
    assert_eq!(
        still_waiting, MAX_UNACKED,
        "not four held by the stopped worker"
    );
    assert_eq!(
        answered_by_first, MAX_UNACKED,
        "the four held were not served by {first}"
    );
    stop(lesson).await
}
