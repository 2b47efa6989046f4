//! How to run a cluster: the knobs (health checks and who judges them included), and the defaults a lesson starts from.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use super::Vitals;
use super::rollout::RollingRestart;
use crate::event::HealthReason;
use crate::listen::Sched;
use crate::report::EventsFormat;
use crate::restart::RestartPolicy;

/// How to run a cluster. Start from `Default` and set what the lesson needs.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many workers to run: the desired count at start.
    pub workers: usize,
    /// Where to listen; port 0 picks a free port that all workers share.
    pub addr: SocketAddr,
    /// Who accepts connections; fixed before the first fork.
    pub sched: Sched,
    /// Round-robin only: send each client address to the same worker slot
    /// (see [`crate::sticky`]) instead of to the next worker.
    pub sticky: bool,
    /// How events are printed.
    pub events: EventsFormat,
    /// Replace crashed workers (with backoff and a budget), or not at all:
    /// without a policy a crashed worker's place stays empty.
    pub restart: Option<RestartPolicy>,
    /// How long a departing worker may take to drain before it is killed —
    /// at a full stop and at every single departure (a replacement, a
    /// scale-down, a disconnect).
    pub grace: Duration,
    /// A worker that has not said it is ready this long after its fork is
    /// killed and reported.
    pub ready_timeout: Duration,
    /// How long a replacement must keep running after it is ready before
    /// its predecessor leaves (a rollout's *bake time*). Ready only says a
    /// worker could start; a release that fails once it serves shows in
    /// this time, and a crash in it fails the replacement — the old worker,
    /// still serving, stays, and the rollout is rolled back. Zero: the old
    /// worker leaves as soon as its replacement is ready.
    pub bake: Duration,
    /// Heartbeats and memory checks; `None` checks nothing.
    pub health: Option<HealthPolicy>,
    /// React to signals: SIGINT/SIGTERM stop gracefully, SIGQUIT stops at
    /// once, SIGHUP/SIGUSR2 run [`Self::rolling_restart`], SIGTTIN/SIGTTOU
    /// add or remove one. Off only in tests that drive the cluster
    /// themselves.
    pub handle_signals: bool,
    /// The rolling restart SIGHUP and SIGUSR2 run, handed a [`Rollout`](super::Rollout)
    /// the loop has begun (Node: the loop you hang on
    /// `process.on('SIGUSR2', …)`). `None`: the signal is reported and
    /// ignored, as `cluster` has no rolling restart of its own.
    pub rolling_restart: Option<RollingRestart>,
    /// The arguments workers are started with; by default the primary's own,
    /// as Node does, so a worker sees the same flags.
    pub worker_args: Option<Vec<OsString>>,
    /// Threads in each worker's runtime; `None` divides the cores among
    /// the desired workers (see [`crate::runtime`]). Only workers that
    /// start their runtime with [`crate::runtime::block_on`] or
    /// [`crate::runtime::build`] follow it.
    pub worker_threads: Option<usize>,
    /// Extra environment for workers.
    pub worker_env: Vec<(String, String)>,
    /// The kernel's hard limit on each worker's memory, in bytes
    /// (`RLIMIT_DATA`: its heap and private mappings), set before the
    /// worker's program starts. A sampled limit such as
    /// [`HealthPolicy::max_rss`] is soft: between two samples a fast leak
    /// runs on. Past this one an allocation fails and the worker dies —
    /// abruptly, its requests with it — and is replaced as a crash. Set it
    /// well above the soft limit, as the backstop it is.
    pub worker_memory_limit: Option<u64>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            workers: crate::default_workers(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            sched: Sched::default(),
            sticky: false,
            events: EventsFormat::default(),
            restart: None,
            grace: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(10),
            bake: Duration::ZERO,
            health: None,
            handle_signals: true,
            rolling_restart: None,
            worker_args: None,
            worker_threads: None,
            worker_env: Vec::new(),
            worker_memory_limit: None,
        }
    }
}

/// What to check, how often, who decides, and how many replacements to
/// allow.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// How often each worker is checked.
    pub interval: Duration,
    /// How long a heartbeat may take before it counts as missed.
    pub timeout: Duration,
    /// Missed heartbeats in a row that make a worker hung (for the judge).
    pub missed: u32,
    /// Resident memory, in bytes, above which a sample counts as over.
    pub max_rss: Option<u64>,
    /// Samples over `max_rss` in a row that make a worker over memory
    /// (for the judge).
    pub rss_samples: u32,
    /// Replacements allowed within a window (`budget`, `window`; the delays
    /// are unused: a replacement starts at once).
    pub budget: RestartPolicy,
    /// Decides, after each round, whether a ready worker is sick. The
    /// monitor measures and replaces; what counts as sick is the caller's
    /// answer (lesson 09 writes its own).
    pub judge: Judge,
}

/// Reads one ready worker's vitals (and the policy's thresholds) and says
/// whether it must be replaced.
pub type Judge = fn(&Vitals, &HealthPolicy) -> Verdict;

/// What a [`Judge`] makes of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Replace it; the reason and the detail go into the `unhealthy` event.
    Sick {
        reason: HealthReason,
        detail: String,
    },
}

impl HealthPolicy {
    /// A check every second, a heartbeat missed after a second, three in a
    /// row (or three memory samples over `max_rss`, unset here) for `judge`
    /// to read, and the default replacement budget.
    pub fn new(judge: Judge) -> Self {
        HealthPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            missed: 3,
            max_rss: None,
            rss_samples: 3,
            budget: RestartPolicy::default(),
            judge,
        }
    }
}
