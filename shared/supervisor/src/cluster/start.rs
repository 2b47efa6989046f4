//! Starting a cluster: bind the address the way the strategy needs, build
//! the shared state, start the supervising loop (and the dispatcher, and
//! the health monitor), then fill the first slots.
//!
//! Each step can fail on something the user controls (a port in use, a
//! sticky flag with the wrong strategy, no process slots left), and a
//! failed start leaves nothing behind: the workers that did start are
//! stopped before the error is returned.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, broadcast, mpsc, watch};

use super::owner::Supervisor;
use super::registry::{Registry, SlotId};
use super::round_robin::RoundRobin;
use super::snapshot::Snapshot;
use super::{Cluster, ClusterError, ClusterOptions, Inner, bus, dispatch, health, supervise};
use crate::event::{Event, StopReason};
use crate::listen::{self, Sched};
use crate::report::Reporter;

/// What binding left the primary holding, by strategy.
struct Bound {
    /// Round-robin and shared: the one listening socket.
    listener: Option<std::net::TcpListener>,
    /// Reuseport: a bound socket that never listens, holding the port.
    reserved: Option<socket2::Socket>,
    /// Reuseport: this cluster's claim on the address.
    port_claim: Option<listen::PortClaim>,
    /// The address, port 0 resolved.
    addr: SocketAddr,
}

impl Cluster {
    /// Binds `options.addr`, forks `options.workers` workers, and starts
    /// supervising them. Returns once they are forked, not once they are
    /// ready: see [`Cluster::wait_ready`].
    pub async fn start(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        if options.sticky && options.sched != Sched::RoundRobin {
            return Err(ClusterError::StickyNeedsRoundRobin(options.sched));
        }
        let exe = std::env::current_exe().map_err(ClusterError::CurrentExe)?;
        let bound = bind(&options)?;
        let addr = bound.addr;

        // Register signal handlers before the first fork, so a Ctrl-C during
        // start-up stops the cluster instead of killing the primary alone.
        let signals = if options.handle_signals {
            Some(supervise::Signals::new().map_err(ClusterError::Signals)?)
        } else {
            None
        };

        let (notes, notes_rx) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = watch::channel(None);
        let (snapshot_tx, snapshot) = watch::channel(Snapshot::default());
        let (dispatch_from, shared_listener) = match options.sched {
            Sched::RoundRobin => (bound.listener, None),
            Sched::Shared => (None, bound.listener.map(OwnedFd::from)),
            Sched::ReusePort => (None, None),
        };
        let workers = options.workers;
        let cluster = Cluster {
            inner: Arc::new(Inner {
                reporter: Reporter::new(options.events),
                snapshot,
                options,
                addr,
                exe,
                notes,
                bus: broadcast::Sender::new(bus::CAPACITY),
                dispatcher: OnceLock::new(),
                capacity: Notify::new(),
                pending: Mutex::default(),
                next_seq: AtomicU64::new(1),
                handed_out: AtomicU64::new(0),
                vitals: Mutex::default(),
                outcome,
                _port_claim: bound.port_claim,
            }),
        };

        // The loop's state is built here and the first steps taken on it
        // before the loop runs: `start` comes before any `fork`.
        let registry = Registry::new(shared_listener, bound.reserved);
        let (round_robin, routes) = match dispatch_from {
            Some(_) => {
                let (round_robin, routes) = RoundRobin::new();
                (Some(round_robin), Some(routes))
            }
            None => (None, None),
        };
        let mut me = Supervisor::new(cluster.clone(), registry, round_robin, snapshot_tx);
        me.publish_now(Event::Start {
            pid: std::process::id(),
            addr,
            sched: cluster.inner.options.sched,
            workers,
        });
        if let (Some(listener), Some(routes)) = (dispatch_from, routes) {
            let bind = |cause| ClusterError::Bind { addr, cause };
            listener.set_nonblocking(true).map_err(bind)?;
            let dispatcher = dispatch::start(cluster.clone(), listener, routes);
            me.dispatcher = Some(dispatcher.map_err(ClusterError::Dispatcher)?);
        }
        let filled = me.fill_first_slots(workers);
        tokio::spawn(supervise::supervise(me, notes_rx, signals, outcome_tx));
        if let Some(policy) = cluster.inner.options.health.clone() {
            tokio::spawn(health::monitor(cluster.clone(), policy));
        }
        if let Err(error) = filled {
            // Leave nothing half-started behind: stop what did start.
            cluster.stop(StopReason::StartFailed);
            let _ = cluster.wait().await;
            return Err(error);
        }
        Ok(cluster)
    }
}

impl Supervisor {
    /// Every slot first, then a worker into each: the desired count is
    /// known before the first worker starts, and its runtime is sized for
    /// it (see `crate::runtime`). On failure the slots left empty are
    /// removed: nobody else may fill them, the start has failed.
    fn fill_first_slots(&mut self, workers: usize) -> Result<(), ClusterError> {
        let slots = (0..workers)
            .map(|_| self.new_slot())
            .collect::<Result<Vec<_>, _>>();
        let filled = slots.and_then(|slots| {
            (slots.into_iter()).try_for_each(|slot| self.spawn_into(slot).map(drop))
        });
        if filled.is_err() {
            let registry = &mut self.registry;
            let empty: Vec<SlotId> = (registry.slots.keys())
                .filter(|slot| !registry.is_filled(**slot))
                .copied()
                .collect();
            for slot in empty {
                registry.slots.remove(&slot);
            }
        }
        filled
    }
}

/// Binds the address as the strategy needs. Round-robin and shared: one
/// listening socket, the primary's. Reuseport: a bound socket that never
/// listens, to hold the port (see `listen`).
fn bind(options: &ClusterOptions) -> Result<Bound, ClusterError> {
    let bind_error = |cause| ClusterError::Bind {
        addr: options.addr,
        cause,
    };
    let (listener, reserved, port_claim) = match options.sched {
        Sched::RoundRobin | Sched::Shared => (
            Some(listen::bind(options.addr).map_err(bind_error)?),
            None,
            None,
        ),
        Sched::ReusePort => {
            // Claimed first, checked second: see `listen::PortClaim`.
            let claim = listen::claim_port(options.addr).map_err(bind_error)?;
            listen::check_port_free(options.addr).map_err(bind_error)?;
            let reserved = listen::bind_reuse_port(options.addr).map_err(bind_error)?;
            (None, Some(reserved), claim)
        }
    };
    let local = match (&listener, &reserved) {
        (Some(listener), _) => listener.local_addr(),
        (None, Some(socket)) => socket.local_addr().and_then(|a| {
            a.as_socket()
                .ok_or_else(|| io::Error::other("not an IP socket"))
        }),
        (None, None) => Err(io::Error::other("nothing bound")),
    };
    Ok(Bound {
        addr: local.map_err(bind_error)?,
        listener,
        reserved,
        port_claim,
    })
}
