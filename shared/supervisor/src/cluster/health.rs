//! Health checks: find the worker that is alive but useless, and replace it.
//!
//! A crash announces itself (an `exit`); these failures do not:
//!
//! * **Hung**: the process runs, but its request path does not — a handler
//!   that blocks the runtime, a deadlock. Every `interval` the primary sends
//!   a heartbeat, which the worker's HTTP server answers only after serving
//!   a real request to itself (see [`crate::http`]); `missed` heartbeats in
//!   a row and the worker is hung. Answering from the IPC reader alone would
//!   prove only that the IPC reader runs.
//! * **Over memory**: its resident memory (RSS, what the machine actually
//!   gives it — not the heap a runtime reports) stays above `max_rss` for
//!   `rss_samples` samples in a row: a leak, not a spike.
//!
//! Either way the worker is replaced the safe way ([`Cluster::replace`]): a
//! new one is ready before the old one is taken out. Replacements spend a
//! budget per time window kept for the whole cluster, so that a worker that
//! keeps failing — a leak that refills in seconds — ends in one clear line
//! and a stop, not in a replacement loop. Keying that history by worker id,
//! as a common sample does, resets it with every replacement (the new worker
//! has a new id), and the budget never trips.
//!
//! The same samples feed [`Vitals`], the rows of lesson 09's dashboard:
//! memory and CPU read with the `procfs` crate, requests counted by the
//! worker's server and carried back on each heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::inbox::Command;
use super::life::WorkerState;
use super::{Cluster, lock};
use crate::event::{Event, ExitReason, GaveUpCause, HealthReason};
use crate::restart::{Decision, RestartBudget, RestartPolicy};
use crate::role::WorkerId;

/// What to check, how often, and how many replacements to allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// How often each worker is checked.
    pub interval: Duration,
    /// How long a heartbeat may take before it counts as missed.
    pub timeout: Duration,
    /// Missed heartbeats in a row that make a worker hung.
    pub missed: u32,
    /// Resident memory, in bytes, above which a sample counts as over.
    pub max_rss: Option<u64>,
    /// Samples over `max_rss` in a row that make a worker over memory.
    pub rss_samples: u32,
    /// Replacements allowed within a window (`budget`, `window`; the delays
    /// are unused: a replacement starts at once).
    pub budget: RestartPolicy,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            missed: 3,
            max_rss: None,
            rss_samples: 3,
            budget: RestartPolicy::default(),
        }
    }
}

/// One worker, as last measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vitals {
    pub id: WorkerId,
    pub pid: u32,
    pub state: WorkerState,
    pub generation: u32,
    /// Resident memory, bytes.
    pub rss: u64,
    /// CPU used since the last sample, as a percentage of one core.
    pub cpu_pct: f64,
    /// Requests served so far (heartbeats not counted).
    pub requests: u64,
    pub requests_per_s: f64,
    /// Heartbeats missed in a row.
    pub missed: u32,
    /// Memory samples over the limit in a row.
    pub over_memory: u32,
    /// Failures replaced in this worker's slot so far (crashes included).
    pub restarts: u32,
}

impl Cluster {
    /// What the health monitor last measured, one row per worker (empty
    /// without [`ClusterOptions::health`](super::ClusterOptions::health)).
    ///
    /// The measurements are as old as the last sample, but who is in the
    /// cluster and in which state is read now: a sample taken just before a
    /// worker left would otherwise show it, still draining, until the next
    /// round of heartbeats — a dashboard at odds with the events beside it.
    pub fn vitals(&self) -> Vec<Vitals> {
        let states: BTreeMap<WorkerId, WorkerState> = self.view(|registry| {
            (registry.workers.iter())
                .map(|(id, entry)| (*id, entry.life.state()))
                .collect()
        });
        lock(&self.inner.vitals)
            .values()
            .filter_map(|row| {
                let state = *states.get(&row.id)?;
                Some(Vitals {
                    state,
                    ..row.clone()
                })
            })
            .collect()
    }
}

/// What one worker looked like at the previous sample.
#[derive(Debug, Clone, Copy)]
struct Previous {
    at: Instant,
    cpu_ticks: u64,
    requests: u64,
}

/// Checks every worker each `interval`, until the cluster stops.
pub(super) async fn monitor(cluster: Cluster, policy: HealthPolicy) {
    let mut budget = RestartBudget::new(policy.budget);
    let mut previous: BTreeMap<WorkerId, Previous> = BTreeMap::new();
    let mut replacing: BTreeSet<WorkerId> = BTreeSet::new();
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let clock = ticks_per_second();
    let page = page_size();
    loop {
        ticks.tick().await;
        let rows = cluster.view(|registry| {
            if registry.stopping {
                return None;
            }
            Some(
                registry
                    .workers
                    .iter()
                    .map(|(id, e)| {
                        let restarts = registry.slots.get(&e.slot).map_or(0, |s| s.restarts);
                        let checked = e.life.is_ready();
                        (*id, e.pid, e.life.state(), e.generation, restarts, checked)
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let Some(rows) = rows else { return };
        replacing.retain(|id| rows.iter().any(|row| row.0 == *id));
        previous.retain(|id, _| rows.iter().any(|row| row.0 == *id));

        // Heartbeats go out together; a hung worker costs one timeout, not
        // one per worker.
        let mut beats = tokio::task::JoinSet::new();
        for &(id, .., checked) in &rows {
            if checked && !replacing.contains(&id) {
                let cluster = cluster.clone();
                let timeout = policy.timeout;
                beats.spawn(async move { (id, cluster.heartbeat(id, timeout).await) });
            }
        }
        let mut answers = BTreeMap::new();
        while let Some(Ok((id, answer))) = beats.join_next().await {
            answers.insert(id, answer);
        }

        let now = Instant::now();
        let mut sick = Vec::new();
        {
            let mut vitals = lock(&cluster.inner.vitals);
            vitals.retain(|id, _| rows.iter().any(|row| row.0 == *id));
            for &(id, pid, state, generation, restarts, checked) in &rows {
                let sample = sample(pid, page);
                let row = vitals.entry(id).or_insert_with(|| Vitals {
                    id,
                    pid,
                    state,
                    generation,
                    rss: 0,
                    cpu_pct: 0.0,
                    requests: 0,
                    requests_per_s: 0.0,
                    missed: 0,
                    over_memory: 0,
                    restarts,
                });
                row.state = state;
                row.restarts = restarts;
                // ANCHOR: verdict
                match answers.get(&id) {
                    Some(Ok(beat)) if beat.healthy() => {
                        row.missed = 0;
                        row.requests = beat.requests;
                    }
                    Some(_) => row.missed += 1,
                    None => {}
                }
                if let Some((rss, cpu_ticks)) = sample {
                    row.rss = rss;
                    let over = policy.max_rss.is_some_and(|max| rss > max);
                    row.over_memory = if over { row.over_memory + 1 } else { 0 };
                    if let Some(before) = previous.get(&id) {
                        let seconds = now.duration_since(before.at).as_secs_f64().max(1e-3);
                        let cpu = cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
                        row.cpu_pct = 100.0 * cpu / clock / seconds;
                        let served = row.requests.saturating_sub(before.requests) as f64;
                        row.requests_per_s = served / seconds;
                    }
                    previous.insert(
                        id,
                        Previous {
                            at: now,
                            cpu_ticks,
                            requests: row.requests,
                        },
                    );
                }
                if !checked || replacing.contains(&id) {
                    continue;
                }
                if row.missed >= policy.missed {
                    let detail = format!(
                        "missed {} heartbeats in a row ({} ms each)",
                        row.missed,
                        policy.timeout.as_millis()
                    );
                    sick.push((id, HealthReason::Hung, detail, row.rss >> 20));
                } else if row.over_memory >= policy.rss_samples {
                    let detail = format!(
                        "RSS {} MiB over the {} MiB limit for {} samples in a row",
                        row.rss >> 20,
                        policy.max_rss.unwrap_or(0) >> 20,
                        row.over_memory
                    );
                    sick.push((id, HealthReason::OverMemory, detail, row.rss >> 20));
                }
                // ANCHOR_END: verdict
            }
        }

        // ANCHOR: budget
        for (id, reason, detail, rss_mib) in sick {
            cluster.publish(Event::Unhealthy {
                id,
                reason,
                detail,
                rss_mib,
            });
            if let Decision::GiveUp { restarts } = budget.on_crash(Instant::now()) {
                cluster.command(Command::GiveUp {
                    restarts,
                    window: policy.budget.window,
                    cause: GaveUpCause::Health,
                });
                return;
            }
            replacing.insert(id);
            cluster.update(|registry| {
                let slot = registry.workers.get(&id).map(|e| e.slot);
                if let Some(slot) = slot.and_then(|slot| registry.slots.get_mut(&slot)) {
                    slot.restarts += 1;
                }
            });
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Err(error) = cluster.replace(id, ExitReason::from(reason)).await {
                    cluster.note_line(&format!("could not replace worker {id}: {error}"));
                }
            });
        }
        // ANCHOR_END: budget
    }
}

/// Resident bytes and CPU ticks (user + system) of `pid`, if it still runs.
fn sample(pid: u32, page: u64) -> Option<(u64, u64)> {
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    Some((stat.rss.saturating_mul(page), stat.utime + stat.stime))
}

fn ticks_per_second() -> f64 {
    (procfs::ticks_per_second() as f64).max(1.0)
}

fn page_size() -> u64 {
    procfs::page_size()
}
