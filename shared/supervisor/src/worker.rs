//! The worker's side: Node's `cluster.worker` and `process.send`.
//!
//! A worker connects to the channel its primary left it, reports `online`,
//! builds its listener with [`Worker::listen`] (reporting `listening`), says
//! [`Worker::ready`] when it can take traffic — its listener accepts nothing
//! before that — and serves until [`Worker::disconnected`] fires. If the primary dies — even by `kill -9`,
//! which runs no cleanup — the channel reaches end-of-file and the worker
//! exits at once: a worker never outlives its primary. (`PR_SET_PDEATHSIG`,
//! set at spawn, is the backstop for a worker stuck where this task cannot
//! run.)

use std::future::Future;
use std::sync::Mutex;

use serde::Serialize;
use tokio::net::UnixStream;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::inherit::InheritError;
use crate::ipc::{self, Incoming, SendError, ToPrimary, ToWorker};
use crate::listen::{ListenError, Listener, Probes};
use crate::report::stderr_line;
use crate::role::{BadWorkerId, Role, WORKER_ID_VAR, WorkerId, role};
use crate::worker_env::{EnvError, IPC_FD_VAR, WorkerEnv};

/// Heartbeats queued for the server; more than this waiting means the
/// server is not answering, and the primary's timeout will say so.
const PROBE_QUEUE: usize = 8;

/// Why a worker could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("this process is the primary, not a worker")]
    NotAWorker,
    #[error(transparent)]
    BadId(#[from] BadWorkerId),
    #[error(transparent)]
    Inherit(#[from] InheritError),
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The descriptor is open but is not a socket this process can use:
    /// the cause is printed in the message, not again as a source.
    #[error(
        "{IPC_FD_VAR} does not name a usable channel to the primary ({0}): start this program without {WORKER_ID_VAR} to run a primary"
    )]
    Channel(std::io::Error),
    #[error("cannot watch for SIGTERM: {0}")]
    Signal(std::io::Error),
    #[error("cannot set up the listening socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Send(#[from] SendError),
}

/// This worker's connection to its primary.
#[derive(Debug)]
pub struct Worker {
    id: WorkerId,
    to_primary: ipc::Sender<ToPrimary>,
    disconnect: watch::Receiver<bool>,
    ready: watch::Sender<bool>,
    /// Set when the primary asks to close the listening socket (a stop).
    stop_accepting: watch::Receiver<bool>,
    /// The socket [`Worker::ready`] makes listen before it says so (see
    /// `Listener::socket_to_listen_on`).
    listen_at_ready: Mutex<Option<socket2::Socket>>,
    probes: Mutex<Option<mpsc::Receiver<u64>>>,
    messages: Mutex<Option<mpsc::UnboundedReceiver<serde_json::Value>>>,
    questions: Mutex<Option<mpsc::UnboundedReceiver<Question>>>,
}

/// A question from the primary ([`crate::Cluster::ask`]), waiting for
/// [`Worker::reply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The correlation id; the reply carries it back.
    pub seq: u64,
    pub body: serde_json::Value,
}

impl Worker {
    /// Joins the cluster: takes the inherited channel, starts reading it, and
    /// tells the primary we are online. Must run inside the runtime.
    pub async fn connect() -> Result<Worker, WorkerError> {
        let Role::Worker(id) = role()? else {
            return Err(WorkerError::NotAWorker);
        };
        let fd = WorkerEnv::take_ipc()?;
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true).map_err(WorkerError::Channel)?;
        let (mut from_primary, to_primary) = ipc::channel::<ToWorker, ToPrimary>(
            UnixStream::from_std(stream).map_err(WorkerError::Channel)?,
            "the primary".into(),
        );

        let (disconnect_tx, disconnect) = watch::channel(false);
        let (stop_accepting_tx, stop_accepting) = watch::channel(false);
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let (questions_tx, questions) = mpsc::unbounded_channel();
        let (probes_tx, probes) = mpsc::channel(PROBE_QUEUE);
        tokio::spawn(async move {
            loop {
                match from_primary.recv().await {
                    Ok(Some(Incoming::Message(ToWorker::Message { body }))) => {
                        let _ = messages_tx.send(body);
                    }
                    Ok(Some(Incoming::Message(ToWorker::Request { seq, body }))) => {
                        let _ = questions_tx.send(Question { seq, body });
                    }
                    Ok(Some(Incoming::Message(ToWorker::Disconnect))) => {
                        let _ = disconnect_tx.send(true);
                    }
                    Ok(Some(Incoming::Message(ToWorker::StopAccepting))) => {
                        let _ = stop_accepting_tx.send(true);
                    }
                    Ok(Some(Incoming::Message(ToWorker::Heartbeat { seq }))) => {
                        // Not answered here: the HTTP server answers, after
                        // serving a request to itself (see `http`). A full
                        // queue or no server yet means no answer, which is
                        // the truth the primary should see.
                        let _ = probes_tx.try_send(seq);
                    }
                    Ok(Some(Incoming::Malformed { reason })) => {
                        stderr_line(&format!(
                            "[worker {id}] dropped a malformed message from the primary: {reason}"
                        ));
                    }
                    Ok(None) | Err(_) => {
                        // The primary is gone (it exited, or was killed).
                        // Nobody will route traffic to us or reap us: leave now.
                        stderr_line(&format!("[worker {id}] the primary is gone; exiting"));
                        std::process::exit(1);
                    }
                }
            }
        });

        // SIGTERM to a worker does not kill it on the spot: a service
        // manager (systemd's default, `timeout`, a shell's `kill 0`) signals
        // every process in the group, and a worker that died at once would
        // drop its in-flight requests. It tells the primary, which decides:
        // while stopping (it got the same SIGTERM) the worker drains with
        // the rest; otherwise it was signalled alone, and the primary
        // replaces it — a new worker ready first — before it drains, so
        // the cluster keeps its desired count. (SIGINT and SIGHUP, which a
        // terminal sends to the whole group, are ignored: see
        // `cluster/spawn.rs`.)
        let mut terms = signal(SignalKind::terminate()).map_err(WorkerError::Signal)?;
        let tell = to_primary.clone();
        tokio::spawn(async move {
            while terms.recv().await.is_some() {
                let _ = tell.send(&ToPrimary::Terminated);
            }
        });

        to_primary.send(&ToPrimary::Online)?;
        Ok(Worker {
            id,
            to_primary,
            disconnect,
            ready: watch::Sender::new(false),
            stop_accepting,
            listen_at_ready: Mutex::new(None),
            probes: Mutex::new(Some(probes)),
            messages: Mutex::new(Some(messages)),
            questions: Mutex::new(Some(questions)),
        })
    }

    /// Node's `cluster.worker.id`.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// The release this worker runs: 1 at start, one more after each
    /// rolling restart. A lesson can behave differently per generation (a
    /// "bad release" that never gets ready, say).
    pub fn generation(&self) -> u32 {
        WorkerEnv::generation()
    }

    /// Takes this worker's way to connections, the way the primary chose,
    /// and reports `listening` with the address. Nothing is accepted until
    /// [`Worker::ready`].
    pub async fn listen(&self) -> Result<Listener, WorkerError> {
        let (sched, addr) = WorkerEnv::sched_and_addr()?;
        let inherited = WorkerEnv::take_connections(sched)?;
        let probes = self
            .probes
            .lock()
            .ok()
            .and_then(|mut probes| probes.take())
            .map(|queue| Probes {
                queue,
                reply: self.to_primary.clone(),
            });
        let signals = crate::listen::ListenerSignals {
            ready: self.ready.subscribe(),
            stop_accepting: self.stop_accepting.clone(),
            to_primary: self.to_primary.clone(),
        };
        let listener = Listener::inherited(self.id, sched, addr, inherited, signals, probes)?;
        if let Ok(mut slot) = self.listen_at_ready.lock() {
            *slot = listener
                .socket_to_listen_on()
                .map_err(WorkerError::Socket)?;
        }
        self.to_primary.send(&ToPrimary::Listening { addr })?;
        Ok(listener)
    }

    /// Tells the primary this worker is ready for traffic, and lets its
    /// listener start accepting. Call it once warm: caches loaded,
    /// connections to what it depends on open.
    pub fn ready(&self) -> Result<(), SendError> {
        let socket = self.listen_at_ready.lock().ok().and_then(|mut s| s.take());
        if let Some(socket) = socket {
            // A failure here surfaces at the first accept, which listens
            // again (see `Listener::socket_to_listen_on`).
            let _ = crate::listen::start_listening_now(&socket);
        }
        self.ready.send_replace(true);
        self.to_primary.send(&ToPrimary::Ready)
    }

    /// Sends a message of the lesson's own to the primary (Node's
    /// `process.send`). The body is serialised: the primary gets a copy.
    pub fn send(&self, body: &impl Serialize) -> Result<(), SendError> {
        self.to_primary.send_message(body)
    }

    /// Waits until every message sent so far has left this process. Call it
    /// before exiting on purpose, or the last messages can be lost with it.
    pub async fn flush(&self) -> Result<(), SendError> {
        self.to_primary.flush().await
    }

    /// Messages from the primary. Can be taken once.
    pub fn messages(&self) -> Option<mpsc::UnboundedReceiver<serde_json::Value>> {
        self.messages.lock().ok()?.take()
    }

    /// Questions from the primary. Can be taken once; answer each with
    /// [`Worker::reply`]. A worker that never answers is reported by the
    /// primary as timed out, not waited for forever.
    pub fn questions(&self) -> Option<mpsc::UnboundedReceiver<Question>> {
        self.questions.lock().ok()?.take()
    }

    /// Answers `question`.
    pub fn reply(&self, question: &Question, body: &impl Serialize) -> Result<(), SendError> {
        self.to_primary.send_reply(question.seq, body)
    }

    /// Asks to leave the cluster (Node's `worker.disconnect()` called in the
    /// worker). The primary stops sending connections, then tells us to
    /// disconnect, which fires [`Worker::disconnected`]; our exit is then
    /// not a crash and is not restarted.
    pub fn disconnect(&self) -> Result<(), SendError> {
        self.to_primary.send(&ToPrimary::Disconnect)
    }

    /// Resolves when the primary has told this worker to stop accepting and
    /// finish up. Pass it to [`crate::http::serve`] as its shutdown signal.
    pub fn disconnected(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut disconnect = self.disconnect.clone();
        async move {
            // An error means the reader task is gone, which only happens as
            // the process exits; treat it as a disconnect too.
            let _ = disconnect.wait_for(|&yes| yes).await;
        }
    }
}
