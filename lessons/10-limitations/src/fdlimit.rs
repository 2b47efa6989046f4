//! `fd-limit`: file-descriptor limits are per process.
//!
//! Every connection is a file descriptor, and `RLIMIT_NOFILE` caps how many
//! one process may hold. The usual line, "four workers × 1024 is still
//! 1024", gets this backwards: each worker has its *own* limit, so four
//! workers together hold four times as many connections as one — while no
//! single worker can pass its own.
//!
//! The demo lowers each worker's limit to `--limit` and opens idle
//! keep-alive connections, one at a time, each answered once and then kept,
//! until the cluster stops answering new ones. It counts them per worker and
//! in total, then lets them all go and checks the cluster serves again.
//!
//! The demo's workers keep quiet connections (`make_room(false)`): the
//! supervisor's default closes the quietest when a worker is full, which
//! would hide the limit this demo is about.
//!
//! Two ways to meet the limit. By default each worker stops taking
//! connections a little below it (the supervisor's `Server` keeps a reserve
//! of descriptors), so new clients wait in a queue instead of failing.
//! `--unguarded` removes that cap: the worker's `accept` fails with
//! `EMFILE`, which the supervisor reports once and backs off from — the
//! connections wait in the listening socket's queue, and nothing crashes.
//! (Use `--sched shared` with it: in round-robin a descriptor passed to a
//! worker that has no room for it is closed by the kernel.) In round-robin
//! the primary also holds every connection for a moment, between its
//! `accept` and the hand-off.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde_json::json;
use supervisor::http::{Server, text};
use supervisor::{Cluster, ClusterArgs, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Each worker's RLIMIT_NOFILE (open files, connections included)
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(32..=65_536))]
    limit: u64,
    /// No connection cap below the limit: let accept fail with EMFILE
    #[arg(long)]
    unguarded: bool,
    /// Give up after this many connections in all
    #[arg(long, default_value_t = 4000)]
    most: usize,
}

/// New connections in a row that go unanswered before we call it full.
const MISSES: usize = 5;
/// How long a new connection may wait for its answer before it is a miss.
const ANSWER_WITHIN: Duration = Duration::from_millis(300);

pub async fn primary(args: Args) -> anyhow::Result<()> {
    // The demo's own client sockets live in this process: give it room.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let _ = setrlimit(Resource::RLIMIT_NOFILE, soft.max(hard.min(65_536)), hard);
    let options = args.cluster.options();
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    cluster.wait_ready(workers, Duration::from_secs(30)).await?;

    // ANCHOR: fill
    let mut held = Vec::new();
    let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
    let (mut misses, mut waiting, mut closed) = (0, 0u64, 0u64);
    while misses < MISSES && held.len() < args.most {
        let mut stream = TcpStream::connect(cluster.addr()).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = [0u8; 1024];
        match tokio::time::timeout(ANSWER_WITHIN, stream.read(&mut answer)).await {
            Ok(Ok(n)) if n > 0 => {
                misses = 0;
                let worker = worker_of(&answer[..n]).unwrap_or_else(|| "?".into());
                *per_worker.entry(worker).or_default() += 1;
            }
            // No answer yet: the connection waits in a queue for room.
            Err(_) => (misses, waiting) = (misses + 1, waiting + 1),
            // Closed (or reset) unanswered: the connection is gone.
            Ok(_) => (misses, closed) = (misses + 1, closed + 1),
        }
        held.push(stream); // kept open, idle
    }
    // ANCHOR_END: fill
    let total: u64 = per_worker.values().sum();
    let busiest = per_worker.values().copied().max().unwrap_or(0);
    let handed_out = cluster.connections_handed_out();
    // Each worker's descriptors now, while it holds its connections, read
    // from `/proc/PID/fd` by this process (the worker has none to spare).
    // The limit caps descriptor *numbers*: a worker is at its limit when
    // every number below it is taken. The numbers below the limit that its
    // connections do not take are its own (standard streams, IPC, the
    // runtime's); one it inherited above the limit stays, and takes none.
    let mut open = BTreeMap::new();
    let mut own = BTreeMap::new();
    let mut at_the_limit = true;
    for id in cluster.workers() {
        let Some(numbers) = cluster.pid(id).and_then(descriptors) else {
            at_the_limit = false;
            continue;
        };
        let below = numbers.iter().filter(|&&n| n < args.limit).count() as u64;
        at_the_limit &= below == args.limit;
        let held = per_worker.get(&id.to_string()).copied().unwrap_or(0);
        open.insert(id.to_string(), numbers.len() as u64);
        own.insert(id.to_string(), below.saturating_sub(held));
    }

    // Let every connection go; the cluster must serve again.
    drop(held);
    let recovered = loadgen::get(cluster.addr(), "/", Duration::from_secs(10))
        .await
        .is_ok_and(|response| response.status == 200);
    cluster.report(
        "fd_limit",
        &json!({
            "limit": args.limit,
            "workers": workers,
            "per_worker": per_worker,
            "total": total,
            "busiest_worker": busiest,
            "handed_out_by_primary": handed_out,
            "open_descriptors": open,
            "own_descriptors": own,
            "every_worker_at_its_limit": at_the_limit,
            "left_waiting": waiting,
            "closed_without_answer": closed,
            "recovered": recovered,
        }),
        &format!(
            "each worker may open {} files; they held {per_worker:?} connections: {total} in all across {workers} workers, {busiest} at most in one (each worker's own descriptors below the limit: {own:?}); of the last connections, {waiting} waited unanswered and {closed} were closed unanswered; after letting go, the cluster answered again: {recovered}",
            args.limit
        ),
    );
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}

/// The descriptor numbers process `pid` holds now.
fn descriptors(pid: u32) -> Option<Vec<u64>> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// The `x-worker-id` of a raw HTTP answer.
fn worker_of(answer: &[u8]) -> Option<String> {
    String::from_utf8_lossy(answer)
        .lines()
        .find_map(|line| line.strip_prefix("x-worker-id: ").map(str::to_owned))
}

pub async fn worker(args: Args) -> anyhow::Result<()> {
    // ANCHOR: limit
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, args.limit.min(hard), hard)
        .context("lowering this worker's file limit")?;
    // ANCHOR_END: limit
    let worker = Worker::connect().await?;
    let listener = worker.listen().await?;
    worker.ready()?;
    let id = worker.id();
    // ANCHOR: server
    // The demo fills each worker to its limit, so a full worker here keeps
    // its quiet connections instead of closing them to make room.
    let server = if args.unguarded {
        Server::new().make_room(false).max_connections(usize::MAX)
    } else {
        // The default: the file limit less a reserve, read after we set it.
        Server::new().make_room(false)
    };
    // ANCHOR_END: server
    let hello = move |_| async move { text(200, format!("hello from worker {id}\n")) };
    server.serve(listener, hello, worker.disconnected()).await;
    Ok(())
}
