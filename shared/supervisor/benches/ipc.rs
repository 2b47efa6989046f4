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
//!
//! After criterion, a run under `cargo bench` writes the book's table,
//! `book/measured/05-ipc.md`: the same round trips measured beside their
//! floor — two processes echoing bytes over a plain socketpair with
//! blocking reads and writes, no JSON, no runtime — in interleaved rounds,
//! so the ratio holds even when the machine's speed drifts. The table says
//! what it was measured on, when, and how far apart the rounds were.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use supervisor::http::{serve, text};
use supervisor::{Cluster, ClusterOptions, Event, Events, EventsFormat, Role, Worker, WorkerId};
use tokio::runtime::Runtime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Set in the environment of the floor's echo process.
const FLOOR_ECHO: &str = "IPC_BENCH_FLOOR_ECHO";

/// Where the book's table goes.
const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../book/measured/05-ipc.md");

fn main() -> Result<(), BoxError> {
    if std::env::var_os(FLOOR_ECHO).is_some() {
        return floor_echo();
    }
    if supervisor::role()? != Role::Primary {
        return supervisor::runtime::build()?.block_on(echo_worker());
    }
    // The runtime a lesson's primary runs on, so the bench measures what a
    // lesson gets.
    let runtime = supervisor::runtime::build()?;
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    round_trip(&mut criterion, &runtime)?;
    // `cargo bench` passes --bench; `cargo test --benches` does not, and
    // a test run must not rewrite the book.
    if std::env::args().any(|arg| arg == "--bench") {
        let table = side_by_side(&runtime)?;
        std::fs::write(TABLE, table)?;
        println!("wrote book/measured/05-ipc.md");
    }
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
                    let id = cluster.fork().await?;
                    next_matching(
                        &mut events,
                        |e| matches!(e, Event::Listening { id: got, .. } if *got == id),
                    )
                    .await?;
                    let took = started.elapsed();
                    // Retire it outside the measurement.
                    cluster.disconnect(id).await?;
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

// --- the book's table: the supervisor beside the floor -----------------

/// The message sizes of the table, as in the criterion benches.
const SIZES: [(&str, usize); 2] = [("64 B", 64), ("64 KiB", 64 * 1024)];
/// Rounds per cell, after one warm-up round; each cell's figure is the
/// median of its rounds.
const ROUNDS: usize = 7;
/// Messages in flight in the pipelined cell.
const IN_FLIGHT: usize = 200;

/// The floor's other process: echoes whatever arrives on stdin (one end of
/// a socketpair) back on stdout (the same socket), until end-of-file.
fn floor_echo() -> Result<(), BoxError> {
    let mut input = std::io::stdin().lock();
    let mut output = std::io::stdout().lock();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let read = input.read(&mut buf)?;
        if read == 0 {
            return Ok(());
        }
        output.write_all(&buf[..read])?;
        output.flush()?;
    }
}

/// A process at the other end of a plain socketpair, echoing.
struct Floor {
    socket: UnixStream,
    child: Child,
}

impl Floor {
    fn start() -> Result<Floor, BoxError> {
        let (socket, theirs) = UnixStream::pair()?;
        let child = Command::new(std::env::current_exe()?)
            .env(FLOOR_ECHO, "1")
            .stdin(OwnedFd::from(theirs.try_clone()?))
            .stdout(OwnedFd::from(theirs))
            .spawn()?;
        Ok(Floor { socket, child })
    }

    /// One round trip of `message`: written whole, read back whole.
    fn echo(&mut self, message: &[u8], back: &mut [u8]) -> Result<(), BoxError> {
        self.socket.write_all(message)?;
        self.socket.read_exact(&mut back[..message.len()])?;
        Ok(())
    }

    fn stop(mut self) -> Result<(), BoxError> {
        self.socket.shutdown(std::net::Shutdown::Both)?;
        self.child.wait()?;
        Ok(())
    }
}

/// One row of the table, as medians over the rounds.
struct Row {
    size: &'static str,
    floor_us: f64,
    supervisor_us: f64,
    per_second: f64,
    /// Encoding and parsing one round trip's two messages, in one process.
    json_us: f64,
}

/// The JSON work of one round trip, with no I/O: the primary encodes the
/// message, the worker parses it and encodes its echo, the primary parses
/// that. What any JSON channel pays, however it moves the bytes.
fn json_both_ways(payload: &serde_json::Value) -> Result<(), BoxError> {
    use supervisor::ipc::{ToPrimary, ToWorker, encode_line};
    let out = encode_line(&ToWorker::Message {
        body: payload.clone(),
    })?;
    let ToWorker::Message { body } = serde_json::from_slice::<ToWorker>(&out)? else {
        return Err("not a message".into());
    };
    let back = encode_line(&ToPrimary::Message { body })?;
    std::hint::black_box(serde_json::from_slice::<ToPrimary>(&back)?);
    Ok(())
}

/// Measures every cell in interleaved rounds and returns the table as
/// markdown, with the machine, the date, and what the numbers say.
fn side_by_side(runtime: &Runtime) -> Result<String, BoxError> {
    let mut floor = Floor::start()?;
    let (cluster, mut events) = runtime.block_on(async {
        let cluster = Cluster::start(options(1)).await?;
        cluster.wait_ready(1, Duration::from_secs(10)).await?;
        let events = cluster.subscribe();
        Ok::<_, BoxError>((cluster, events))
    })?;
    let id = WorkerId(1);
    let is_echo = |e: &Event| matches!(e, Event::Message { .. });

    // samples[size][cell] = one figure per round. Round 0 warms up (page
    // faults, buffers, the runtime's threads) and is not counted.
    let fresh = || vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; SIZES.len()];
    let mut samples = fresh();
    for round in 0..=ROUNDS {
        if round == 1 {
            samples = fresh();
        }
        for (row, &(_, size)) in SIZES.iter().enumerate() {
            let iterations = if size < 1024 { 1000 } else { 400 };
            let bytes = vec![b'x'; size];
            let mut back = vec![0u8; size];
            let payload = serde_json::Value::String("x".repeat(size));

            let started = Instant::now();
            for _ in 0..iterations {
                floor.echo(&bytes, &mut back)?;
            }
            samples[row][0].push(micros_each(started, iterations));

            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..iterations {
                    cluster.send(id, &payload)?;
                    next_matching(&mut events, is_echo).await?;
                }
                Ok::<_, BoxError>(())
            })?;
            samples[row][1].push(micros_each(started, iterations));

            let batches = iterations / 20;
            let started = Instant::now();
            runtime.block_on(async {
                for _ in 0..batches {
                    for _ in 0..IN_FLIGHT {
                        cluster.send(id, &payload)?;
                    }
                    for _ in 0..IN_FLIGHT {
                        next_matching(&mut events, is_echo).await?;
                    }
                }
                Ok::<_, BoxError>(())
            })?;
            let messages = (batches * IN_FLIGHT) as f64;
            samples[row][2].push(messages / started.elapsed().as_secs_f64());

            let started = Instant::now();
            for _ in 0..iterations {
                json_both_ways(&payload)?;
            }
            samples[row][3].push(micros_each(started, iterations));
        }
    }
    floor.stop()?;
    runtime.block_on(async {
        cluster.shutdown();
        cluster.run().await
    })?;

    let (rows, spread) = summarise(&samples);
    Ok(markdown(&rows, spread))
}

/// One row per size (the medians over the rounds), and the largest spread
/// of any cell; each cell's rounds are printed as they are.
fn summarise(samples: &[[Vec<f64>; 4]]) -> (Vec<Row>, f64) {
    let mut rows = Vec::new();
    let mut spread: f64 = 0.0;
    for (row, &(size, _)) in SIZES.iter().enumerate() {
        let [floor_us, supervisor_us, per_second, json_us] = &samples[row];
        for (name, cell) in [
            ("floor µs", floor_us),
            ("supervisor µs", supervisor_us),
            ("pipelined messages/s", per_second),
            ("JSON alone µs", json_us),
        ] {
            let rounds: Vec<String> = cell.iter().map(|v| format!("{v:.1}")).collect();
            println!("{size} {name}: rounds {}", rounds.join(" "));
            spread = spread.max(spread_pct(cell));
        }
        rows.push(Row {
            size,
            floor_us: median(floor_us),
            supervisor_us: median(supervisor_us),
            per_second: median(per_second),
            json_us: median(json_us),
        });
    }
    (rows, spread)
}

fn micros_each(started: Instant, iterations: usize) -> f64 {
    started.elapsed().as_secs_f64() * 1e6 / iterations as f64
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// How far apart the rounds were, leaving out the fastest and the slowest
/// (one disturbed round says little about the rest): (largest − smallest)
/// of the others, over the median, in percent.
fn spread_pct(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = match sorted.len() {
        0..=2 => &sorted[..],
        n => &sorted[1..n - 1],
    };
    match (middle.first(), middle.last()) {
        (Some(lo), Some(hi)) => (hi - lo) / median(values) * 100.0,
        _ => 0.0,
    }
}

fn markdown(rows: &[Row], spread: f64) -> String {
    let mut text = format!(
        "Machine: {}; {}; release build (`cargo bench -p supervisor --bench ipc`); one worker; \
         {ROUNDS} rounds per cell, interleaved; medians.\n\n",
        machine(),
        today()
    );
    text.push_str(
        "| message | plain socketpair echo (the floor) | JSON alone, both ways | supervisor round trip | supervisor ÷ floor | supervisor ÷ (floor + JSON) | supervisor, 200 in flight |\n\
         |---------|----------------------------------:|----------------------:|----------------------:|-------------------:|----------------------------:|--------------------------:|\n",
    );
    for row in rows {
        text.push_str(&format!(
            "| {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.1} | {:.1} | {} messages/s |\n",
            row.size,
            row.floor_us,
            row.json_us,
            row.supervisor_us,
            row.supervisor_us / row.floor_us,
            row.supervisor_us / (row.floor_us + row.json_us),
            thousands(row.per_second)
        ));
    }
    if let [small, large] = rows {
        text.push_str(&format!(
            "\nThe floor is the price of crossing from one process to another and back at all. \
             \"JSON alone\" is what encoding and parsing the two messages of a round trip cost in \
             one process, with no I/O: {:.0} µs for 64 B, {:.0} µs for 64 KiB. On top of both, the \
             supervisor adds its reader, the primary's event loop and the broadcast to \
             subscribers: in all, {:.1}× the floor for a small message and {:.1}× for a 64 KiB \
             one, or {:.1}× and {:.1}× the floor plus the JSON. With {IN_FLIGHT} messages in \
             flight the bytes dominate: {:.0}× fewer 64 KiB messages than 64 B ones get through \
             per second. Leaving out each cell's fastest and slowest round, the rounds of one \
             cell still differed by up to {spread:.0} % of its median: a difference smaller than \
             that is noise on this machine, and the ratios are the figures to compare.\n",
            small.json_us,
            large.json_us,
            small.supervisor_us / small.floor_us,
            large.supervisor_us / large.floor_us,
            small.supervisor_us / (small.floor_us + small.json_us),
            large.supervisor_us / (large.floor_us + large.json_us),
            small.per_second / large.per_second,
        ));
    }
    text
}

/// `199000` → `199,000`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// "2 cores (AMD EPYC …), Linux 6.8.0": cores this process may use, the
/// CPU model and the kernel, read from /proc.
fn machine() -> String {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|text| text.trim().to_owned())
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let cpu = read("/proc/cpuinfo").and_then(|text| {
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == "model name")
            .map(|(_, model)| model.split_whitespace().collect::<Vec<_>>().join(" "))
    });
    let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
    match cpu {
        Some(cpu) => format!("{cores} cores ({cpu}), Linux {kernel}"),
        None => format!("{cores} cores, Linux {kernel}"),
    }
}

/// Today's date in UTC, `2026-11-25`.
fn today() -> String {
    Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|date| !date.is_empty())
        .unwrap_or_else(|| "date unknown".into())
}
