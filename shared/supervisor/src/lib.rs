//! Rust's answer to Node's `cluster` module.
//!
//! One process, the *primary*, starts *workers* by re-executing its own
//! binary, hands them a share of one listening socket, talks to them over a
//! private channel, restarts them when they crash and stops them gracefully.
//! Every lesson in the workbook is built on this crate, so that each lesson's
//! `main.rs` reads as the answer to its question and not as process plumbing.
//!
//! # Layout
//!
//! | module             | its one job                                                       | Node name            |
//! |--------------------|-------------------------------------------------------------------|----------------------|
//! | [`role`](mod@role) | tell a primary from a worker (an environment variable)           | `cluster.isPrimary`  |
//! | [`worker_env`]     | the rest of what a worker's environment says, written and read    | `NODE_CHANNEL_FD`    |
//! | [`cluster`]        | the primary: desired state, fork, events, replace, roll, health   | `cluster.fork()`     |
//! | [`worker`]         | the worker's side of the channel: listen, ready, send, disconnect | `cluster.worker`     |
//! | [`event`]          | the lifecycle events, as JSON for machines                        | `cluster.on('exit')` |
//! | [`report`]         | print events for people (colours) or machines (`--events json`)   |                      |
//! | [`ipc`]            | newline-delimited JSON over an inherited Unix socketpair          | `process.send()`     |
//! | [`handles`]        | pass accepted sockets to workers with `SCM_RIGHTS`, acknowledged  | round-robin handles  |
//! | [`listen`]         | the scheduling strategies behind one `listen()`                   | `schedulingPolicy`   |
//! | [`restart`]        | restart backoff and the crash-loop budget, as a pure policy       |                      |
//! | [`http`]           | serve an accept stream with hyper; drain; answer heartbeats       | `http.createServer`  |
//! | [`inherit`]        | pass descriptors across exec, and only to the worker              |                      |
//! | [`cli`]            | the flags every lesson shares (`--workers`, `--port`, `--events`) |                      |
//! | [`runtime`]        | each process's tokio runtime, sized so workers share the cores    |                      |
//! | [`spread`]         | how unevenly work was spread over workers: one formula for all   |                      |
//! | [`peer`]           | another primary of this program: a second machine, for demos      |                      |
//! | [`sticky`]         | the same client address to the same worker (rendezvous hashing)  | sticky sessions      |
//! | [`accept`]         | back off and report once when `accept` fails (out of descriptors) |                      |
//!
//! Modules depend one way, in layers; nothing imports a layer above its own
//! (`tests/layers.rs` reads every use and holds the crate to this list):
//!
//! 1. the pieces: `role`, `ipc`, `inherit`, `handles`, `restart`, `spread`;
//! 2. `listen`, `accept`, `sticky`, `peer`;
//! 3. `event`, `worker_env`;
//! 4. `report`, then `http`;
//! 5. `runtime` and `worker`: a worker process;
//! 6. `cluster`: the primary, over all of the above;
//! 7. `cli`, the flags that build a [`ClusterOptions`].
//!
//! # A lesson in ten lines
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use supervisor::{Cluster, ClusterOptions, Role};
//! match supervisor::role()? {
//!     Role::Primary => {
//!         let cluster = Cluster::start(ClusterOptions::default()).await?;
//!         cluster.run().await?;
//!     }
//!     Role::Worker(_) => {
//!         let worker = supervisor::Worker::connect().await?;
//!         let listener = worker.listen().await?;
//!         worker.ready()?;
//!         let hello = |_req| async { supervisor::http::text(200, "hello\n") };
//!         supervisor::http::serve(listener, hello, worker.disconnected()).await;
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod accept;
pub mod cli;
pub mod cluster;
pub mod event;
pub mod handles;
pub mod http;
pub mod inherit;
pub mod ipc;
pub mod listen;
pub mod peer;
pub mod report;
pub mod restart;
pub mod role;
pub mod runtime;
pub mod spread;
pub mod sticky;
pub mod worker;
pub mod worker_env;

pub use cli::ClusterArgs;
pub use cluster::{
    AskError, Cluster, ClusterError, ClusterOptions, Events, Gathered, HealthPolicy, Judge,
    ReplaceError, ReplaceStep, RollingRestart, Rollout, RolloutError, RolloutReport, Stopped,
    Verdict, Vitals, WaitError, WorkerState,
};
pub use event::{Event, ExitReason, GaveUpCause, HealthReason, RolloutOutcome, StopReason};
pub use http::{Request, Response};
pub use listen::{Listener, Sched};
pub use report::{EventsFormat, exit_code};
pub use restart::RestartPolicy;
pub use role::{Role, WorkerId, role};
pub use runtime::{block_on, lesson_main};
pub use worker::{Question, Worker};

/// How many workers "one per core" means here: the CPUs this process may
/// actually use. `available_parallelism` honours CPU affinity and cgroup
/// quotas, unlike Node's `os.cpus().length`, which counts every CPU the host
/// has — in a container limited to two CPUs on a 64-core host, that starts 64
/// workers fighting over two cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
