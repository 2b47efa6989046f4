//! What one rate-limit decision costs, per algorithm, against a real
//! (private) redis-server on this machine.
//!
//! * `limiter/one_at_a_time/{usual,sliding,gcra,fixed,counter,watch}`: one decision after
//!   another — latency, which the round trip dominates;
//! * `limiter/in_flight_64/…`: 64 decisions at once on one connection —
//!   throughput, which the work Redis does per decision dominates.
//!
//! Before criterion runs, one side-by-side pass prints a markdown table:
//! decisions per second both ways, and the commands Redis executed per
//! decision (from `INFO stats`): the usual `MULTI` sends six commands in
//! one round trip, the scripts one; the bytes one client's key takes
//! (`MEMORY USAGE`); and 64 decisions at once on one key, where WATCH
//! loses races. Set `LIMITER_TABLE=path` to also write the table to a
//! file (the book's measured page).
//!
//! Keys rotate over 1,000 clients with a generous limit, so most decisions
//! admit: the work measured is the decision, not a refusal's shortcut.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use rate_limit::{Algorithm, Limiter, Policy};
use redis::aio::ConnectionManager;
use tokio::runtime::Runtime;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ALGORITHMS: [(Algorithm, &str); 6] = [
    (Algorithm::Usual, "usual"),
    (Algorithm::Sliding, "sliding"),
    (Algorithm::Gcra, "gcra"),
    (Algorithm::Fixed, "fixed"),
    (Algorithm::Counter, "counter"),
    (Algorithm::Watch, "watch"),
];

const POLICY: Policy = Policy {
    limit: 1000,
    window: Duration::from_secs(1),
};

fn main() -> Result<(), BoxError> {
    let runtime = Runtime::new()?;
    let redis = runtime.block_on(redis_helper::Redis::start_private())?;
    let connection = runtime.block_on(redis.connect())?;

    let client = redis::Client::open(redis.url())?;
    let table = runtime.block_on(side_by_side(&connection, &client))?;
    print!("{table}");
    if let Ok(path) = std::env::var("LIMITER_TABLE") {
        std::fs::write(&path, &table)?;
    }

    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = criterion.benchmark_group("limiter");
    for (algorithm, name) in ALGORITHMS {
        let limiter = Arc::new(
            Limiter::new(algorithm, connection.clone(), "bench".into()).with_client(client.clone()),
        );
        group.throughput(Throughput::Elements(1));
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("one_at_a_time", name), |b| {
            b.iter(|| {
                n += 1;
                runtime.block_on(limiter.check(&client_name(n), POLICY))
            })
        });
        group.throughput(Throughput::Elements(64));
        group.bench_function(BenchmarkId::new("in_flight_64", name), |b| {
            b.iter(|| runtime.block_on(in_flight(&limiter, 64, &mut n)))
        });
    }
    group.finish();
    criterion.final_summary();
    drop(redis);
    Ok(())
}

fn client_name(n: u64) -> String {
    format!("client-{}", n % 1000)
}

/// `count` decisions at once on one connection, as `count` concurrent
/// requests in one worker would make them.
async fn in_flight(limiter: &Arc<Limiter>, count: u64, n: &mut u64) -> Result<(), BoxError> {
    let mut checks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (limiter, key) = (Arc::clone(limiter), client_name(*n + i));
        checks.spawn(async move { limiter.check(&key, POLICY).await });
    }
    *n += count;
    while let Some(decided) = checks.join_next().await {
        decided??;
    }
    Ok(())
}

/// Every algorithm measured the same way, one after the other, in one run.
async fn side_by_side(
    connection: &ConnectionManager,
    client: &redis::Client,
) -> Result<String, BoxError> {
    const DECISIONS: u64 = 4000;
    let mut rows = String::new();
    for (algorithm, name) in ALGORITHMS {
        let limiter = Arc::new(
            Limiter::new(algorithm, connection.clone(), "table".into()).with_client(client.clone()),
        );
        let commands_before = commands_processed(connection).await?;
        let begun = Instant::now();
        for n in 0..DECISIONS {
            limiter.check(&client_name(n), POLICY).await?;
        }
        let sequential = DECISIONS as f64 / begun.elapsed().as_secs_f64();
        let commands = commands_processed(connection).await? - commands_before;
        let begun = Instant::now();
        let mut n = 0;
        for _ in 0..DECISIONS / 64 {
            in_flight(&limiter, 64, &mut n).await?;
        }
        let parallel = (DECISIONS / 64 * 64) as f64 / begun.elapsed().as_secs_f64();
        let (at_limit, after_attempts) = memory(connection, client, algorithm, name).await?;
        let (admitted, conflicts) = one_key_burst(connection, client, algorithm).await?;
        rows += &format!(
            "| {name} | {:.0} | {:.0} | {:.1} | {at_limit} | {after_attempts} | {admitted} | {conflicts} |\n",
            sequential,
            parallel,
            // The INFO call itself is one command.
            (commands.saturating_sub(1)) as f64 / DECISIONS as f64
        );
    }
    let (machine, date) = (
        scenarios::bench::Machine::here(),
        scenarios::bench::Machine::today(),
    );
    let build = if cfg!(debug_assertions) {
        "debug build (not representative: run `cargo bench -p lesson-12`)"
    } else {
        "release build"
    };
    Ok(format!(
        "Machine: {machine}; {date}; {build}; a private redis-server on a Unix socket, one connection, {DECISIONS} decisions per cell over 1,000 clients (limit 1,000 a second).\n\n\
         | algorithm | decisions/s, one at a time | decisions/s, 64 in flight | commands Redis ran per decision | bytes for one client: 100 admitted of 100 a minute | … then 200 attempts refused | 64 at once on one client, limit 10: admitted | … EXECs that lost the race |\n\
         |-----------|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n\
         The usual MULTI writes its six commands (MULTI, ZREMRANGEBYSCORE, ZCARD, ZADD, PEXPIRE, EXEC) at once, and a script is one EVALSHA: one round trip each. WATCH takes two (WATCH, TIME, ZRANGE; then MULTI … EXEC), and one more pair for every race it loses. The commands column counts what Redis executed, calls made inside a script included. Bytes: `MEMORY USAGE` of the client's key.\n"
    ))
}

/// `MEMORY USAGE` of one client's key after 100 admitted requests of 100 a
/// minute, and again after 200 more attempts, all refused.
async fn memory(
    connection: &ConnectionManager,
    client: &redis::Client,
    algorithm: Algorithm,
    name: &str,
) -> Result<(u64, u64), BoxError> {
    let limiter =
        Limiter::new(algorithm, connection.clone(), "memory".into()).with_client(client.clone());
    let policy = Policy {
        limit: 100,
        window: Duration::from_secs(60),
    };
    let key = format!("ratelimit:{name}:memory");
    let usage = || async {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .query_async(&mut connection.clone())
            .await?;
        Ok::<u64, BoxError>(bytes.unwrap_or(0))
    };
    for _ in 0..100 {
        limiter.check("memory", policy).await?;
    }
    let at_limit = usage().await?;
    for _ in 0..200 {
        limiter.check("memory", policy).await?;
    }
    Ok((at_limit, usage().await?))
}

/// 64 decisions at once for one client with a limit of 10: how many are
/// admitted, and (WATCH) how many EXECs failed on a conflict.
async fn one_key_burst(
    connection: &ConnectionManager,
    client: &redis::Client,
    algorithm: Algorithm,
) -> Result<(u64, u64), BoxError> {
    let limiter = Arc::new(
        Limiter::new(algorithm, connection.clone(), "burst".into()).with_client(client.clone()),
    );
    let policy = Policy {
        limit: 10,
        window: Duration::from_secs(60),
    };
    let mut checks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let limiter = Arc::clone(&limiter);
        checks.spawn(async move { limiter.check("one-key", policy).await });
    }
    let mut admitted = 0;
    while let Some(decided) = checks.join_next().await {
        admitted += u64::from(decided??.allowed);
    }
    Ok((admitted, limiter.conflicts()))
}

/// Redis's count of commands it has run (`INFO stats`).
async fn commands_processed(connection: &ConnectionManager) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connection.clone())
        .await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "INFO stats has no total_commands_processed".into())
}
