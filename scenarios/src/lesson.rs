//! A lesson process under a scenario's control: the lesson's Rust binary,
//! or its Node twin (`node lessons/NN-*/node/FILE`), started the same way.
//!
//! The runner starts the lesson's primary with `--events json`, so stdout is
//! a stream of events and nothing else; a task reads it into an event log
//! that steps can wait on. Stderr (the primary's errors and every worker's
//! output) is kept for checks like `exit.stderr contains "gave up"` and for
//! the failure report.
//!
//! Cleaning up is this module's other job. The primary is started with
//! `PR_SET_PDEATHSIG`, so even if the runner is killed the primary dies, and
//! its workers follow it (the supervisor's own guarantee); and whatever
//! outlives a scenario is killed when the [`Lesson`] is dropped. A process
//! is only counted as, or killed as, one of ours if its executable is still
//! the lesson binary, so a recycled pid is never touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The flags every scenario run adds to the script's own.
pub const RUNNER_FLAGS: [&str; 6] = ["--port", "0", "--host", "127.0.0.1", "--events", "json"];

/// How long to wait, once the primary has exited, for the last of its output.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// Why a lesson could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    #[error("cannot start {bin}: {cause} (was it built? `cargo build -p lesson-NN`)")]
    Spawn { bin: PathBuf, cause: std::io::Error },
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
    #[error("the primary exited before it said where it listens (no `start` event)")]
    NoStart,
    #[error("the `start` event has no usable `addr`: {0}")]
    BadAddr(String),
    #[error("cannot signal pid {pid}: {cause}")]
    Signal { pid: i32, cause: nix::Error },
    #[error("no worker {0} was ever forked")]
    NoSuchWorker(u32),
}

/// What the primary printed, as it arrives.
#[derive(Debug, Default)]
struct Log {
    events: Vec<Value>,
    /// When each event arrived, for measurements (`just compare`).
    arrived: Vec<std::time::Instant>,
    /// Lines on stdout that were not JSON: a broken contract, reported.
    noise: Vec<String>,
    /// stdout reached end-of-file: the primary is gone, no more events.
    closed: bool,
}

/// How to start a lesson's primary: its executable, and what goes before
/// the script's flags (a Node twin's file).
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program; its processes are the ones whose `/proc/PID/exe` is it.
    pub exe: PathBuf,
    pub leading: Vec<String>,
    /// Extra environment (`REDIS_URL`).
    pub env: Vec<(String, String)>,
}

impl Launch {
    /// The lesson's own binary.
    pub fn binary(bin: &Path) -> Launch {
        Launch {
            exe: bin.to_owned(),
            leading: Vec::new(),
            env: Vec::new(),
        }
    }

    /// `node FILE`, for a Node twin.
    pub fn node(file: &Path) -> Result<Launch, LessonError> {
        Ok(Launch {
            exe: crate::node::node()?,
            leading: vec![file.to_string_lossy().into_owned()],
            env: Vec::new(),
        })
    }
}

/// A running (or finished) lesson primary.
#[derive(Debug)]
pub struct Lesson {
    bin: PathBuf,
    child: Child,
    pid: u32,
    log: Arc<Mutex<Log>>,
    /// Bumped on every new line and at end-of-file, to wake waiters.
    changed: watch::Receiver<u64>,
    stderr: Arc<Mutex<String>>,
    /// The tasks reading stdout and stderr; awaited after the exit so that a
    /// check on `exit.stderr` sees the last lines, not a race with the pipe.
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Lesson {
    /// Starts `bin` with `args` and the runner's flags.
    pub fn start(bin: &Path, args: &[String]) -> Result<Lesson, LessonError> {
        Lesson::launch(&Launch::binary(bin), args)
    }

    /// Starts what `launch` names with `args` and the runner's flags.
    pub fn launch(launch: &Launch, args: &[String]) -> Result<Lesson, LessonError> {
        let bin = launch.exe.as_path();
        let mut command = Command::new(bin);
        command
            .args(&launch.leading)
            .args(args)
            .args(RUNNER_FLAGS)
            .envs(launch.env.iter().map(|(key, value)| (key, value)))
            .env_remove("CLUSTER_EVENTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().map_err(|cause| LessonError::Spawn {
            bin: bin.to_owned(),
            cause,
        })?;
        let pid = child.id().unwrap_or_default();
        let bin = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_owned());

        let log = Arc::new(Mutex::new(Log::default()));
        let (tick, changed) = watch::channel(0u64);
        let stderr = Arc::new(Mutex::new(String::new()));

        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut log) = log.lock() {
                        match serde_json::from_str::<Value>(&line) {
                            Ok(event) if event.get("event").is_some() => {
                                log.events.push(event);
                                log.arrived.push(std::time::Instant::now());
                            }
                            _ => log.noise.push(line),
                        }
                    }
                    tick.send_modify(|n| *n += 1);
                }
                if let Ok(mut log) = log.lock() {
                    log.closed = true;
                }
                tick.send_modify(|n| *n += 1);
            }));
        }
        if let Some(pipe) = child.stderr.take() {
            let stderr = stderr.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut text) = stderr.lock() {
                        text.push_str(&line);
                        text.push('\n');
                    }
                }
            }));
        }

        Ok(Lesson {
            bin,
            child,
            pid,
            log,
            changed,
            stderr,
            readers,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Every event so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.log
            .lock()
            .map(|log| log.events.clone())
            .unwrap_or_default()
    }

    /// Every event so far with the moment it arrived.
    pub fn timeline(&self) -> Vec<(std::time::Instant, Value)> {
        self.log
            .lock()
            .map(|log| {
                log.arrived
                    .iter()
                    .copied()
                    .zip(log.events.iter().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// When the first event of `kind` arrived at or after event `after`.
    pub fn arrival(&self, kind: &str, after: usize) -> Option<std::time::Instant> {
        let log = self.log.lock().ok()?;
        let from = after.min(log.events.len());
        log.events[from..]
            .iter()
            .position(|event| event["event"] == kind)
            .and_then(|at| log.arrived.get(from + at).copied())
    }

    pub fn event_count(&self) -> usize {
        self.log
            .lock()
            .map(|log| log.events.len())
            .unwrap_or_default()
    }

    /// Lines on stdout that were not events.
    pub fn noise(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|log| log.noise.clone())
            .unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|text| text.clone())
            .unwrap_or_default()
    }

    /// Waits until `enough` says yes about the events so far, the primary's
    /// stdout closes, or `within` passes. Returns whether `enough` said yes.
    pub async fn wait_until(
        &mut self,
        within: Duration,
        enough: impl Fn(&[Value]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let closed = match self.log.lock() {
                Ok(log) if enough(&log.events) => return true,
                Ok(log) => log.closed,
                Err(_) => return false,
            };
            if closed {
                return false;
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => {}
                // The reader is gone (stdout closed) or time is up: one
                // last look happens at the top of the loop only if new
                // lines may have come; otherwise stop.
                Ok(Err(_)) | Err(_) => {
                    return self.log.lock().is_ok_and(|log| enough(&log.events));
                }
            }
        }
    }

    /// Resolves once an event of `kind` arrives after the first `after`
    /// events, or once the primary's stdout closes (no event can come then).
    /// Owns what it needs, so a load task can hold it.
    pub fn until_event(
        &self,
        kind: String,
        after: usize,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let log = Arc::clone(&self.log);
        let mut changed = self.changed.clone();
        async move {
            loop {
                let seen = log.lock().map_or(true, |log| {
                    log.closed
                        || log.events[after.min(log.events.len())..]
                            .iter()
                            .any(|event| event["event"] == kind.as_str())
                });
                if seen || changed.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Where the cluster listens, from its `start` event.
    pub async fn addr(&mut self) -> Result<SocketAddr, LessonError> {
        let is_start = |event: &Value| event["event"] == "start";
        if !self
            .wait_until(crate::script::DEFAULT_WITHIN, |events| {
                events.iter().any(is_start)
            })
            .await
        {
            return Err(LessonError::NoStart);
        }
        let events = self.events();
        let addr = events
            .iter()
            .find(|event| is_start(event))
            .map(|event| event["addr"].clone())
            .unwrap_or_default();
        addr.as_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| LessonError::BadAddr(addr.to_string()))
    }

    /// Sends `signal` to the primary.
    pub fn signal(&self, signal: Signal) -> Result<(), LessonError> {
        let pid = self.pid as i32;
        kill(Pid::from_raw(pid), signal).map_err(|cause| LessonError::Signal { pid, cause })
    }

    /// The pid of worker `id`, from its `fork` event.
    pub fn worker_pid(&self, id: u32) -> Result<u32, LessonError> {
        self.events()
            .iter()
            .find(|event| event["event"] == "fork" && event["id"] == id)
            .and_then(|event| event["pid"].as_u64())
            .map(|pid| pid as u32)
            .ok_or(LessonError::NoSuchWorker(id))
    }

    /// SIGKILL to worker `id`, if it is still one of ours.
    pub fn kill_worker(&self, id: u32) -> Result<u32, LessonError> {
        let pid = self.worker_pid(id)?;
        if self.is_ours(pid) {
            kill(Pid::from_raw(pid as i32), Signal::SIGKILL).map_err(|cause| {
                LessonError::Signal {
                    pid: pid as i32,
                    cause,
                }
            })?;
        }
        Ok(pid)
    }

    /// Waits up to `within` for the primary to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Ok(Ok(status)) = tokio::time::timeout(within, self.child.wait()).await
        {
            self.exit = Some(status);
            self.drain_output().await;
        }
        self.exit
    }

    /// Reads what the primary wrote before it exited. The pipes reach
    /// end-of-file once every process holding them is gone — workers inherit
    /// them too — so the wait is bounded: a worker that outlives the primary
    /// is the no-orphans check's to report, not a reason to hang here.
    async fn drain_output(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(OUTPUT_DRAIN, reader).await;
        }
    }

    /// The primary's exit status, if it has exited and been waited for.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.exit
    }

    /// The pids of forked workers that are still running.
    pub fn alive_workers(&self) -> Vec<u32> {
        self.events()
            .iter()
            .filter(|event| event["event"] == "fork")
            .filter_map(|event| event["pid"].as_u64())
            .map(|pid| pid as u32)
            .filter(|&pid| self.is_ours(pid))
            .collect()
    }

    /// True if `pid` runs the lesson binary: alive, not a zombie (a zombie
    /// has no executable) and not a stranger that got a recycled pid.
    fn is_ours(&self, pid: u32) -> bool {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == self.bin)
    }

    /// Kills the primary and any worker still running, and reaps the primary.
    pub async fn kill_all(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.start_kill();
            self.exit = self.child.wait().await.ok();
        }
        self.kill_workers();
        self.drain_output().await;
    }

    fn kill_workers(&self) {
        for pid in self.alive_workers() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for Lesson {
    fn drop(&mut self) {
        // A panicking test must not leave processes behind: the primary is
        // killed by `kill_on_drop`, its workers here.
        self.kill_workers();
    }
}
