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
use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;

use super::inbox::Command;
use super::life::WorkerState;
use super::{AskError, Cluster, HealthPolicy, Verdict, lock};
use crate::event::{Event, ExitReason, GaveUpCause, HealthReason};
use crate::ipc::Beat;
use crate::restart::{Decision, RestartBudget};
use crate::role::WorkerId;

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

impl Vitals {
    /// A worker's first row, before anything was measured.
    fn new(row: &Row) -> Self {
        Vitals {
            id: row.id,
            pid: row.pid,
            state: row.state,
            generation: row.generation,
            rss: 0,
            cpu_pct: 0.0,
            requests: 0,
            requests_per_s: 0.0,
            missed: 0,
            over_memory: 0,
            restarts: row.restarts,
        }
    }
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
        let states: BTreeMap<WorkerId, WorkerState> = self.view(|snapshot| {
            (snapshot.workers.iter())
                .map(|(id, seen)| (*id, seen.state))
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

/// One worker as the registry has it at the start of a round.
#[derive(Debug, Clone, Copy)]
struct Row {
    id: WorkerId,
    pid: u32,
    state: WorkerState,
    generation: u32,
    restarts: u32,
    /// Ready and in service: the only workers heartbeats and verdicts are
    /// for (one still starting has its own deadline, see `timers`).
    checked: bool,
}

/// A worker the judge found sick: what to publish about it.
struct Sick {
    id: WorkerId,
    reason: HealthReason,
    detail: String,
    rss_mib: u64,
}

/// The health monitor's own state, kept from one round to the next.
struct Monitor {
    cluster: Cluster,
    policy: HealthPolicy,
    /// Replacements for health, for the whole cluster (not per worker id).
    budget: RestartBudget,
    previous: BTreeMap<WorkerId, Previous>,
    /// Workers whose replacement is under way: not judged again meanwhile.
    replacing: BTreeSet<WorkerId>,
    clock: f64,
    page: u64,
}

/// Checks every worker each `interval`, until the cluster stops.
pub(super) async fn monitor(cluster: Cluster, policy: HealthPolicy) {
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut monitor = Monitor {
        cluster,
        budget: RestartBudget::new(policy.budget),
        policy,
        previous: BTreeMap::new(),
        replacing: BTreeSet::new(),
        clock: ticks_per_second(),
        page: page_size(),
    };
    loop {
        ticks.tick().await;
        let Some(rows) = monitor.rows() else { return };
        let answers = monitor.heartbeats(&rows).await;
        let sick = monitor.measure(&rows, &answers);
        if monitor.treat(sick).is_break() {
            return;
        }
    }
}

impl Monitor {
    /// Who is in the cluster now; `None` once it stops.
    fn rows(&mut self) -> Option<Vec<Row>> {
        let rows = self.cluster.view(|snapshot| {
            if snapshot.stopping {
                return None;
            }
            let row = |(id, seen): (&WorkerId, &super::snapshot::Seen)| Row {
                id: *id,
                pid: seen.pid,
                state: seen.state,
                generation: seen.generation,
                restarts: seen.restarts,
                checked: seen.state == WorkerState::Ready,
            };
            Some(snapshot.workers.iter().map(row).collect::<Vec<_>>())
        })?;
        let present = |id: &WorkerId| rows.iter().any(|row| row.id == *id);
        self.replacing.retain(present);
        self.previous.retain(|id, _| present(id));
        Some(rows)
    }

    /// Sends the checked workers a heartbeat each, all at once: a hung
    /// worker costs one timeout, not one per worker.
    async fn heartbeats(&self, rows: &[Row]) -> BTreeMap<WorkerId, Result<Beat, AskError>> {
        let mut beats = tokio::task::JoinSet::new();
        for row in rows {
            if row.checked && !self.replacing.contains(&row.id) {
                let (cluster, id, timeout) = (self.cluster.clone(), row.id, self.policy.timeout);
                beats.spawn(async move { (id, cluster.heartbeat(id, timeout).await) });
            }
        }
        let mut answers = BTreeMap::new();
        while let Some(Ok((id, answer))) = beats.join_next().await {
            answers.insert(id, answer);
        }
        answers
    }

    /// Updates every worker's vitals with this round's answers and
    /// samples, and returns the ones the policy's judge finds sick.
    fn measure(
        &mut self,
        rows: &[Row],
        answers: &BTreeMap<WorkerId, Result<Beat, AskError>>,
    ) -> Vec<Sick> {
        let now = Instant::now();
        let mut sick = Vec::new();
        let cluster = self.cluster.clone();
        let mut vitals = lock(&cluster.inner.vitals);
        vitals.retain(|id, _| rows.iter().any(|row| row.id == *id));
        for row in rows {
            let entry = vitals.entry(row.id).or_insert_with(|| Vitals::new(row));
            (entry.state, entry.restarts) = (row.state, row.restarts);
            self.count(entry, answers.get(&row.id), now, row.pid);
            if !row.checked || self.replacing.contains(&row.id) {
                continue;
            }
            if let Verdict::Sick { reason, detail } = (self.policy.judge)(entry, &self.policy) {
                let (id, rss_mib) = (row.id, entry.rss >> 20);
                sick.push(Sick {
                    id,
                    reason,
                    detail,
                    rss_mib,
                });
            }
        }
        sick
    }

    /// The counters a verdict reads: heartbeats missed in a row, memory
    /// samples over the limit in a row (one good answer, or one sample
    /// under the limit, resets its counter), and rates since the last
    /// sample.
    fn count(
        &mut self,
        row: &mut Vitals,
        beat: Option<&Result<Beat, AskError>>,
        now: Instant,
        pid: u32,
    ) {
        // ANCHOR: counters
        match beat {
            Some(Ok(beat)) if beat.healthy() => {
                row.missed = 0;
                row.requests = beat.requests;
            }
            Some(_) => row.missed += 1,
            None => {}
        }
        let Some((rss, cpu_ticks)) = sample(pid, self.page) else {
            return;
        };
        row.rss = rss;
        let over = self.policy.max_rss.is_some_and(|max| rss > max);
        row.over_memory = if over { row.over_memory + 1 } else { 0 };
        if let Some(before) = self.previous.get(&row.id) {
            let seconds = now.duration_since(before.at).as_secs_f64().max(1e-3);
            let cpu = cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
            row.cpu_pct = 100.0 * cpu / self.clock / seconds;
            let served = row.requests.saturating_sub(before.requests) as f64;
            row.requests_per_s = served / seconds;
        }
        // ANCHOR_END: counters
        let requests = row.requests;
        self.previous.insert(
            row.id,
            Previous {
                at: now,
                cpu_ticks,
                requests,
            },
        );
    }

    /// Replaces each sick worker, the safe way, while the budget lasts;
    /// when it is spent, asks the supervisor to give up (and stops).
    fn treat(&mut self, sick: Vec<Sick>) -> ControlFlow<()> {
        let cluster = &self.cluster;
        // ANCHOR: budget
        for Sick {
            id,
            reason,
            detail,
            rss_mib,
        } in sick
        {
            cluster.publish(Event::Unhealthy {
                id,
                reason,
                detail,
                rss_mib,
            });
            if let Decision::GiveUp { restarts } = self.budget.on_crash(Instant::now()) {
                cluster.command(Command::GiveUp {
                    restarts,
                    window: self.policy.budget.window,
                    cause: GaveUpCause::Health,
                });
                return ControlFlow::Break(());
            }
            // The replacement counts as a restart of the worker's slot
            // (the loop counts it when it starts one).
            self.replacing.insert(id);
            let cluster = cluster.clone();
            tokio::spawn(async move {
                if let Err(error) = cluster.replace(id, ExitReason::from(reason)).await {
                    cluster.note_line(&format!("could not replace worker {id}: {error}"));
                }
            });
        }
        // ANCHOR_END: budget
        ControlFlow::Continue(())
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
