//! Round-robin: the primary accepts every connection and hands it to the
//! next ready worker that has room.
//!
//! Two rules keep one worker from hurting the others:
//!
//! * **Only ready workers.** The supervising loop's [`RoundRobin`] publishes
//!   the rotation ([`Routes`]) whenever it changes; the dispatcher reads it
//!   once per change, not once per connection, and takes no lock for it.
//! * **A bound on what a worker has not taken yet.** Every hand-off is
//!   counted until the worker acknowledges it (see [`crate::handles`]). A
//!   worker with [`MAX_UNACKED`] connections waiting is skipped. This is
//!   Node's rule too (its `RoundRobinHandle` gives a worker one connection at
//!   a time), with a little more room, so that the acknowledgement's round
//!   trip does not limit throughput. A stopped or blocked worker therefore
//!   holds at most that many connections, and hands never block the
//!   dispatcher: a full worker is skipped, not waited for.
//!
//! When no worker has room, the dispatcher stops accepting: clients wait in
//! the kernel's accept queue, not in the primary's memory.
//!
//! The dispatcher runs on a thread of its own, with its own one-thread
//! runtime ([`start`]): the accept loop, the hand-offs and the counting of
//! acknowledgements never wait for the rest of the primary — the lesson's
//! code, events, IPC — and never hand a wake-up across threads to each
//! other. That lets the rest of the primary run on one thread too, like
//! Node's primary, which is what makes its IPC cheap (see
//! `crate::runtime`); the dispatcher keeps a core's worth of room for
//! itself, which round-robin under a new connection per request needs.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::Cluster;
#[cfg(doc)]
use super::round_robin::{MAX_UNACKED, RoundRobin};
use super::round_robin::{Routes, Target};
use crate::accept::AcceptFailures;

/// Resolves when the dispatcher has stopped (the cluster is stopping).
pub(super) type Stopped = tokio::sync::oneshot::Receiver<()>;

/// Starts the dispatcher on its own thread, accepting on `listener`. The
/// thread ends when the dispatcher does, once the cluster stops; its
/// runtime goes with it, and the acknowledgement counters with that.
pub(super) fn start(
    cluster: Cluster,
    listener: std::net::TcpListener,
    routes: watch::Receiver<Routes>,
) -> io::Result<Stopped> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered with the dispatcher's reactor, not the caller's: an I/O
    // object is woken by the runtime it was registered with.
    let listener = {
        let _inside = runtime.enter();
        // SAFETY: the listener is moved in and owned by the AsyncFd, which
        // never closes or replaces its descriptor while registered.
        unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE)? }
    };
    // Set before any worker starts: workers' hand-off channels are
    // registered here too (see `Cluster::on_dispatcher`).
    let _ = cluster.inner.dispatcher.set(runtime.handle().clone());
    // The thread must not outlive the primary's runtime: a cluster dropped
    // without a stop (a test that ends early) would leave it accepting on
    // the port forever, since it holds the cluster itself. So a task on the
    // primary's runtime holds `alive`; when that runtime shuts down, the
    // task is dropped with it, and the dispatcher hears so.
    let (alive, primary_gone) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await;
    });
    let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("rr-dispatcher".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    () = dispatch(cluster, listener, routes) => {}
                    _ = primary_gone => {}
                }
            });
            let _ = stopped_tx.send(());
        })?;
    Ok(stopped)
}

impl Cluster {
    /// Runs `make` in the dispatcher's runtime, so that what it registers
    /// (a worker's hand-off channel) and spawns (its acknowledgement
    /// counter) live there. Without a dispatcher (shared, reuseport), in
    /// the caller's runtime.
    pub(super) fn on_dispatcher<R>(&self, make: impl FnOnce() -> R) -> R {
        let _inside = self.inner.dispatcher.get().map(|runtime| runtime.enter());
        make()
    }
}

// ANCHOR: dispatch
/// Accepts every connection and passes it to the next ready worker with room.
pub(super) async fn dispatch(
    cluster: Cluster,
    listener: AsyncFd<std::net::TcpListener>,
    routes: watch::Receiver<Routes>,
) {
    let mut view = View::new(routes);
    let mut failures = AcceptFailures::default();
    // Later stops are seen as changes; one that came before is seen here.
    if view.routes.borrow().closed {
        return;
    }
    loop {
        // Accept only when some worker can take the connection; until then
        // clients wait in the kernel's accept queue.
        while !view.targets.iter().any(|t| t.has_room()) {
            if !view.wait_for_change(&cluster).await {
                return view.last_batch(&cluster, &listener);
            }
        }
        // Race the accept with the stop: once the cluster stops, the
        // listening socket must close at once, so new clients are refused
        // instead of queueing for a primary that will never accept them.
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = until_closed(&mut view.closing) => {
                return view.last_batch(&cluster, &listener);
            }
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually EMFILE: nothing announces a free descriptor, so
                // wait a little, longer while it lasts (see `accept`).
                let retry = failures.failed(&error);
                if let Some(line) = retry.report {
                    cluster.note_line(&line);
                }
                tokio::time::sleep(retry.after).await;
                continue;
            }
        };
        if let Some(line) = failures.succeeded() {
            cluster.note_line(&line);
        }
        // Hand it over; if every worker filled up since we looked, wait for
        // room with this one connection in hand.
        while !view.hand_over(&cluster, &stream, peer, Bound::Kept) {
            if !view.wait_for_change(&cluster).await {
                view.hand_over(&cluster, &stream, peer, Bound::Lifted);
                return view.last_batch(&cluster, &listener);
            }
        }
        // `stream` drops here: the worker holds the connection now.
    }
}

/// Whether a hand-off respects [`MAX_UNACKED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Kept,
    /// Only for the stop's last batch (see [`View::last_batch`]).
    Lifted,
}

/// The dispatcher's copy of the ready workers, and where the turn is.
struct View {
    routes: watch::Receiver<Routes>,
    /// The same rotation, watched only for its closing.
    closing: watch::Receiver<Routes>,
    targets: Vec<Arc<Target>>,
    next: usize,
}

impl View {
    fn new(mut routes: watch::Receiver<Routes>) -> Self {
        let targets = routes.borrow_and_update().targets.clone();
        View {
            closing: routes.clone(),
            routes,
            targets,
            next: 0,
        }
    }

    /// Waits until a worker acknowledged a connection or the ready set
    /// changed; false once the cluster is stopping.
    async fn wait_for_change(&mut self, cluster: &Cluster) -> bool {
        tokio::select! {
            () = cluster.inner.capacity.notified() => true,
            changed = self.routes.changed() => match changed {
                Ok(()) => {
                    let routes = self.routes.borrow_and_update();
                    self.targets.clone_from(&routes.targets);
                    !routes.closed
                }
                Err(_) => false,
            },
            // A close `hand_over` took in with a change of workers.
            () = until_closed(&mut self.closing) => false,
        }
    }

    /// The stop's last batch. Connections the kernel has already queued are
    /// reset when the listening socket closes — each one a client that has
    /// connected and may have sent its request. So, before the socket
    /// closes, they are accepted and handed out past the bound: the workers
    /// are told to stop only after this, and serve every connection handed
    /// to them before they exit. (One that connects between the last accept
    /// and the close is still reset; nothing can close a listening socket
    /// and refuse its queue in one step.)
    fn last_batch(&mut self, cluster: &Cluster, listener: &AsyncFd<std::net::TcpListener>) {
        while let Ok((stream, peer)) = listener.get_ref().accept() {
            // No ready worker at all: nobody could serve it; it closes.
            self.hand_over(cluster, &stream, peer, Bound::Lifted);
        }
    }

    /// Tries each worker once, starting after the last one served; true
    /// once one took the connection.
    fn hand_over(
        &mut self,
        cluster: &Cluster,
        stream: &std::net::TcpStream,
        peer: SocketAddr,
        bound: Bound,
    ) -> bool {
        if self.routes.has_changed().unwrap_or(false) {
            self.targets = self.routes.borrow_and_update().targets.clone();
        }
        let count = self.targets.len();
        // Sticky: the workers in the order the client's address ranks them;
        // the first with room takes it (a full one is passed over rather
        // than waited for, which keeps one stuck worker from stalling all).
        // Otherwise: each in turn, from the one after the last served.
        // (Round-robin allocates nothing per connection; sticky ranks.)
        let ranked: Option<Vec<usize>> = cluster.inner.options.sticky.then(|| {
            let mut ranked: Vec<usize> = (0..count).collect();
            ranked.sort_by_key(|&i| {
                std::cmp::Reverse(crate::sticky::score(peer.ip(), self.targets[i].slot))
            });
            ranked
        });
        for offset in 0..count {
            let index = match &ranked {
                Some(ranked) => ranked[offset],
                None => (self.next + offset) % count,
            };
            let target = &self.targets[index];
            if bound == Bound::Kept && !target.has_room() {
                continue;
            }
            // Count first: the acknowledgement, and even the response to
            // the client, may come back before `try_send` returns (this
            // thread can be preempted right after the send); a count made
            // after it could lag behind what a client has already seen.
            target.unacked.fetch_add(1, Ordering::Relaxed);
            cluster.inner.handed_out.fetch_add(1, Ordering::Relaxed);
            match target.sender.try_send(stream.as_raw_fd(), peer) {
                Ok(()) => {
                    self.next = index + 1;
                    return true;
                }
                // Full, or gone (its exit will be reported): try the next.
                Err(_) => {
                    target.unacked.fetch_sub(1, Ordering::Relaxed);
                    cluster.inner.handed_out.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        false
    }
}
// ANCHOR_END: dispatch

/// The next connection, as a plain socket. Not tokio's `accept`: that
/// registers every accepted socket with this thread's epoll, and the
/// dispatcher only passes the descriptor on and closes its copy — the
/// profile of round-robin under a new connection per request showed those
/// two `epoll_ctl` calls per connection among the dispatcher's top costs.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        if let Ok(accepted) = ready.try_io(|listener| listener.get_ref().accept()) {
            return accepted;
        }
    }
}

/// Resolves once the rotation is closed (the cluster has begun to stop),
/// or the loop that owns it is gone.
async fn until_closed(closing: &mut watch::Receiver<Routes>) {
    let _ = closing.wait_for(|routes| routes.closed).await;
}
