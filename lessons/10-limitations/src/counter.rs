//! `counter`: workers share no memory.
//!
//! Every request to `/count` adds one to a counter in the worker that took
//! it, and one to a counter in Redis. Afterwards each worker is asked for
//! its count: each knows only its own share, and none of them knows the
//! total. Redis, which every worker wrote to, does — `INCR` is atomic, so
//! concurrent increments from every worker are all counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use indicatif::ProgressBar;
use loadgen::LoadSpec;
use redis_helper::Redis;
use serde_json::json;
use supervisor::http::{json, serve};
use supervisor::{Cluster, ClusterArgs, Worker};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Requests to count
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    requests: u64,
    /// Clients sending at once
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    clients: u16,
}

const KEY: &str = "lesson10:count";

// ANCHOR: primary
pub async fn primary(args: Args) -> anyhow::Result<()> {
    let redis = Redis::from_env_or_start().await?;
    let mut options = args.cluster.options();
    // Every worker finds the same server in its environment.
    options.worker_env.push(redis.worker_env());
    let workers = options.workers;
    let cluster = Cluster::start(options)
        .await
        .context("starting the cluster")?;
    let log = cluster.clone();
    redis.tell(move |line| log.note_line(line));
    cluster.wait_ready(workers, Duration::from_secs(30)).await?;

    let mut connection = redis.connect().await?;
    redis::cmd("DEL")
        .arg(KEY)
        .query_async::<()>(&mut connection)
        .await?;
    let spec = LoadSpec {
        requests: args.requests,
        connections: usize::from(args.clients),
        path: "/count".into(),
        ..LoadSpec::default()
    };
    let load = loadgen::run(cluster.addr(), &spec, &ProgressBar::hidden()).await?;

    // What each worker believes, and what Redis counted.
    let gathered = cluster.ask_all(&"count", Duration::from_secs(2)).await;
    let per_worker: serde_json::Map<String, serde_json::Value> = gathered
        .answers
        .iter()
        .map(|(id, answer)| (id.to_string(), answer["count"].clone()))
        .collect();
    let biggest = per_worker
        .values()
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(0);
    let in_redis: u64 = redis::cmd("GET")
        .arg(KEY)
        .query_async(&mut connection)
        .await?;
    cluster.report(
        "counter",
        &json!({
            "answered": load.ok,
            "redis": in_redis,
            "per_worker": per_worker,
            "biggest_worker_count": biggest,
        }),
        &format!(
            "{} requests answered; Redis counted {in_redis}; the workers' own counters say {} — none of them is the total",
            load.ok,
            per_worker
                .iter()
                .map(|(id, n)| format!("worker {id}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    cluster.shutdown();
    cluster.run().await?;
    Ok(())
}
// ANCHOR_END: primary

pub async fn worker(_args: Args) -> anyhow::Result<()> {
    let worker = Arc::new(Worker::connect().await?);
    let url =
        std::env::var(redis_helper::REDIS_URL_VAR).context("no REDIS_URL from the primary")?;
    let redis = redis_helper::connect(&url).await?;
    let mine = Arc::new(AtomicU64::new(0));

    let mut questions = worker.questions().context("questions taken twice")?;
    let (me, counted) = (Arc::clone(&worker), Arc::clone(&mine));
    tokio::spawn(async move {
        while let Some(question) = questions.recv().await {
            let count = counted.load(Ordering::Relaxed);
            let _ = me.reply(&question, &json!({ "count": count }));
        }
    });

    let listener = worker.listen().await?;
    worker.ready()?;
    let handler = move |_| {
        let (mine, mut redis) = (Arc::clone(&mine), redis.clone());
        async move {
            // ANCHOR: count
            let here = mine.fetch_add(1, Ordering::Relaxed) + 1;
            let everywhere: Result<u64, _> =
                redis::cmd("INCR").arg(KEY).query_async(&mut redis).await;
            // ANCHOR_END: count
            match everywhere {
                Ok(total) => json(200, &json!({ "this_worker": here, "redis": total })),
                Err(error) => json(503, &json!({ "error": error.to_string() })),
            }
        }
    };
    serve(listener, handler, worker.disconnected()).await;
    Ok(())
}
